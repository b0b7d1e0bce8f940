//! The Ascend NPU backend: the op set of [`super::Backend`] on the device through cann-sys (the ACL
//! runtime and aclnn, loaded at run time).
//!
//! # Schedule
//! - One **compute stream** runs every op, in order; a **transfer stream** carries the weights at
//!   load and the large inputs (pixel tiles). The two are ordered by events: an upload first waits for
//!   the compute work queued before it (its destination block may have been freed by a tensor that
//!   queued work still reads), and the compute stream waits for the upload before the next op.
//! - The host enqueues a whole prefill or decode step without waiting. The only synchronisations are
//!   the ops that bring data to the host: [`Backend::download`] and [`Backend::argmax_last`]. Greedy
//!   decoding takes the argmax on the device, so one synchronisation and 12 bytes (the token id as an
//!   int64 and a finiteness check of the row) cross to the host per token.
//! - Small per-step inputs (token ids, row indices, the rotary cos/sin rows) are copied from pinned
//!   buffers on the compute stream itself, which orders them without events.
//! - Executors are the plain (one-shot) kind: phase 1 runs on the host for every op. Repeatable
//!   executors would save that host time in decoding, but their tensors are fixed at creation while
//!   each decode step's KV length grows; rebinding addresses does not change shapes, so a repeatable
//!   decode step would need a padded, masked cache. That trade is left until a real 910B has measured
//!   where the per-token time goes (see README, "Ascend").
//!
//! # Memory
//! Weights are uploaded once in the activation dtype (bf16, fp16 or f32, as `model.to(dtype)`
//! rounds them), read from the memory-mapped checkpoint through two pinned staging buffers on the
//! transfer stream, one filled while the other is copied. Activations and workspaces come from pools
//! ([`memory`]); the KV cache is allocated per request, so a request that does not fit fails before
//! any work.
//!
//! # Errors
//! Every op returns a result; a failed call becomes [`Error::Op`] naming the op and, inside the
//! message, the CANN call, its status and the runtime's message. Work that fails while the device
//! runs it is reported by the next synchronisation (a download or an argmax). The backend stays
//! usable: a failed request's tensors return to the pool.

pub mod convert;
pub mod custom;
pub mod memory;
pub mod sim;

use std::ffi::c_void;
use std::sync::{Arc, Mutex, MutexGuard};

use cann_sys::bindings::{
    aclDataType, aclOpExecutor, aclnnStatus, ACL_BOOL, ACL_FLOAT, ACL_FORMAT_ND, ACL_INT64,
};
use cann_sys::{aclnn, Context, Event, IntArray, Scalar, Stream, Tensor};

use self::convert::{acl_dtype, elem_size};
use self::memory::{Block, DevicePool, HostPool};
use super::{checks, ActDtype, AttentionMask, AttentionParams, Backend};
use crate::error::{Error, Result};
use crate::weights::TensorRef;

/// An opened Ascend device: the runtime initialised and a context on the device.
pub struct AscendDevice {
    ctx: Arc<Context>,
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

    /// The context.
    pub fn context(&self) -> &Arc<Context> {
        &self.ctx
    }
}

/// Bytes of each pinned staging buffer for weight uploads; two are used in turn.
const STAGING_BYTES: usize = 16 << 20;

/// The causal mask of sparse modes 2–4 has this fixed side (aclnnFlashAttentionScore's document).
const CAUSAL_MASK_SIDE: usize = 2048;

/// An activation matrix in device memory, in the backend's activation dtype.
pub struct AscendTensor {
    block: Block,
    rows: usize,
    cols: usize,
}

/// A parameter matrix resident on the device, in the activation dtype.
pub struct AscendWeight {
    block: Block,
    rows: usize,
    cols: usize,
}

/// One layer's keys or values on the device: `capacity` rows allocated, the first `rows` filled.
pub struct AscendCache {
    block: Block,
    rows: usize,
    cols: usize,
    capacity: usize,
}

/// What only one thread at a time may touch: the streams (a stream handle is not `Sync`), the
/// workspace, the staging buffers and small device constants.
struct Inner {
    compute: Stream,
    transfer: Stream,
    /// Recorded on the compute stream before an upload on the transfer stream waits on it.
    compute_mark: Event,
    /// Recorded on the transfer stream after an upload; the compute stream waits on it.
    transfer_mark: Event,
    workspace: aclnn::Workspace,
    /// Weight staging: two pinned buffers, each with the event of its last copy.
    staging: Vec<(cann_sys::HostBuffer, Event, bool)>,
    /// The 2048×2048 causal mask (1 above the diagonal), made on first use.
    causal_mask: Option<Block>,
    /// A column of zeros `[cols, 1]` whose product with a logits row is 0 exactly when the row is
    /// finite.
    zero_col: Option<(usize, Block)>,
    /// The rotary cos/sin rows of the last positions seen: every layer of a step reuses them.
    rope: Option<RopeRows>,
    /// The argmax result and finiteness value, copied to the host together.
    step_out: Option<Block>,
    /// Timing marks recorded and not yet read, by id; events kept for reuse.
    marks: std::collections::HashMap<u64, Event>,
    spare_events: Vec<Event>,
    next_mark: u64,
}

impl Inner {
    /// Waits for both streams: an upload into a block whose tensor was dropped may still be queued
    /// on the transfer stream, so idle blocks may be freed only after both.
    fn drain(&self) -> cann_sys::Result<()> {
        self.compute.synchronize()?;
        self.transfer.synchronize()
    }
}

struct RopeRows {
    positions: Vec<u32>,
    inv_freq: Vec<f32>,
    cos: Block,
    sin: Block,
}

/// Which implementation runs the products and attention on the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KernelChoice {
    /// CANN's aclnn operators (the default until our kernels have been validated on a real 910B).
    #[default]
    Aclnn,
    /// Our AscendC kernels of `kernels/` ([`custom::CustomKernels`]) for the matmuls and attention in
    /// bf16 and fp16; f32 (which they do not take) and shapes they refuse stay on aclnn.
    Custom,
}

impl KernelChoice {
    /// The name used by `--kernels`.
    pub fn as_str(self) -> &'static str {
        match self {
            KernelChoice::Aclnn => "aclnn",
            KernelChoice::Custom => "custom",
        }
    }
}

impl std::str::FromStr for KernelChoice {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "aclnn" => Ok(KernelChoice::Aclnn),
            "custom" => Ok(KernelChoice::Custom),
            other => Err(format!(
                "unknown kernels {other:?}; expected aclnn or custom"
            )),
        }
    }
}

