//! Runtime initialisation (once per process), devices and contexts.
//!
//! ACL binds a context to each thread (runtime docs/zh/api_ref/05_context_management.md): every thread
//! that touches the device calls [`Context::bind`] first. Resources keep their context alive, and bind it
//! again before they free themselves, so that dropping on any thread is correct.

use std::ffi::CStr;
use std::sync::{Arc, OnceLock};

use crate::bindings::{aclrtContext, ACL_ERROR_REPEAT_INITIALIZE, ACL_HBM_MEM};
use crate::error::{check, recent_message, Error, Result};
use crate::loader::{api, Api};

static INIT: OnceLock<Result<()>> = OnceLock::new();

/// Loads the libraries and calls `aclInit(NULL)` once per process. The process never calls
/// `aclFinalize`: the runtime is torn down at exit, after the last resource is gone.
pub fn init() -> Result<&'static Api> {
    let api = api()?;
    INIT.get_or_init(|| {
        // SAFETY: NULL config path is documented as "no configuration" (02_initialization...md).
        let status = unsafe { (api.aclInit)(std::ptr::null()) };
        // Someone else in the process (e.g. a host framework) may have initialised ACL already.
        if status == ACL_ERROR_REPEAT_INITIALIZE {
            return Ok(());
        }
        check(api, "aclInit", status)
    })
    .clone()?;
    Ok(api)
}

/// Number of devices the runtime sees.
pub fn device_count() -> Result<u32> {
    let api = init()?;
    let mut count = 0u32;
    // SAFETY: out-pointer to a local.
    check(api, "aclrtGetDeviceCount", unsafe {
        (api.aclrtGetDeviceCount)(&mut count)
    })?;
    Ok(count)
}

/// The SoC name of the current device (e.g. "Ascend910B3").
pub fn soc_name() -> Result<String> {
    let api = init()?;
    // SAFETY: no arguments; returns NULL or a static NUL-terminated string.
    let name = unsafe { (api.aclrtGetSocName)() };
    if name.is_null() {
        return Err(Error::Null {
            call: "aclrtGetSocName",
            message: recent_message(api),
        });
    }
    // SAFETY: non-NULL and NUL-terminated.
    Ok(unsafe { CStr::from_ptr(name) }
        .to_string_lossy()
        .into_owned())
}

/// An explicit context on one device. Created with [`Context::new`]; shared through `Arc` by every
/// resource made in it, so it is destroyed (and the device reset) only after all of them.
pub struct Context {
    pub(crate) api: &'static Api,
    raw: aclrtContext,
    device: i32,
}

// SAFETY: an ACL context is a process-wide handle that any thread may make current
// (aclrtSetCurrentContext); cann-sys never dereferences it.
unsafe impl Send for Context {}
// SAFETY: as above; the runtime serialises its own use of the context.
unsafe impl Sync for Context {}

impl Context {
    /// Opens `device` (aclrtSetDevice) and creates a context on it, current on the calling thread.
    pub fn new(device: i32) -> Result<Arc<Context>> {
        let api = init()?;
        // SAFETY: plain integer argument.
        check(api, "aclrtSetDevice", unsafe {
            (api.aclrtSetDevice)(device)
        })?;
        let mut raw: aclrtContext = std::ptr::null_mut();
        // SAFETY: out-pointer to a local.
        let status = unsafe { (api.aclrtCreateContext)(&mut raw, device) };
        if let Err(e) = check(api, "aclrtCreateContext", status) {
            // SAFETY: undoes the aclrtSetDevice above.
            unsafe { (api.aclrtResetDevice)(device) };
            return Err(e);
        }
        Ok(Arc::new(Context { api, raw, device }))
    }

    /// Makes this context current on the calling thread; call it on every thread before device work.
    pub fn bind(&self) -> Result<()> {
        // SAFETY: `raw` is a live context (destroyed only in Drop).
        check(self.api, "aclrtSetCurrentContext", unsafe {
            (self.api.aclrtSetCurrentContext)(self.raw)
        })
    }

    /// The device this context belongs to.
    pub fn device(&self) -> i32 {
        self.device
    }

    /// The raw handle, for calls cann-sys does not wrap.
    pub fn raw(&self) -> aclrtContext {
        self.raw
    }

    /// Waits for all work on the device (binds this context on the calling thread first).
    pub fn synchronize(&self) -> Result<()> {
        self.bind()?;
        // SAFETY: no arguments.
        check(self.api, "aclrtSynchronizeDevice", unsafe {
            (self.api.aclrtSynchronizeDevice)()
        })
    }

    /// Free and total bytes of device memory (HBM), as `(free, total)`.
    pub fn mem_info(&self) -> Result<(usize, usize)> {
        self.bind()?;
        let (mut free, mut total) = (0usize, 0usize);
        // SAFETY: out-pointers to locals.
        check(self.api, "aclrtGetMemInfo", unsafe {
            (self.api.aclrtGetMemInfo)(ACL_HBM_MEM, &mut free, &mut total)
        })?;
        Ok((free, total))
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        // Errors cannot be returned from drop; the runtime reports leaks at reset.
        // SAFETY: `raw` is live; nothing made in it outlives this (each resource holds an Arc).
        unsafe {
            (self.api.aclrtDestroyContext)(self.raw);
            (self.api.aclrtResetDevice)(self.device);
        }
    }
}
