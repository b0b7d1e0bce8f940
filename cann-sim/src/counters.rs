//! Counters per stream and for the process, read by `cannSimCounters` (JSON) and written as the report
//! (`CANN_SIM_REPORT=FILE`) at aclFinalize and at exit.

use std::collections::BTreeMap;
use std::ffi::c_char;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use crate::codes::*;
use crate::stream::{Task, TaskKind};

/// What one stream did.
#[derive(Default, Debug, Clone)]
pub struct StreamCounters {
    /// aclnn operator launches by name.
    pub ops: BTreeMap<String, u64>,
    /// Kernel launches by name.
    pub kernels: BTreeMap<String, u64>,
    /// Tasks of every kind enqueued.
    pub tasks: u64,
    /// Device bytes read by the stream's tasks.
    pub bytes_read: u64,
    /// Device bytes written by the stream's tasks.
    pub bytes_written: u64,
    /// Copy bytes by direction: h2h, h2d, d2h, d2d.
    pub copy_bytes: BTreeMap<&'static str, u64>,
    /// Copies by direction.
    pub copies: BTreeMap<&'static str, u64>,
    /// Memsets.
    pub memsets: u64,
    /// Host synchronisations on this stream (aclrtSynchronizeStream, and each stream of a device sync).
    pub host_syncs: u64,
    /// Tasks not run because an earlier task on the stream failed.
    pub skipped_after_error: u64,
    /// Asynchronous copies that blocked because their host side was pageable.
    pub pageable_async_copies: u64,
}

#[derive(Default)]
struct Global {
    streams: Vec<(u64, bool, Arc<Mutex<StreamCounters>>)>,
    /// Synchronous (aclrtMemcpy / aclrtMemset) traffic, which belongs to no stream.
    sync_copy_bytes: BTreeMap<&'static str, u64>,
    sync_copies: BTreeMap<&'static str, u64>,
    sync_memsets: u64,
    device_syncs: u64,
    event_syncs: u64,
    allocations: u64,
    errors: Vec<String>,
    leaks: Vec<Value>,
}

static GLOBAL: Mutex<Option<Global>> = Mutex::new(None);

fn with<R>(f: impl FnOnce(&mut Global) -> R) -> R {
    let mut g = GLOBAL.lock().unwrap_or_else(|e| e.into_inner());
    f(g.get_or_insert_with(Global::default))
}

fn lock(c: &Mutex<StreamCounters>) -> std::sync::MutexGuard<'_, StreamCounters> {
    c.lock().unwrap_or_else(|e| e.into_inner())
}

/// Creates the counters of a new stream.
pub fn register_stream(id: u64) -> Arc<Mutex<StreamCounters>> {
    let c = Arc::new(Mutex::new(StreamCounters::default()));
    with(|g| g.streams.push((id, false, Arc::clone(&c))));
    c
}

/// Marks a stream destroyed (its counters stay in the report).
pub fn mark_destroyed(id: u64) {
    with(|g| {
        for s in g.streams.iter_mut().filter(|s| s.0 == id) {
            s.1 = true;
        }
    })
}

/// Counts a task at enqueue.
pub fn count_task(c: &Mutex<StreamCounters>, t: &Task) {
    let mut c = lock(c);
    c.tasks += 1;
    c.bytes_read += t.bytes_read;
    c.bytes_written += t.bytes_written;
    match &t.kind {
        TaskKind::Op(n) => *c.ops.entry((*n).to_string()).or_default() += 1,
        TaskKind::Kernel(n) => *c.kernels.entry(n.clone()).or_default() += 1,
        // Bytes by direction come from `add_copy_bytes`: a host-to-host copy touches no device bytes.
        TaskKind::Copy(d) => *c.copies.entry(d.name()).or_default() += 1,
        TaskKind::Memset => c.memsets += 1,
        TaskKind::Other(_) => {}
    }
}

/// Counts the bytes of an asynchronous copy enqueued on the stream.
pub fn add_copy_bytes(c: &Mutex<StreamCounters>, dir: &'static str, bytes: u64) {
    *lock(c).copy_bytes.entry(dir).or_default() += bytes;
}

/// Adds bytes a kernel touched, known only once it has run.
pub fn add_kernel_bytes(c: &Mutex<StreamCounters>, read: u64, written: u64) {
    let mut c = lock(c);
    c.bytes_read += read;
    c.bytes_written += written;
}

/// Counts an asynchronous copy that blocked on pageable host memory.
pub fn note_pageable(c: &Mutex<StreamCounters>) {
    lock(c).pageable_async_copies += 1;
}

