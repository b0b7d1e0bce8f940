//! The op set a device must supply to run Idefics3. The model in `model/` is written once over this
//! trait; a backend owns device memory (activations and weights) and implements each op. Ops are
//! coarse (attention is one op) so that a device can map them onto fused operators.
//!
//! Activations are row-major matrices `[rows, cols]`. In [`ActDtype::Bf16`] mode every op rounds its
//! output to bfloat16 at the points where transformers running in bfloat16 rounds (spec section 10),
//! while computing and accumulating in f32 inside; [`ActDtype::F16`] rounds at the same points to
//! IEEE half, as transformers in float16 does.
//!
//! # Failures
//! Every op that touches device memory returns a [`Result`]; nothing in the op set panics on a
//! failure and no error is held back in the backend. We chose results over a sticky error returned
//! at the next synchronisation because the model is written with `?` anyway and because a
//! result says at once which op failed: a device op fails in its own call when its arguments are
//! refused, its workspace or output cannot be allocated, or its launch is refused. Work that has been
//! enqueued and fails later, while the device runs it, can only be seen at a synchronisation; on
//! a device those are the ops that bring data to the host ([`Backend::download`],
//! [`Backend::argmax_last`]), so such a failure reaches the caller as the error of that op, naming
//! the call, the status and the runtime's message. Either way the error ends the request, and the
//! backend stays usable for the next one. Ops handed inconsistent operands (shapes, indices) return
//! [`crate::error::Error::Op`] naming the op.

pub mod ascend;
pub mod checks;
pub mod cpu;

use crate::error::Result;
use crate::weights::TensorRef;

/// Precision of activations between ops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActDtype {
    /// f32 everywhere (the exact reference mode).
    F32,
    /// bfloat16 between ops, f32 inside them; weights in other dtypes are rounded to bfloat16 as
    /// `model.to(torch.bfloat16)` would.
    Bf16,
    /// IEEE half between ops, f32 inside them; weights in other dtypes are rounded to half as
    /// `model.to(torch.float16)` would (values beyond ±65504 become infinite, as there).
    F16,
}

impl ActDtype {
    /// `v` rounded to this precision (unchanged in f32).
    #[inline(always)]
    pub fn round(self, v: f32) -> f32 {
        match self {
            ActDtype::F32 => v,
            ActDtype::Bf16 => crate::numeric::round_bf16(v),
            ActDtype::F16 => crate::numeric::round_f16(v),
        }
    }

    /// The name used by `--dtype` and in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            ActDtype::F32 => "f32",
            ActDtype::Bf16 => "bf16",
            ActDtype::F16 => "fp16",
        }
    }
}

impl std::str::FromStr for ActDtype {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "f32" | "fp32" | "float32" => Ok(ActDtype::F32),
            "bf16" | "bfloat16" => Ok(ActDtype::Bf16),
            "fp16" | "f16" | "float16" => Ok(ActDtype::F16),
            other => Err(format!(
                "unknown dtype {other:?}; expected f32, bf16 or fp16"
            )),
        }
    }
}

/// Rotary cos/sin pairs for `positions` (row-major, `inv_freq.len()` pairs a row): angles
/// `pos·inv_freq` in f32, cos and sin rounded to `act`, as transformers computes them. Every
/// backend rotates with these.
pub fn rope_cos_sin(positions: &[u32], inv_freq: &[f32], act: ActDtype) -> Vec<(f32, f32)> {
    positions
        .iter()
        .flat_map(|&pos| {
            inv_freq.iter().map(move |f| {
                let angle = pos as f32 * f;
                (act.round(angle.cos()), act.round(angle.sin()))
            })
        })
        .collect()
}

/// The device a model runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendKind {
    /// The CPU backend (the reference).
    #[default]
    Cpu,
    /// An Ascend NPU through CANN.
    Ascend,
}

impl BackendKind {
    /// The name used by `--backend` and in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Cpu => "cpu",
            BackendKind::Ascend => "ascend",
        }
    }
}

impl std::str::FromStr for BackendKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "cpu" => Ok(BackendKind::Cpu),
            "ascend" | "npu" => Ok(BackendKind::Ascend),
            other => Err(format!("unknown backend {other:?}; expected cpu or ascend")),
        }
    }
}

