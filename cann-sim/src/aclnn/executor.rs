//! The two-phase protocol (ops-nn `docs/zh/context/two_phase_api.md`) and the executor API
//! (`aclSetAclOpExecutorRepeatable.md`, `aclDestroyAclOpExecutor.md`, `aclSetInputTensorAddr.md`,
//! `aclSetOutputTensorAddr.md`).
//!
//! Phase 1 (`aclnnXxxGetWorkspaceSize`) validates the arguments into a [`Plan`]: the operator's tensors, the
//! workspace it needs and the computation. Phase 2 (`aclnnXxx`) checks the workspace and every tensor's memory,
//! then enqueues the computation on the stream. A plain executor is consumed by phase 2; after
//! `aclSetAclOpExecutorRepeatable` it may be run again (reading the tensors' current addresses) and must be
//! destroyed with `aclDestroyAclOpExecutor`.

use super::access::View;
use super::tensor::{is_live, register, unregister, AclTensor, Kind, TensorDesc};
use super::types::*;
use crate::errors::set_recent;
use crate::stream::{enqueue, Task, TaskKind};
use std::collections::HashSet;
use std::ffi::c_void;
use std::sync::{Arc, Mutex, OnceLock};

/// Error of a phase-1 check: the status to return and the message for `aclGetRecentErrMsg`.
pub type PResult<T> = Result<T, (AclnnStatus, String)>;

/// 161002 with a message.
pub fn invalid<T>(msg: impl Into<String>) -> PResult<T> {
    Err((ACLNN_ERR_PARAM_INVALID, msg.into()))
}

/// 561002 with a message (for operators whose documents list shape errors under the tiling code).
pub fn tiling<T>(msg: impl Into<String>) -> PResult<T> {
    Err((ACLNN_ERR_INNER_TILING_ERROR, msg.into()))
}

/// The computation of an operator: inputs then outputs, in the order they were added to the plan.
pub type Kernel = Arc<dyn Fn(&[View], &[View]) -> Result<(), String> + Send + Sync>;

/// What phase 1 produces.
pub struct Plan {
    /// Input tensors (tensor lists expanded), in the order `aclSetInputTensorAddr` indexes them.
    pub ins: Vec<(String, Arc<TensorDesc>)>,
    /// Output tensors, in the order `aclSetOutputTensorAddr` indexes them.
    pub outs: Vec<(String, Arc<TensorDesc>)>,
    /// Workspace bytes phase 2 must be given.
    pub workspace: u64,
    /// The computation.
    pub kernel: Kernel,
}

impl Plan {
    /// A plan with no tensors yet.
    pub fn new(
        kernel: impl Fn(&[View], &[View]) -> Result<(), String> + Send + Sync + 'static,
    ) -> Plan {
        Plan {
            ins: Vec::new(),
            outs: Vec::new(),
            workspace: 0,
            kernel: Arc::new(kernel),
        }
    }

    /// Adds an input; returns the plan for chaining.
    pub fn input(mut self, name: &str, t: &Arc<TensorDesc>) -> Plan {
        self.ins.push((name.to_string(), t.clone()));
        self
    }

    /// Adds an output.
    pub fn output(mut self, name: &str, t: &Arc<TensorDesc>) -> Plan {
        self.outs.push((name.to_string(), t.clone()));
        self
    }

    /// Sets the workspace size.
    pub fn workspace(mut self, bytes: u64) -> Plan {
        self.workspace = bytes;
        self
    }
}

/// The object behind an `aclOpExecutor*`.
pub struct AclOpExecutor {
    op: &'static str,
    plan: Plan,
    repeatable: Mutex<bool>,
}

fn consumed() -> &'static Mutex<HashSet<usize>> {
    static C: OnceLock<Mutex<HashSet<usize>>> = OnceLock::new();
    C.get_or_init(|| Mutex::new(HashSet::new()))
}

