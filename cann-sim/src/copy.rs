//! Copies and memsets (hicann/runtime `docs/zh/api_ref/11-03_memory_copy_and_set.md`).
//!
//! Each device side is checked to lie inside one live allocation, and `count <= destMax`. A synchronous
//! copy runs at once on the calling thread: it is not ordered after work queued on streams, so a program
//! must synchronise first (in delay mode a missing synchronisation gives stale data). An asynchronous copy is
//! a stream task; when its host side is pageable (not from aclrtMallocHost) the call returns only after the
//! copy has run, as documented for pageable memory.

use std::ffi::c_void;

use crate::codes::*;
use crate::errors::fail;
use crate::stream::{self, CopyDir, Task, TaskKind};
use crate::{counters, mem, runtime};

/// aclrtMemcpyKind (25-02_Enumerations.md).
const ACL_MEMCPY_HOST_TO_HOST: u32 = 0;
const ACL_MEMCPY_HOST_TO_DEVICE: u32 = 1;
const ACL_MEMCPY_DEVICE_TO_HOST: u32 = 2;
const ACL_MEMCPY_DEVICE_TO_DEVICE: u32 = 3;
const ACL_MEMCPY_DEFAULT: u32 = 4;

/// A validated copy.
#[derive(Clone, Copy)]
struct Plan {
    dst: u64,
    src: u64,
    count: u64,
    dir: CopyDir,
}

fn plan(
    dst: *mut c_void,
    dest_max: usize,
    src: *const c_void,
    count: usize,
    kind: u32,
) -> Result<Plan, (i32, String)> {
    let bad = |m: String| Err((ACL_ERROR_INVALID_PARAM, m));
    if count > dest_max {
        return bad(format!("count {count} exceeds destMax {dest_max}"));
    }
    if dst.is_null() || src.is_null() {
        return bad("dst or src is NULL".to_string());
    }
    let (d, s) = (dst as u64, src as u64);
    let (dd, sd) = (mem::is_device_addr(d), mem::is_device_addr(s));
    let dir = match kind {
        ACL_MEMCPY_HOST_TO_HOST => CopyDir::H2H,
        ACL_MEMCPY_HOST_TO_DEVICE => CopyDir::H2D,
        ACL_MEMCPY_DEVICE_TO_HOST => CopyDir::D2H,
        ACL_MEMCPY_DEVICE_TO_DEVICE => CopyDir::D2D,
        ACL_MEMCPY_DEFAULT => match (sd, dd) {
            (false, false) => CopyDir::H2H,
            (false, true) => CopyDir::H2D,
            (true, false) => CopyDir::D2H,
            (true, true) => CopyDir::D2D,
        },
        k => {
            return bad(format!(
                "kind {k} is not a supported aclrtMemcpyKind (0..=4)"
            ))
        }
    };
    let (want_dd, want_sd) = match dir {
        CopyDir::H2H => (false, false),
        CopyDir::H2D => (true, false),
        CopyDir::D2H => (false, true),
        CopyDir::D2D => (true, true),
    };
    let side = |is_dev: bool| {
        if is_dev {
            "a device address"
        } else {
            "a host address"
        }
    };
    if dd != want_dd {
        return bad(format!(
            "dst 0x{d:x} is {} but the copy is {}",
            side(dd),
            dir.name()
        ));
    }
    if sd != want_sd {
        return bad(format!(
            "src 0x{s:x} is {} but the copy is {}",
            side(sd),
            dir.name()
        ));
    }
    let p = Plan {
        dst: d,
        src: s,
        count: count as u64,
        dir,
    };
    check(&p).map_err(|m| (ACL_ERROR_INVALID_PARAM, m))?;
    Ok(p)
}

fn check(p: &Plan) -> Result<(), String> {
    if matches!(p.dir, CopyDir::H2D | CopyDir::D2D) {
        mem::check_range(p.dst, p.count).map_err(|m| format!("dst {m}"))?;
    }
    if matches!(p.dir, CopyDir::D2H | CopyDir::D2D) {
        mem::check_range(p.src, p.count).map_err(|m| format!("src {m}"))?;
    }
    Ok(())
}

/// Performs a checked copy (re-checked here: an async copy's memory may have been freed since the call).
fn execute(p: Plan) -> Result<(), String> {
    check(&p)?;
    // SAFETY: device sides passed check_range just above, so their shadow bytes are mapped; host sides are
    // the caller's memory of at least `count` bytes, as the API requires.
    unsafe {
        let d = if matches!(p.dir, CopyDir::H2D | CopyDir::D2D) {
            mem::shadow(p.dst)
        } else {
            p.dst as *mut u8
        };
        let s = if matches!(p.dir, CopyDir::D2H | CopyDir::D2D) {
            mem::shadow(p.src) as *const u8
        } else {
            p.src as *const u8
        };
        std::ptr::copy(s, d, p.count as usize);
    }
    Ok(())
}

fn device_bytes(p: &Plan) -> (u64, u64) {
    let r = if matches!(p.dir, CopyDir::D2H | CopyDir::D2D) {
        p.count
    } else {
        0
    };
    let w = if matches!(p.dir, CopyDir::H2D | CopyDir::D2D) {
        p.count
    } else {
        0
    };
    (r, w)
}