/// The Ascend backend.
pub struct AscendBackend {
    dev: AscendDevice,
    /// Our kernels, when chosen and the activations are 16-bit.
    custom: Option<custom::CustomKernels>,
    act: ActDtype,
    dtype: aclDataType,
    elem: usize,
    pool: Arc<DevicePool>,
    host: HostPool,
    inner: Mutex<Inner>,
    /// The weight upload's progress bar (drawn on a terminal only).
    progress: Mutex<Option<indicatif::ProgressBar>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Each op leaves the state consistent before it can fail, so a poisoned lock stays usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// `Err(Error::Op)` for `op` unless `ok`.
fn check(ok: bool, op: &'static str, message: impl FnOnce() -> String) -> Result<()> {
    checks::check("ascend", ok, op, message)
}

/// Maps a cann-sys error of `op` into the crate's error (the call, status and runtime message stay in
/// the text).
fn op_err(op: &'static str) -> impl Fn(cann_sys::Error) -> Error {
    move |e| Error::Op {
        backend: "ascend",
        op,
        message: e.to_string(),
    }
}

type Phase1<'a> = Box<dyn FnOnce(&mut u64, &mut *mut aclOpExecutor) -> aclnnStatus + 'a>;

impl AscendBackend {
    /// A backend on an opened device computing with activations in `act`, on aclnn.
    pub fn new(dev: AscendDevice, act: ActDtype) -> Result<Self> {
        Self::with_kernels(dev, act, KernelChoice::Aclnn)
    }

    /// A backend on an opened device computing with activations in `act` on the chosen kernels
    /// (our kernels take 16-bit activations only: in f32 mode the choice changes nothing).
    pub fn with_kernels(dev: AscendDevice, act: ActDtype, kernels: KernelChoice) -> Result<Self> {
        let custom = match kernels {
            KernelChoice::Custom if act != ActDtype::F32 => {
                Some(custom::CustomKernels::load(&dev.ctx)?)
            }
            _ => None,
        };
        let ctx = dev.ctx.clone();
        let e = op_err("init");
        ctx.bind().map_err(&e)?;
        let compute = Stream::new(&ctx).map_err(&e)?;
        let transfer = Stream::new(&ctx).map_err(&e)?;
        let compute_mark = Event::new(&ctx).map_err(&e)?;
        let transfer_mark = Event::new(&ctx).map_err(&e)?;
        let mut staging = Vec::new();
        for _ in 0..2 {
            staging.push((
                cann_sys::HostBuffer::new(&ctx, STAGING_BYTES).map_err(&e)?,
                Event::new(&ctx).map_err(&e)?,
                false,
            ));
        }
        // Free blocks kept for reuse: an eighth of the device, enough for every activation of a
        // vision chunk or a prefill of Idefics3-8B.
        let keep = ctx.mem_info().map_or(8 << 30, |(_, total)| total / 8);
        Ok(AscendBackend {
            custom,
            act,
            dtype: acl_dtype(act),
            elem: elem_size(act),
            pool: DevicePool::new(&ctx, keep),
            host: HostPool::new(&ctx),
            inner: Mutex::new(Inner {
                compute,
                transfer,
                compute_mark,
                transfer_mark,
                workspace: aclnn::Workspace::new(&ctx),
                staging,
                causal_mask: None,
                zero_col: None,
                rope: None,
                step_out: None,
                marks: Default::default(),
                spare_events: Vec::new(),
                next_mark: 0,
            }),
            progress: Mutex::new(None),
            dev,
        })
    }

    /// The opened device.
    pub fn device(&self) -> &AscendDevice {
        &self.dev
    }

    /// Which kernels run the products and attention.
    pub fn kernels(&self) -> KernelChoice {
        if self.custom.is_some() {
            KernelChoice::Custom
        } else {
            KernelChoice::Aclnn
        }
    }

    /// Fresh device allocations made by the pools so far (flat in steady state).
    pub fn pool_allocations(&self) -> u64 {
        self.pool.allocations()
    }