/// Checks that a tensor's view lies inside its storage and, once it has an address, that the storage lies in
/// one live device allocation. A null address is allowed at phase 1 (aclSetInputTensorAddr.md binds addresses
/// later) but not at phase 2.
pub fn check_memory(name: &str, t: &TensorDesc, need_addr: bool) -> PResult<()> {
    let n = t.numel();
    if n > 0 {
        if t.dims.len() != t.strides.len() {
            return invalid(format!(
                "{name}: {} strides for {} dims",
                t.strides.len(),
                t.dims.len()
            ));
        }
        let last = t.offset
            + t.dims
                .iter()
                .zip(&t.strides)
                .map(|(d, s)| (d - 1) * s)
                .sum::<i64>();
        if last >= t.storage_numel() {
            return invalid(format!(
                "{name}: view {:?} with strides {:?} and offset {} reaches element {last}, outside its storage \
                 {:?} ({} elements)",
                t.dims,
                t.strides,
                t.offset,
                t.storage_dims,
                t.storage_numel()
            ));
        }
    }
    if t.dtype.size() == 0 {
        return invalid(format!(
            "{name}: data type {} is not simulated",
            t.dtype.name()
        ));
    }
    if n == 0 {
        return Ok(());
    }
    if t.addr() == 0 {
        if need_addr {
            return invalid(format!("{name}: tensor data address is null"));
        }
        return Ok(());
    }
    View::of(name, t)
        .check()
        .map_err(|m| (ACLNN_ERR_PARAM_INVALID, m))
}

/// Runs phase 1: checks the output pointers, builds the plan, checks every tensor's memory, and hands out the
/// executor. On error the message (prefixed by the operator's name) goes to `aclGetRecentErrMsg`.
///
/// # Safety
/// `workspace_size` and `executor` are null or writable.
pub unsafe fn phase1(
    op: &'static str,
    workspace_size: *mut u64,
    executor: *mut *mut AclOpExecutor,
    build: impl FnOnce() -> PResult<Plan>,
) -> AclnnStatus {
    let r = (|| {
        if workspace_size.is_null() {
            return Err((ACLNN_ERR_PARAM_NULLPTR, "workspaceSize is null".to_string()));
        }
        if executor.is_null() {
            return Err((ACLNN_ERR_PARAM_NULLPTR, "executor is null".to_string()));
        }
        let plan = build()?;
        for (name, t) in plan.ins.iter().chain(&plan.outs) {
            check_memory(name, t, false)?;
        }
        Ok(plan)
    })();
    match r {
        Ok(plan) => {
            *workspace_size = plan.workspace;
            let e = Box::into_raw(Box::new(AclOpExecutor {
                op,
                plan,
                repeatable: Mutex::new(false),
            }));
            consumed()
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&(e as usize));
            register(Kind::Executor, e as *const c_void);
            *executor = e;
            OK
        }
        Err((code, msg)) => {
            set_recent(format!("{op}GetWorkspaceSize failed ({code}): {msg}"));
            code
        }
    }
}

unsafe fn live_executor<'a>(e: *const AclOpExecutor, call: &str) -> PResult<&'a AclOpExecutor> {
    if e.is_null() {
        return Err((ACLNN_ERR_PARAM_NULLPTR, format!("{call}: executor is null")));
    }
    if !is_live(Kind::Executor, e as *const c_void) {
        let was = consumed()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&(e as usize));
        let why = if was {
            "it was consumed by an earlier run (not made repeatable with aclSetAclOpExecutorRepeatable) or destroyed"
        } else {
            "it is not a live executor"
        };
        return Err((
            ACLNN_ERR_PARAM_INVALID,
            format!("{call}: executor {e:p} cannot be used: {why}"),
        ));
    }
    Ok(&*e)
}

unsafe fn retire(e: *mut AclOpExecutor) {
    if unregister(Kind::Executor, e as *const c_void) {
        consumed()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(e as usize);
        drop(Box::from_raw(e));
    }
}

/// Runs phase 2 of `op`: checks the executor, the workspace and the tensors, then enqueues the computation.
///
/// # Safety
/// `executor` is null or a handle from phase 1.
pub unsafe fn phase2(
    op: &'static str,
    workspace: *mut c_void,
    workspace_size: u64,
    executor: *mut AclOpExecutor,
    stream: *mut c_void,
) -> AclnnStatus {
    let ex = match live_executor(executor, op) {
        Ok(e) => e,
        Err((c, m)) => {
            set_recent(m);
            return c;
        }
    };
    let r = run(op, ex, workspace, workspace_size, stream);
    if !*ex.repeatable.lock().unwrap_or_else(|p| p.into_inner()) {
        retire(executor);
    }
    match r {
        Ok(()) => OK,
        Err((c, m)) => {
            set_recent(format!("{op} failed ({c}): {m}"));
            c
        }
    }
}

