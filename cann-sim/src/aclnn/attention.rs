//! aclnnFlashAttentionScore (ops-transformer `attention/flash_attention_score/docs/aclnnFlashAttentionScore.md`)
//! and the attention core shared with [`super::fia`]: `softmax(scale·q·kᵀ masked)·v` computed row by row in
//! f32 with an exact (not online) softmax, GQA by mapping query head n to key/value head n / (Nq/Nkv).
//!
//! Simulated subset: layouts BSH, SBH, BSND, BNSD; sparseMode 0 (optional full mask, preTokens/nextTokens band
//! left-up aligned), 1 (full mask), 2 (left-up causal), 3 (right-down causal), 4 (band, right-down aligned);
//! keepProb 1 without dropMask; no pse, no padding mask, no prefix. Anything else is refused by phase 1 with a
//! message saying it is not simulated. A fully masked row gives 0 output, softmaxMax −inf and softmaxSum 0.

use super::access::View;
use super::check::{dtype_in, format_nd, same_dtype, FLOATS};
use super::executor::{invalid, PResult, Plan};
use super::tensor::{opt_tensor_arg, tensor_arg, AclIntArray, AclTensor, TensorDesc};
use super::types::DType;
use crate::aclnn_op;
use std::ffi::{c_char, CStr};
use std::sync::Arc;

/// Data layouts of q/k/v.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Layout {
    /// [B, S, N·D]
    Bsh,
    /// [S, B, N·D]
    Sbh,
    /// [B, S, N, D]
    Bsnd,
    /// [B, N, S, D]
    Bnsd,
}

impl Layout {
    /// Parses the `inputLayout` string against the layouts an operator accepts.
    pub unsafe fn parse(p: *const c_char, accepted: &[Layout]) -> PResult<Layout> {
        if p.is_null() {
            return Err((
                super::types::ACLNN_ERR_PARAM_NULLPTR,
                "inputLayout is null".into(),
            ));
        }
        let s = CStr::from_ptr(p).to_string_lossy().into_owned();
        let l = match s.as_str() {
            "BSH" => Layout::Bsh,
            "SBH" => Layout::Sbh,
            "BSND" => Layout::Bsnd,
            "BNSD" => Layout::Bnsd,
            _ => {
                return invalid(format!(
                    "inputLayout \"{s}\" is not simulated (accepted: {accepted:?})"
                ))
            }
        };
        if !accepted.contains(&l) {
            return invalid(format!(
                "inputLayout \"{s}\" is not accepted here (accepted: {accepted:?})"
            ));
        }
        Ok(l)
    }

    /// Rank of tensors in this layout.
    pub fn rank(self) -> usize {
        match self {
            Layout::Bsh | Layout::Sbh => 3,
            _ => 4,
        }
    }

    /// (B, N, S, D) of a tensor in this layout, given its head count for the 3-D layouts.
    pub fn bnsd(self, dims: &[i64], heads: i64) -> Option<[i64; 4]> {
        Some(match self {
            Layout::Bsh | Layout::Sbh => {
                let (b, s, h) = if self == Layout::Bsh {
                    (dims[0], dims[1], dims[2])
                } else {
                    (dims[1], dims[0], dims[2])
                };
                if heads <= 0 || h % heads != 0 {
                    return None;
                }
                [b, heads, s, h / heads]
            }
            Layout::Bsnd => [dims[0], dims[2], dims[1], dims[3]],
            Layout::Bnsd => [dims[0], dims[1], dims[2], dims[3]],
        })
    }

    /// The view reshaped and permuted to [B, N, S, D] (no data moves).
    pub fn view_bnsd(self, v: &View, heads: i64) -> View {
        let mut v = v.clone();
        if self.rank() == 3 {
            let d = v.dims[2] / heads;
            let sh = v.strides[2];
            v.dims = vec![v.dims[0], v.dims[1], heads, d];
            v.strides = vec![v.strides[0], v.strides[1], d * sh, sh];
        }
        match self {
            Layout::Bsh | Layout::Bsnd => v.permuted(&[0, 2, 1, 3]),
            Layout::Sbh => v.permuted(&[1, 2, 0, 3]),
            Layout::Bnsd => v,
        }
    }
}

