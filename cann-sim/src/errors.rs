//! Per-thread error messages (`aclGetRecentErrMsg`, hicann/runtime `docs/zh/api_ref/22_error_reporting_APIs.md`).

use std::cell::RefCell;
use std::ffi::{c_char, CString};

thread_local! {
    /// The message the next `aclGetRecentErrMsg` on this thread returns.
    static RECENT: RefCell<Option<CString>> = const { RefCell::new(None) };
    /// The string handed out by the last `aclGetRecentErrMsg`; kept alive until the next call on this thread.
    static HANDED_OUT: RefCell<Option<CString>> = const { RefCell::new(None) };
}

/// Records the message returned by the next aclGetRecentErrMsg() on this thread.
pub fn set_recent(msg: String) {
    let c = CString::new(msg.replace('\0', " ")).unwrap_or_default();
    RECENT.with(|r| *r.borrow_mut() = Some(c));
}

/// Records "`call`: `msg`" as this thread's recent error and returns `code`, so failing calls read
/// `return fail("aclrtMalloc", CODE, ...)`.
pub fn fail(call: &str, code: i32, msg: impl AsRef<str>) -> i32 {
    set_recent(format!("{call}: {} (status {code})", msg.as_ref()));
    code
}

/// Returns the most recent error message of the calling thread, or NULL when there has been none since the
/// last call. The string stays valid until the next call on the same thread.
#[no_mangle]
pub extern "C" fn aclGetRecentErrMsg() -> *const c_char {
    let msg = RECENT.with(|r| r.borrow_mut().take());
    HANDED_OUT.with(|h| {
        let mut h = h.borrow_mut();
        *h = msg;
        h.as_ref().map_or(std::ptr::null(), |c| c.as_ptr())
    })
}

/// Takes this thread's pending message (used to combine several into one).
pub fn take_recent() -> Option<String> {
    RECENT
        .with(|r| r.borrow_mut().take())
        .map(|c| c.to_string_lossy().into_owned())
}
