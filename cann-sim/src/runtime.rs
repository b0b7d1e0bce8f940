//! Initialisation, the device and contexts (hicann/runtime `docs/zh/api_ref/02_initialization_and_deinitialization.md`,
//! `04_device_management.md`, `05_context_management.md`).
//!
//! One device, 0. `aclrtSetDevice` creates the device's default context on first use and binds it to the
//! calling thread; each call takes a reference that `aclrtResetDevice` returns, and the last reset tears the
//! device down: streams drained, blocks still allocated reported as leaks and freed.

use std::cell::Cell;
use std::collections::HashMap;
use std::ffi::{c_char, c_void, CStr, CString};
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::json;

use crate::codes::*;
use crate::config::Config;
use crate::errors::fail;
use crate::stream::Stream;
use crate::{counters, mem, stream};

/// Devices the simulator has.
pub const DEVICE_COUNT: u32 = 1;

/// A context: a device and its default stream.
pub struct Context {
    /// Context number (1-based, never reused).
    pub id: u64,
    /// Device id.
    pub device: i32,
    /// The stream used when a call passes a NULL stream.
    pub default_stream: Arc<Stream>,
    /// True for the default context that aclrtSetDevice creates.
    pub implicit: bool,
}

#[derive(Default)]
struct Rt {
    initialized: bool,
    finalized: bool,
    config: Config,
    device_refs: u32,
    default_ctx: Option<u64>,
    contexts: HashMap<u64, Arc<Context>>,
    next_ctx: u64,
    report_hook: bool,
}

static RT: Mutex<Option<Rt>> = Mutex::new(None);

thread_local! {
    static CURRENT: Cell<u64> = const { Cell::new(0) };
}

const CTX_HANDLE_BASE: u64 = 0x4354_0000_0000;

fn with<R>(f: impl FnOnce(&mut Rt) -> R) -> R {
    let mut g = RT.lock().unwrap_or_else(|e| e.into_inner());
    f(g.get_or_insert_with(|| Rt {
        next_ctx: 1,
        ..Rt::default()
    }))
}

/// The calling thread's current context, or the documented failure: ACL_ERROR_UNINITIALIZE before aclInit,
/// ACL_ERROR_RT_CONTEXT_NULL on a thread that never bound one (message naming `call`).
pub fn current_context(call: &str) -> Result<Arc<Context>, i32> {
    let cur = CURRENT.with(Cell::get);
    let r = with(|rt| {
        if !rt.initialized {
            return Err((
                ACL_ERROR_UNINITIALIZE,
                "aclInit has not been called (or aclFinalize was)".to_string(),
            ));
        }
        if cur == 0 {
            return Err((
                ACL_ERROR_RT_CONTEXT_NULL,
                "no current context on this thread: call aclrtSetDevice or aclrtSetCurrentContext on it first"
                    .to_string(),
            ));
        }
        rt.contexts.get(&cur).cloned().ok_or_else(|| {
            (
                ACL_ERROR_RT_CONTEXT_NULL,
                "the thread's context was destroyed (aclrtDestroyContext / aclrtResetDevice)"
                    .to_string(),
            )
        })
    });
    r.map_err(|(code, msg)| fail(call, code, msg))
}

/// Whether `stream_id` is some context's default stream.
pub fn is_default_stream(stream_id: u64) -> bool {
    with(|rt| {
        rt.contexts
            .values()
            .any(|c| c.default_stream.id == stream_id)
    })
}

/// Every live context.
pub fn contexts() -> Vec<Arc<Context>> {
    let mut v: Vec<Arc<Context>> = with(|rt| rt.contexts.values().cloned().collect());
    v.sort_by_key(|c| c.id);
    v
}

fn new_context(device: i32, implicit: bool) -> Result<Arc<Context>, String> {
    let id = with(|rt| {
        let id = rt.next_ctx;
        rt.next_ctx += 1;
        id
    });
    let default_stream = Stream::spawn(id)?;
    let c = Arc::new(Context {
        id,
        device,
        default_stream,
        implicit,
    });
    with(|rt| rt.contexts.insert(id, Arc::clone(&c)));
    Ok(c)
}