/// aclrtMemcpy: synchronous copy, not ordered with stream work.
#[no_mangle]
pub unsafe extern "C" fn aclrtMemcpy(
    dst: *mut c_void,
    dest_max: usize,
    src: *const c_void,
    count: usize,
    kind: u32,
) -> i32 {
    let call = "aclrtMemcpy";
    if let Err(c) = runtime::current_context(call) {
        return c;
    }
    if count == 0 {
        return ACL_SUCCESS;
    }
    let p = match plan(dst, dest_max, src, count, kind) {
        Ok(p) => p,
        Err((c, m)) => return fail(call, c, m),
    };
    if let Some(s) = crate::fault::injected(call) {
        return s;
    }
    match execute(p) {
        Ok(()) => {
            counters::note_sync_copy(p.dir.name(), p.count);
            ACL_SUCCESS
        }
        Err(m) => fail(call, ACL_ERROR_INVALID_PARAM, m),
    }
}

/// aclrtMemcpyAsync: a copy task on `stream`; blocks until done when the host side is pageable.
#[no_mangle]
pub unsafe extern "C" fn aclrtMemcpyAsync(
    dst: *mut c_void,
    dest_max: usize,
    src: *const c_void,
    count: usize,
    kind: u32,
    stream_h: *mut c_void,
) -> i32 {
    let call = "aclrtMemcpyAsync";
    let s = match stream::resolve(call, stream_h) {
        Ok(s) => s,
        Err(c) => return c,
    };
    if count == 0 {
        return ACL_SUCCESS;
    }
    let p = match plan(dst, dest_max, src, count, kind) {
        Ok(p) => p,
        Err((c, m)) => return fail(call, c, m),
    };
    if let Some(st) = crate::fault::injected(call) {
        return st;
    }
    let pageable = match p.dir {
        CopyDir::H2D => !mem::is_pinned(p.src, p.count),
        CopyDir::D2H => !mem::is_pinned(p.dst, p.count),
        CopyDir::H2H => !mem::is_pinned(p.src, p.count) || !mem::is_pinned(p.dst, p.count),
        CopyDir::D2D => false,
    };
    let (r, w) = device_bytes(&p);
    let task = Task {
        kind: TaskKind::Copy(p.dir),
        bytes_read: r,
        bytes_written: w,
        run: Box::new(move || execute(p)),
    };
    counters::add_copy_bytes(&s.counters, p.dir.name(), p.count);
    match s.push_task(task) {
        Ok(seq) => {
            if pageable {
                counters::note_pageable(&s.counters);
                s.wait_for(seq);
            }
            ACL_SUCCESS
        }
        Err(m) => fail(call, ACL_ERROR_INVALID_PARAM, m),
    }
}

fn memset_plan(
    dev: *mut c_void,
    max_count: usize,
    count: usize,
) -> Result<(u64, u64), (i32, String)> {
    if dev.is_null() {
        return Err((ACL_ERROR_INVALID_PARAM, "devPtr is NULL".to_string()));
    }
    if count > max_count {
        return Err((
            ACL_ERROR_INVALID_PARAM,
            format!("count {count} exceeds maxCount {max_count}"),
        ));
    }
    mem::check_range(dev as u64, count as u64).map_err(|m| (ACL_ERROR_INVALID_PARAM, m))?;
    Ok((dev as u64, count as u64))
}

fn memset_run(addr: u64, count: u64, value: i32) -> Result<(), String> {
    mem::check_range(addr, count)?;
    // SAFETY: the range passed check_range just above.
    unsafe { std::ptr::write_bytes(mem::shadow(addr), value as u8, count as usize) };
    Ok(())
}

/// aclrtMemset: sets `count` device bytes to `value` (its low byte), synchronously.
#[no_mangle]
pub unsafe extern "C" fn aclrtMemset(
    dev: *mut c_void,
    max_count: usize,
    value: i32,
    count: usize,
) -> i32 {
    let call = "aclrtMemset";
    if let Err(c) = runtime::current_context(call) {
        return c;
    }
    let (a, n) = match memset_plan(dev, max_count, count) {
        Ok(x) => x,
        Err((c, m)) => return fail(call, c, m),
    };
    match memset_run(a, n, value) {
        Ok(()) => {
            counters::note_sync_memset();
            ACL_SUCCESS
        }
        Err(m) => fail(call, ACL_ERROR_INVALID_PARAM, m),
    }
}

/// aclrtMemsetAsync: a memset task on `stream`.
#[no_mangle]
pub unsafe extern "C" fn aclrtMemsetAsync(
    dev: *mut c_void,
    max_count: usize,
    value: i32,
    count: usize,
    stream_h: *mut c_void,
) -> i32 {
    let call = "aclrtMemsetAsync";
    let s = match stream::resolve(call, stream_h) {
        Ok(s) => s,
        Err(c) => return c,
    };
    let (a, n) = match memset_plan(dev, max_count, count) {
        Ok(x) => x,
        Err((c, m)) => return fail(call, c, m),
    };
    let task = Task {
        kind: TaskKind::Memset,
        bytes_read: 0,
        bytes_written: n,
        run: Box::new(move || memset_run(a, n, value)),
    };
    match s.push_task(task) {
        Ok(_) => ACL_SUCCESS,
        Err(m) => fail(call, ACL_ERROR_INVALID_PARAM, m),
    }
}
