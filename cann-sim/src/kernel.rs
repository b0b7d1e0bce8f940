//! Kernel binaries and launches (hicann/runtime `docs/api_docs/aclrtBinaryLoadFromFile.md`,
//! `aclrtBinaryGetFunction.md`, `aclrtKernelArgsInit.md`, `aclrtKernelArgsAppend.md`,
//! `aclrtKernelArgsFinalize.md`, `aclrtLaunchKernelWithConfig.md`, `aclrtLaunchKernel.md`).
//!
//! A "kernel binary" here is a shared object built by `scripts/build_kernel_cpu.sh` against our AscendC CPU
//! runtime; it exports the three functions of `cann-sim/ascendc/cpu_abi.h`, mirrored below. A launch is a
//! stream task that calls `ascendc_cpu_launch`; the kernel reaches global memory only through `map_gm`,
//! which bounds-checks every range against the live allocations.

use std::collections::HashMap;
use std::ffi::{c_char, c_void, CStr, CString};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::codes::*;
use crate::errors::fail;
use crate::stream::{self, Task, TaskKind};
use crate::{counters, mem, runtime};

/// `ASCENDC_CPU_ABI_VERSION` of `cann-sim/ascendc/cpu_abi.h`.
pub const ASCENDC_CPU_ABI_VERSION: u32 = 1;

/// `AscendcCpuHost` of `cpu_abi.h`.
#[repr(C)]
pub struct AscendcCpuHost {
    /// ASCENDC_CPU_ABI_VERSION.
    pub version: u32,
    /// Passed back to `map_gm`.
    pub ctx: *mut c_void,
    /// Host memory behind a device range, or NULL with a message in `err`.
    pub map_gm: unsafe extern "C" fn(*mut c_void, u64, u64, i32, *mut c_char, usize) -> *mut c_void,
}

type AbiVersionFn = unsafe extern "C" fn() -> u32;
type HasKernelFn = unsafe extern "C" fn(*const c_char) -> i32;
type LaunchFn = unsafe extern "C" fn(
    *const AscendcCpuHost,
    *const c_char,
    u32,
    *const c_void,
    usize,
    *mut c_char,
    usize,
) -> i32;

struct Binary {
    path: String,
    has_kernel: HasKernelFn,
    launch: LaunchFn,
    unloaded: Mutex<bool>,
}

struct Func {
    bin: Arc<Binary>,
    name: CString,
}

struct Args {
    func: u64,
    buf: Vec<u8>,
    finalized: bool,
}

const BIN_BASE: u64 = 0x4249_0000_0000;
const FUNC_BASE: u64 = 0x4655_0000_0000;
const ARGS_BASE: u64 = 0x4152_0000_0000;
const PARAM_BASE: u64 = 0x5041_0000_0000;

static NEXT: AtomicU64 = AtomicU64::new(1);

#[derive(Default)]
struct Tables {
    bins: HashMap<u64, Arc<Binary>>,
    funcs: HashMap<u64, Arc<Func>>,
    args: HashMap<u64, Args>,
}

static TABLES: Mutex<Option<Tables>> = Mutex::new(None);

fn with<R>(f: impl FnOnce(&mut Tables) -> R) -> R {
    let mut g = TABLES.lock().unwrap_or_else(|e| e.into_inner());
    f(g.get_or_insert_with(Tables::default))
}

use crate::handle::{id_of, make};

fn dl_error() -> String {
    // SAFETY: dlerror returns NULL or a NUL-terminated string owned by libc.
    unsafe {
        let e = libc::dlerror();
        if e.is_null() {
            "unknown dlopen error".to_string()
        } else {
            CStr::from_ptr(e).to_string_lossy().into_owned()
        }
    }
}

unsafe fn symbol(lib: *mut c_void, name: &CStr) -> Option<*mut c_void> {
    let p = libc::dlsym(lib, name.as_ptr());
    (!p.is_null()).then_some(p)
}