unsafe fn run(
    op: &'static str,
    ex: &AclOpExecutor,
    workspace: *mut c_void,
    workspace_size: u64,
    stream: *mut c_void,
) -> PResult<()> {
    if ex.op != op {
        return invalid(format!(
            "the executor was made by {}GetWorkspaceSize, not {op}GetWorkspaceSize",
            ex.op
        ));
    }
    let need = ex.plan.workspace;
    let ws = workspace as u64;
    if need > 0 {
        if workspace_size < need {
            return invalid(format!(
                "workspaceSize {workspace_size} is less than the {need} bytes phase 1 reported"
            ));
        }
        if ws == 0 {
            return Err((
                ACLNN_ERR_PARAM_NULLPTR,
                format!("workspace is null but {need} bytes are required"),
            ));
        }
        crate::mem::check_range(ws, need)
            .map_err(|m| (ACLNN_ERR_PARAM_INVALID, format!("workspace: {m}")))?;
    }
    for (name, t) in ex.plan.ins.iter().chain(&ex.plan.outs) {
        check_memory(name, t, true)?;
    }
    if let Some(status) = crate::fault::take(op) {
        return Err((
            status,
            "fault injected by CANN_SIM fault injection".to_string(),
        ));
    }
    let ins: Vec<View> = ex.plan.ins.iter().map(|(n, t)| View::of(n, t)).collect();
    let outs: Vec<View> = ex.plan.outs.iter().map(|(n, t)| View::of(n, t)).collect();
    let bytes_read = ins.iter().map(View::bytes).sum();
    let bytes_written = outs.iter().map(View::bytes).sum();
    let kernel = ex.plan.kernel.clone();
    let task = Task {
        kind: TaskKind::Op(op),
        bytes_read,
        bytes_written,
        run: Box::new(move || {
            for v in ins.iter().chain(&outs) {
                v.check().map_err(|m| format!("{op}: {m}"))?;
            }
            if need > 0 {
                crate::mem::check_range(ws, need).map_err(|m| format!("{op}: workspace: {m}"))?;
                // The device kernel owns its workspace: scribbling over it makes a workspace that overlaps live
                // data show up as wrong results, as it would on hardware.
                // SAFETY: the range was just checked.
                unsafe { std::ptr::write_bytes(crate::mem::shadow(ws), 0xA5, need as usize) };
            }
            kernel(&ins, &outs).map_err(|m| format!("{op}: {m}"))
        }),
    };
    let rc = enqueue(stream, task);
    if rc != 0 {
        return Err((
            ACLNN_ERR_RUNTIME_ERROR,
            format!("enqueueing on stream {stream:p} failed with aclError {rc}"),
        ));
    }
    Ok(())
}

/// `aclSetAclOpExecutorRepeatable(aclOpExecutor *executor)`: the executor survives phase 2 and may be re-run.
///
/// # Safety
/// `executor` is null or a handle from phase 1.
#[no_mangle]
pub unsafe extern "C" fn aclSetAclOpExecutorRepeatable(
    executor: *mut AclOpExecutor,
) -> AclnnStatus {
    match live_executor(executor, "aclSetAclOpExecutorRepeatable") {
        Ok(e) => {
            *e.repeatable.lock().unwrap_or_else(|p| p.into_inner()) = true;
            OK
        }
        Err((c, m)) => {
            set_recent(m);
            c
        }
    }
}

/// `aclDestroyAclOpExecutor(aclOpExecutor *executor)`: frees an executor (a repeatable one, or one never run).
///
/// # Safety
/// `executor` is null or a handle from phase 1.
#[no_mangle]
pub unsafe extern "C" fn aclDestroyAclOpExecutor(executor: *mut AclOpExecutor) -> AclnnStatus {
    match live_executor(executor, "aclDestroyAclOpExecutor") {
        Ok(_) => {
            retire(executor);
            OK
        }
        Err((c, m)) => {
            set_recent(m);
            c
        }
    }
}

