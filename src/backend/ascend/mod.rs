//! The Ascend NPU backend, through cann-sys (the ACL runtime and aclnn, loaded at run time).
//!
//! State: the runtime is loaded and the chosen device opened at load, so a missing runtime or a bad
//! device number fails at once with cann-sys's error (the library wanted and every place looked, or
//! the call, its status and the runtime's message). The op set of [`super::Backend`] is not
//! implemented on the device yet: with a runtime present, loading a model on this backend is an
//! error that says so, before any weight is read.

pub mod custom;

use std::sync::Arc;

use crate::error::{Error, Result};

/// An opened Ascend device: the runtime initialised and a context on the device.
pub struct AscendDevice {
    ctx: Arc<cann_sys::Context>,
    soc: String,
}

impl AscendDevice {
    /// Loads the runtime (once per process), checks that `device` exists and opens a context on it.
    pub fn open(device: u32) -> Result<Self> {
        let err = |cause| Error::Device { device, cause };
        let count = cann_sys::device_count().map_err(err)?;
        if device >= count {
            return Err(Error::input(format!(
                "--device {device}: the Ascend runtime sees {count} device(s) (numbered from 0)"
            )));
        }
        let ctx = cann_sys::Context::new(device as i32).map_err(err)?;
        let soc = cann_sys::soc_name().map_err(err)?;
        Ok(AscendDevice { ctx, soc })
    }

    /// The device's number.
    pub fn device(&self) -> u32 {
        self.ctx.device() as u32
    }

    /// The SoC name the runtime reports (e.g. "Ascend910B3").
    pub fn soc(&self) -> &str {
        &self.soc
    }
}