/// Opens a kernel binary and checks its ABI; Err is (status, message).
unsafe fn open_binary(path: &str) -> Result<Binary, (i32, String)> {
    if !std::path::Path::new(path).is_absolute() {
        return Err((
            ACL_ERROR_INVALID_PARAM,
            format!("binPath {path:?} is not an absolute path (the document requires one)"),
        ));
    }
    if !std::path::Path::new(path).is_file() {
        return Err((
            ACL_ERROR_RT_FILE_OPEN,
            format!("cannot open kernel binary {path:?}: no such file"),
        ));
    }
    let c = CString::new(path)
        .map_err(|_| (ACL_ERROR_INVALID_PARAM, "binPath contains NUL".to_string()))?;
    // Never closed: queued launches may still call into it, and kernels are process-lifetime code.
    let lib = libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL);
    if lib.is_null() {
        return Err((
            ACL_ERROR_INVALID_FILE,
            format!("{path:?} is not a loadable kernel binary: {}", dl_error()),
        ));
    }
    let missing = |s: &str| {
        (
            ACL_ERROR_INVALID_FILE,
            format!("{path:?} does not export {s} (not built by scripts/build_kernel_cpu.sh?)"),
        )
    };
    let ver = symbol(lib, c"ascendc_cpu_abi_version")
        .ok_or_else(|| missing("ascendc_cpu_abi_version"))?;
    let has =
        symbol(lib, c"ascendc_cpu_has_kernel").ok_or_else(|| missing("ascendc_cpu_has_kernel"))?;
    let launch = symbol(lib, c"ascendc_cpu_launch").ok_or_else(|| missing("ascendc_cpu_launch"))?;
    // SAFETY: the symbols are the functions of cpu_abi.h, whose signatures these types mirror.
    let ver: AbiVersionFn = std::mem::transmute::<*mut c_void, AbiVersionFn>(ver);
    let v = ver();
    if v != ASCENDC_CPU_ABI_VERSION {
        return Err((
            ACL_ERROR_INVALID_FILE,
            format!("{path:?} was built for AscendC CPU ABI version {v}; the simulator implements {ASCENDC_CPU_ABI_VERSION}"),
        ));
    }
    Ok(Binary {
        path: path.to_string(),
        has_kernel: std::mem::transmute::<*mut c_void, HasKernelFn>(has),
        launch: std::mem::transmute::<*mut c_void, LaunchFn>(launch),
        unloaded: Mutex::new(false),
    })
}

/// aclrtBinaryLoadFromFile: `binPath` must be absolute; `options` is accepted and ignored.
#[no_mangle]
pub unsafe extern "C" fn aclrtBinaryLoadFromFile(
    bin_path: *const c_char,
    _options: *mut c_void,
    bin_handle: *mut *mut c_void,
) -> i32 {
    let call = "aclrtBinaryLoadFromFile";
    if let Err(c) = runtime::current_context(call) {
        return c;
    }
    if bin_path.is_null() || bin_handle.is_null() {
        return fail(
            call,
            ACL_ERROR_INVALID_PARAM,
            "binPath or binHandle is NULL",
        );
    }
    let path = CStr::from_ptr(bin_path).to_string_lossy().into_owned();
    match open_binary(&path) {
        Ok(b) => {
            let id = NEXT.fetch_add(1, Ordering::Relaxed);
            with(|t| t.bins.insert(id, Arc::new(b)));
            *bin_handle = make(BIN_BASE, id);
            ACL_SUCCESS
        }
        Err((c, m)) => fail(call, c, m),
    }
}

/// aclrtBinaryUnLoad: the handle and its functions stop working; launches already queued still run.
#[no_mangle]
pub extern "C" fn aclrtBinaryUnLoad(bin_handle: *mut c_void) -> i32 {
    let call = "aclrtBinaryUnLoad";
    match with(|t| t.bins.remove(&id_of(bin_handle, BIN_BASE))) {
        Some(b) => {
            *b.unloaded.lock().unwrap_or_else(|e| e.into_inner()) = true;
            ACL_SUCCESS
        }
        None => fail(
            call,
            ACL_ERROR_INVALID_PARAM,
            format!("binHandle 0x{:x} is not a loaded binary", bin_handle as u64),
        ),
    }
}

