//! The one error type of cann-sys: a failed load, a missing symbol, a failed call (with the runtime's
//! own message), or an argument refused before any call was made.

use std::ffi::CStr;

/// Result of every fallible cann-sys operation.
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong between the engine and the CANN runtime.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// A library could not be found or opened.
    #[error("CANN runtime not available: cannot load {library}; looked in: {}", .looked.join("; "))]
    Load {
        /// The library that was wanted (e.g. `libascendcl.so`).
        library: String,
        /// Each place tried, with the loader's answer.
        looked: Vec<String>,
    },
    /// A symbol is in none of the loaded libraries.
    #[error("symbol {symbol} not found in any loaded CANN library ({})", .libraries.join(", "))]
    Symbol {
        /// The C function name.
        symbol: &'static str,
        /// The libraries searched, in order.
        libraries: Vec<String>,
    },
    /// A CANN call returned a non-zero status.
    #[error("{call} failed with status {status}: {message}")]
    Call {
        /// The C function that failed.
        call: String,
        /// Its return value (`aclError` / `aclnnStatus`).
        status: i32,
        /// `aclGetRecentErrMsg()` right after the failure, or a note that it gave nothing.
        message: String,
    },
    /// A call that returns a handle returned NULL.
    #[error("{call} returned NULL: {message}")]
    Null {
        /// The C function.
        call: &'static str,
        /// `aclGetRecentErrMsg()` right after it.
        message: String,
    },
    /// An argument refused by cann-sys before calling CANN.
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    /// The CANN status of a failed call, if that is what this error is.
    pub fn status(&self) -> Option<i32> {
        match self {
            Error::Call { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// The runtime's text for the last failure on this thread.
pub(crate) fn recent_message(api: &crate::Api) -> String {
    // SAFETY: aclGetRecentErrMsg takes no arguments and returns NULL or a NUL-terminated string that stays
    // valid until the next ACL call on this thread; it is copied at once.
    let text = unsafe { (api.aclGetRecentErrMsg)() };
    if text.is_null() {
        return "(aclGetRecentErrMsg gave no message)".to_string();
    }
    // SAFETY: non-NULL, NUL-terminated per the documentation.
    let text = unsafe { CStr::from_ptr(text) }
        .to_string_lossy()
        .trim()
        .to_string();
    if text.is_empty() {
        "(aclGetRecentErrMsg gave an empty message)".to_string()
    } else {
        text
    }
}

/// Turns a status into `Ok(())` or an [`Error::Call`] carrying the runtime's message.
pub fn check(api: &crate::Api, call: &str, status: i32) -> Result<()> {
    if status == 0 {
        return Ok(());
    }
    Err(Error::Call {
        call: call.to_string(),
        status,
        message: recent_message(api),
    })
}