/// Sizes of one attention problem.
#[derive(Clone, Copy, Debug)]
pub struct Geometry {
    /// Batch.
    pub b: usize,
    /// Query heads.
    pub nq: usize,
    /// Key/value heads (divides nq).
    pub nkv: usize,
    /// Query length.
    pub sq: usize,
    /// Key length.
    pub skv: usize,
    /// Head dim of q and k.
    pub d: usize,
}

/// Result of [`attend`], all in [B, N, Sq, ·] order.
pub struct Attended {
    /// Output rows, [B, N, Sq, D].
    pub out: Vec<f32>,
    /// Row maxima of the scaled scores (−inf for a fully masked row).
    pub max: Vec<f32>,
    /// Row sums of exp(score − max).
    pub sum: Vec<f32>,
}

/// Plain attention over BNSD-ordered q [B,Nq,Sq,D], k and v [B,Nkv,Skv,D]; `allowed(b, n, i, j)` says whether
/// query i may see key j.
pub fn attend(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    g: Geometry,
    scale: f32,
    allowed: &dyn Fn(usize, usize, usize, usize) -> bool,
) -> Attended {
    let Geometry {
        b,
        nq,
        nkv,
        sq,
        skv,
        d,
    } = g;
    let group = nq / nkv;
    let mut out = vec![0f32; b * nq * sq * d];
    let mut max = vec![f32::NEG_INFINITY; b * nq * sq];
    let mut sum = vec![0f32; b * nq * sq];
    let mut scores = vec![0f32; skv];
    for bi in 0..b {
        for n in 0..nq {
            let kvh = n / group;
            let kbase = (bi * nkv + kvh) * skv * d;
            for i in 0..sq {
                let row = (bi * nq + n) * sq + i;
                let qr = &q[row * d..(row + 1) * d];
                let mut m = f32::NEG_INFINITY;
                for j in 0..skv {
                    scores[j] = if allowed(bi, n, i, j) {
                        let kr = &k[kbase + j * d..kbase + (j + 1) * d];
                        scale * qr.iter().zip(kr).map(|(x, y)| x * y).sum::<f32>()
                    } else {
                        f32::NEG_INFINITY
                    };
                    m = m.max(scores[j]);
                }
                if m == f32::NEG_INFINITY {
                    continue;
                }
                let mut s = 0f32;
                for sc in scores.iter_mut() {
                    *sc = if *sc == f32::NEG_INFINITY {
                        0.0
                    } else {
                        (*sc - m).exp()
                    };
                    s += *sc;
                }
                max[row] = m;
                sum[row] = s;
                let o = &mut out[row * d..(row + 1) * d];
                for (j, p) in scores.iter().enumerate() {
                    if *p != 0.0 {
                        let vr = &v[kbase + j * d..kbase + (j + 1) * d];
                        for (x, y) in o.iter_mut().zip(vr) {
                            *x += p * y;
                        }
                    }
                }
                for x in o.iter_mut() {
                    *x /= s;
                }
            }
        }
    }
    Attended { out, max, sum }
}

/// Mask semantics shared by FlashAttentionScore and FusedInferAttentionScoreV2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sparse {
    /// Mask (if any) plus the preTokens/nextTokens band, left-up aligned (sparseMode 0).
    Default { pre: i64, next: i64 },
    /// Mask only (sparseMode 1).
    All,
    /// j ≤ i (sparseMode 2).
    LeftUpCausal,
    /// j ≤ i + Skv − Sq (sparseMode 3).
    RightDownCausal,
    /// −pre ≤ j − i − (Skv − Sq) ≤ next (sparseMode 4).
    Band { pre: i64, next: i64 },
}

impl Sparse {
    /// Whether (i, j) is inside the pattern for query length `sq` and key length `skv`.
    pub fn allows(self, i: usize, j: usize, sq: usize, skv: usize) -> bool {
        let (i, j, sq, skv) = (i as i64, j as i64, sq as i64, skv as i64);
        match self {
            Sparse::Default { pre, next } => j - i <= next && i - j <= pre,
            Sparse::All => true,
            Sparse::LeftUpCausal => j <= i,
            Sparse::RightDownCausal => j <= i + skv - sq,
            Sparse::Band { pre, next } => {
                let diff = j - i - (skv - sq);
                diff <= next && -diff <= pre
            }
        }
    }