    /// Locks the state and binds the context on this thread.
    fn enter(&self, op: &'static str) -> Result<MutexGuard<'_, Inner>> {
        let g = lock(&self.inner);
        self.dev.ctx.bind().map_err(op_err(op))?;
        Ok(g)
    }

    /// A pooled block of `len` bytes; when the device is full, waits for it, frees the pool's idle
    /// blocks and tries again.
    fn block(&self, inner: &Inner, op: &'static str, len: usize) -> Result<Block> {
        self.pool.get(len, || inner.drain()).map_err(op_err(op))
    }

    /// A pooled activation of `rows × cols`.
    fn tensor(
        &self,
        inner: &Inner,
        op: &'static str,
        rows: usize,
        cols: usize,
    ) -> Result<AscendTensor> {
        let len = rows
            .checked_mul(cols)
            .and_then(|n| n.checked_mul(self.elem))
            .ok_or_else(|| Error::Op {
                backend: "ascend",
                op,
                message: format!("a [{rows}, {cols}] tensor does not fit in memory"),
            })?;
        Ok(AscendTensor {
            block: self.block(inner, op, len)?,
            rows,
            cols,
        })
    }

    /// A descriptor of `ptr` as a row-major tensor of `shape` in the activation dtype.
    fn desc(&self, ptr: *mut c_void, shape: &[usize], op: &'static str) -> Result<Tensor> {
        desc_of(ptr, self.dtype, shape, op)
    }

    /// One aclnn call on the compute stream.
    fn call(
        &self,
        inner: &mut Inner,
        op: &'static str,
        name: &'static str,
        run: cann_sys::Result<aclnn::RunFn>,
        phase1: Phase1<'_>,
    ) -> Result<()> {
        let e = op_err(op);
        let run = run.map_err(&e)?;
        let Inner {
            workspace, compute, ..
        } = inner;
        aclnn::call(name, run, workspace, compute, phase1).map_err(e)
    }

    /// Copies small host bytes (indices, rotary rows) into a fresh block on the compute stream.
    fn upload_small(&self, inner: &Inner, op: &'static str, bytes: &[u8]) -> Result<Block> {
        let e = op_err(op);
        let mut block = self.block(inner, op, bytes.len())?;
        let mut pinned = self.host.get(bytes.len()).map_err(&e)?;
        pinned.as_mut_slice()[..bytes.len()].copy_from_slice(bytes);
        // SAFETY: the pinned buffer is parked until the compute stream is synchronised; the block is
        // owned by the caller's tensor, which outlives the queued work or returns to the pool, whose
        // next user is queued after it.
        unsafe {
            block.buffer_mut().copy_from_host_async(
                0,
                &pinned.as_slice()[..bytes.len()],
                &inner.compute,
            )
        }
        .map_err(&e)?;
        self.host.park(pinned);
        Ok(block)
    }

    /// Indices as int64 on the device.
    fn upload_indices(
        &self,
        inner: &Inner,
        op: &'static str,
        ids: impl Iterator<Item = i64>,
    ) -> Result<Block> {
        let bytes: Vec<u8> = ids.flat_map(i64::to_le_bytes).collect();
        self.upload_small(inner, op, &bytes)
    }

    /// Waits for the compute stream and returns the staging buffers its copies used.
    fn sync_compute(&self, inner: &Inner, op: &'static str) -> Result<()> {
        let mut r = inner.compute.synchronize().map_err(op_err(op));
        // Even after a failed synchronisation the queued copies have ended (ran or were skipped).
        self.host.recycle();
        if r.is_ok() && self.pool.has_deferred() {
            // An upload into a dropped tensor's block may still be queued on the transfer stream.
            r = inner.transfer.synchronize().map_err(op_err(op));
            if r.is_ok() {
                self.pool.free_deferred();
            }
        }
        r
    }

    fn causal_mask(&self, inner: &mut Inner) -> Result<*mut c_void> {
        if inner.causal_mask.is_none() {
            let n = CAUSAL_MASK_SIDE;
            let mut m = vec![0u8; n * n];
            for i in 0..n {
                m[i * n + i + 1..(i + 1) * n].fill(1);
            }
            let b = self.upload_small(inner, "attention", &m)?;
            inner.causal_mask = Some(b);
        }
        Ok(inner
            .causal_mask
            .as_ref()
            .map_or(std::ptr::null_mut(), Block::ptr))
    }

    /// Flash attention over `q [b, sq, heads·d]` and `k, v [b, skv, kv_heads·d]` at the given
    /// addresses: bidirectional within each of the `b` sequences with `key_valid` (per key of all
    /// sequences) when given, or causal (query i sees keys up to `i + skv - sq`).
    #[allow(clippy::too_many_arguments)]
    fn flash(
        &self,
        inner: &mut Inner,
        op: &'static str,
        q: &AscendTensor,
        k: *mut c_void,
        v: *mut c_void,
        batch: usize,
        sq: usize,
        skv: usize,
        p: &AttentionParams,
        key_valid: Option<&[bool]>,
        causal: bool,
    ) -> Result<AscendTensor> {
        let key_valid = key_valid.filter(|valid| valid.iter().any(|v| !v));
        if let Some(kern) = self
            .custom
            .as_ref()
            .filter(|_| p.head_dim.is_multiple_of(8) && p.head_dim <= 128)
        {
            let out = self.tensor(inner, op, q.rows, p.heads * p.head_dim)?;
            let mask = match key_valid {
                Some(valid) => {
                    let bytes: Vec<u8> = valid.iter().map(|&v| u8::from(v)).collect();
                    Some(self.upload_small(inner, op, &bytes)?)
                }
                None => None,
            };
            let shape = custom::FlashShape {
                batch,
                heads: p.heads,
                kv_heads: p.kv_heads,
                head_dim: p.head_dim,
                q_len: sq,
                kv_len: skv,
                q: custom::Strides::bsnd(sq, p.heads, p.head_dim),
                k: custom::Strides::bsnd(skv, p.kv_heads, p.head_dim),
                v: custom::Strides::bsnd(skv, p.kv_heads, p.head_dim),
                out: custom::Strides::bsnd(sq, p.heads, p.head_dim),
                causal: causal.then_some(skv - sq),
                scale: p.scale,
                dtype: self.act,
            };
            let Inner {
                compute, workspace, ..
            } = inner;
            kern.flash_attention(
                compute,
                q.block.ptr(),
                k,
                v,
                out.block.ptr(),
                mask.as_ref().map(Block::ptr),
                &shape,
                workspace,
            )?;
            return Ok(out);
        }
        let full_mask = match key_valid {
            Some(valid) => {
                // [batch, 1, S, S], 1 where a key is hidden (the document's convention).
                let s = sq;
                let mut m = vec![0u8; batch * s * s];
                for b in 0..batch {
                    let hidden: Vec<u8> = valid[b * s..(b + 1) * s]
                        .iter()
                        .map(|&v| u8::from(!v))
                        .collect();
                    for i in 0..s {
                        m[(b * s + i) * s..][..s].copy_from_slice(&hidden);
                    }
                }
                Some(self.upload_small(inner, op, &m)?)
            }
            None => None,
        };
        let full_mask = full_mask.as_ref();
        let (hq, hkv) = (p.heads * p.head_dim, p.kv_heads * p.head_dim);
        let out = self.tensor(inner, op, q.rows, hq)?;
        let stats_len = batch * p.heads * sq * 8 * 4;
        let smax = self.block(inner, op, stats_len)?;
        let ssum = self.block(inner, op, stats_len)?;
        let tq = self.desc(q.block.ptr(), &[batch, sq, hq], op)?;
        let tk = self.desc(k, &[batch, skv, hkv], op)?;
        let tv = self.desc(v, &[batch, skv, hkv], op)?;
        let to = self.desc(out.block.ptr(), &[batch, sq, hq], op)?;
        let stats = [batch, p.heads, sq, 8];
        let tmax = desc_of(smax.ptr(), ACL_FLOAT, &stats, op)?;
        let tsum = desc_of(ssum.ptr(), ACL_FLOAT, &stats, op)?;
        let (mask, sparse) = if causal {
            let m = self.causal_mask(inner)?;
            let n = CAUSAL_MASK_SIDE;
            (Some(desc_of(m, ACL_BOOL, &[n, n], op)?), 3)
        } else if let Some(b) = full_mask {
            (
                Some(desc_of(b.ptr(), ACL_BOOL, &[batch, 1, sq, skv], op)?),
                0,
            )
        } else {
            (None, 0)
        };
        let mask_raw = mask.as_ref().map_or(std::ptr::null_mut(), Tensor::raw);
        let api = cann_sys::api().map_err(op_err(op))?;
        let phase1 = api
            .aclnnFlashAttentionScoreGetWorkspaceSize
            .get()
            .map_err(op_err(op))?;
        let mut layout = *b"BSH\0";
        let scale = f64::from(p.scale);
        let heads = p.heads as i64;
        let layout_ptr = layout.as_mut_ptr().cast();
        self.call(
            inner,
            op,
            "aclnnFlashAttentionScore",
            api.aclnnFlashAttentionScore.get(),
            Box::new(|size, exec| unsafe {
                // SAFETY: live descriptors over live blocks; null optional inputs.
                phase1(
                    tq.raw(),
                    tk.raw(),
                    tv.raw(),
                    std::ptr::null(),
                    std::ptr::null(),
                    std::ptr::null(),
                    mask_raw,
                    std::ptr::null(),
                    scale,
                    1.0,
                    i64::from(i32::MAX),
                    if causal { 0 } else { i64::from(i32::MAX) },
                    heads,
                    layout_ptr,
                    0,
                    sparse,
                    tmax.raw(),
                    tsum.raw(),
                    std::ptr::null(),
                    to.raw(),
                    size,
                    exec,
                )
            }),
        )?;
        // The statistics blocks return to the pool now; their next user is queued after this op.
        Ok(out)
    }

    /// Rotary cos/sin rows `[rows, head_dim]` for `positions` ([`super::rope_cos_sin`], each pair
    /// in both halves), kept for the next call with the same positions.
    fn rope_rows(
        &self,
        inner: &mut Inner,
        head_dim: usize,
        positions: &[u32],
        inv_freq: &[f32],
    ) -> Result<()> {
        if let Some(r) = &inner.rope {
            if r.positions == positions && r.inv_freq == inv_freq {
                return Ok(());
            }
        }
        let half = head_dim / 2;
        let n = positions.len() * head_dim;
        let (mut cos, mut sin) = (vec![0f32; n], vec![0f32; n]);
        let pairs = super::rope_cos_sin(positions, inv_freq, self.act);
        for (k, &(c, s)) in pairs.iter().enumerate() {
            let (r, i) = (k / half, k % half);
            for j in [i, i + half] {
                cos[r * head_dim + j] = c;
                sin[r * head_dim + j] = s;
            }
        }
        let mut bytes = vec![0u8; n * self.elem];
        convert::f32_into(self.act, &cos, &mut bytes);
        let cos = self.upload_small(inner, "rope", &bytes)?;
        convert::f32_into(self.act, &sin, &mut bytes);
        let sin = self.upload_small(inner, "rope", &bytes)?;
        inner.rope = Some(RopeRows {
            positions: positions.to_vec(),
            inv_freq: inv_freq.to_vec(),
            cos,
            sin,
        });
        Ok(())
    }

    /// A permutation of `x` viewed with `shape`, written contiguously.
    fn permute(
        &self,
        op: &'static str,
        x: &AscendTensor,
        shape: &[usize],
        dims: &[i64],
        out_rows: usize,
        out_cols: usize,
    ) -> Result<AscendTensor> {
        let mut inner = self.enter(op)?;
        let out = self.tensor(&inner, op, out_rows, out_cols)?;
        let out_shape: Vec<usize> = dims.iter().map(|&d| shape[d as usize]).collect();
        let tx = self.desc(x.block.ptr(), shape, op)?;
        let to = self.desc(out.block.ptr(), &out_shape, op)?;
        let perm = IntArray::new(dims).map_err(op_err(op))?;
        let api = cann_sys::api().map_err(op_err(op))?;
        let phase1 = api.aclnnPermuteGetWorkspaceSize.get().map_err(op_err(op))?;
        self.call(
            &mut inner,
            op,
            "aclnnPermute",
            api.aclnnPermute.get(),
            Box::new(|size, exec| unsafe { phase1(tx.raw(), perm.raw(), to.raw(), size, exec) }),
        )?;
        Ok(out)
    }

    /// Elementwise `out = f(x)` for the one-input activations.
    fn unary(
        &self,
        inner: &mut Inner,
        op: &'static str,
        x: &AscendTensor,
        which: Unary,
    ) -> Result<AscendTensor> {
        let out = self.tensor(inner, op, x.rows, x.cols)?;
        let tx = self.desc(x.block.ptr(), &[x.rows, x.cols], op)?;
        let to = self.desc(out.block.ptr(), &[x.rows, x.cols], op)?;
        let api = cann_sys::api().map_err(op_err(op))?;
        match which {
            Unary::GeluTanh => {
                let phase1 = api.aclnnGeluV2GetWorkspaceSize.get().map_err(op_err(op))?;
                self.call(
                    inner,
                    op,
                    "aclnnGeluV2",
                    api.aclnnGeluV2.get(),
                    // approximate = 1: the tanh form (aclnnGeluV2's document).
                    Box::new(|size, exec| unsafe { phase1(tx.raw(), 1, to.raw(), size, exec) }),
                )?;
            }
            Unary::Silu => {
                let phase1 = api.aclnnSiluGetWorkspaceSize.get().map_err(op_err(op))?;
                self.call(
                    inner,
                    op,
                    "aclnnSilu",
                    api.aclnnSilu.get(),
                    Box::new(|size, exec| unsafe { phase1(tx.raw(), to.raw(), size, exec) }),
                )?;
            }
        }
        Ok(out)
    }

    /// `x·Wᵀ (+ b)`, then GELU when `gelu`, into a new tensor, on the locked state.
    fn matmul_locked(
        &self,
        inner: &mut Inner,
        op: &'static str,
        x: &AscendTensor,
        w: &AscendWeight,
        bias: Option<&AscendWeight>,
        gelu: bool,
    ) -> Result<AscendTensor> {
        checks::matmul(
            "ascend",
            op,
            (x.rows, x.cols),
            (w.rows, w.cols),
            bias.map(|b| b.rows * b.cols),
        )?;
        let (m, k, n) = (x.rows, x.cols, w.rows);
        let out = self.tensor(inner, op, m, n)?;
        if let Some(kern) = &self.custom {
            let Inner {
                compute, workspace, ..
            } = inner;
            kern.matmul(
                compute,
                x.block.ptr(),
                w.block.ptr(),
                bias.map(|b| b.block.ptr()),
                out.block.ptr(),
                m,
                n,
                k,
                self.act,
                self.act,
                gelu,
                workspace,
            )?;
            return Ok(out);
        }
        let tx = self.desc(x.block.ptr(), &[m, k], op)?;
        // W[N, K] seen as Wᵀ [K, N] through strides (1, K): the checkpoint layout, read in place.
        let tw = Tensor::new(
            w.block.ptr(),
            self.dtype,
            &[k as i64, n as i64],
            &[1, k as i64],
            0,
            ACL_FORMAT_ND,
            &[n as i64, k as i64],
        )
        .map_err(op_err(op))?;
        let to = self.desc(out.block.ptr(), &[m, n], op)?;
        let api = cann_sys::api().map_err(op_err(op))?;
        let phase1 = api.aclnnMmGetWorkspaceSize.get().map_err(op_err(op))?;
        // cubeMathType 0 (KEEP_DTYPE): f32 products stay f32, as on the CPU reference.
        self.call(
            inner,
            op,
            "aclnnMm",
            api.aclnnMm.get(),
            Box::new(|size, exec| unsafe { phase1(tx.raw(), tw.raw(), to.raw(), 0, size, exec) }),
        )?;
        if let Some(b) = bias {
            let tb = self.desc(b.block.ptr(), &[n], op)?;
            self.inplace_add(inner, op, &to, &tb)?;
        }
        if gelu {
            return self.unary(inner, op, &out, Unary::GeluTanh);
        }
        Ok(out)
    }

    /// `self += other` (broadcast), through aclnnInplaceAdd with alpha 1.
    fn inplace_add(
        &self,
        inner: &mut Inner,
        op: &'static str,
        x: &Tensor,
        y: &Tensor,
    ) -> Result<()> {
        let alpha = Scalar::new(1.0f32).map_err(op_err(op))?;
        let api = cann_sys::api().map_err(op_err(op))?;
        let phase1 = api
            .aclnnInplaceAddGetWorkspaceSize
            .get()
            .map_err(op_err(op))?;
        self.call(
            inner,
            op,
            "aclnnInplaceAdd",
            api.aclnnInplaceAdd.get(),
            Box::new(|size, exec| unsafe { phase1(x.raw(), y.raw(), alpha.raw(), size, exec) }),
        )
    }

    /// Queues the upload of `bytes` (weights or a large input) into `dst` through the staging
    /// buffers on the transfer stream, then orders the compute stream after it.
    fn stage_upload(
        &self,
        inner: &mut Inner,
        op: &'static str,
        dst: &mut Block,
        total: usize,
        mut fill: impl FnMut(usize, &mut [u8]),
    ) -> Result<()> {
        let e = op_err(op);
        // The destination may be a recycled block that queued compute work still reads.
        inner.compute_mark.record(&inner.compute).map_err(&e)?;
        inner.transfer.wait(&inner.compute_mark).map_err(&e)?;
        let mut offset = 0;
        let mut turn = 0;
        while offset < total {
            let len = (total - offset).min(STAGING_BYTES);
            let (buf, done, used) = &mut inner.staging[turn];
            if *used {
                // The copy that last read this buffer must have run before it is refilled; the other
                // buffer's copy proceeds meanwhile.
                done.synchronize().map_err(&e)?;
            }
            fill(offset, &mut buf.as_mut_slice()[..len]);
            // SAFETY: the staging buffer is not written again before `done` has passed this copy.
            unsafe {
                dst.buffer_mut().copy_from_host_async(
                    offset,
                    &buf.as_slice()[..len],
                    &inner.transfer,
                )
            }
            .map_err(&e)?;
            done.record(&inner.transfer).map_err(&e)?;
            *used = true;
            offset += len;
            turn ^= 1;
        }
        inner.transfer_mark.record(&inner.transfer).map_err(&e)?;
        inner.compute.wait(&inner.transfer_mark).map_err(&e)
    }
}

#[derive(Clone, Copy)]
enum Unary {
    GeluTanh,
    Silu,
}

fn desc_of(
    ptr: *mut c_void,
    dtype: aclDataType,
    shape: &[usize],
    op: &'static str,
) -> Result<Tensor> {
    let shape: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
    Tensor::contiguous(ptr, dtype, &shape).map_err(op_err(op))
}

impl Backend for AscendBackend {
    type Tensor = AscendTensor;
    type Weight = AscendWeight;
    type Cache = AscendCache;

