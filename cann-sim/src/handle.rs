//! Opaque C handles (streams, events, contexts, binaries, functions, argument lists): a per-kind base plus a
//! never-reused id, so that a handle of a destroyed object is recognised instead of aliasing a new one, and
//! no handle is a dereferenceable host address.

use std::ffi::c_void;

/// Handle of object `id` of the kind starting at `base`.
pub fn make(base: u64, id: u64) -> *mut c_void {
    (base + id) as *mut c_void
}

/// Id behind a handle of the kind starting at `base` (0, which no object has, for anything else).
pub fn id_of(h: *const c_void, base: u64) -> u64 {
    (h as u64).saturating_sub(base)
}
