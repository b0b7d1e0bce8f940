//! Matrix products: aclnnMm (ops-nn `matmul/mat_mul_v3/docs/aclnnMm.md`) and aclnnMatmul
//! (`matmul/mat_mul_v3/docs/aclnnMatmul.md`). Any strided view is accepted (a weight W[N,K] seen as [K,N]
//! through strides (1, K) is the usual case). Products are accumulated in f32 and rounded once to out.
//!
//! cubeMathType (Atlas A2 rules): 0 KEEP_DTYPE, 1 ALLOW_FP32_DOWN_PRECISION, 2 USE_FP16 (not with BFLOAT16),
//! 3 USE_HF32 (FLOAT only), 4 USE_FP32_ADD. USE_FP16 is modelled by rounding FLOAT inputs to FLOAT16; the
//! HFLOAT32 reductions of 1 and 3 are not modelled (computed in f32).

use super::access::View;
use super::check::{broadcast, dtype_in, format_nd, FLOATS};
use super::executor::{invalid, PResult, Plan};
use super::tensor::{tensor_arg, AclTensor, TensorDesc};
use super::types::DType;
use crate::aclnn_op;
use std::sync::Arc;

/// The type both inputs are computed in under Atlas A2's rules, which do not mix BFLOAT16 with another type.
fn common_type(a: DType, b: DType) -> PResult<DType> {
    if a == b {
        return Ok(a);
    }
    if a == DType::BF16 || b == DType::BF16 {
        return invalid(format!(
            "{} with {} is not a supported type combination on Atlas A2",
            a.name(),
            b.name()
        ));
    }
    Ok(DType::F32)
}

fn check_cube_math(cube: i8, t: DType) -> PResult<bool> {
    match cube {
        0 | 1 | 4 => Ok(false),
        2 if t == DType::BF16 => {
            invalid("cubeMathType 2 (USE_FP16) is not supported for BFLOAT16 inputs")
        }
        2 => Ok(t == DType::F32),
        3 if t != DType::F32 => invalid(format!(
            "cubeMathType 3 (USE_HF32) needs FLOAT inputs, not {}",
            t.name()
        )),
        3 => Ok(false),
        _ => invalid(format!("cubeMathType = {cube}; valid values are 0 to 4")),
    }
}

fn inputs(
    s: *const AclTensor,
    m2: *const AclTensor,
    out: *mut AclTensor,
) -> PResult<[Arc<TensorDesc>; 3]> {
    // SAFETY: tensor_arg validates handles.
    let r = unsafe {
        [
            tensor_arg(s, "self")?,
            tensor_arg(m2, "mat2")?,
            tensor_arg(out, "out")?,
        ]
    };
    for (n, t) in ["self", "mat2", "out"].iter().zip(&r) {
        dtype_in(n, t, FLOATS)?;
        format_nd(n, t, false)?;
    }
    Ok(r)
}

unsafe fn build_mm(
    s: *const AclTensor,
    m2: *const AclTensor,
    out: *mut AclTensor,
    cube: i8,
) -> PResult<Plan> {
    let [a, b, o] = inputs(s, m2, out)?;
    for (n, t) in [("self", &a), ("mat2", &b), ("out", &o)] {
        if t.dims.len() != 2 {
            return invalid(format!(
                "{n} has shape {:?}; aclnnMm takes 2-D tensors",
                t.dims
            ));
        }
    }
    let t = common_type(a.dtype, b.dtype)?;
    if o.dtype != t {
        return invalid(format!(
            "out is {}; it must be the inputs' common type {}",
            o.dtype.name(),
            t.name()
        ));
    }
    let to_fp16 = check_cube_math(cube, t)?;
    let (m, k, k2, n) = (a.dims[0], a.dims[1], b.dims[0], b.dims[1]);
    if k != k2 {
        return invalid(format!(
            "self {:?} and mat2 {:?}: reduce dims {k} and {k2} differ",
            a.dims, b.dims
        ));
    }
    if o.dims != [m, n] {
        return invalid(format!(
            "out has shape {:?}; self·mat2 is [{m}, {n}]",
            o.dims
        ));
    }
    let (mu, ku, nu) = (m as usize, k as usize, n as usize);
    let plan = Plan::new(move |ins: &[View], outs: &[View]| {
        outs[0].write_f32(&stage(&ins[0], &ins[1], mu, ku, nu, to_fp16));
        Ok(())
    });
    Ok(plan
        .input("self", &a)
        .input("mat2", &b)
        .output("out", &o)
        .workspace(4 * (m * n).max(1) as u64 + 1024))
}

aclnn_op!("aclnnMm", aclnnMmGetWorkspaceSize, aclnnMm,
    (s: *const AclTensor, mat2: *const AclTensor, out: *mut AclTensor, cube_math_type: i8), build_mm);