    /// Whether the user's mask tensor is read (modes 2-4 take a fixed 2048×2048 "optimised" mask whose content
    /// the pattern already describes).
    pub fn reads_mask(self) -> bool {
        matches!(self, Sparse::Default { .. } | Sparse::All)
    }
}

/// Checks the 2048×2048 optimised mask of sparseMode 2-4 (shape [2048,2048], [1,2048,2048] or [1,1,2048,2048]).
pub fn check_compressed_mask(m: Option<&Arc<TensorDesc>>, mode: i64) -> PResult<()> {
    let Some(m) = m else {
        return invalid(format!(
            "sparseMode {mode} needs the optimised 2048x2048 attenMask"
        ));
    };
    let d = &m.dims;
    let ok = d.len() >= 2
        && d.len() <= 4
        && d[d.len() - 2..] == [2048, 2048]
        && d[..d.len() - 2].iter().all(|x| *x == 1);
    if !ok {
        return invalid(format!(
            "sparseMode {mode} needs an attenMask of shape [2048, 2048]; got {:?}",
            d
        ));
    }
    Ok(())
}

/// The mask as a [B or 1, N or 1, Sq, Skv] view for reading, from the shapes the FA document lists:
/// [B,N,Sq,Skv], [B,1,Sq,Skv], [1,1,Sq,Skv], [Sq,Skv].
fn fa_mask_shape(m: &TensorDesc, b: i64, n: i64, sq: i64, skv: i64) -> PResult<()> {
    let d = &m.dims;
    let ok = match d.len() {
        2 => d[..] == [sq, skv],
        4 => {
            (d[0] == b || d[0] == 1)
                && (d[1] == n || d[1] == 1)
                && d[2] == sq
                && d[3] == skv
                && !(d[0] == 1 && d[1] == n && n != 1)
        }
        _ => false,
    };
    if !ok {
        return invalid(format!(
            "attenMask has shape {d:?}; expected [B,N,Sq,Skv], [B,1,Sq,Skv], [1,1,Sq,Skv] or [Sq,Skv] with B={b} N={n} Sq={sq} Skv={skv}"
        ));
    }
    Ok(())
}

/// Reads a mask view broadcast to [B, N, Sq, Skv]; true = masked out (value 1).
pub fn read_mask(m: &View, b: i64, n: i64, sq: i64, skv: i64) -> Vec<bool> {
    let mut v = m.clone();
    while v.dims.len() < 4 {
        v.dims.insert(0, 1);
        v.strides.insert(0, 0);
    }
    v.broadcast_to(&[b, n, sq, skv])
        .read_i64()
        .into_iter()
        .map(|x| x != 0)
        .collect()
}

/// Converts FA's sparseMode and band arguments.
pub fn sparse_of(mode: i64, pre: i64, next: i64) -> PResult<Sparse> {
    Ok(match mode {
        0 => Sparse::Default { pre, next },
        1 => Sparse::All,
        2 => Sparse::LeftUpCausal,
        3 => Sparse::RightDownCausal,
        4 => Sparse::Band { pre, next },
        5..=8 => {
            return invalid(format!(
                "sparseMode {mode} (prefix/global/dilated/block-local) is not simulated"
            ))
        }
        _ => return invalid(format!("sparseMode = {mode}; valid values are 0 to 8")),
    })
}

