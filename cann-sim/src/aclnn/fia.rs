//! aclnnFusedInferAttentionScoreV2 (ops-transformer
//! `attention/fused_infer_attention_score/docs/aclnnFusedInferAttentionScoreV2.md`): prompt (Q_S > 1) and decode
//! (Q_S = 1) attention over a KV cache given as tensor lists, GQA through numKeyValueHeads, per-batch
//! actualSeqLengths / actualSeqLengthsKv.
//!
//! Simulated subset: FLOAT16/BFLOAT16 q/k/v/out; layouts BSH, BSND, BNSD; key/value lists of one tensor holding
//! every batch, or of B tensors of batch 1; sparseMode 0-4 for Q_S > 1 (ignored for Q_S = 1, as documented);
//! an optional bool/int8/uint8 mask broadcast over heads; softmaxLse when softmaxLseFlag is set. Quantisation,
//! antiquantisation, pse, page attention (blockTable), left padding and shared prefixes are refused as not
//! simulated. Query rows past actualSeqLengths and fully masked rows give 0.

use super::access::View;
use super::attention::{
    attend, check_compressed_mask, read_mask, sparse_of, Geometry, Layout, Sparse,
};
use super::check::{dtype_in, format_nd, same_dtype};
use super::executor::{invalid, PResult, Plan};
use super::tensor::{
    handle_arg, list_arg, opt_tensor_arg, tensor_arg, AclIntArray, AclTensor, AclTensorList, Kind,
    TensorDesc,
};
use super::types::DType;
use crate::aclnn_op;
use std::ffi::c_char;
use std::sync::Arc;

const HALVES: &[DType] = &[DType::F16, DType::BF16];

/// Resolves an actual-length array: null = the full length; length 1 = the same for every batch; at least B
/// entries = the first B; each at most `max`.
unsafe fn lengths(p: *const AclIntArray, name: &str, b: usize, max: i64) -> PResult<Vec<i64>> {
    if p.is_null() {
        return Ok(vec![max; b]);
    }
    let v = handle_arg(p, Kind::IntArray, name)?.0.clone();
    let v = match v.len() {
        1 => vec![v[0]; b],
        n if n >= b => v[..b].to_vec(),
        n => {
            return invalid(format!(
                "{name} has {n} entries; it needs 1 or at least B = {b}"
            ))
        }
    };
    if let Some(x) = v.iter().find(|x| **x < 0 || **x > max) {
        return invalid(format!("{name} entry {x} is outside [0, {max}]"));
    }
    Ok(v)
}