/// Which keys each query may attend to.
#[derive(Debug, Clone, Copy)]
pub enum AttentionMask<'a> {
    /// Rows form independent sequences of `seq_len` rows each (vision tiles); every query sees every
    /// key of its own sequence whose `key_valid` entry is true (all keys when `None`).
    Bidirectional {
        /// Rows per sequence.
        seq_len: usize,
        /// Per-row validity of keys, over all rows.
        key_valid: Option<&'a [bool]>,
    },
    /// One sequence; query row i sits at absolute position `offset + i` and sees keys `0..=offset + i`.
    Causal {
        /// Number of keys before the first query (the KV cache length before this call).
        offset: usize,
    },
}

/// Shape of an attention call: q is `[rows, heads·head_dim]`, k and v `[keys, kv_heads·head_dim]`.
#[derive(Debug, Clone, Copy)]
pub struct AttentionParams<'a> {
    /// Query heads.
    pub heads: usize,
    /// Key/value heads; query head h reads kv head `h / (heads / kv_heads)`.
    pub kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Multiplier of the scores (`head_dim^-0.5`).
    pub scale: f32,
    /// Visibility rule.
    pub mask: AttentionMask<'a>,
}

/// A compute device for the model.
pub trait Backend: Send + Sync {
    /// An activation matrix in device memory.
    type Tensor: Send + Sync;
    /// A parameter tensor resident on the device.
    type Weight: Send + Sync;
    /// The keys or the values of one decoder layer for the positions seen so far.
    type Cache: Send + Sync;

    /// A short name for logs and benchmarks.
    fn name(&self) -> &'static str;
    /// Precision of activations.
    fn act_dtype(&self) -> ActDtype;

    /// Makes a checkpoint tensor available to the kernels, viewed as a matrix of `rows` × (numel/rows).
    fn load_weight(&self, tensor: &TensorRef, rows: usize) -> Result<Self::Weight>;

    /// Copies host data in (rounded to the activation dtype).
    fn upload(&self, data: &[f32], rows: usize, cols: usize) -> Result<Self::Tensor>;
    /// Copies a tensor out to the host.
    fn download(&self, t: &Self::Tensor) -> Result<Vec<f32>>;
    /// The column of the largest value in the last row of `x` (the first on ties, as in
    /// [`crate::generate::argmax`]), or `None` when that row holds a NaN or an infinity: greedy
    /// decoding's choice from the logits, so that a device sends one token id to the host per step
    /// instead of a row of logits, and broken logits are still noticed.
    fn argmax_last(&self, x: &Self::Tensor) -> Result<Option<u32>>;
    /// `(rows, cols)` of a tensor.
    fn dims(&self, t: &Self::Tensor) -> (usize, usize);
    /// An empty key or value cache of `cols` columns with room for `capacity` rows. A device may
    /// store it more compactly than activations (the CPU keeps bf16 caches as 16-bit values).
    fn cache_new(&self, cols: usize, capacity: usize) -> Result<Self::Cache>;
    /// Appends the rows of `src` to a cache.
    fn cache_append(&self, cache: &mut Self::Cache, src: &Self::Tensor) -> Result<()>;

