//! Events (hicann/runtime `docs/zh/api_ref/07_event_management.md`): record on a stream, wait from another
//! stream, synchronise and query from the host, elapsed time between two completed records. The time of a
//! record is taken on the stream's worker when the record runs, i.e. after the work before it.

use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Instant;

use crate::codes::*;
use crate::errors::fail;
use crate::{counters, runtime, stream};

#[derive(Default)]
struct State {
    /// Records issued (each aclrtRecordEvent is one generation).
    recorded: u64,
    /// Latest generation that has run on its stream.
    done: u64,
    /// When the latest completed record ran.
    time: Option<Instant>,
    /// Stream of the latest record (its sticky error is reported by aclrtSynchronizeEvent).
    stream: Option<Arc<stream::Stream>>,
}

/// One event.
pub struct Event {
    id: u64,
    st: Mutex<State>,
    cv: Condvar,
}

const HANDLE_BASE: u64 = 0x4556_0000_0000;
static NEXT_ID: AtomicU64 = AtomicU64::new(1);
static EVENTS: Mutex<Option<HashMap<u64, Arc<Event>>>> = Mutex::new(None);

/// aclrtEventRecordedStatus (25-02_Enumerations.md).
const ACL_EVENT_RECORDED_STATUS_NOT_READY: i32 = 0;
const ACL_EVENT_RECORDED_STATUS_COMPLETE: i32 = 1;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn epoch() -> Instant {
    static E: OnceLock<Instant> = OnceLock::new();
    *E.get_or_init(Instant::now)
}

fn lookup(call: &str, h: *mut c_void) -> Result<Arc<Event>, i32> {
    let id = crate::handle::id_of(h, HANDLE_BASE);
    lock(&EVENTS)
        .as_ref()
        .and_then(|m| m.get(&id).cloned())
        .ok_or_else(|| {
            fail(
                call,
                ACL_ERROR_INVALID_PARAM,
                format!(
                    "event 0x{:x} is not a live event (destroyed, or never created)",
                    h as u64
                ),
            )
        })
}

unsafe fn create(call: &str, out: *mut *mut c_void) -> i32 {
    if let Err(c) = runtime::current_context(call) {
        return c;
    }
    if out.is_null() {
        return fail(call, ACL_ERROR_INVALID_PARAM, "event is NULL");
    }
    epoch();
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let e = Arc::new(Event {
        id,
        st: Mutex::new(State::default()),
        cv: Condvar::new(),
    });
    lock(&EVENTS).get_or_insert_with(HashMap::new).insert(id, e);
    *out = crate::handle::make(HANDLE_BASE, id);
    ACL_SUCCESS
}

/// aclrtCreateEvent.
#[no_mangle]
pub unsafe extern "C" fn aclrtCreateEvent(event: *mut *mut c_void) -> i32 {
    create("aclrtCreateEvent", event)
}

/// aclrtCreateEventWithFlag: the flags (ACL_EVENT_SYNC, ACL_EVENT_TIME_LINE, ...) do not change the simulation:
/// every event can be waited on and timed.
#[no_mangle]
pub unsafe extern "C" fn aclrtCreateEventWithFlag(event: *mut *mut c_void, _flag: u32) -> i32 {
    create("aclrtCreateEventWithFlag", event)
}

/// aclrtDestroyEvent. A record still queued completes harmlessly.
#[no_mangle]
pub extern "C" fn aclrtDestroyEvent(event: *mut c_void) -> i32 {
    let call = "aclrtDestroyEvent";
    if let Err(c) = runtime::current_context(call) {
        return c;
    }
    match lookup(call, event) {
        Ok(e) => {
            if let Some(m) = lock(&EVENTS).as_mut() {
                m.remove(&e.id);
            }
            ACL_SUCCESS
        }
        Err(c) => c,
    }
}

/// aclrtRecordEvent: the event completes when the stream reaches this point.
#[no_mangle]
pub extern "C" fn aclrtRecordEvent(event: *mut c_void, stream_h: *mut c_void) -> i32 {
    let call = "aclrtRecordEvent";
    let s = match stream::resolve(call, stream_h) {
        Ok(s) => s,
        Err(c) => return c,
    };
    let e = match lookup(call, event) {
        Ok(e) => e,
        Err(c) => return c,
    };
    let gen = {
        let mut st = lock(&e.st);
        st.recorded += 1;
        st.stream = Some(Arc::clone(&s));
        st.recorded
    };
    let ev = Arc::clone(&e);
    let r = s.push_control(Box::new(move || {
        let t = Instant::now();
        let mut st = lock(&ev.st);
        if gen > st.done {
            st.done = gen;
            st.time = Some(t);
        }
        ev.cv.notify_all();
    }));
    match r {
        Ok(_) => ACL_SUCCESS,
        Err(m) => fail(call, ACL_ERROR_INVALID_PARAM, m),
    }
}

