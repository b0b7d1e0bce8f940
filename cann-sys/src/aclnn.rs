//! The two-phase aclnn call, in one place: phase 1 (`aclnnXxxGetWorkspaceSize`) validates and plans and
//! gives a workspace size and an executor; phase 2 (`aclnnXxx`) enqueues the work with that workspace.
//! A plain executor is consumed by phase 2; a repeatable one ([`prepare`]) may be run again and is
//! destroyed on drop. See any ops-* `docs/aclnn*.md` ("two-phase interface") and opbase acl_meta.h.

use std::ffi::c_void;
use std::sync::Arc;

use crate::bindings::{aclOpExecutor, aclnnStatus, cann_pfn_aclnnMm};
use crate::error::{check, Error, Result};
use crate::loader::{api, Api, Pfn};
use crate::memory::DeviceBuffer;
use crate::runtime::Context;
use crate::stream::Stream;

/// Phase 2 of every aclnn operator has this type.
pub type RunFn = <cann_pfn_aclnnMm as Pfn>::F;

/// A device workspace reused across calls on one stream, grown when a call needs more.
pub struct Workspace {
    ctx: Arc<Context>,
    buffer: Option<DeviceBuffer>,
}

impl Workspace {
    /// An empty pool; nothing is allocated until a call needs it.
    pub fn new(ctx: &Arc<Context>) -> Workspace {
        Workspace {
            ctx: ctx.clone(),
            buffer: None,
        }
    }

    /// Bytes currently held.
    pub fn capacity(&self) -> usize {
        self.buffer.as_ref().map_or(0, DeviceBuffer::len)
    }

    /// A device address with at least `size` bytes, valid for work queued on `stream`.
    ///
    /// Reuse is safe because work on one stream runs in order. Before a smaller buffer is replaced, the
    /// stream is synchronised, since queued work may still be using it.
    pub fn get(&mut self, size: u64, stream: &Stream) -> Result<*mut c_void> {
        if size == 0 {
            return Ok(std::ptr::null_mut());
        }
        let size = usize::try_from(size).map_err(|_| {
            Error::Invalid(format!("workspace of {size} bytes does not fit in memory"))
        })?;
        if self.capacity() < size {
            if self.buffer.is_some() {
                stream.synchronize()?;
                self.buffer = None;
            }
            self.buffer = Some(DeviceBuffer::new(&self.ctx, size)?);
        }
        Ok(self
            .buffer
            .as_ref()
            .map_or(std::ptr::null_mut(), DeviceBuffer::as_ptr))
    }
}

/// Runs phase 1: `phase1` receives the out-pointers for the workspace size and the executor and returns
/// the operator's status.
fn plan(
    api: &Api,
    name: &str,
    phase1: impl FnOnce(&mut u64, &mut *mut aclOpExecutor) -> aclnnStatus,
) -> Result<(u64, *mut aclOpExecutor)> {
    let mut size = 0u64;
    let mut executor: *mut aclOpExecutor = std::ptr::null_mut();
    let status = phase1(&mut size, &mut executor);
    check(api, &format!("{name}GetWorkspaceSize"), status)?;
    if executor.is_null() {
        return Err(Error::Invalid(format!(
            "{name}GetWorkspaceSize succeeded but gave no executor"
        )));
    }
    Ok((size, executor))
}

/// One complete aclnn call on `stream`: phase 1 through `phase1`, workspace from `workspace`, phase 2
/// through `run`. `name` is the operator's C name (e.g. "aclnnMm"), used in errors.
///
/// ```text
/// let api = cann_sys::api()?;
/// let mm = api.aclnnMmGetWorkspaceSize.get()?;
/// aclnn::call("aclnnMm", api.aclnnMm.get()?, &mut ws, &stream, |size, exec| unsafe {
///     mm(a.raw(), b.raw(), out.raw(), 1, size, exec)
/// })?;
/// ```
pub fn call(
    name: &str,
    run: RunFn,
    workspace: &mut Workspace,
    stream: &Stream,
    phase1: impl FnOnce(&mut u64, &mut *mut aclOpExecutor) -> aclnnStatus,
) -> Result<()> {
    let api = api()?;
    let (size, executor) = plan(api, name, phase1)?;
    let ws = workspace.get(size, stream)?;
    // SAFETY: the executor came from phase 1 of the same operator, the workspace holds `size` bytes.
    // Phase 2 consumes a non-repeatable executor whether or not it succeeds, so it is never destroyed here.
    check(api, name, unsafe { run(ws, size, executor, stream.raw()) })
}