    /// Rows `ids` of an embedding table.
    fn embedding(&self, table: &Self::Weight, ids: &[u32]) -> Result<Self::Tensor>;
    /// `x·Wᵀ (+ b)`, accumulated in f32, rounded once.
    fn matmul(
        &self,
        x: &Self::Tensor,
        w: &Self::Weight,
        bias: Option<&Self::Weight>,
    ) -> Result<Self::Tensor>;
    /// `gelu_tanh(x·Wᵀ (+ b))`: [`Backend::matmul`] then [`Backend::gelu_tanh`], which a device may
    /// fuse into one pass.
    fn matmul_gelu(
        &self,
        x: &Self::Tensor,
        w: &Self::Weight,
        bias: Option<&Self::Weight>,
    ) -> Result<Self::Tensor> {
        let mut y = self.matmul(x, w, bias)?;
        self.gelu_tanh(&mut y)?;
        Ok(y)
    }
    /// `acc += x·Wᵀ (+ b)`: [`Backend::matmul`] then [`Backend::add_assign`] (the product rounded,
    /// then the sum), which a device may fuse into one pass (the residual connections after the
    /// attention output and the MLP).
    fn matmul_add(
        &self,
        acc: &mut Self::Tensor,
        x: &Self::Tensor,
        w: &Self::Weight,
        bias: Option<&Self::Weight>,
    ) -> Result<()> {
        let y = self.matmul(x, w, bias)?;
        self.add_assign(acc, &y)
    }
    /// Several products of the same activations (`x·Wᵢᵀ (+ bᵢ)`), e.g. q/k/v; a device may run them
    /// as one launch.
    fn matmul_multi(
        &self,
        x: &Self::Tensor,
        ws: &[(&Self::Weight, Option<&Self::Weight>)],
    ) -> Result<Vec<Self::Tensor>> {
        ws.iter().map(|(w, b)| self.matmul(x, w, *b)).collect()
    }
    /// LayerNorm over each row, affine.
    fn layer_norm(
        &self,
        x: &Self::Tensor,
        w: &Self::Weight,
        b: &Self::Weight,
        eps: f32,
    ) -> Result<Self::Tensor>;
    /// RMSNorm over each row: `w ⊙ round(x·rsqrt(mean(x²)+eps))`.
    fn rms_norm(&self, x: &Self::Tensor, w: &Self::Weight, eps: f32) -> Result<Self::Tensor>;
    /// `x += y`.
    fn add_assign(&self, x: &mut Self::Tensor, y: &Self::Tensor) -> Result<()>;
    /// GELU, tanh approximation, in place.
    fn gelu_tanh(&self, x: &mut Self::Tensor) -> Result<()>;
    /// `silu(gate) ⊙ up`.
    fn silu_mul(&self, gate: &Self::Tensor, up: &Self::Tensor) -> Result<Self::Tensor>;
    /// Rotary embedding (half-split convention) of every head of `x`, row i at `positions[i]`.
    fn rope(
        &self,
        x: &mut Self::Tensor,
        head_dim: usize,
        positions: &[u32],
        inv_freq: &[f32],
    ) -> Result<()>;
    /// Scaled dot-product attention with f32 softmax.
    fn attention(
        &self,
        q: &Self::Tensor,
        k: &Self::Tensor,
        v: &Self::Tensor,
        p: &AttentionParams,
    ) -> Result<Self::Tensor>;
    /// [`Backend::attention`] of `q` (causal, `p.mask` is [`AttentionMask::Causal`]) over cached keys
    /// and values.
    fn cached_attention(
        &self,
        q: &Self::Tensor,
        k: &Self::Cache,
        v: &Self::Cache,
        p: &AttentionParams,
    ) -> Result<Self::Tensor>;
    /// Cuts tiles `[T, C·S·S]` into patches `[T·(S/p)², C·p·p]` (row-major patches, (c, u, v) inside).
    fn patchify(
        &self,
        pixels: &Self::Tensor,
        channels: usize,
        size: usize,
        patch: usize,
    ) -> Result<Self::Tensor>;
    /// Pixel shuffle of `[T·W², D]` tiles of side W by factor s into `[T·W²/s², D·s²]` (spec section 4).
    fn pixel_shuffle(&self, x: &Self::Tensor, side: usize, scale: usize) -> Result<Self::Tensor>;
    /// The listed rows of `x`, in order.
    fn gather_rows(&self, x: &Self::Tensor, rows: &[usize]) -> Result<Self::Tensor>;
    /// Overwrites `dst[rows[j]]` with `src[j]`.
    fn scatter_rows(
        &self,
        dst: &mut Self::Tensor,
        rows: &[usize],
        src: &Self::Tensor,
    ) -> Result<()>;

    /// Called before the model's weights are loaded, with their total size in bytes (a device shows
    /// the upload's progress).
    fn begin_load(&self, _total_bytes: u64) {}

    /// Called when every weight has been loaded.
    fn end_load(&self) {}

    /// Records a mark in the device's queue of work, for timing stages on the device's own clock
    /// without waiting; `None` on a backend whose ops have finished when they return (the host's
    /// clock then times them).
    fn mark(&self) -> Result<Option<u64>> {
        Ok(None)
    }

    /// Device seconds between two marks, waiting for the later one to pass; both are then
    /// forgotten. `None` where marks are not kept.
    fn seconds_between(&self, _from: u64, _to: u64) -> Result<Option<f64>> {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::ActDtype;

    #[test]
    fn dtype_names_parse() {
        for (names, want) in [
            (&["f32", "fp32", "float32"][..], ActDtype::F32),
            (&["bf16", "bfloat16"][..], ActDtype::Bf16),
            (&["fp16", "f16", "float16"][..], ActDtype::F16),
        ] {
            for n in names {
                assert_eq!(n.parse::<ActDtype>(), Ok(want));
            }
            assert_eq!(want.as_str().parse::<ActDtype>(), Ok(want));
        }
        let e = "half".parse::<ActDtype>().unwrap_err();
        assert!(e.contains("\"half\"") && e.contains("fp16"), "{e}");
    }
}