#[allow(clippy::too_many_arguments)]
unsafe fn build_fa(
    query: *const AclTensor,
    key: *const AclTensor,
    value: *const AclTensor,
    real_shift: *const AclTensor,
    drop_mask: *const AclTensor,
    padding_mask: *const AclTensor,
    atten_mask: *const AclTensor,
    prefix: *const AclIntArray,
    scale_value: f64,
    keep_prob: f64,
    pre_tokens: i64,
    next_tokens: i64,
    head_num: i64,
    input_layout: *mut c_char,
    inner_precise: i64,
    sparse_mode: i64,
    softmax_max: *const AclTensor,
    softmax_sum: *const AclTensor,
    softmax_out: *const AclTensor,
    attention_out: *const AclTensor,
) -> PResult<Plan> {
    let q = tensor_arg(query, "query")?;
    let k = tensor_arg(key, "key")?;
    let v = tensor_arg(value, "value")?;
    let smax = tensor_arg(softmax_max, "softmaxMaxOut")?;
    let ssum = tensor_arg(softmax_sum, "softmaxSumOut")?;
    let out = tensor_arg(attention_out, "attentionOutOut")?;
    let mask = opt_tensor_arg(atten_mask, "attenMaskOptional")?;
    let layout = Layout::parse(
        input_layout,
        &[Layout::Bsh, Layout::Sbh, Layout::Bsnd, Layout::Bnsd],
    )?;
    for (n, t) in [
        ("query", &q),
        ("key", &k),
        ("value", &v),
        ("attentionOutOut", &out),
    ] {
        dtype_in(n, t, FLOATS)?;
        format_nd(n, t, false)?;
    }
    same_dtype("query", &q, "key", &k)?;
    same_dtype("query", &q, "value", &v)?;
    same_dtype("query", &q, "attentionOutOut", &out)?;
    dtype_in("softmaxMaxOut", &smax, &[DType::F32])?;
    dtype_in("softmaxSumOut", &ssum, &[DType::F32])?;
    if let Some(m) = &mask {
        dtype_in("attenMaskOptional", m, &[DType::Bool, DType::U8])?;
        format_nd("attenMaskOptional", m, false)?;
    }
    if !real_shift.is_null() {
        return invalid("realShiftOptional (pse) is not simulated; pass null");
    }
    if !padding_mask.is_null() {
        return invalid("paddingMaskOptional is reserved; pass null");
    }
    // prefixOptional is only read by the prefix modes 5 and 6, which sparse_of refuses.
    let _ = prefix;
    if !(keep_prob > 0.0 && keep_prob <= 1.0) {
        return invalid(format!("keepProb = {keep_prob}; it must lie in (0, 1]"));
    }
    if keep_prob != 1.0 || !drop_mask.is_null() {
        return invalid("dropout (keepProb < 1 or a dropMask) is not simulated");
    }
    if !(0..=2).contains(&inner_precise) {
        return invalid(format!(
            "innerPrecise = {inner_precise}; valid values are 0, 1, 2"
        ));
    }
    let sparse = sparse_of(sparse_mode, pre_tokens, next_tokens)?;
    if sparse_mode > 6 {
        return invalid(format!(
            "sparseMode = {sparse_mode}; FlashAttentionScore accepts 0 to 6"
        ));
    }
    let r = layout.rank();
    for (n, t) in [
        ("query", &q),
        ("key", &k),
        ("value", &v),
        ("attentionOutOut", &out),
    ] {
        if t.dims.len() != r {
            return invalid(format!(
                "{n} has shape {:?}; layout {layout:?} needs {r} dims",
                t.dims
            ));
        }
    }
    if head_num <= 0 || head_num > 256 {
        return invalid(format!("headNum = {head_num}; it must be in 1..=256"));
    }
    let Some([b, nq, sq, d]) = layout.bnsd(&q.dims, head_num) else {
        return invalid(format!(
            "query {:?}: H is not a multiple of headNum {head_num}",
            q.dims
        ));
    };
    if layout.rank() == 4 && nq != head_num {
        return invalid(format!(
            "headNum {head_num} differs from the N axis {nq} of query {:?}",
            q.dims
        ));
    }
    if k.dims != v.dims {
        return invalid(format!(
            "key {:?} and value {:?} must have the same shape (different value D is not simulated)",
            k.dims, v.dims
        ));
    }
    // The key's head count follows from its H and the query's D in 3-D layouts.
    let kheads = if r == 3 {
        if d > 0 && k.dims[2] % d == 0 {
            k.dims[2] / d
        } else {
            0
        }
    } else {
        0
    };
    let Some([bk, nkv, skv, dk]) = layout.bnsd(&k.dims, if r == 3 { kheads } else { 1 }) else {
        return invalid(format!(
            "key {:?}: H is not a multiple of the query head dim {d}",
            k.dims
        ));
    };
    if bk != b {
        return invalid(format!("query batch {b} and key batch {bk} differ"));
    }
    if dk != d {
        return invalid(format!("query head dim {d} and key head dim {dk} differ"));
    }
    if !(1..=768).contains(&d) {
        return invalid(format!("head dim D = {d}; it must be in 1..=768"));
    }
    if nkv == 0 || nq % nkv != 0 {
        return invalid(format!(
            "query heads {nq} are not a multiple of key/value heads {nkv}"
        ));
    }
    if out.dims != q.dims {
        return invalid(format!(
            "attentionOutOut {:?} must have the shape of query {:?}",
            out.dims, q.dims
        ));
    }
    for (n, t) in [("softmaxMaxOut", &smax), ("softmaxSumOut", &ssum)] {
        if t.dims != [b, nq, sq, 8] {
            return invalid(format!(
                "{n} has shape {:?}; it must be [B, N, Sq, 8] = {:?}",
                t.dims,
                [b, nq, sq, 8]
            ));
        }
    }
    let _ = softmax_out; // reserved output, not written
    if sparse.reads_mask() {
        if let Some(m) = &mask {
            fa_mask_shape(m, b, nq, sq, skv)?;
        } else if sparse == Sparse::All {
            return invalid("sparseMode 1 (allMask) needs a full attenMask");
        }
    } else {
        check_compressed_mask(mask.as_ref(), sparse_mode)?;
    }
    let g = Geometry {
        b: b as usize,
        nq: nq as usize,
        nkv: nkv as usize,
        sq: sq as usize,
        skv: skv as usize,
        d: d as usize,
    };
    let use_mask = mask.is_some() && sparse.reads_mask();
    let scale = scale_value as f32;
    let kernel = move |ins: &[View], outs: &[View]| {
        let qv = layout.view_bnsd(&ins[0], nq).read_f32();
        let kv = layout.view_bnsd(&ins[1], nkv).read_f32();
        let vv = layout.view_bnsd(&ins[2], nkv).read_f32();
        let m = if use_mask {
            read_mask(&ins[3], b, nq, sq, skv)
        } else {
            Vec::new()
        };
        let allowed = |bi: usize, n: usize, i: usize, j: usize| {
            sparse.allows(i, j, g.sq, g.skv)
                && (!use_mask || !m[((bi * g.nq + n) * g.sq + i) * g.skv + j])
        };
        let a = attend(&qv, &kv, &vv, g, scale, &allowed);
        layout.view_bnsd(&outs[0], nq).write_f32(&a.out);
        let rep = |x: &[f32]| x.iter().flat_map(|v| [*v; 8]).collect::<Vec<f32>>();
        outs[1].write_f32(&rep(&a.max));
        outs[2].write_f32(&rep(&a.sum));
        Ok(())
    };
    let mut plan = Plan::new(kernel)
        .input("query", &q)
        .input("key", &k)
        .input("value", &v);
    if use_mask {
        plan = plan.input("attenMaskOptional", mask.as_ref().expect("checked"));
    }
    let ws = (b * nq * sq * 8 * 4 * 2) as u64 + 4096;
    Ok(plan
        .output("attentionOutOut", &out)
        .output("softmaxMaxOut", &smax)
        .output("softmaxSumOut", &ssum)
        .workspace(ws))
}

aclnn_op!("aclnnFlashAttentionScore", aclnnFlashAttentionScoreGetWorkspaceSize, aclnnFlashAttentionScore,
    (query: *const AclTensor, key: *const AclTensor, value: *const AclTensor, real_shift: *const AclTensor,
     drop_mask: *const AclTensor, padding_mask: *const AclTensor, atten_mask: *const AclTensor,
     prefix: *const AclIntArray, scale_value: f64, keep_prob: f64, pre_tokens: i64, next_tokens: i64,
     head_num: i64, input_layout: *mut c_char, inner_precise: i64, sparse_mode: i64,
     softmax_max: *const AclTensor, softmax_sum: *const AclTensor, softmax_out: *const AclTensor,
     attention_out: *const AclTensor),
    build_fa);