/// aclrtBinaryGetFunction: a kernel of the binary by its `extern "C"` name.
#[no_mangle]
pub unsafe extern "C" fn aclrtBinaryGetFunction(
    bin_handle: *mut c_void,
    kernel_name: *const c_char,
    func_handle: *mut *mut c_void,
) -> i32 {
    let call = "aclrtBinaryGetFunction";
    if kernel_name.is_null() || func_handle.is_null() {
        return fail(
            call,
            ACL_ERROR_INVALID_PARAM,
            "kernelName or funcHandle is NULL",
        );
    }
    let Some(bin) = with(|t| t.bins.get(&id_of(bin_handle, BIN_BASE)).cloned()) else {
        return fail(
            call,
            ACL_ERROR_INVALID_PARAM,
            format!("binHandle 0x{:x} is not a loaded binary", bin_handle as u64),
        );
    };
    let name = CStr::from_ptr(kernel_name);
    if (bin.has_kernel)(name.as_ptr()) == 0 {
        return fail(
            call,
            ACL_ERROR_RT_KERNEL_LOOKUP,
            format!("no kernel {:?} in {}", name.to_string_lossy(), bin.path),
        );
    }
    let id = NEXT.fetch_add(1, Ordering::Relaxed);
    with(|t| {
        t.funcs.insert(
            id,
            Arc::new(Func {
                bin,
                name: name.to_owned(),
            }),
        )
    });
    *func_handle = make(FUNC_BASE, id);
    ACL_SUCCESS
}

fn func(call: &str, h: *mut c_void) -> Result<(u64, Arc<Func>), i32> {
    let id = id_of(h, FUNC_BASE);
    let f = with(|t| t.funcs.get(&id).cloned()).ok_or_else(|| {
        fail(
            call,
            ACL_ERROR_INVALID_PARAM,
            format!("funcHandle 0x{:x} is not a kernel function", h as u64),
        )
    })?;
    if *f.bin.unloaded.lock().unwrap_or_else(|e| e.into_inner()) {
        return Err(fail(
            call,
            ACL_ERROR_RT_INVALID_HANDLE,
            format!("the binary of kernel {:?} was unloaded", f.name),
        ));
    }
    Ok((id, f))
}

/// aclrtKernelArgsInit: an empty argument list for `funcHandle`.
#[no_mangle]
pub unsafe extern "C" fn aclrtKernelArgsInit(
    func_handle: *mut c_void,
    args_handle: *mut *mut c_void,
) -> i32 {
    let call = "aclrtKernelArgsInit";
    if args_handle.is_null() {
        return fail(call, ACL_ERROR_INVALID_PARAM, "argsHandle is NULL");
    }
    let (fid, _) = match func(call, func_handle) {
        Ok(x) => x,
        Err(c) => return c,
    };
    let id = NEXT.fetch_add(1, Ordering::Relaxed);
    with(|t| {
        t.args.insert(
            id,
            Args {
                func: fid,
                buf: Vec::new(),
                finalized: false,
            },
        )
    });
    *args_handle = make(ARGS_BASE, id);
    ACL_SUCCESS
}

/// Alignment of an argument of `size` bytes as the device packs it: its natural alignment, the largest
/// power of two up to 8 that divides the size (pointers and 64-bit scalars 8, int32/float 4, ...).
pub fn natural_align(size: usize) -> usize {
    let mut a = 8;
    while a > 1 && !size.is_multiple_of(a) {
        a /= 2;
    }
    a
}

/// aclrtKernelArgsAppend: copies `paramSize` host bytes at the end of the list, at their natural alignment.
#[no_mangle]
pub unsafe extern "C" fn aclrtKernelArgsAppend(
    args_handle: *mut c_void,
    param: *mut c_void,
    param_size: usize,
    param_handle: *mut *mut c_void,
) -> i32 {
    let call = "aclrtKernelArgsAppend";
    if param.is_null() || param_size == 0 {
        return fail(
            call,
            ACL_ERROR_INVALID_PARAM,
            "param is NULL or paramSize is 0",
        );
    }
    if mem::is_device_addr(param as u64) {
        return fail(
            call,
            ACL_ERROR_INVALID_PARAM,
            "param must be host memory (the value to append), not a device address",
        );
    }
    let bytes = std::slice::from_raw_parts(param as *const u8, param_size).to_vec();
    let r = with(|t| {
        let a = t
            .args
            .get_mut(&id_of(args_handle, ARGS_BASE))
            .ok_or("is not an argument list")?;
        if a.finalized {
            return Err("is already finalized (aclrtKernelArgsFinalize)");
        }
        let align = natural_align(param_size);
        let off = a.buf.len().div_ceil(align) * align;
        a.buf.resize(off, 0);
        a.buf.extend_from_slice(&bytes);
        Ok(off)
    });
    match r {
        Ok(off) => {
            if !param_handle.is_null() {
                *param_handle = make(PARAM_BASE, off as u64);
            }
            ACL_SUCCESS
        }
        Err(why) => fail(
            call,
            ACL_ERROR_INVALID_PARAM,
            format!("argsHandle 0x{:x} {why}", args_handle as u64),
        ),
    }
}