/// Drains and destroys a context's streams; pending errors are printed and reported.
fn tear_down_context(c: &Context) {
    with(|rt| rt.contexts.remove(&c.id));
    let mut all = stream::streams_of(c.id);
    if !all.iter().any(|s| s.id == c.default_stream.id) {
        all.push(Arc::clone(&c.default_stream));
    }
    for s in all {
        if let Some((code, msg)) = s.shut_down() {
            eprintln!("cann-sim: unreported stream error at teardown (status {code}): {msg}");
            counters::note_leak(
                json!({"kind": "unreported_stream_error", "stream": s.id, "status": code, "message": msg}),
            );
        }
    }
}

/// Reports and frees the device blocks still allocated; returns how many there were.
fn report_leaks(when: &str) -> usize {
    let leaks = mem::release_all();
    if !leaks.is_empty() {
        let total: u64 = leaks.iter().map(|a| a.size).sum();
        eprintln!(
            "cann-sim: {} device allocation(s), {total} bytes, still live at {when}:",
            leaks.len()
        );
        for a in &leaks {
            eprintln!(
                "cann-sim:   allocation #{} at 0x{:x}, {} bytes",
                a.id, a.base, a.size
            );
            counters::note_leak(
                json!({"kind": "device_allocation", "at": when, "id": a.id, "address": a.base, "bytes": a.size}),
            );
        }
        crate::errors::set_recent(format!(
            "{when}: {} device allocation(s) ({total} bytes) were never freed; see stderr / the report",
            leaks.len()
        ));
    }
    leaks.len()
}

fn tear_down_device(when: &str) {
    let ctxs = contexts();
    for c in &ctxs {
        tear_down_context(c);
    }
    with(|rt| {
        rt.default_ctx = None;
        rt.device_refs = 0;
    });
    report_leaks(when);
}

/// Writes the report at exit for a program that never reached aclFinalize (which writes it itself).
extern "C" fn report_at_exit() {
    let path = with(|rt| rt.config.report.clone().filter(|_| rt.initialized));
    if let Some(p) = path {
        counters::write_report(&p);
    }
}

/// aclInit (02_initialization_and_deinitialization.md): once per process; a second call returns
/// ACL_ERROR_REPEAT_INITIALIZE. `configPath` may be NULL; when given it must name a readable file.
#[no_mangle]
pub unsafe extern "C" fn aclInit(config_path: *const c_char) -> i32 {
    let call = "aclInit";
    if with(|rt| rt.initialized) {
        return fail(
            call,
            ACL_ERROR_REPEAT_INITIALIZE,
            "aclInit was already called",
        );
    }
    if !config_path.is_null() {
        let p = CStr::from_ptr(config_path).to_string_lossy().into_owned();
        if !p.is_empty() && std::fs::metadata(&p).map(|m| !m.is_file()).unwrap_or(true) {
            return fail(
                call,
                ACL_ERROR_INVALID_FILE,
                format!("config file {p:?} is not a readable file"),
            );
        }
    }
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(m) => return fail(call, ACL_ERROR_INVALID_PARAM, m),
    };
    mem::set_capacity(config.mem_bytes);
    stream::set_delay_us(config.delay_us);
    set_soc(&config.soc);
    let hook = config.report.is_some();
    let register = with(|rt| {
        rt.initialized = true;
        rt.finalized = false;
        rt.config = config;
        let first = hook && !rt.report_hook;
        rt.report_hook |= hook;
        first
    });
    if register {
        libc::atexit(report_at_exit);
    }
    ACL_SUCCESS
}

/// aclFinalize: drains every stream, reports leaks (stderr and the report), writes the report.
/// A second call returns ACL_ERROR_REPEAT_FINALIZE; one before aclInit ACL_ERROR_UNINITIALIZE.
#[no_mangle]
pub extern "C" fn aclFinalize() -> i32 {
    let call = "aclFinalize";
    let (init, fin) = with(|rt| (rt.initialized, rt.finalized));
    if !init {
        return if fin {
            fail(
                call,
                ACL_ERROR_REPEAT_FINALIZE,
                "aclFinalize was already called",
            )
        } else {
            fail(call, ACL_ERROR_UNINITIALIZE, "aclInit has not been called")
        };
    }
    tear_down_device("aclFinalize");
    for (p, n) in mem::live_pinned() {
        eprintln!(
            "cann-sim: pinned host block at 0x{p:x}, {n} bytes, still allocated at aclFinalize"
        );
        counters::note_leak(
            json!({"kind": "pinned_host", "at": "aclFinalize", "address": p, "bytes": n}),
        );
    }
    let report = with(|rt| {
        rt.initialized = false;
        rt.finalized = true;
        rt.config.report.clone()
    });
    CURRENT.with(|c| c.set(0));
    if let Some(p) = report {
        counters::write_report(&p);
    }
    ACL_SUCCESS
}

