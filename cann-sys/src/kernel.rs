//! Kernel binaries built for the device, loaded at run time and launched on a stream:
//! aclrtBinaryLoadFromFile → aclrtBinaryGetFunction → aclrtKernelArgsInit/Append/Finalize →
//! aclrtLaunchKernelWithConfig (runtime docs/zh/api_ref/14_Kernel_loading_and_execution.md and
//! example/2_advanced_features/kernel/0_launch_kernel). These symbols are optional: a runtime without
//! them still loads, and these calls then fail naming the missing symbol.

use std::ffi::{c_void, CString};
use std::path::Path;
use std::sync::Arc;

use crate::bindings::{aclrtArgsHandle, aclrtBinHandle, aclrtFuncHandle, aclrtParamHandle};
use crate::error::{check, Error, Result};
use crate::memory::Plain;
use crate::runtime::Context;
use crate::stream::Stream;

/// A loaded kernel binary; unloaded on drop.
pub struct Binary {
    ctx: Arc<Context>,
    raw: aclrtBinHandle,
}

// SAFETY: the handle is used with the context bound; cann-sys binds it.
unsafe impl Send for Binary {}

impl Binary {
    /// Loads the binary at `path` (default options).
    pub fn load(ctx: &Arc<Context>, path: &Path) -> Result<Binary> {
        let load = ctx.api.aclrtBinaryLoadFromFile.get()?;
        let c_path = CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| {
            Error::Invalid(format!(
                "kernel binary path {} contains a NUL byte",
                path.display()
            ))
        })?;
        ctx.bind()?;
        let mut raw: aclrtBinHandle = std::ptr::null_mut();
        // SAFETY: NUL-terminated path, NULL options (documented as defaults), out-pointer to a local.
        let status = unsafe { load(c_path.as_ptr(), std::ptr::null_mut(), &mut raw) };
        check(
            ctx.api,
            &format!("aclrtBinaryLoadFromFile({})", path.display()),
            status,
        )?;
        Ok(Binary {
            ctx: ctx.clone(),
            raw,
        })
    }

    /// The kernel `name` in this binary.
    pub fn function(&self, name: &str) -> Result<Function<'_>> {
        let get = self.ctx.api.aclrtBinaryGetFunction.get()?;
        let c_name = CString::new(name)
            .map_err(|_| Error::Invalid(format!("kernel name {name:?} contains a NUL byte")))?;
        let mut raw: aclrtFuncHandle = std::ptr::null_mut();
        // SAFETY: live binary, NUL-terminated name, out-pointer to a local.
        let status = unsafe { get(self.raw, c_name.as_ptr(), &mut raw) };
        check(
            self.ctx.api,
            &format!("aclrtBinaryGetFunction({name})"),
            status,
        )?;
        Ok(Function {
            binary: self,
            raw,
            name: name.to_string(),
        })
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        if let Ok(unload) = self.ctx.api.aclrtBinaryUnLoad.get() {
            // SAFETY: loaded by aclrtBinaryLoadFromFile, unloaded once; context bound first.
            unsafe {
                (self.ctx.api.aclrtSetCurrentContext)(self.ctx.raw());
                unload(self.raw);
            }
        }
    }
}

/// A kernel of a loaded [`Binary`].
pub struct Function<'b> {
    binary: &'b Binary,
    raw: aclrtFuncHandle,
    name: String,
}

impl Function<'_> {
    /// Starts an argument list for one launch of this kernel.
    pub fn args(&self) -> Result<Args<'_>> {
        let init = self.binary.ctx.api.aclrtKernelArgsInit.get()?;
        let mut raw: aclrtArgsHandle = std::ptr::null_mut();
        // SAFETY: live function, out-pointer to a local.
        check(self.binary.ctx.api, "aclrtKernelArgsInit", unsafe {
            init(self.raw, &mut raw)
        })?;
        Ok(Args {
            function: self,
            raw,
            finalized: false,
        })
    }

    /// Launches over `blocks` blocks on `stream` with finalized `args`.
    pub fn launch(&self, blocks: u32, stream: &Stream, args: &Args<'_>) -> Result<()> {
        if !args.finalized {
            return Err(Error::Invalid(format!(
                "arguments of kernel {} were launched before finalize()",
                self.name
            )));
        }
        let launch = self.binary.ctx.api.aclrtLaunchKernelWithConfig.get()?;
        // SAFETY: live function, stream and finalized args; NULL config and reserve are documented defaults.
        let status = unsafe {
            launch(
                self.raw,
                blocks,
                stream.raw(),
                std::ptr::null_mut(),
                args.raw,
                std::ptr::null_mut(),
            )
        };
        check(
            self.binary.ctx.api,
            &format!("aclrtLaunchKernelWithConfig({})", self.name),
            status,
        )
    }
}

/// Arguments of one kernel launch, appended in the kernel's parameter order (device addresses as `u64`).
/// The runtime keeps the handle with the function; the documented API has no call to free it.
pub struct Args<'f> {
    function: &'f Function<'f>,
    raw: aclrtArgsHandle,
    finalized: bool,
}

impl Args<'_> {
    /// Appends one argument by value (the runtime copies it).
    pub fn push<T: Plain>(&mut self, value: T) -> Result<&mut Self> {
        if self.finalized {
            return Err(Error::Invalid(format!(
                "argument pushed after finalize() for kernel {}",
                self.function.name
            )));
        }
        let append = self.function.binary.ctx.api.aclrtKernelArgsAppend.get()?;
        let mut value = value;
        let mut param: aclrtParamHandle = std::ptr::null_mut();
        // SAFETY: live args handle; `value` is a local of the stated size, copied by the runtime.
        let status = unsafe {
            append(
                self.raw,
                (&mut value as *mut T).cast::<c_void>(),
                std::mem::size_of::<T>(),
                &mut param,
            )
        };
        check(
            self.function.binary.ctx.api,
            "aclrtKernelArgsAppend",
            status,
        )?;
        Ok(self)
    }

    /// Closes the list; required before launch.
    pub fn finalize(&mut self) -> Result<()> {
        let finalize = self.function.binary.ctx.api.aclrtKernelArgsFinalize.get()?;
        // SAFETY: live args handle.
        check(
            self.function.binary.ctx.api,
            "aclrtKernelArgsFinalize",
            unsafe { finalize(self.raw) },
        )?;
        self.finalized = true;
        Ok(())
    }
}