/// aclrtKernelArgsFinalize: the list is complete and may be launched.
#[no_mangle]
pub extern "C" fn aclrtKernelArgsFinalize(args_handle: *mut c_void) -> i32 {
    let call = "aclrtKernelArgsFinalize";
    let ok = with(|t| match t.args.get_mut(&id_of(args_handle, ARGS_BASE)) {
        Some(a) => {
            a.finalized = true;
            true
        }
        None => false,
    });
    if ok {
        ACL_SUCCESS
    } else {
        fail(
            call,
            ACL_ERROR_INVALID_PARAM,
            format!(
                "argsHandle 0x{:x} is not an argument list",
                args_handle as u64
            ),
        )
    }
}

/// Traffic of one launch, counted by `map_gm`.
struct Traffic {
    read: AtomicU64,
    written: AtomicU64,
}

unsafe extern "C" fn map_gm(
    ctx: *mut c_void,
    addr: u64,
    len: u64,
    write: i32,
    err: *mut c_char,
    errlen: usize,
) -> *mut c_void {
    // SAFETY: ctx is the Traffic of the launch in progress (it outlives ascendc_cpu_launch).
    let t = &*(ctx as *const Traffic);
    match mem::check_range(addr, len) {
        Ok(()) => {
            let c = if write != 0 { &t.written } else { &t.read };
            c.fetch_add(len, Ordering::Relaxed);
            mem::shadow(addr) as *mut c_void
        }
        Err(m) => {
            write_err(
                err,
                errlen,
                &format!(
                    "global memory {}: {m}",
                    if write != 0 { "store" } else { "load" }
                ),
            );
            std::ptr::null_mut()
        }
    }
}

unsafe fn write_err(err: *mut c_char, errlen: usize, msg: &str) {
    if err.is_null() || errlen == 0 {
        return;
    }
    let n = msg.len().min(errlen - 1);
    std::ptr::copy_nonoverlapping(msg.as_ptr(), err as *mut u8, n);
    *err.add(n) = 0;
}

/// Where a launch's argument bytes come from.
enum ArgBytes {
    /// Packed on the host (aclrtKernelArgs*), copied at the launch call.
    Host(Vec<u8>),
    /// In device memory (aclrtLaunchKernel), read when the task runs.
    Device { addr: u64, len: u64 },
}