fn check_device(call: &str, id: i32) -> Result<(), i32> {
    if id < 0 || id as u32 >= DEVICE_COUNT {
        return Err(fail(
            call,
            ACL_ERROR_RT_INVALID_DEVICEID,
            format!("device {id} does not exist (the simulator has {DEVICE_COUNT})"),
        ));
    }
    Ok(())
}

fn require_init(call: &str) -> Result<(), i32> {
    if with(|rt| rt.initialized) {
        Ok(())
    } else {
        Err(fail(
            call,
            ACL_ERROR_UNINITIALIZE,
            "aclInit has not been called (or aclFinalize was)",
        ))
    }
}

/// aclrtSetDevice: opens the device (creating its default context) and binds that context to this thread.
#[no_mangle]
pub extern "C" fn aclrtSetDevice(device_id: i32) -> i32 {
    let call = "aclrtSetDevice";
    if let Err(c) = require_init(call).and_then(|_| check_device(call, device_id)) {
        return c;
    }
    let existing = with(|rt| rt.default_ctx.and_then(|id| rt.contexts.get(&id).cloned()));
    let ctx = match existing {
        Some(c) => c,
        None => match new_context(device_id, true) {
            Ok(c) => {
                with(|rt| rt.default_ctx = Some(c.id));
                c
            }
            Err(m) => return fail(call, ACL_ERROR_RT_INTERNAL_ERROR, m),
        },
    };
    with(|rt| rt.device_refs += 1);
    CURRENT.with(|c| c.set(ctx.id));
    ACL_SUCCESS
}

/// aclrtResetDevice: returns one aclrtSetDevice reference; the last one releases the device's contexts,
/// streams and memory (leaks reported).
#[no_mangle]
pub extern "C" fn aclrtResetDevice(device_id: i32) -> i32 {
    let call = "aclrtResetDevice";
    if let Err(c) = require_init(call).and_then(|_| check_device(call, device_id)) {
        return c;
    }
    let refs = with(|rt| rt.device_refs);
    if refs == 0 {
        return fail(
            call,
            ACL_ERROR_INVALID_DEVICE,
            format!("device {device_id} was not set (aclrtSetDevice)"),
        );
    }
    let last = with(|rt| {
        rt.device_refs -= 1;
        rt.device_refs == 0
    });
    if last {
        tear_down_device("aclrtResetDevice");
        CURRENT.with(|c| c.set(0));
    }
    ACL_SUCCESS
}

/// aclrtGetDevice: the device of the current context.
#[no_mangle]
pub unsafe extern "C" fn aclrtGetDevice(device_id: *mut i32) -> i32 {
    let call = "aclrtGetDevice";
    let ctx = match current_context(call) {
        Ok(c) => c,
        Err(c) => return c,
    };
    if device_id.is_null() {
        return fail(call, ACL_ERROR_INVALID_PARAM, "deviceId is NULL");
    }
    *device_id = ctx.device;
    ACL_SUCCESS
}

/// aclrtGetDeviceCount.
#[no_mangle]
pub unsafe extern "C" fn aclrtGetDeviceCount(count: *mut u32) -> i32 {
    let call = "aclrtGetDeviceCount";
    if let Err(c) = require_init(call) {
        return c;
    }
    if count.is_null() {
        return fail(call, ACL_ERROR_INVALID_PARAM, "count is NULL");
    }
    *count = DEVICE_COUNT;
    ACL_SUCCESS
}

/// aclrtSynchronizeDevice: waits for every stream of every context; reports the first sticky error.
#[no_mangle]
pub extern "C" fn aclrtSynchronizeDevice() -> i32 {
    let call = "aclrtSynchronizeDevice";
    if let Err(c) = current_context(call) {
        return c;
    }
    counters::note_device_sync();
    let mut first = ACL_SUCCESS;
    let mut msgs = Vec::new();
    for c in contexts() {
        for s in stream::streams_of(c.id) {
            let code = s.synchronize(call);
            if code != ACL_SUCCESS {
                if first == ACL_SUCCESS {
                    first = code;
                }
                if let Some(m) = crate::errors::take_recent() {
                    msgs.push(m);
                }
            }
        }
    }
    if first != ACL_SUCCESS {
        crate::errors::set_recent(msgs.join("; "));
    }
    first
}