unsafe fn set_addr(
    call: &str,
    executor: *mut AclOpExecutor,
    index: usize,
    tensor: *mut AclTensor,
    addr: *mut c_void,
    output: bool,
) -> AclnnStatus {
    let r = (|| {
        if executor.is_null() || tensor.is_null() {
            return Err((
                ACLNN_ERR_INNER_NULLPTR,
                format!("{call}: executor or tensor is null"),
            ));
        }
        let ex = live_executor(executor, call)?;
        let list = if output { &ex.plan.outs } else { &ex.plan.ins };
        let Some((name, t)) = list.get(index) else {
            return invalid(format!(
                "{call}: index {index} is outside [0, {}) of the operator {}",
                list.len(),
                ex.op
            ));
        };
        if !is_live(Kind::Tensor, tensor as *const c_void) || !Arc::ptr_eq(&(*tensor).0, t) {
            return invalid(format!(
                "{call}: tensor {tensor:p} is not the {name} (index {index}) of this executor"
            ));
        }
        t.addr
            .store(addr as u64, std::sync::atomic::Ordering::Release);
        Ok(())
    })();
    match r {
        Ok(()) => OK,
        Err((c, m)) => {
            set_recent(m);
            c
        }
    }
}

/// `aclSetInputTensorAddr(aclOpExecutor*, size_t index, aclTensor*, void *addr)`: rebinds input `index`.
///
/// # Safety
/// Handles are null or live.
#[no_mangle]
pub unsafe extern "C" fn aclSetInputTensorAddr(
    executor: *mut AclOpExecutor,
    index: usize,
    tensor: *mut AclTensor,
    addr: *mut c_void,
) -> AclnnStatus {
    set_addr(
        "aclSetInputTensorAddr",
        executor,
        index,
        tensor,
        addr,
        false,
    )
}

/// `aclSetOutputTensorAddr(aclOpExecutor*, size_t index, aclTensor*, void *addr)`: rebinds output `index`.
///
/// # Safety
/// Handles are null or live.
#[no_mangle]
pub unsafe extern "C" fn aclSetOutputTensorAddr(
    executor: *mut AclOpExecutor,
    index: usize,
    tensor: *mut AclTensor,
    addr: *mut c_void,
) -> AclnnStatus {
    set_addr(
        "aclSetOutputTensorAddr",
        executor,
        index,
        tensor,
        addr,
        true,
    )
}

/// Declares the exported pair `aclnnXxxGetWorkspaceSize` / `aclnnXxx` for one operator: the first runs
/// [`phase1`] with the given builder, the second [`phase2`].
#[macro_export]
macro_rules! aclnn_op {
    ($name:literal, $ws:ident, $run:ident, ($($arg:ident : $ty:ty),* $(,)?), $build:expr) => {
        #[doc = concat!("`", $name, "GetWorkspaceSize`: phase 1 of ", $name, " (see the module documentation).")]
        ///
        /// # Safety
        /// Pointer arguments are null or valid handles / writable outputs as documented.
        #[no_mangle]
        #[allow(clippy::too_many_arguments)]
        pub unsafe extern "C" fn $ws(
            $($arg: $ty,)*
            workspace_size: *mut u64,
            executor: *mut *mut $crate::aclnn::executor::AclOpExecutor,
        ) -> i32 {
            $crate::aclnn::executor::phase1($name, workspace_size, executor, || $build($($arg),*))
        }

        #[doc = concat!("`", $name, "`: phase 2 (checks the workspace and enqueues the computation).")]
        ///
        /// # Safety
        /// `executor` is null or a handle from phase 1.
        #[no_mangle]
        pub unsafe extern "C" fn $run(
            workspace: *mut std::ffi::c_void,
            workspace_size: u64,
            executor: *mut $crate::aclnn::executor::AclOpExecutor,
            stream: *mut std::ffi::c_void,
        ) -> i32 {
            $crate::aclnn::executor::phase2($name, workspace, workspace_size, executor, stream)
        }
    };
}