#[allow(clippy::too_many_arguments)]
unsafe fn build_fia(
    query: *const AclTensor,
    key: *const AclTensorList,
    value: *const AclTensorList,
    pse_shift: *const AclTensor,
    atten_mask: *const AclTensor,
    actual_seq_lengths: *const AclIntArray,
    actual_seq_lengths_kv: *const AclIntArray,
    deq_scale1: *const AclTensor,
    quant_scale1: *const AclTensor,
    deq_scale2: *const AclTensor,
    quant_scale2: *const AclTensor,
    quant_offset2: *const AclTensor,
    antiquant_scale: *const AclTensor,
    antiquant_offset: *const AclTensor,
    block_table: *const AclTensor,
    query_padding_size: *const AclTensor,
    kv_padding_size: *const AclTensor,
    key_antiquant_scale: *const AclTensor,
    key_antiquant_offset: *const AclTensor,
    value_antiquant_scale: *const AclTensor,
    value_antiquant_offset: *const AclTensor,
    key_shared_prefix: *const AclTensor,
    value_shared_prefix: *const AclTensor,
    actual_shared_prefix_len: *const AclIntArray,
    num_heads: i64,
    scale_value: f64,
    pre_tokens: i64,
    next_tokens: i64,
    input_layout: *mut c_char,
    num_key_value_heads: i64,
    sparse_mode: i64,
    inner_precise: i64,
    block_size: i64,
    antiquant_mode: i64,
    softmax_lse_flag: bool,
    key_antiquant_mode: i64,
    value_antiquant_mode: i64,
    attention_out: *const AclTensor,
    softmax_lse: *const AclTensor,
) -> PResult<Plan> {
    let q = tensor_arg(query, "query")?;
    let ks = list_arg(key, "key")?;
    let vs = list_arg(value, "value")?;
    let out = tensor_arg(attention_out, "attentionOut")?;
    let mask = opt_tensor_arg(atten_mask, "attenMaskOptional")?;
    let lse = opt_tensor_arg(softmax_lse, "softmaxLse")?;
    let unsupported: [(&str, *const AclTensor); 17] = [
        ("pseShiftOptional", pse_shift),
        ("deqScale1Optional", deq_scale1),
        ("quantScale1Optional", quant_scale1),
        ("deqScale2Optional", deq_scale2),
        ("quantScale2Optional", quant_scale2),
        ("quantOffset2Optional", quant_offset2),
        ("antiquantScaleOptional", antiquant_scale),
        ("antiquantOffsetOptional", antiquant_offset),
        ("blockTableOptional (page attention)", block_table),
        ("queryPaddingSizeOptional", query_padding_size),
        ("kvPaddingSizeOptional", kv_padding_size),
        ("keyAntiquantScaleOptional", key_antiquant_scale),
        ("keyAntiquantOffsetOptional", key_antiquant_offset),
        ("valueAntiquantScaleOptional", value_antiquant_scale),
        ("valueAntiquantOffsetOptional", value_antiquant_offset),
        ("keySharedPrefixOptional", key_shared_prefix),
        ("valueSharedPrefixOptional", value_shared_prefix),
    ];
    for (n, p) in unsupported {
        if !p.is_null() {
            return invalid(format!("{n} is not simulated; pass null"));
        }
    }
    if !actual_shared_prefix_len.is_null() {
        return invalid("actualSharedPrefixLenOptional is not simulated; pass null");
    }
    let _ = (
        block_size,
        antiquant_mode,
        key_antiquant_mode,
        value_antiquant_mode,
    ); // only read with the refused features
    let layout = Layout::parse(input_layout, &[Layout::Bsh, Layout::Bsnd, Layout::Bnsd])?;
    dtype_in("query", &q, HALVES)?;
    dtype_in("attentionOut", &out, HALVES)?;
    same_dtype("query", &q, "attentionOut", &out)?;
    format_nd("query", &q, false)?;
    if ks.is_empty() || ks.len() != vs.len() {
        return invalid(format!(
            "key has {} tensors and value {}; they must be equal and non-zero",
            ks.len(),
            vs.len()
        ));
    }
    for (i, (k, v)) in ks.iter().zip(&vs).enumerate() {
        dtype_in(&format!("key[{i}]"), k, HALVES)?;
        same_dtype("query", &q, &format!("key[{i}]"), k)?;
        same_dtype("query", &q, &format!("value[{i}]"), v)?;
        if k.dims != vs[0].dims || k.dims != ks[0].dims || v.dims != ks[0].dims {
            return invalid(format!(
                "key[{i}] {:?} and value[{i}] {:?} must match key[0] {:?}",
                k.dims, v.dims, ks[0].dims
            ));
        }
        super::check::contiguous(&format!("key[{i}]"), k)?;
        super::check::contiguous(&format!("value[{i}]"), v)?;
    }
    super::check::contiguous("query", &q)?;
    let r = layout.rank();
    for (n, t) in [("query", &q), ("key[0]", &ks[0]), ("attentionOut", &out)] {
        if t.dims.len() != r {
            return invalid(format!(
                "{n} has shape {:?}; layout {layout:?} needs {r} dims",
                t.dims
            ));
        }
    }
    if num_heads <= 0 {
        return invalid(format!("numHeads = {num_heads}; it must be positive"));
    }
    let nkv = if num_key_value_heads == 0 {
        num_heads
    } else {
        num_key_value_heads
    };
    if nkv <= 0 || num_heads % nkv != 0 || num_heads / nkv > 64 {
        return invalid(format!("numHeads {num_heads} must be a multiple of numKeyValueHeads {nkv}, at most 64 times it"));
    }
    let Some([b, nq, sq, d]) = layout.bnsd(&q.dims, num_heads) else {
        return invalid(format!(
            "query {:?}: H is not a multiple of numHeads {num_heads}",
            q.dims
        ));
    };
    if nq != num_heads {
        return invalid(format!(
            "numHeads {num_heads} differs from the N axis {nq} of query {:?}",
            q.dims
        ));
    }
    let Some([kb, kn, skv, kd]) = layout.bnsd(&ks[0].dims, nkv) else {
        return invalid(format!(
            "key {:?}: H is not a multiple of numKeyValueHeads {nkv}",
            ks[0].dims
        ));
    };
    if kn != nkv {
        return invalid(format!(
            "numKeyValueHeads {nkv} differs from the N axis {kn} of key {:?}",
            ks[0].dims
        ));
    }
    let per_batch = ks.len() > 1;
    if per_batch && (kb != 1 || ks.len() as i64 != b) {
        return invalid(format!(
            "a key list of {} tensors needs B = {b} tensors of batch 1; key[0] has batch {kb}",
            ks.len()
        ));
    }
    if !per_batch && kb != b {
        return invalid(format!("query batch {b} and key batch {kb} differ"));
    }
    if kd != d {
        return invalid(format!("query head dim {d} and key head dim {kd} differ"));
    }
    if d > 512 {
        return invalid(format!("head dim D = {d}; it must be at most 512"));
    }
    if sq > 1 && d % 16 != 0 {
        return invalid(format!(
            "head dim D = {d}: FLOAT16/BFLOAT16 prompt attention on Atlas A2 needs D aligned to 16"
        ));
    }
    if out.dims != q.dims {
        return invalid(format!(
            "attentionOut {:?} must have the shape of query {:?}",
            out.dims, q.dims
        ));
    }
    if !(0..=3).contains(&inner_precise) {
        return invalid(format!(
            "innerPrecise = {inner_precise}; valid values are 0 to 3"
        ));
    }
    let (bu, squ, skvu) = (b as usize, sq as usize, skv as usize);
    let act_q = lengths(actual_seq_lengths, "actualSeqLengthsOptional", bu, sq)?;
    let act_kv = lengths(actual_seq_lengths_kv, "actualSeqLengthsKvOptional", bu, skv)?;
    // Q_S = 1 without rope ignores sparseMode (document); prompt attention accepts 0-4.
    let sparse = if sq == 1 {
        Sparse::All
    } else {
        if !(0..=4).contains(&sparse_mode) {
            return invalid(format!(
                "sparseMode = {sparse_mode}; FusedInferAttentionScoreV2 accepts 0 to 4"
            ));
        }
        match sparse_of(sparse_mode, pre_tokens, next_tokens)? {
            // Without a mask, mode 0 ignores preTokens/nextTokens.
            Sparse::Default { .. } if mask.is_none() => Sparse::All,
            s => s,
        }
    };
    if let Some(m) = &mask {
        dtype_in("attenMaskOptional", m, &[DType::Bool, DType::I8, DType::U8])?;
    }
    let use_mask = mask.is_some() && sparse.reads_mask();
    if sq > 1 && !sparse.reads_mask() {
        check_compressed_mask(mask.as_ref(), sparse_mode)?;
    } else if sq > 1 && sparse_mode == 1 && mask.is_none() {
        return invalid("sparseMode 1 (allMask) needs a full attenMask");
    }
    if use_mask {
        let m = mask.as_ref().expect("checked");
        let md = &m.dims;
        // Masks broadcast over heads: [Sq,Skv], [1|B,Sq,Skv], [1|B,1,Sq,Skv]; decode also takes [B,Skv].
        let ok = match md.len() {
            2 => md[..] == [sq, skv] || (sq == 1 && md[..] == [b, skv]),
            3 => (md[0] == 1 || md[0] == b) && md[1..] == [sq, skv],
            4 => (md[0] == 1 || md[0] == b) && md[1] == 1 && md[2..] == [sq, skv],
            _ => false,
        };
        if !ok {
            return invalid(format!("attenMask has shape {md:?}; expected [Sq,Skv], [B,Sq,Skv] or [B,1,Sq,Skv] with B={b} Sq={sq} Skv={skv}"));
        }
    }
    if softmax_lse_flag {
        let Some(l) = &lse else {
            return invalid("softmaxLseFlag is set but softmaxLse is null");
        };
        dtype_in("softmaxLse", l, &[DType::F32])?;
        if l.dims != [b, nq, sq, 1] {
            return invalid(format!(
                "softmaxLse has shape {:?}; it must be [B, N, Q_S, 1] = {:?}",
                l.dims,
                [b, nq, sq, 1]
            ));
        }
    }
    let g = Geometry {
        b: bu,
        nq: nq as usize,
        nkv: nkv as usize,
        sq: squ,
        skv: skvu,
        d: d as usize,
    };
    let nlist = ks.len();
    let scale = scale_value as f32;
    let write_lse = softmax_lse_flag;
    let kernel = move |ins: &[View], outs: &[View]| {
        let qv = layout.view_bnsd(&ins[0], nq).read_f32();
        let gather = |from: usize| -> Vec<f32> {
            (0..nlist)
                .flat_map(|i| layout.view_bnsd(&ins[from + i], nkv).read_f32())
                .collect()
        };
        let (kv, vv) = (gather(1), gather(1 + nlist));
        let m = if use_mask {
            let mut mv = ins[1 + 2 * nlist].clone();
            if mv.dims.len() == 2 && g.sq == 1 && mv.dims[0] == b && b != 1 {
                // [B, Skv] decode mask → [B, 1, 1, Skv]
                mv.dims = vec![b, 1, 1, mv.dims[1]];
                mv.strides = vec![mv.strides[0], 0, 0, mv.strides[1]];
            } else if mv.dims.len() == 3 {
                mv.dims.insert(1, 1);
                mv.strides.insert(1, 0);
            }
            read_mask(&mv, b, 1, sq, skv)
        } else {
            Vec::new()
        };
        let allowed = |bi: usize, _n: usize, i: usize, j: usize| {
            let (aq, ak) = (act_q[bi] as usize, act_kv[bi] as usize);
            i < aq
                && j < ak
                && sparse.allows(i, j, aq, ak)
                && (!use_mask || !m[(bi * g.sq + i) * g.skv + j])
        };
        let a = attend(&qv, &kv, &vv, g, scale, &allowed);
        layout.view_bnsd(&outs[0], nq).write_f32(&a.out);
        if write_lse {
            let l: Vec<f32> = a
                .max
                .iter()
                .zip(&a.sum)
                .map(|(m, s)| if *s > 0.0 { m + s.ln() } else { f32::INFINITY })
                .collect();
            outs[1].write_f32(&l);
        }
        Ok(())
    };
    let mut plan = Plan::new(kernel).input("query", &q);
    for (i, k) in ks.iter().enumerate() {
        plan = plan.input(&format!("key[{i}]"), k);
    }
    for (i, v) in vs.iter().enumerate() {
        plan = plan.input(&format!("value[{i}]"), v);
    }
    if use_mask {
        plan = plan.input("attenMaskOptional", mask.as_ref().expect("checked"));
    }
    plan = plan.output("attentionOut", &out);
    if write_lse {
        let l: &Arc<TensorDesc> = lse.as_ref().expect("checked");
        plan = plan.output("softmaxLse", l);
    }
    Ok(plan.workspace((b * nq * sq * 4 * 4) as u64 + 16384))
}