    fn name(&self) -> &'static str {
        "ascend"
    }

    fn act_dtype(&self) -> ActDtype {
        self.act
    }

    fn load_weight(&self, t: &TensorRef, rows: usize) -> Result<AscendWeight> {
        let from = t.dtype()?;
        let numel = t.numel();
        if rows == 0 || !numel.is_multiple_of(rows) {
            return Err(Error::tensor(
                &t.name,
                format!("{numel} elements cannot be viewed as {rows} rows"),
            ));
        }
        let src = &t.file().bytes()[t.byte_range()];
        let total = numel * self.elem;
        let mut inner = self.enter("load_weight")?;
        let mut block = self
            .block(&inner, "load_weight", total)
            .map_err(|e| Error::tensor(&t.name, format!("cannot be placed on the device: {e}")))?;
        let (elem, from_size, act) = (self.elem, from.size(), self.act);
        let mut scratch = Vec::new();
        self.stage_upload(
            &mut inner,
            "load_weight",
            &mut block,
            total,
            |offset, dst| {
                let (e0, n) = (offset / elem, dst.len() / elem);
                let s = &src[e0 * from_size..(e0 + n) * from_size];
                convert::checkpoint_into(from, s, act, dst, &mut scratch);
            },
        )?;
        if let Some(bar) = lock(&self.progress).as_ref() {
            bar.inc(src.len() as u64);
        }
        Ok(AscendWeight {
            block,
            rows,
            cols: numel / rows,
        })
    }