/// An executor made repeatable: run it as often as needed, destroyed on drop.
pub struct Executor {
    api: &'static Api,
    raw: *mut aclOpExecutor,
    name: String,
    run: RunFn,
    workspace_size: u64,
}

// SAFETY: the executor is a host object used by one thread at a time (&mut-free API, but Executor is not Sync).
unsafe impl Send for Executor {}

/// Phase 1 once, then `aclSetAclOpExecutorRepeatable`: the returned executor can be launched many times
/// (with the same tensors, or after rebinding addresses with [`Executor::set_input_addr`] /
/// [`Executor::set_output_addr`]).
pub fn prepare(
    name: &str,
    run: RunFn,
    phase1: impl FnOnce(&mut u64, &mut *mut aclOpExecutor) -> aclnnStatus,
) -> Result<Executor> {
    let api = api()?;
    let (workspace_size, raw) = plan(api, name, phase1)?;
    // SAFETY: a fresh executor from phase 1. If this fails the executor is left alone (it is not
    // repeatable, so destroying it is not documented): a leak, not a double free.
    let status = unsafe { (api.aclSetAclOpExecutorRepeatable)(raw) };
    check(api, "aclSetAclOpExecutorRepeatable", status)?;
    Ok(Executor {
        api,
        raw,
        name: name.to_string(),
        run,
        workspace_size,
    })
}

impl Executor {
    /// Workspace bytes each run needs.
    pub fn workspace_size(&self) -> u64 {
        self.workspace_size
    }

    /// The raw executor.
    pub fn raw(&self) -> *mut aclOpExecutor {
        self.raw
    }

    /// Enqueues one run on `stream`.
    pub fn launch(&self, workspace: &mut Workspace, stream: &Stream) -> Result<()> {
        let ws = workspace.get(self.workspace_size, stream)?;
        // SAFETY: a live repeatable executor and a workspace of the size phase 1 asked for.
        check(self.api, &self.name, unsafe {
            (self.run)(ws, self.workspace_size, self.raw, stream.raw())
        })
    }

    /// Points input `index` (in the operator's input order) at new device memory for later runs.
    // `addr` is a device address, never dereferenced on the host.
    #[allow(clippy::not_unsafe_ptr_arg_deref)]
    pub fn set_input_addr(
        &mut self,
        index: usize,
        tensor: &crate::Tensor,
        addr: *mut c_void,
    ) -> Result<()> {
        let f = self.api.aclSetInputTensorAddr.get()?;
        // SAFETY: live executor and tensor; the address is only used by later runs.
        check(self.api, "aclSetInputTensorAddr", unsafe {
            f(self.raw, index, tensor.raw(), addr)
        })
    }

    /// Points output `index` at new device memory for later runs.
    // `addr` is a device address, never dereferenced on the host.
    #[allow(clippy::not_unsafe_ptr_arg_deref)]
    pub fn set_output_addr(
        &mut self,
        index: usize,
        tensor: &crate::Tensor,
        addr: *mut c_void,
    ) -> Result<()> {
        let f = self.api.aclSetOutputTensorAddr.get()?;
        // SAFETY: as for set_input_addr.
        check(self.api, "aclSetOutputTensorAddr", unsafe {
            f(self.raw, index, tensor.raw(), addr)
        })
    }
}

impl Drop for Executor {
    fn drop(&mut self) {
        // SAFETY: a repeatable executor, destroyed once.
        unsafe { (self.api.aclDestroyAclOpExecutor)(self.raw) };
    }
}
