//! The CANN simulator's own functions (cann-sim's `cann_sim.h`), found in the loaded runtime when it
//! is the simulator and absent on a real toolkit: device-work counters for the benchmark, and fault
//! injection for the tests.

use std::ffi::{c_char, c_int, CString};

type CountersFn = unsafe extern "C" fn(*mut c_char, usize, *mut usize) -> c_int;
type ResetFn = unsafe extern "C" fn();
type InjectFn = unsafe extern "C" fn(*const c_char, u32, i32) -> c_int;

fn sym<F: Copy>(name: &str) -> Option<F> {
    let api = cann_sys::api().ok()?;
    // SAFETY: the types above are cann_sim.h's declarations of these functions.
    unsafe { api.extra_symbol::<F>(name) }
}

/// Whether the loaded runtime is the simulator.
pub fn is_simulator() -> bool {
    sym::<CountersFn>("cannSimCounters").is_some()
}

/// The simulator's counters as JSON (`None` on a real runtime).
pub fn counters() -> Option<serde_json::Value> {
    let f = sym::<CountersFn>("cannSimCounters")?;
    let mut needed = 0usize;
    // SAFETY: a query of the size (NULL-free buffer of capacity 0 is refused, so pass a 1-byte one).
    let mut buf = vec![0u8; 1];
    unsafe { f(buf.as_mut_ptr().cast(), buf.len(), &mut needed) };
    buf.resize(needed.max(1), 0);
    // SAFETY: a buffer of the size asked for.
    if unsafe { f(buf.as_mut_ptr().cast(), buf.len(), &mut needed) } != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    serde_json::from_slice(&buf[..end]).ok()
}

/// Zeroes the simulator's counters (nothing on a real runtime).
pub fn reset_counters() {
    if let Some(f) = sym::<ResetFn>("cannSimResetCounters") {
        // SAFETY: no arguments.
        unsafe { f() }
    }
}

/// Makes the `nth` next call of `name` (a runtime function, an aclnn operator or a kernel) fail with
/// `status`; false on a real runtime.
pub fn inject_fault(name: &str, nth: u32, status: i32) -> bool {
    let (Some(f), Ok(name)) = (sym::<InjectFn>("cannSimInjectFault"), CString::new(name)) else {
        return false;
    };
    // SAFETY: a NUL-terminated name.
    unsafe { f(name.as_ptr(), nth, status) == 0 }
}

/// Disarms every injected fault.
pub fn clear_faults() {
    if let Some(f) = sym::<ResetFn>("cannSimClearFaults") {
        // SAFETY: no arguments.
        unsafe { f() }
    }
}