/// aclrtStreamWaitEvent: work queued on `stream` after this waits for the event's latest record. An event
/// never recorded does not block.
#[no_mangle]
pub extern "C" fn aclrtStreamWaitEvent(stream_h: *mut c_void, event: *mut c_void) -> i32 {
    let call = "aclrtStreamWaitEvent";
    let s = match stream::resolve(call, stream_h) {
        Ok(s) => s,
        Err(c) => return c,
    };
    let e = match lookup(call, event) {
        Ok(e) => e,
        Err(c) => return c,
    };
    let target = lock(&e.st).recorded;
    if target == 0 {
        return ACL_SUCCESS;
    }
    let r = s.push_control(Box::new(move || {
        let mut st = lock(&e.st);
        while st.done < target {
            st = e.cv.wait(st).unwrap_or_else(|p| p.into_inner());
        }
    }));
    match r {
        Ok(_) => ACL_SUCCESS,
        Err(m) => fail(call, ACL_ERROR_INVALID_PARAM, m),
    }
}

/// aclrtSynchronizeEvent: blocks until the latest record has run; reports the recording stream's sticky
/// error.
#[no_mangle]
pub extern "C" fn aclrtSynchronizeEvent(event: *mut c_void) -> i32 {
    let call = "aclrtSynchronizeEvent";
    if let Err(c) = runtime::current_context(call) {
        return c;
    }
    let e = match lookup(call, event) {
        Ok(e) => e,
        Err(c) => return c,
    };
    counters::note_event_sync();
    let s = {
        let mut st = lock(&e.st);
        let target = st.recorded;
        while st.done < target {
            st = e.cv.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        st.stream.clone()
    };
    match s.and_then(|s| s.take_error()) {
        Some((code, msg)) => fail(call, code, msg),
        None => ACL_SUCCESS,
    }
}

/// aclrtQueryEventStatus: COMPLETE once the latest record has run (or when never recorded).
#[no_mangle]
pub unsafe extern "C" fn aclrtQueryEventStatus(event: *mut c_void, status: *mut i32) -> i32 {
    let call = "aclrtQueryEventStatus";
    if let Err(c) = runtime::current_context(call) {
        return c;
    }
    let e = match lookup(call, event) {
        Ok(e) => e,
        Err(c) => return c,
    };
    if status.is_null() {
        return fail(call, ACL_ERROR_INVALID_PARAM, "status is NULL");
    }
    let st = lock(&e.st);
    *status = if st.done >= st.recorded {
        ACL_EVENT_RECORDED_STATUS_COMPLETE
    } else {
        ACL_EVENT_RECORDED_STATUS_NOT_READY
    };
    ACL_SUCCESS
}

/// aclrtEventElapsedTime: milliseconds between two completed records (negative if `end` ran first).
/// An event not recorded, or whose record has not run, gives ACL_ERROR_RT_EVENT_NOT_COMPLETE.
#[no_mangle]
pub unsafe extern "C" fn aclrtEventElapsedTime(
    ms: *mut f32,
    start: *mut c_void,
    end: *mut c_void,
) -> i32 {
    let call = "aclrtEventElapsedTime";
    if let Err(c) = runtime::current_context(call) {
        return c;
    }
    if ms.is_null() {
        return fail(call, ACL_ERROR_INVALID_PARAM, "ms is NULL");
    }
    let (a, b) = match (lookup(call, start), lookup(call, end)) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(c), _) | (_, Err(c)) => return c,
    };
    let time = |e: &Event| {
        let st = lock(&e.st);
        if st.recorded > 0 && st.done >= st.recorded {
            st.time
        } else {
            None
        }
    };
    match (time(&a), time(&b)) {
        (Some(t0), Some(t1)) => {
            let d = if t1 >= t0 {
                t1.duration_since(t0).as_secs_f64()
            } else {
                -t0.duration_since(t1).as_secs_f64()
            };
            *ms = (d * 1e3) as f32;
            ACL_SUCCESS
        }
        _ => fail(
            call,
            ACL_ERROR_RT_EVENT_NOT_COMPLETE,
            "both events must be recorded and completed",
        ),
    }
}