/// aclrtCreateContext: a new context on `deviceId`, made current on the calling thread.
#[no_mangle]
pub unsafe extern "C" fn aclrtCreateContext(context: *mut *mut c_void, device_id: i32) -> i32 {
    let call = "aclrtCreateContext";
    if let Err(c) = require_init(call).and_then(|_| check_device(call, device_id)) {
        return c;
    }
    if context.is_null() {
        return fail(call, ACL_ERROR_INVALID_PARAM, "context is NULL");
    }
    match new_context(device_id, false) {
        Ok(c) => {
            CURRENT.with(|cur| cur.set(c.id));
            *context = crate::handle::make(CTX_HANDLE_BASE, c.id);
            ACL_SUCCESS
        }
        Err(m) => fail(call, ACL_ERROR_RT_INTERNAL_ERROR, m),
    }
}

fn lookup_context(call: &str, h: *mut c_void) -> Result<Arc<Context>, i32> {
    let id = crate::handle::id_of(h, CTX_HANDLE_BASE);
    with(|rt| rt.contexts.get(&id).cloned()).ok_or_else(|| {
        fail(
            call,
            ACL_ERROR_INVALID_PARAM,
            format!("context 0x{:x} is not a live context", h as u64),
        )
    })
}

/// aclrtDestroyContext: only contexts from aclrtCreateContext; drains their streams first.
#[no_mangle]
pub extern "C" fn aclrtDestroyContext(context: *mut c_void) -> i32 {
    let call = "aclrtDestroyContext";
    if let Err(c) = require_init(call) {
        return c;
    }
    let ctx = match lookup_context(call, context) {
        Ok(c) => c,
        Err(c) => return c,
    };
    if ctx.implicit {
        return fail(
            call,
            ACL_ERROR_INVALID_PARAM,
            "the default context is released by aclrtResetDevice, not destroyed",
        );
    }
    tear_down_context(&ctx);
    if CURRENT.with(Cell::get) == ctx.id {
        CURRENT.with(|c| c.set(0));
    }
    ACL_SUCCESS
}

/// aclrtSetCurrentContext: binds a context to the calling thread.
#[no_mangle]
pub extern "C" fn aclrtSetCurrentContext(context: *mut c_void) -> i32 {
    let call = "aclrtSetCurrentContext";
    if let Err(c) = require_init(call) {
        return c;
    }
    match lookup_context(call, context) {
        Ok(c) => {
            CURRENT.with(|cur| cur.set(c.id));
            ACL_SUCCESS
        }
        Err(c) => c,
    }
}

/// aclrtGetCurrentContext.
#[no_mangle]
pub unsafe extern "C" fn aclrtGetCurrentContext(context: *mut *mut c_void) -> i32 {
    let call = "aclrtGetCurrentContext";
    let ctx = match current_context(call) {
        Ok(c) => c,
        Err(c) => return c,
    };
    if context.is_null() {
        return fail(call, ACL_ERROR_INVALID_PARAM, "context is NULL");
    }
    *context = crate::handle::make(CTX_HANDLE_BASE, ctx.id);
    ACL_SUCCESS
}

static SOC: Mutex<Option<&'static CStr>> = Mutex::new(None);
static DEFAULT_SOC: OnceLock<CString> = OnceLock::new();

fn set_soc(name: &str) {
    // Leaked on purpose: the pointer aclrtGetSocName hands out must stay valid for the process.
    let c: &'static CStr = Box::leak(
        CString::new(name.replace('\0', ""))
            .unwrap_or_default()
            .into_boxed_c_str(),
    );
    *SOC.lock().unwrap_or_else(|e| e.into_inner()) = Some(c);
}

/// aclrtGetSocName (04_device_management.md): "Ascend910B3" unless `CANN_SIM_SOC` says otherwise.
#[no_mangle]
pub extern "C" fn aclrtGetSocName() -> *const c_char {
    match *SOC.lock().unwrap_or_else(|e| e.into_inner()) {
        Some(c) => c.as_ptr(),
        None => DEFAULT_SOC
            .get_or_init(|| CString::new(crate::config::DEFAULT_SOC).unwrap_or_default())
            .as_ptr(),
    }
}
