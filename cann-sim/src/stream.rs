//! Streams: one worker thread each, running its work in order (hicann/runtime
//! `docs/zh/api_ref/06_stream_management.md`). A task that fails leaves a sticky error on its stream; the next
//! synchronisation reports it (status and message) and clears it, and the stream's tasks that were queued
//! behind the failure are skipped, as later work on a faulted device stream does not run.

use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::codes::*;
use crate::counters::{self, StreamCounters};
use crate::errors::fail;
use crate::runtime;

/// Direction of a copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CopyDir {
    /// Host to host.
    H2H,
    /// Host to device.
    H2D,
    /// Device to host.
    D2H,
    /// Device to device.
    D2D,
}

impl CopyDir {
    /// Short name used in counters and messages.
    pub fn name(self) -> &'static str {
        match self {
            CopyDir::H2H => "h2h",
            CopyDir::H2D => "h2d",
            CopyDir::D2H => "d2h",
            CopyDir::D2D => "d2d",
        }
    }
}

/// What a task is, for the counters and for the status of its failure.
#[derive(Clone, Debug)]
pub enum TaskKind {
    /// An aclnn operator (its `aclnnXxx` name).
    Op(&'static str),
    /// A kernel launched through aclrtLaunchKernel*, by its `extern "C"` name.
    Kernel(String),
    /// A copy.
    Copy(CopyDir),
    /// A memset.
    Memset,
    /// Anything else (named).
    Other(&'static str),
}

impl TaskKind {
    /// Status a failure of this kind of task reports at synchronisation.
    fn failure_code(&self) -> i32 {
        match self {
            TaskKind::Op(_) | TaskKind::Kernel(_) => ACL_ERROR_RT_AICORE_EXCEPTION,
            TaskKind::Copy(_) | TaskKind::Memset => ACL_ERROR_RT_SYS_DMA,
            TaskKind::Other(_) => ACL_ERROR_RT_INTERNAL_ERROR,
        }
    }

    fn describe(&self) -> String {
        match self {
            TaskKind::Op(n) => format!("operator {n}"),
            TaskKind::Kernel(n) => format!("kernel {n}"),
            TaskKind::Copy(d) => format!("{} copy", d.name()),
            TaskKind::Memset => "memset".to_string(),
            TaskKind::Other(n) => (*n).to_string(),
        }
    }
}

/// A unit of work on a stream. `run` executes on the stream's worker thread, in order with the stream's other
/// work; an Err(message) becomes the stream's sticky error: the next aclrtSynchronizeStream /
/// aclrtSynchronizeDevice / aclrtSynchronizeEvent returns ACL_ERROR_RT_AICORE_EXCEPTION (operators, kernels)
/// or ACL_ERROR_RT_SYS_DMA (copies, memsets) and aclGetRecentErrMsg() gives the message.
pub struct Task {
    /// What the task is.
    pub kind: TaskKind,
    /// Bytes of device memory the task reads (for the counters).
    pub bytes_read: u64,
    /// Bytes of device memory the task writes (for the counters).
    pub bytes_written: u64,
    /// The work.
    pub run: Box<dyn FnOnce() -> Result<(), String> + Send>,
}

enum Item {
    Task(Task),
    /// Event records and waits: they run even behind a failure, so that nothing waiting on them hangs.
    Control(Box<dyn FnOnce() + Send>),
}

#[derive(Default)]
struct State {
    enqueued: u64,
    done: u64,
    error: Option<(i32, String)>,
}

/// One stream.
pub struct Stream {
    /// Stream number (1-based, never reused); also in counters and messages.
    pub id: u64,
    /// Context the stream belongs to.
    pub context: u64,
    tx: Mutex<Option<mpsc::Sender<Item>>>,
    state: Mutex<State>,
    cv: Condvar,
    worker: Mutex<Option<JoinHandle<()>>>,
    /// This stream's counters.
    pub counters: Arc<Mutex<StreamCounters>>,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);
static DELAY_US: AtomicU64 = AtomicU64::new(0);
static STREAMS: Mutex<Option<HashMap<u64, Arc<Stream>>>> = Mutex::new(None);

/// Base of stream handles (see [`crate::handle`]).
pub const HANDLE_BASE: u64 = 0x5354_0000_0000;

/// Sets the delay every task sleeps before it runs (`CANN_SIM_DELAY_US`).
pub fn set_delay_us(us: u64) {
    DELAY_US.store(us, Ordering::Relaxed);
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Stream {
    /// Creates a stream of `context` with its worker thread.
    pub fn spawn(context: u64) -> Result<Arc<Stream>, String> {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel::<Item>();
        let counters = counters::register_stream(id);
        let s = Arc::new(Stream {
            id,
            context,
            tx: Mutex::new(Some(tx)),
            state: Mutex::new(State::default()),
            cv: Condvar::new(),
            worker: Mutex::new(None),
            counters,
        });
        let w = Arc::clone(&s);
        let h = std::thread::Builder::new()
            .name(format!("cann-sim-stream-{id}"))
            .spawn(move || w.work(rx))
            .map_err(|e| format!("cannot start the worker thread of stream {id}: {e}"))?;
        *lock(&s.worker) = Some(h);
        lock(&STREAMS)
            .get_or_insert_with(HashMap::new)
            .insert(id, Arc::clone(&s));
        Ok(s)
    }

    fn work(&self, rx: mpsc::Receiver<Item>) {
        while let Ok(item) = rx.recv() {
            let delay = DELAY_US.load(Ordering::Relaxed);
            if delay > 0 {
                std::thread::sleep(Duration::from_micros(delay));
            }
            match item {
                Item::Control(f) => f(),
                Item::Task(t) => {
                    let failed = lock(&self.state).error.is_some();
                    if failed {
                        lock(&self.counters).skipped_after_error += 1;
                    } else {
                        let kind = t.kind.clone();
                        // A panicking task must not take the worker (and every later sync) down with it.
                        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(t.run))
                            .unwrap_or_else(|_| Err("the simulator's task panicked".to_string()));
                        if let Err(msg) = r {
                            let m =
                                format!("{} failed on stream {}: {msg}", kind.describe(), self.id);
                            counters::note_error(&m);
                            lock(&self.state).error = Some((kind.failure_code(), m));
                        }
                    }
                }
            }
            let mut st = lock(&self.state);
            st.done += 1;
            self.cv.notify_all();
        }
    }

    fn push(&self, item: Item) -> Result<u64, String> {
        let tx = lock(&self.tx);
        let Some(tx) = tx.as_ref() else {
            return Err(format!("stream {} is destroyed", self.id));
        };
        let seq = {
            let mut st = lock(&self.state);
            st.enqueued += 1;
            st.enqueued
        };
        if tx.send(item).is_err() {
            let mut st = lock(&self.state);
            st.enqueued -= 1;
            return Err(format!("stream {} has no worker", self.id));
        }
        Ok(seq)
    }

    /// Enqueues a task, counting it; returns its sequence number.
    pub fn push_task(&self, task: Task) -> Result<u64, String> {
        counters::count_task(&self.counters, &task);
        self.push(Item::Task(task))
    }

    /// Enqueues an event record or wait; returns its sequence number.
    pub fn push_control(&self, f: Box<dyn FnOnce() + Send>) -> Result<u64, String> {
        self.push(Item::Control(f))
    }

    /// Blocks until the item with sequence number `seq` (and all before it) has run.
    pub fn wait_for(&self, seq: u64) {
        let mut st = lock(&self.state);
        while st.done < seq {
            st = self.cv.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Like [`Stream::wait_for`] but gives up after `limit`; true when the item has run.
    pub fn wait_for_until(&self, seq: u64, limit: Duration) -> bool {
        let deadline = std::time::Instant::now() + limit;
        let mut st = lock(&self.state);
        while st.done < seq {
            let now = std::time::Instant::now();
            if now >= deadline {
                return false;
            }
            st = self
                .cv
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }

    /// Blocks until everything enqueued so far has run.
    pub fn wait_idle(&self) {
        let target = lock(&self.state).enqueued;
        self.wait_for(target);
    }

    /// Whether everything enqueued so far has run.
    pub fn is_idle(&self) -> bool {
        let st = lock(&self.state);
        st.done == st.enqueued
    }

    /// Takes the sticky error, if any.
    pub fn take_error(&self) -> Option<(i32, String)> {
        lock(&self.state).error.take()
    }

    /// Waits for the stream, counts a host synchronisation, and reports (and clears) its sticky error.
    pub fn synchronize(&self, call: &str) -> i32 {
        self.wait_idle();
        lock(&self.counters).host_syncs += 1;
        match self.take_error() {
            Some((code, msg)) => fail(call, code, msg),
            None => ACL_SUCCESS,
        }
    }

    /// Drains and stops the worker; the stream leaves the registry. Returns a sticky error still pending.
    pub fn shut_down(&self) -> Option<(i32, String)> {
        self.wait_idle();
        lock(&self.tx).take();
        if let Some(h) = lock(&self.worker).take() {
            let _ = h.join();
        }
        if let Some(m) = lock(&STREAMS).as_mut() {
            m.remove(&self.id);
        }
        counters::mark_destroyed(self.id);
        self.take_error()
    }

    /// The C handle of this stream.
    pub fn handle(&self) -> *mut c_void {
        crate::handle::make(HANDLE_BASE, self.id)
    }
}

/// Looks up a stream handle; null means the current context's default stream.
pub fn resolve(call: &str, handle: *mut c_void) -> Result<Arc<Stream>, i32> {
    let ctx = runtime::current_context(call)?;
    if handle.is_null() {
        return Ok(Arc::clone(&ctx.default_stream));
    }
    let h = handle as u64;
    let id = crate::handle::id_of(handle, HANDLE_BASE);
    let found = lock(&STREAMS).as_ref().and_then(|m| m.get(&id).cloned());
    found.ok_or_else(|| {
        fail(
            call,
            ACL_ERROR_INVALID_PARAM,
            format!("stream 0x{h:x} is not a live stream (destroyed, or never created)"),
        )
    })
}

/// Enqueues on `stream` (null = the current context's default stream). Returns an aclError
/// (ACL_ERROR_INVALID_PARAM for a bad or destroyed stream, ACL_ERROR_RT_CONTEXT_NULL without a context).
pub fn enqueue(stream: *mut c_void, task: Task) -> i32 {
    match resolve("enqueue", stream) {
        Ok(s) => match s.push_task(task) {
            Ok(_) => ACL_SUCCESS,
            Err(m) => fail("enqueue", ACL_ERROR_INVALID_PARAM, m),
        },
        Err(code) => code,
    }
}

/// Every live stream of `context`.
pub fn streams_of(context: u64) -> Vec<Arc<Stream>> {
    let g = lock(&STREAMS);
    let mut v: Vec<Arc<Stream>> = g
        .as_ref()
        .map(|m| {
            m.values()
                .filter(|s| s.context == context)
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    v.sort_by_key(|s| s.id);
    v
}

/// aclrtCreateStream (06_stream_management.md): a stream in the current context.
#[no_mangle]
pub unsafe extern "C" fn aclrtCreateStream(stream: *mut *mut c_void) -> i32 {
    create("aclrtCreateStream", stream)
}

/// aclrtCreateStreamWithConfig (06_stream_management.md); priority and flags do not change the simulation.
#[no_mangle]
pub unsafe extern "C" fn aclrtCreateStreamWithConfig(
    stream: *mut *mut c_void,
    _priority: u32,
    _flag: u32,
) -> i32 {
    create("aclrtCreateStreamWithConfig", stream)
}

unsafe fn create(call: &str, out: *mut *mut c_void) -> i32 {
    let ctx = match runtime::current_context(call) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if out.is_null() {
        return fail(call, ACL_ERROR_INVALID_PARAM, "stream is NULL");
    }
    match Stream::spawn(ctx.id) {
        Ok(s) => {
            *out = s.handle();
            ACL_SUCCESS
        }
        Err(m) => fail(call, ACL_ERROR_RT_INTERNAL_ERROR, m),
    }
}

/// aclrtDestroyStream: waits for the stream's work, then destroys it. A sticky error still pending is
/// returned here rather than lost. The default stream of a context cannot be destroyed.
#[no_mangle]
pub unsafe extern "C" fn aclrtDestroyStream(stream: *mut c_void) -> i32 {
    let call = "aclrtDestroyStream";
    if stream.is_null() {
        return fail(call, ACL_ERROR_INVALID_PARAM, "stream is NULL");
    }
    let s = match resolve(call, stream) {
        Ok(s) => s,
        Err(code) => return code,
    };
    if runtime::is_default_stream(s.id) {
        return fail(
            call,
            ACL_ERROR_INVALID_PARAM,
            "the default stream of a context cannot be destroyed",
        );
    }
    match s.shut_down() {
        Some((code, msg)) => fail(call, code, msg),
        None => ACL_SUCCESS,
    }
}

/// aclrtSynchronizeStreamWithTimeout: as aclrtSynchronizeStream, waiting at most `timeout` ms (-1: no
/// limit); when the time runs out it returns ACL_ERROR_RT_STREAM_SYNC_TIMEOUT and the work keeps running.
#[no_mangle]
pub unsafe extern "C" fn aclrtSynchronizeStreamWithTimeout(
    stream: *mut c_void,
    timeout: i32,
) -> i32 {
    let call = "aclrtSynchronizeStreamWithTimeout";
    let s = match resolve(call, stream) {
        Ok(s) => s,
        Err(code) => return code,
    };
    if timeout == -1 {
        return s.synchronize(call);
    }
    if timeout <= 0 {
        return fail(
            call,
            ACL_ERROR_INVALID_PARAM,
            format!("timeout {timeout} ms: must be -1 or positive"),
        );
    }
    let target = lock(&s.state).enqueued;
    if !s.wait_for_until(target, Duration::from_millis(timeout as u64)) {
        return fail(
            call,
            ACL_ERROR_RT_STREAM_SYNC_TIMEOUT,
            format!("stream {} still busy after {timeout} ms", s.id),
        );
    }
    s.synchronize(call)
}

/// aclrtSynchronizeStream: blocks until the stream's work is done; reports its sticky error.
#[no_mangle]
pub unsafe extern "C" fn aclrtSynchronizeStream(stream: *mut c_void) -> i32 {
    let call = "aclrtSynchronizeStream";
    match resolve(call, stream) {
        Ok(s) => s.synchronize(call),
        Err(code) => code,
    }
}
