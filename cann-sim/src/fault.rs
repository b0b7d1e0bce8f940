//! Fault injection: make the Nth call of an API, operator or kernel fail with a chosen status, so that a
//! program's error paths can be tested (`cannSimInjectFault` in `include/cann_sim.h`).

use std::collections::HashMap;
use std::ffi::{c_char, CStr};
use std::sync::Mutex;

use crate::codes::{ACL_ERROR_INVALID_PARAM, ACL_SUCCESS};

struct Armed {
    /// Calls still to pass before the failing one (0 = the next call fails).
    remaining: u32,
    status: i32,
}

static ARMED: Mutex<Option<HashMap<String, Armed>>> = Mutex::new(None);

/// Arms a fault: the `nth` (1-based) next call named `name` fails with `status`; `nth == 0` disarms it.
pub fn inject(name: &str, nth: u32, status: i32) {
    let mut g = ARMED.lock().unwrap_or_else(|e| e.into_inner());
    let map = g.get_or_insert_with(HashMap::new);
    if nth == 0 {
        map.remove(name);
    } else {
        map.insert(
            name.to_string(),
            Armed {
                remaining: nth - 1,
                status,
            },
        );
    }
}

/// Called by every fault-injectable entry point (API calls by their C name, aclnn operators by their
/// `aclnnXxx` name, kernels by their `extern "C"` name) before it does its work: `Some(status)` when this is
/// the armed call, which then fails with that status. A fault fires once.
pub fn take(name: &str) -> Option<i32> {
    let mut g = ARMED.lock().unwrap_or_else(|e| e.into_inner());
    let map = g.as_mut()?;
    let armed = map.get_mut(name)?;
    if armed.remaining > 0 {
        armed.remaining -= 1;
        return None;
    }
    let status = armed.status;
    map.remove(name);
    Some(status)
}

/// Disarms every fault.
pub fn clear() {
    *ARMED.lock().unwrap_or_else(|e| e.into_inner()) = None;
}

/// C entry: see `cannSimInjectFault` in `include/cann_sim.h`.
#[no_mangle]
pub unsafe extern "C" fn cannSimInjectFault(name: *const c_char, nth: u32, status: i32) -> i32 {
    if name.is_null() {
        return crate::errors::fail(
            "cannSimInjectFault",
            ACL_ERROR_INVALID_PARAM,
            "name is NULL",
        );
    }
    let Ok(name) = CStr::from_ptr(name).to_str() else {
        return crate::errors::fail(
            "cannSimInjectFault",
            ACL_ERROR_INVALID_PARAM,
            "name is not UTF-8",
        );
    };
    if status == ACL_SUCCESS && nth != 0 {
        return crate::errors::fail(
            "cannSimInjectFault",
            ACL_ERROR_INVALID_PARAM,
            "status 0 is not a fault",
        );
    }
    inject(name, nth, status);
    ACL_SUCCESS
}

/// C entry: see `cannSimClearFaults` in `include/cann_sim.h`.
#[no_mangle]
pub extern "C" fn cannSimClearFaults() {
    clear();
}

/// Returns the injected status of `name` with the message set, for entry points that return at once.
pub fn injected(name: &str) -> Option<i32> {
    take(name).map(|s| crate::errors::fail(name, s, "fault injected by cannSimInjectFault"))
}
