//! Helpers shared by the runtime tests: they call the simulator's C symbols in-process through the rlib.
#![allow(dead_code)]

use std::ffi::{c_void, CStr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::ptr::null_mut;

use cann_sim::errors::aclGetRecentErrMsg;

/// The calling thread's recent error message ("" if none).
pub fn recent() -> String {
    let p = aclGetRecentErrMsg();
    if p.is_null() {
        String::new()
    } else {
        // SAFETY: a NUL-terminated string valid until the next call on this thread.
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }
}

/// Asserts `status == want` and that the thread's message contains `needle`.
#[track_caller]
pub fn expect_err(status: i32, want: i32, needle: &str) {
    let msg = recent();
    assert_eq!(status, want, "status (message: {msg:?})");
    assert!(
        msg.contains(needle),
        "message {msg:?} should contain {needle:?}"
    );
}

/// aclInit once per test binary, then binds device 0's context to the calling thread.
pub fn setup() {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        // SAFETY: NULL config path is allowed.
        let rc = unsafe { cann_sim::runtime::aclInit(std::ptr::null()) };
        assert_eq!(rc, 0, "aclInit: {}", recent());
    });
    assert_eq!(
        cann_sim::runtime::aclrtSetDevice(0),
        0,
        "aclrtSetDevice: {}",
        recent()
    );
}

/// aclrtMalloc that must succeed.
pub fn dmalloc(n: usize) -> *mut c_void {
    let mut p = null_mut();
    // SAFETY: valid out pointer.
    let rc = unsafe { cann_sim::mem::aclrtMalloc(&mut p, n, 0) };
    assert_eq!(rc, 0, "aclrtMalloc({n}): {}", recent());
    p
}

/// aclrtMallocHost that must succeed.
pub fn hmalloc(n: usize) -> *mut c_void {
    let mut p = null_mut();
    // SAFETY: valid out pointer.
    let rc = unsafe { cann_sim::mem::aclrtMallocHost(&mut p, n) };
    assert_eq!(rc, 0, "aclrtMallocHost({n}): {}", recent());
    p
}

/// A new stream that must be created.
pub fn new_stream() -> *mut c_void {
    let mut s = null_mut();
    // SAFETY: valid out pointer.
    let rc = unsafe { cann_sim::stream::aclrtCreateStream(&mut s) };
    assert_eq!(rc, 0, "aclrtCreateStream: {}", recent());
    s
}

/// Directory for build products of this test binary.
pub fn scratch() -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cann-sim-tests");
    std::fs::create_dir_all(&d).expect("create scratch dir");
    d
}

/// Compiles C sources with the system C compiler (`CC`, else `cc`); panics with its output on failure.
pub fn cc(args: &[&str], out: &Path) {
    let compiler = std::env::var("CC").unwrap_or_else(|_| "cc".to_string());
    let o = Command::new(&compiler)
        .args(args)
        .arg("-o")
        .arg(out)
        .output()
        .unwrap_or_else(|e| panic!("cannot run the C compiler {compiler:?}: {e}"));
    assert!(
        o.status.success(),
        "{compiler} {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Path of a file under tests/c/.
pub fn c_source(name: &str) -> String {
    format!("{}/tests/c/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// The counters as JSON.
pub fn counters() -> serde_json::Value {
    let mut need = 0usize;
    // SAFETY: NULL buffer asks only for the size.
    let rc = unsafe { cann_sim::counters::cannSimCounters(null_mut(), 0, &mut need) };
    assert_eq!(rc, 100000);
    // Other tests run concurrently and the text may grow between the calls: leave room, retry if needed.
    let mut buf = vec![0u8; need + 4096];
    loop {
        // SAFETY: buffer of `buf.len()` bytes.
        let rc = unsafe {
            cann_sim::counters::cannSimCounters(buf.as_mut_ptr() as *mut _, buf.len(), &mut need)
        };
        if rc == 0 {
            break;
        }
        assert!(
            need > buf.len(),
            "cannSimCounters failed with room to spare: {}",
            recent()
        );
        buf.resize(need + 4096, 0);
    }
    let s = CStr::from_bytes_until_nul(&buf)
        .expect("NUL-terminated")
        .to_str()
        .expect("UTF-8");
    serde_json::from_str(s).expect("counters are JSON")
}

/// The counters object of stream handle `s`.
pub fn stream_counters(s: *mut c_void) -> serde_json::Value {
    let id = cann_sim::handle::id_of(s, cann_sim::stream::HANDLE_BASE);
    counters()["streams"]
        .as_array()
        .expect("streams array")
        .iter()
        .find(|v| v["id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("no counters for stream {id}"))
}