/// Counts a synchronous copy.
pub fn note_sync_copy(dir: &'static str, bytes: u64) {
    with(|g| {
        *g.sync_copies.entry(dir).or_default() += 1;
        *g.sync_copy_bytes.entry(dir).or_default() += bytes;
    })
}

/// Counts a synchronous memset.
pub fn note_sync_memset() {
    with(|g| g.sync_memsets += 1)
}

/// Counts an aclrtSynchronizeDevice.
pub fn note_device_sync() {
    with(|g| g.device_syncs += 1)
}

/// Counts an aclrtSynchronizeEvent.
pub fn note_event_sync() {
    with(|g| g.event_syncs += 1)
}

/// Counts a device allocation.
pub fn note_alloc() {
    with(|g| g.allocations += 1)
}

/// Keeps a stream failure's message for the report (the first 1000).
pub fn note_error(msg: &str) {
    with(|g| {
        if g.errors.len() < 1000 {
            g.errors.push(msg.to_string());
        }
    })
}

/// Records a leaked block or a pending error found at reset/finalize.
pub fn note_leak(v: Value) {
    with(|g| g.leaks.push(v))
}

/// Everything as one JSON object.
pub fn snapshot() -> Value {
    let (capacity, in_use, peak) = crate::mem::usage();
    with(|g| {
        let streams: Vec<Value> = g
            .streams
            .iter()
            .map(|(id, destroyed, c)| {
                let c = lock(c).clone();
                json!({
                    "id": id,
                    "destroyed": destroyed,
                    "ops": c.ops,
                    "kernel_launches": c.kernels,
                    "tasks": c.tasks,
                    "bytes_read": c.bytes_read,
                    "bytes_written": c.bytes_written,
                    "copy_bytes": c.copy_bytes,
                    "copies": c.copies,
                    "memsets": c.memsets,
                    "host_syncs": c.host_syncs,
                    "skipped_after_error": c.skipped_after_error,
                    "pageable_async_copies": c.pageable_async_copies,
                })
            })
            .collect();
        json!({
            "simulator": "cann-sim",
            "streams": streams,
            "sync_copy_bytes": g.sync_copy_bytes,
            "sync_copies": g.sync_copies,
            "sync_memsets": g.sync_memsets,
            "device_syncs": g.device_syncs,
            "event_syncs": g.event_syncs,
            "memory": {"capacity": capacity, "in_use": in_use, "peak": peak, "allocations": g.allocations},
            "errors": g.errors,
            "leaks": g.leaks,
        })
    })
}

/// Zeroes every counter (streams stay registered; destroyed ones are dropped).
pub fn reset() {
    with(|g| {
        g.streams.retain(|s| !s.1);
        for (_, _, c) in &g.streams {
            *lock(c) = StreamCounters::default();
        }
        let streams = std::mem::take(&mut g.streams);
        *g = Global {
            streams,
            ..Global::default()
        };
    })
}

/// Writes the report to `path`; a failure is printed, never fatal.
pub fn write_report(path: &std::path::Path) {
    let text = serde_json::to_string_pretty(&snapshot()).unwrap_or_default();
    let tmp = path.with_extension("tmp-cann-sim");
    let r = std::fs::write(&tmp, text + "\n").and_then(|_| std::fs::rename(&tmp, path));
    if let Err(e) = r {
        eprintln!(
            "cann-sim: cannot write the report CANN_SIM_REPORT={}: {e}",
            path.display()
        );
    }
}

/// C entry: see `cannSimCounters` in `include/cann_sim.h`.
#[no_mangle]
pub unsafe extern "C" fn cannSimCounters(json: *mut c_char, cap: usize, needed: *mut usize) -> i32 {
    let text = snapshot().to_string();
    let n = text.len() + 1;
    if !needed.is_null() {
        *needed = n;
    }
    if json.is_null() || cap < n {
        return crate::errors::fail(
            "cannSimCounters",
            ACL_ERROR_INVALID_PARAM,
            format!("buffer of {cap} bytes is too small: {n} needed"),
        );
    }
    std::ptr::copy_nonoverlapping(text.as_ptr(), json as *mut u8, text.len());
    *json.add(text.len()) = 0;
    ACL_SUCCESS
}

/// C entry: see `cannSimResetCounters` in `include/cann_sim.h`.
#[no_mangle]
pub extern "C" fn cannSimResetCounters() {
    reset();
}