unsafe fn build_matmul(
    s: *const AclTensor,
    m2: *const AclTensor,
    out: *mut AclTensor,
    cube: i8,
) -> PResult<Plan> {
    let [a, b, o] = inputs(s, m2, out)?;
    for (n, t) in [("self", &a), ("mat2", &b), ("out", &o)] {
        if t.dims.is_empty() || t.dims.len() > 6 {
            return invalid(format!(
                "{n} has shape {:?}; aclnnMatmul takes 1 to 6 dims",
                t.dims
            ));
        }
    }
    let t = common_type(a.dtype, b.dtype)?;
    if o.dtype != t && !(o.dtype == DType::F32 && t == DType::F16) {
        return invalid(format!(
            "out is {}; the inputs' common type {} cannot be written to it",
            o.dtype.name(),
            t.name()
        ));
    }
    let to_fp16 = check_cube_math(cube, t)?;
    // 1-D operands are (1, K) and (K, 1); the padded dims are removed from the output again.
    let (a1, b1) = (a.dims.len() == 1, b.dims.len() == 1);
    let ad = if a1 {
        vec![1, a.dims[0]]
    } else {
        a.dims.clone()
    };
    let bd = if b1 {
        vec![b.dims[0], 1]
    } else {
        b.dims.clone()
    };
    let (m, k) = (ad[ad.len() - 2], ad[ad.len() - 1]);
    let (k2, n) = (bd[bd.len() - 2], bd[bd.len() - 1]);
    if k != k2 {
        return invalid(format!(
            "self {:?} and mat2 {:?}: reduce dims {k} and {k2} differ",
            a.dims, b.dims
        ));
    }
    let Some(batch) = broadcast(&ad[..ad.len() - 2], &bd[..bd.len() - 2]) else {
        return invalid(format!(
            "the batch dims of self {:?} and mat2 {:?} cannot be broadcast",
            a.dims, b.dims
        ));
    };
    let mut want = batch.clone();
    if !a1 {
        want.push(m);
    }
    if !b1 {
        want.push(n);
    }
    if o.dims != want {
        return invalid(format!("out has shape {:?}; self·mat2 is {want:?}", o.dims));
    }
    let (mu, ku, nu) = (m as usize, k as usize, n as usize);
    let plan = Plan::new(move |ins: &[View], outs: &[View]| {
        let shape_as = |v: &View, padded: &[i64], tail: [i64; 2]| {
            let mut v = v.clone();
            if padded.len() != v.dims.len() {
                // Insert the padded unit dim with any stride.
                let s = v.strides[0];
                if tail[0] == 1 {
                    v.dims.insert(0, 1);
                    v.strides.insert(0, s);
                } else {
                    v.dims.push(1);
                    v.strides.push(1);
                }
            }
            let mut full = batch.clone();
            full.extend(tail);
            v.broadcast_to(&full)
        };
        let av = shape_as(&ins[0], &ad, [m, k]);
        let bv = shape_as(&ins[1], &bd, [k, n]);
        // The output drops the padded unit dims, which leaves the row-major element order unchanged.
        outs[0].write_f32(&stage(&av, &bv, mu, ku, nu, to_fp16));
        Ok(())
    });
    Ok(plan
        .input("self", &a)
        .input("mat2", &b)
        .output("out", &o)
        .workspace(4 * (m * n).max(1) as u64 + 1024))
}

/// Batched product of views shaped `[..batch, M, K]` and `[..batch, K, N]` into a row-major vector.
fn stage(a: &View, b: &View, m: usize, k: usize, n: usize, to_fp16: bool) -> Vec<f32> {
    let round = |v: Vec<f32>| -> Vec<f32> {
        if to_fp16 {
            v.into_iter()
                .map(|x| half::f16::from_f32(x).to_f32())
                .collect()
        } else {
            v
        }
    };
    let (av, bv) = (round(a.read_f32()), round(b.read_f32()));
    let batches = av
        .len()
        .checked_div(m * k)
        .unwrap_or_else(|| b.numel() / (k * n).max(1));
    let mut ov = vec![0f32; batches * m * n];
    for bt in 0..batches {
        for i in 0..m {
            for j in 0..n {
                let mut acc = 0f32;
                for p in 0..k {
                    acc += av[bt * m * k + i * k + p] * bv[bt * k * n + p * n + j];
                }
                ov[bt * m * n + i * n + j] = acc;
            }
        }
    }
    ov
}

aclnn_op!("aclnnMatmul", aclnnMatmulGetWorkspaceSize, aclnnMatmul,
    (s: *const AclTensor, mat2: *const AclTensor, out: *mut AclTensor, cube_math_type: i8), build_matmul);