    fn upload(&self, data: &[f32], rows: usize, cols: usize) -> Result<AscendTensor> {
        check(data.len() == rows * cols, "upload", || {
            format!("{} values for a [{rows}, {cols}] tensor", data.len())
        })?;
        let mut inner = self.enter("upload")?;
        let mut t = self.tensor(&inner, "upload", rows, cols)?;
        let (elem, act) = (self.elem, self.act);
        self.stage_upload(
            &mut inner,
            "upload",
            &mut t.block,
            data.len() * elem,
            |offset, dst| {
                let e0 = offset / elem;
                convert::f32_into(act, &data[e0..e0 + dst.len() / elem], dst);
            },
        )?;
        Ok(t)
    }

    fn download(&self, t: &AscendTensor) -> Result<Vec<f32>> {
        let inner = self.enter("download")?;
        let len = t.rows * t.cols * self.elem;
        let e = op_err("download");
        let mut pinned = self.host.get(len).map_err(&e)?;
        // SAFETY: both sides live until the synchronisation below.
        let r = unsafe {
            t.block.buffer().copy_to_host_async(
                0,
                &mut pinned.as_mut_slice()[..len],
                &inner.compute,
            )
        }
        .map_err(&e)
        .and_then(|()| self.sync_compute(&inner, "download"));
        let out = r.map(|()| convert::to_f32(self.act, &pinned.as_slice()[..len]));
        self.host.put(pinned);
        out
    }

    fn argmax_last(&self, x: &AscendTensor) -> Result<Option<u32>> {
        const OP: &str = "argmax_last";
        check(x.rows > 0 && x.cols > 0, OP, || {
            format!("empty tensor [{}, {}]", x.rows, x.cols)
        })?;
        let mut inner = self.enter(OP)?;
        let e = op_err(OP);
        let v = x.cols;
        if inner.zero_col.as_ref().is_none_or(|(n, _)| *n != v) {
            let b = self.upload_small(&inner, OP, &vec![0u8; v * self.elem])?;
            inner.zero_col = Some((v, b));
        }
        if inner.step_out.is_none() {
            inner.step_out = Some(self.block(&inner, OP, 16)?);
        }
        let step = inner
            .step_out
            .as_ref()
            .map_or(std::ptr::null_mut(), Block::ptr);
        let zero = inner
            .zero_col
            .as_ref()
            .map_or(std::ptr::null_mut(), |(_, b)| b.ptr());
        let row = x
            .block
            .ptr()
            .wrapping_byte_add((x.rows - 1) * v * self.elem);
        let trow = self.desc(row, &[1, v], OP)?;
        let tidx = desc_of(step, ACL_INT64, &[1], OP)?;
        let api = cann_sys::api().map_err(&e)?;
        let argmax = api.aclnnArgMaxGetWorkspaceSize.get().map_err(&e)?;
        self.call(
            &mut inner,
            OP,
            "aclnnArgMax",
            api.aclnnArgMax.get(),
            Box::new(|size, exec| unsafe { argmax(trow.raw(), 1, false, tidx.raw(), size, exec) }),
        )?;
        // row · 0 is 0 when every value is finite and NaN as soon as one is infinite or NaN.
        let tzero = self.desc(zero, &[v, 1], OP)?;
        let tcheck = self.desc(step.wrapping_byte_add(8), &[1, 1], OP)?;
        let mm = api.aclnnMmGetWorkspaceSize.get().map_err(&e)?;
        self.call(
            &mut inner,
            OP,
            "aclnnMm",
            api.aclnnMm.get(),
            Box::new(|size, exec| unsafe {
                mm(trow.raw(), tzero.raw(), tcheck.raw(), 0, size, exec)
            }),
        )?;
        let n = 8 + self.elem;
        let mut pinned = self.host.get(n).map_err(&e)?;
        let out = inner.step_out.as_ref().map(Block::buffer);
        let r = match out {
            // SAFETY: both sides live until the synchronisation below.
            Some(b) => {
                unsafe { b.copy_to_host_async(0, &mut pinned.as_mut_slice()[..n], &inner.compute) }
                    .map_err(&e)
                    .and_then(|()| self.sync_compute(&inner, OP))
            }
            None => Err(Error::Op {
                backend: "ascend",
                op: OP,
                message: "the step output block is missing".into(),
            }),
        };
        let got = r.map(|()| {
            let bytes = pinned.as_slice();
            let idx = i64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
            let check = convert::to_f32(self.act, &bytes[8..n])[0];
            (check == 0.0).then_some(idx as u32)
        });
        self.host.put(pinned);
        got
    }