aclnn_op!("aclnnFusedInferAttentionScoreV2", aclnnFusedInferAttentionScoreV2GetWorkspaceSize, aclnnFusedInferAttentionScoreV2,
    (query: *const AclTensor, key: *const AclTensorList, value: *const AclTensorList, pse_shift: *const AclTensor,
     atten_mask: *const AclTensor, actual_seq_lengths: *const AclIntArray, actual_seq_lengths_kv: *const AclIntArray,
     deq_scale1: *const AclTensor, quant_scale1: *const AclTensor, deq_scale2: *const AclTensor,
     quant_scale2: *const AclTensor, quant_offset2: *const AclTensor, antiquant_scale: *const AclTensor,
     antiquant_offset: *const AclTensor, block_table: *const AclTensor, query_padding_size: *const AclTensor,
     kv_padding_size: *const AclTensor, key_antiquant_scale: *const AclTensor, key_antiquant_offset: *const AclTensor,
     value_antiquant_scale: *const AclTensor, value_antiquant_offset: *const AclTensor,
     key_shared_prefix: *const AclTensor, value_shared_prefix: *const AclTensor,
     actual_shared_prefix_len: *const AclIntArray, num_heads: i64, scale_value: f64, pre_tokens: i64,
     next_tokens: i64, input_layout: *mut c_char, num_key_value_heads: i64, sparse_mode: i64, inner_precise: i64,
     block_size: i64, antiquant_mode: i64, softmax_lse_flag: bool, key_antiquant_mode: i64,
     value_antiquant_mode: i64, attention_out: *const AclTensor, softmax_lse: *const AclTensor),
    build_fia);