fn enqueue_launch(
    call: &str,
    f: Arc<Func>,
    blocks: u32,
    args: ArgBytes,
    stream_h: *mut c_void,
) -> i32 {
    let s = match stream::resolve(call, stream_h) {
        Ok(s) => s,
        Err(c) => return c,
    };
    if blocks == 0 {
        return fail(call, ACL_ERROR_INVALID_PARAM, "blockDim is 0");
    }
    let name = f.name.to_string_lossy().into_owned();
    if let Some(st) = crate::fault::injected(call).or_else(|| crate::fault::injected(&name)) {
        return st;
    }
    let c = Arc::clone(&s.counters);
    let run = move || -> Result<(), String> {
        let bytes = match args {
            ArgBytes::Host(b) => b,
            ArgBytes::Device { addr, len } => {
                mem::check_range(addr, len).map_err(|m| format!("argsData {m}"))?;
                // SAFETY: checked just above.
                unsafe { std::slice::from_raw_parts(mem::shadow(addr), len as usize).to_vec() }
            }
        };
        let traffic = Traffic {
            read: AtomicU64::new(0),
            written: AtomicU64::new(0),
        };
        let host = AscendcCpuHost {
            version: ASCENDC_CPU_ABI_VERSION,
            ctx: &traffic as *const Traffic as *mut c_void,
            map_gm,
        };
        let mut err = vec![0u8; 4096];
        // SAFETY: the binary's launch function, called per cpu_abi.h with buffers that outlive the call.
        let rc = unsafe {
            (f.bin.launch)(
                &host,
                f.name.as_ptr(),
                blocks,
                bytes.as_ptr() as *const c_void,
                bytes.len(),
                err.as_mut_ptr() as *mut c_char,
                err.len(),
            )
        };
        counters::add_kernel_bytes(
            &c,
            traffic.read.load(Ordering::Relaxed),
            traffic.written.load(Ordering::Relaxed),
        );
        if rc != 0 {
            let end = err.iter().position(|&b| b == 0).unwrap_or(err.len());
            let msg = String::from_utf8_lossy(&err[..end]).into_owned();
            let msg = if msg.is_empty() {
                "(the kernel gave no message)".to_string()
            } else {
                msg
            };
            return Err(format!(
                "ascendc_cpu_launch returned {rc} over {blocks} block(s): {msg}"
            ));
        }
        Ok(())
    };
    let task = Task {
        kind: TaskKind::Kernel(name),
        bytes_read: 0,
        bytes_written: 0,
        run: Box::new(run),
    };
    match s.push_task(task) {
        Ok(_) => ACL_SUCCESS,
        Err(m) => fail(call, ACL_ERROR_INVALID_PARAM, m),
    }
}

/// aclrtLaunchKernelWithConfig: launches `funcHandle` over `blockDim` blocks with a finalized argument list
/// of the same function; `cfg` may be NULL (its settings do not change the simulation), `reserve` must be
/// NULL. The arguments are copied at the call, so the list may be changed or reused afterwards.
#[no_mangle]
pub extern "C" fn aclrtLaunchKernelWithConfig(
    func_handle: *mut c_void,
    block_dim: u32,
    stream_h: *mut c_void,
    _cfg: *mut c_void,
    args_handle: *mut c_void,
    reserve: *mut c_void,
) -> i32 {
    let call = "aclrtLaunchKernelWithConfig";
    if let Err(c) = runtime::current_context(call) {
        return c;
    }
    if !reserve.is_null() {
        return fail(call, ACL_ERROR_INVALID_PARAM, "reserve must be NULL");
    }
    let (fid, f) = match func(call, func_handle) {
        Ok(x) => x,
        Err(c) => return c,
    };
    let bytes = with(|t| match t.args.get(&id_of(args_handle, ARGS_BASE)) {
        None => Err("is not an argument list".to_string()),
        Some(a) if !a.finalized => Err("is not finalized (aclrtKernelArgsFinalize)".to_string()),
        Some(a) if a.func != fid => Err("was initialised for another function".to_string()),
        Some(a) => Ok(a.buf.clone()),
    });
    match bytes {
        Ok(b) => enqueue_launch(call, f, block_dim, ArgBytes::Host(b), stream_h),
        Err(why) => fail(
            call,
            ACL_ERROR_INVALID_PARAM,
            format!("argsHandle 0x{:x} {why}", args_handle as u64),
        ),
    }
}

/// aclrtLaunchKernel: arguments already packed in device memory at `argsData` (read when the task runs).
#[no_mangle]
pub extern "C" fn aclrtLaunchKernel(
    func_handle: *mut c_void,
    block_dim: u32,
    args_data: *const c_void,
    args_size: usize,
    stream_h: *mut c_void,
) -> i32 {
    let call = "aclrtLaunchKernel";
    if let Err(c) = runtime::current_context(call) {
        return c;
    }
    let (_, f) = match func(call, func_handle) {
        Ok(x) => x,
        Err(c) => return c,
    };
    let (addr, len) = (args_data as u64, args_size as u64);
    if let Err(m) = mem::check_range(addr, len) {
        return fail(
            call,
            ACL_ERROR_INVALID_PARAM,
            format!("argsData must be device memory: {m}"),
        );
    }
    enqueue_launch(call, f, block_dim, ArgBytes::Device { addr, len }, stream_h)
}