    fn dims(&self, t: &AscendTensor) -> (usize, usize) {
        (t.rows, t.cols)
    }

    fn cache_new(&self, cols: usize, capacity: usize) -> Result<AscendCache> {
        const OP: &str = "cache_new";
        let inner = self.enter(OP)?;
        let len = cols
            .checked_mul(capacity)
            .and_then(|n| n.checked_mul(self.elem))
            .ok_or_else(|| {
                Error::input(format!("a KV cache of {capacity} × {cols} does not fit"))
            })?;
        let block = self.pool.get(len, || inner.drain()).map_err(|e| {
            Error::input(format!(
                "the KV cache for {capacity} positions ({len} bytes per layer and tensor) does not fit \
                 on Ascend device {}: {e}",
                self.dev.device()
            ))
        })?;
        Ok(AscendCache {
            block,
            rows: 0,
            cols,
            capacity,
        })
    }

    fn cache_append(&self, cache: &mut AscendCache, src: &AscendTensor) -> Result<()> {
        const OP: &str = "cache_append";
        check(cache.cols == src.cols, OP, || {
            format!(
                "the cache has {} columns, the new rows {}",
                cache.cols, src.cols
            )
        })?;
        check(cache.rows + src.rows <= cache.capacity, OP, || {
            format!(
                "{} rows do not fit: the cache holds {} of {}",
                src.rows, cache.rows, cache.capacity
            )
        })?;
        let inner = self.enter(OP)?;
        let row = cache.cols * self.elem;
        // SAFETY: both blocks live on; the copy is ordered on the compute stream with their users.
        unsafe {
            cache.block.buffer_mut().copy_from_device_async(
                cache.rows * row,
                src.block.buffer(),
                0,
                src.rows * row,
                &inner.compute,
            )
        }
        .map_err(op_err(OP))?;
        cache.rows += src.rows;
        Ok(())
    }

    fn embedding(&self, table: &AscendWeight, ids: &[u32]) -> Result<AscendTensor> {
        const OP: &str = "embedding";
        if let Some(&id) = ids.iter().find(|&&id| id as usize >= table.rows) {
            return Err(Error::Op {
                backend: "ascend",
                op: OP,
                message: format!("id {id} is outside the table's {} rows", table.rows),
            });
        }
        let mut inner = self.enter(OP)?;
        let out = self.tensor(&inner, OP, ids.len(), table.cols)?;
        let idx = self.upload_indices(&inner, OP, ids.iter().map(|&i| i64::from(i)))?;
        let tw = self.desc(table.block.ptr(), &[table.rows, table.cols], OP)?;
        let ti = desc_of(idx.ptr(), ACL_INT64, &[ids.len()], OP)?;
        let to = self.desc(out.block.ptr(), &[ids.len(), table.cols], OP)?;
        let api = cann_sys::api().map_err(op_err(OP))?;
        let phase1 = api
            .aclnnEmbeddingGetWorkspaceSize
            .get()
            .map_err(op_err(OP))?;
        self.call(
            &mut inner,
            OP,
            "aclnnEmbedding",
            api.aclnnEmbedding.get(),
            Box::new(|size, exec| unsafe { phase1(tw.raw(), ti.raw(), to.raw(), size, exec) }),
        )?;
        Ok(out)
    }

    fn matmul(
        &self,
        x: &AscendTensor,
        w: &AscendWeight,
        bias: Option<&AscendWeight>,
    ) -> Result<AscendTensor> {
        let mut inner = self.enter("matmul")?;
        self.matmul_locked(&mut inner, "matmul", x, w, bias, false)
    }

    fn matmul_gelu(
        &self,
        x: &AscendTensor,
        w: &AscendWeight,
        bias: Option<&AscendWeight>,
    ) -> Result<AscendTensor> {
        let mut inner = self.enter("matmul_gelu")?;
        self.matmul_locked(&mut inner, "matmul_gelu", x, w, bias, true)
    }

    fn layer_norm(
        &self,
        x: &AscendTensor,
        w: &AscendWeight,
        b: &AscendWeight,
        eps: f32,
    ) -> Result<AscendTensor> {
        const OP: &str = "layer_norm";
        check(
            w.rows * w.cols == x.cols && b.rows * b.cols == x.cols,
            OP,
            || {
                format!(
                    "rows of {} columns, weight of {} and bias of {} values",
                    x.cols,
                    w.rows * w.cols,
                    b.rows * b.cols
                )
            },
        )?;
        let mut inner = self.enter(OP)?;
        let out = self.tensor(&inner, OP, x.rows, x.cols)?;
        let tx = self.desc(x.block.ptr(), &[x.rows, x.cols], OP)?;
        let tw = self.desc(w.block.ptr(), &[x.cols], OP)?;
        let tb = self.desc(b.block.ptr(), &[x.cols], OP)?;
        let to = self.desc(out.block.ptr(), &[x.rows, x.cols], OP)?;
        let shape = IntArray::new(&[x.cols as i64]).map_err(op_err(OP))?;
        let api = cann_sys::api().map_err(op_err(OP))?;
        let phase1 = api
            .aclnnLayerNormGetWorkspaceSize
            .get()
            .map_err(op_err(OP))?;
        self.call(
            &mut inner,
            OP,
            "aclnnLayerNorm",
            api.aclnnLayerNorm.get(),
            Box::new(|size, exec| unsafe {
                phase1(
                    tx.raw(),
                    shape.raw(),
                    tw.raw(),
                    tb.raw(),
                    f64::from(eps),
                    to.raw(),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    size,
                    exec,
                )
            }),
        )?;
        Ok(out)
    }

    fn rms_norm(&self, x: &AscendTensor, w: &AscendWeight, eps: f32) -> Result<AscendTensor> {
        const OP: &str = "rms_norm";
        check(w.rows * w.cols == x.cols, OP, || {
            format!(
                "rows of {} columns, weight of {} values",
                x.cols,
                w.rows * w.cols
            )
        })?;
        let mut inner = self.enter(OP)?;
        let out = self.tensor(&inner, OP, x.rows, x.cols)?;
        let rstd = self.block(&inner, OP, x.rows * 4)?;
        let tx = self.desc(x.block.ptr(), &[x.rows, x.cols], OP)?;
        let tw = self.desc(w.block.ptr(), &[x.cols], OP)?;
        let to = self.desc(out.block.ptr(), &[x.rows, x.cols], OP)?;
        let tr = desc_of(rstd.ptr(), ACL_FLOAT, &[x.rows, 1], OP)?;
        let api = cann_sys::api().map_err(op_err(OP))?;
        let phase1 = api.aclnnRmsNormGetWorkspaceSize.get().map_err(op_err(OP))?;
        self.call(
            &mut inner,
            OP,
            "aclnnRmsNorm",
            api.aclnnRmsNorm.get(),
            Box::new(|size, exec| unsafe {
                phase1(
                    tx.raw(),
                    tw.raw(),
                    f64::from(eps),
                    to.raw(),
                    tr.raw(),
                    size,
                    exec,
                )
            }),
        )?;
        Ok(out)
    }

    fn add_assign(&self, x: &mut AscendTensor, y: &AscendTensor) -> Result<()> {
        const OP: &str = "add_assign";
        check((x.rows, x.cols) == (y.rows, y.cols), OP, || {
            format!("[{}, {}] += [{}, {}]", x.rows, x.cols, y.rows, y.cols)
        })?;
        let mut inner = self.enter(OP)?;
        let tx = self.desc(x.block.ptr(), &[x.rows, x.cols], OP)?;
        let ty = self.desc(y.block.ptr(), &[y.rows, y.cols], OP)?;
        self.inplace_add(&mut inner, OP, &tx, &ty)
    }

    fn gelu_tanh(&self, x: &mut AscendTensor) -> Result<()> {
        let mut inner = self.enter("gelu_tanh")?;
        *x = self.unary(&mut inner, "gelu_tanh", x, Unary::GeluTanh)?;
        Ok(())
    }

    fn silu_mul(&self, gate: &AscendTensor, up: &AscendTensor) -> Result<AscendTensor> {
        const OP: &str = "silu_mul";
        check((gate.rows, gate.cols) == (up.rows, up.cols), OP, || {
            format!(
                "gate [{}, {}] and up [{}, {}] differ",
                gate.rows, gate.cols, up.rows, up.cols
            )
        })?;
        let mut inner = self.enter(OP)?;
        // silu(gate) is rounded to the activation dtype before the product, as `act(g) * u` is.
        let s = self.unary(&mut inner, OP, gate, Unary::Silu)?;
        let out = self.tensor(&inner, OP, gate.rows, gate.cols)?;
        let shape = [gate.rows, gate.cols];
        let (ts, tu) = (
            self.desc(s.block.ptr(), &shape, OP)?,
            self.desc(up.block.ptr(), &shape, OP)?,
        );
        let to = self.desc(out.block.ptr(), &shape, OP)?;
        let api = cann_sys::api().map_err(op_err(OP))?;
        let phase1 = api.aclnnMulGetWorkspaceSize.get().map_err(op_err(OP))?;
        self.call(
            &mut inner,
            OP,
            "aclnnMul",
            api.aclnnMul.get(),
            Box::new(|size, exec| unsafe { phase1(ts.raw(), tu.raw(), to.raw(), size, exec) }),
        )?;
        Ok(out)
    }

    fn rope(
        &self,
        x: &mut AscendTensor,
        head_dim: usize,
        positions: &[u32],
        inv_freq: &[f32],
    ) -> Result<()> {
        const OP: &str = "rope";
        checks::rope(
            "ascend",
            (x.rows, x.cols),
            head_dim,
            positions.len(),
            inv_freq.len(),
        )?;
        let mut inner = self.enter(OP)?;
        self.rope_rows(&mut inner, head_dim, positions, inv_freq)?;
        let out = self.tensor(&inner, OP, x.rows, x.cols)?;
        let heads = x.cols / head_dim;
        // BSND: x [1, rows, heads, d], cos/sin [1, rows, 1, d] broadcast over the heads; mode 0 is
        // the half-split rotation (rotate_half).
        let shape = [1, x.rows, heads, head_dim];
        let tx = self.desc(x.block.ptr(), &shape, OP)?;
        let to = self.desc(out.block.ptr(), &shape, OP)?;
        let (cos, sin) = match &inner.rope {
            Some(r) => (r.cos.ptr(), r.sin.ptr()),
            None => (std::ptr::null_mut(), std::ptr::null_mut()),
        };
        let tc = self.desc(cos, &[1, x.rows, 1, head_dim], OP)?;
        let ts = self.desc(sin, &[1, x.rows, 1, head_dim], OP)?;
        let api = cann_sys::api().map_err(op_err(OP))?;
        let phase1 = api
            .aclnnRotaryPositionEmbeddingGetWorkspaceSize
            .get()
            .map_err(op_err(OP))?;
        self.call(
            &mut inner,
            OP,
            "aclnnRotaryPositionEmbedding",
            api.aclnnRotaryPositionEmbedding.get(),
            Box::new(|size, exec| unsafe {
                phase1(tx.raw(), tc.raw(), ts.raw(), 0, to.raw(), size, exec)
            }),
        )?;
        *x = out;
        Ok(())
    }

    fn attention(
        &self,
        q: &AscendTensor,
        k: &AscendTensor,
        v: &AscendTensor,
        p: &AttentionParams,
    ) -> Result<AscendTensor> {
        const OP: &str = "attention";
        checks::attention(
            "ascend",
            OP,
            (q.rows, q.cols),
            (k.rows, k.cols),
            (v.rows, v.cols),
            p,
        )?;
        let mut inner = self.enter(OP)?;
        match p.mask {
            AttentionMask::Bidirectional { seq_len, key_valid } => self.flash(
                &mut inner,
                OP,
                q,
                k.block.ptr(),
                v.block.ptr(),
                q.rows / seq_len,
                seq_len,
                seq_len,
                p,
                key_valid,
                false,
            ),
            AttentionMask::Causal { .. } => self.flash(
                &mut inner,
                OP,
                q,
                k.block.ptr(),
                v.block.ptr(),
                1,
                q.rows,
                k.rows,
                p,
                None,
                true,
            ),
        }
    }

    fn cached_attention(
        &self,
        q: &AscendTensor,
        k: &AscendCache,
        v: &AscendCache,
        p: &AttentionParams,
    ) -> Result<AscendTensor> {
        const OP: &str = "cached_attention";
        checks::attention(
            "ascend",
            OP,
            (q.rows, q.cols),
            (k.rows, k.cols),
            (v.rows, v.cols),
            p,
        )?;
        check(matches!(p.mask, AttentionMask::Causal { .. }), OP, || {
            "attention over a cache is causal".into()
        })?;
        let mut inner = self.enter(OP)?;
        self.flash(
            &mut inner,
            OP,
            q,
            k.block.ptr(),
            v.block.ptr(),
            1,
            q.rows,
            k.rows,
            p,
            None,
            true,
        )
    }

    fn patchify(
        &self,
        pixels: &AscendTensor,
        channels: usize,
        size: usize,
        patch: usize,
    ) -> Result<AscendTensor> {
        check(
            patch > 0 && size.is_multiple_of(patch) && pixels.cols == channels * size * size,
            "patchify",
            || {
                format!(
                    "tiles of {} values are not {channels}×{size}×{size} (patch {patch})",
                    pixels.cols
                )
            },
        )?;
        let side = size / patch;
        // [T, C, side, p, side, p] → [T, side, side, C, p, p].
        self.permute(
            "patchify",
            pixels,
            &[pixels.rows, channels, side, patch, side, patch],
            &[0, 2, 4, 1, 3, 5],
            pixels.rows * side * side,
            channels * patch * patch,
        )
    }

    fn pixel_shuffle(&self, x: &AscendTensor, side: usize, scale: usize) -> Result<AscendTensor> {
        let per_tile = side * side;
        check(
            per_tile > 0
                && x.rows.is_multiple_of(per_tile)
                && scale > 0
                && side.is_multiple_of(scale),
            "pixel_shuffle",
            || {
                format!(
                    "{} rows are not whole tiles of side {side} divisible by the scale {scale}",
                    x.rows
                )
            },
        )?;
        let (tiles, blocks) = (x.rows / per_tile, side / scale);
        // [T, bi, a, bj, b, D] → [T, bi, bj, a, b, D].
        self.permute(
            "pixel_shuffle",
            x,
            &[tiles, blocks, scale, blocks, scale, x.cols],
            &[0, 1, 3, 2, 4, 5],
            tiles * blocks * blocks,
            x.cols * scale * scale,
        )
    }

    fn gather_rows(&self, x: &AscendTensor, rows: &[usize]) -> Result<AscendTensor> {
        const OP: &str = "gather_rows";
        checks::rows("ascend", OP, rows, x.rows)?;
        let mut inner = self.enter(OP)?;
        let out = self.tensor(&inner, OP, rows.len(), x.cols)?;
        if rows.is_empty() {
            return Ok(out);
        }
        let idx = self.upload_indices(&inner, OP, rows.iter().map(|&r| r as i64))?;
        let tx = self.desc(x.block.ptr(), &[x.rows, x.cols], OP)?;
        let ti = desc_of(idx.ptr(), ACL_INT64, &[rows.len()], OP)?;
        let to = self.desc(out.block.ptr(), &[rows.len(), x.cols], OP)?;
        let api = cann_sys::api().map_err(op_err(OP))?;
        let phase1 = api
            .aclnnIndexSelectGetWorkspaceSize
            .get()
            .map_err(op_err(OP))?;
        self.call(
            &mut inner,
            OP,
            "aclnnIndexSelect",
            api.aclnnIndexSelect.get(),
            Box::new(|size, exec| unsafe { phase1(tx.raw(), 0, ti.raw(), to.raw(), size, exec) }),
        )?;
        Ok(out)
    }

    fn scatter_rows(
        &self,
        dst: &mut AscendTensor,
        rows: &[usize],
        src: &AscendTensor,
    ) -> Result<()> {
        const OP: &str = "scatter_rows";
        check(dst.cols == src.cols && rows.len() == src.rows, OP, || {
            format!(
                "{} row indices, source [{}, {}], destination of {} columns",
                rows.len(),
                src.rows,
                src.cols,
                dst.cols
            )
        })?;
        checks::rows("ascend", OP, rows, dst.rows)?;
        if rows.is_empty() {
            return Ok(());
        }
        let mut inner = self.enter(OP)?;
        let idx = self.upload_indices(&inner, OP, rows.iter().map(|&r| r as i64))?;
        let td = self.desc(dst.block.ptr(), &[dst.rows, dst.cols], OP)?;
        let ti = desc_of(idx.ptr(), ACL_INT64, &[rows.len()], OP)?;
        let ts = self.desc(src.block.ptr(), &[src.rows, src.cols], OP)?;
        let api = cann_sys::api().map_err(op_err(OP))?;
        let phase1 = api
            .aclnnInplaceIndexCopyGetWorkspaceSize
            .get()
            .map_err(op_err(OP))?;
        self.call(
            &mut inner,
            OP,
            "aclnnInplaceIndexCopy",
            api.aclnnInplaceIndexCopy.get(),
            Box::new(|size, exec| unsafe { phase1(td.raw(), 0, ti.raw(), ts.raw(), size, exec) }),
        )
    }

    fn begin_load(&self, total_bytes: u64) {
        // indicatif draws nothing when stderr is not a terminal.
        let bar = indicatif::ProgressBar::new(total_bytes);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "uploading weights to the device {bar:40} {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
        ) {
            bar.set_style(style);
        }
        *lock(&self.progress) = Some(bar);
    }

    fn end_load(&self) {
        if let Some(bar) = lock(&self.progress).take() {
            bar.finish_and_clear();
        }
    }

    fn mark(&self) -> Result<Option<u64>> {
        const OP: &str = "mark";
        let mut inner = self.enter(OP)?;
        let ev = match inner.spare_events.pop() {
            Some(e) => e,
            None => Event::new(&self.dev.ctx).map_err(op_err(OP))?,
        };
        ev.record(&inner.compute).map_err(op_err(OP))?;
        let id = inner.next_mark;
        inner.next_mark += 1;
        // Marks of abandoned requests would pile up: keep the newest few hundred.
        if inner.marks.len() > 512 {
            let oldest = *inner.marks.keys().min().unwrap_or(&id);
            if let Some(e) = inner.marks.remove(&oldest) {
                inner.spare_events.push(e);
            }
        }
        inner.marks.insert(id, ev);
        Ok(Some(id))
    }

    fn seconds_between(&self, from: u64, to: u64) -> Result<Option<f64>> {
        const OP: &str = "seconds_between";
        let mut inner = self.enter(OP)?;
        let (Some(a), Some(b)) = (inner.marks.remove(&from), inner.marks.remove(&to)) else {
            return Ok(None);
        };
        let r = b
            .synchronize()
            .and_then(|()| a.elapsed_ms(&b))
            .map(|ms| Some(f64::from(ms) / 1e3))
            .map_err(op_err(OP));
        inner.spare_events.extend([a, b]);
        r
    }
}
