//! Element-wise arithmetic and conversion: aclnnAdd / aclnnInplaceAdd (ops-math
//! `math/add/docs/aclnnAdd&aclnnInplaceAdd.md`), aclnnMul / aclnnInplaceMul (`math/mul/docs/aclnnMul&aclnnInplaceMul.md`),
//! aclnnCast (`math/cast/docs/aclnnCast.md`), aclnnInplaceCopy (`conversion/view_copy/docs/aclnnInplaceCopy.md`).
//!
//! Floats are computed in f32 and rounded once to the output type; integer and bool results in i64.

use super::access::View;
use super::check::{broadcast, dtype_in, format_nd, rank_in, same_shape};
use super::executor::{invalid, PResult, Plan};
use super::tensor::{handle_arg, tensor_arg, AclScalar, AclTensor, Kind, TensorDesc};
use super::types::{can_cast, promote, DType};
use crate::aclnn_op;
use std::sync::Arc;

/// Types Add and Mul accept on Atlas A2 that the simulator computes (the documents also list COMPLEX64/128).
const ARITH: &[DType] = &[
    DType::F32,
    DType::F16,
    DType::F64,
    DType::I32,
    DType::I64,
    DType::I16,
    DType::I8,
    DType::U8,
    DType::Bool,
    DType::BF16,
];

#[derive(Clone, Copy)]
enum Arith {
    Add(f64),
    Mul,
}

/// Checks and plans `out = self (+ alpha·other | · other)` with broadcasting; `out` may be `self` (in place).
fn binary(
    sn: &str,
    s: Arc<TensorDesc>,
    o: Arc<TensorDesc>,
    outn: &str,
    out: Arc<TensorDesc>,
    alpha: Option<&AclScalar>,
    inplace: bool,
) -> PResult<Plan> {
    dtype_in(sn, &s, ARITH)?;
    dtype_in("other", &o, ARITH)?;
    dtype_in(outn, &out, ARITH)?;
    for (n, t) in [(sn, &s), ("other", &o), (outn, &out)] {
        format_nd(n, t, false)?;
        rank_in(n, t, 0, 8)?;
    }
    let Some(common) = promote(s.dtype, o.dtype) else {
        return invalid(format!(
            "{sn} ({}) and other ({}) have no common type",
            s.dtype.name(),
            o.dtype.name()
        ));
    };
    if !can_cast(common, out.dtype) {
        return invalid(format!(
            "the common type {} cannot be written to {outn} ({})",
            common.name(),
            out.dtype.name()
        ));
    }
    let Some(shape) = broadcast(&s.dims, &o.dims) else {
        return invalid(format!(
            "{sn} {:?} and other {:?} cannot be broadcast",
            s.dims, o.dims
        ));
    };
    if shape != out.dims {
        let what = if inplace {
            "must equal the shape of selfRef"
        } else {
            "must be the shape of out"
        };
        return invalid(format!(
            "the broadcast shape {shape:?} of {sn} and other {what} {:?}",
            out.dims
        ));
    }
    let op = match alpha {
        Some(a) => {
            if common.is_int() || common == DType::Bool {
                if a.dtype.is_float() {
                    return invalid(format!(
                        "alpha of type {} cannot be converted to the common type {}",
                        a.dtype.name(),
                        common.name()
                    ));
                }
                if common == DType::Bool && a.value != 0.0 && a.value != 1.0 {
                    return invalid(format!("alpha {} cannot be converted to BOOL", a.value));
                }
            }
            Arith::Add(a.value)
        }
        None => Arith::Mul,
    };
    let plan = Plan::new(move |ins: &[View], outs: &[View]| {
        let shape = &outs[0].dims;
        let a = ins[0].broadcast_to(shape);
        let b = ins[1].broadcast_to(shape);
        if common.is_float() {
            let (x, y) = (a.read_f32(), b.read_f32());
            let r: Vec<f32> = match op {
                Arith::Add(al) => {
                    let al = al as f32;
                    x.iter().zip(&y).map(|(p, q)| p + al * q).collect()
                }
                Arith::Mul => x.iter().zip(&y).map(|(p, q)| p * q).collect(),
            };
            outs[0].write_f32(&r);
        } else {
            let (x, y) = (a.read_i64(), b.read_i64());
            let r: Vec<i64> = match op {
                Arith::Add(al) if common == DType::Bool => x
                    .iter()
                    .zip(&y)
                    .map(|(p, q)| (*p != 0 || (al != 0.0 && *q != 0)) as i64)
                    .collect(),
                Arith::Add(al) => {
                    let al = al as i64;
                    x.iter()
                        .zip(&y)
                        .map(|(p, q)| p.wrapping_add(al.wrapping_mul(*q)))
                        .collect()
                }
                Arith::Mul if common == DType::Bool => x
                    .iter()
                    .zip(&y)
                    .map(|(p, q)| (*p != 0 && *q != 0) as i64)
                    .collect(),
                Arith::Mul => x.iter().zip(&y).map(|(p, q)| p.wrapping_mul(*q)).collect(),
            };
            outs[0].write_i64(&r);
        }
        Ok(())
    });
    Ok(plan.input(sn, &s).input("other", &o).output(outn, &out))
}

unsafe fn build_add(
    s: *const AclTensor,
    o: *const AclTensor,
    alpha: *const AclScalar,
    out: *mut AclTensor,
) -> PResult<Plan> {
    let (s, o) = (tensor_arg(s, "self")?, tensor_arg(o, "other")?);
    let alpha = handle_arg(alpha, Kind::Scalar, "alpha")?;
    let out = tensor_arg(out, "out")?;
    binary("self", s, o, "out", out, Some(alpha), false)
}

unsafe fn build_inplace_add(
    s: *mut AclTensor,
    o: *const AclTensor,
    alpha: *const AclScalar,
) -> PResult<Plan> {
    let (s, o) = (tensor_arg(s, "selfRef")?, tensor_arg(o, "other")?);
    let alpha = handle_arg(alpha, Kind::Scalar, "alpha")?;
    binary("selfRef", s.clone(), o, "selfRef", s, Some(alpha), true)
}

unsafe fn build_mul(
    s: *const AclTensor,
    o: *const AclTensor,
    out: *mut AclTensor,
) -> PResult<Plan> {
    let (s, o, out) = (
        tensor_arg(s, "self")?,
        tensor_arg(o, "other")?,
        tensor_arg(out, "out")?,
    );
    binary("self", s, o, "out", out, None, false)
}

unsafe fn build_inplace_mul(s: *mut AclTensor, o: *const AclTensor) -> PResult<Plan> {
    let (s, o) = (tensor_arg(s, "selfRef")?, tensor_arg(o, "other")?);
    binary("selfRef", s.clone(), o, "selfRef", s, None, true)
}

aclnn_op!("aclnnAdd", aclnnAddGetWorkspaceSize, aclnnAdd,
    (s: *const AclTensor, other: *const AclTensor, alpha: *const AclScalar, out: *mut AclTensor), build_add);
aclnn_op!("aclnnInplaceAdd", aclnnInplaceAddGetWorkspaceSize, aclnnInplaceAdd,
    (s: *mut AclTensor, other: *const AclTensor, alpha: *const AclScalar), build_inplace_add);
aclnn_op!("aclnnMul", aclnnMulGetWorkspaceSize, aclnnMul,
    (s: *const AclTensor, other: *const AclTensor, out: *mut AclTensor), build_mul);
aclnn_op!("aclnnInplaceMul", aclnnInplaceMulGetWorkspaceSize, aclnnInplaceMul,
    (s: *mut AclTensor, other: *const AclTensor), build_inplace_mul);

/// Types Cast and InplaceCopy convert between on Atlas A2 (complex types are listed by the documents but not
/// simulated).
const CONVERTIBLE: &[DType] = &[
    DType::F16,
    DType::F32,
    DType::F64,
    DType::I8,
    DType::U8,
    DType::I16,
    DType::U16,
    DType::I32,
    DType::U32,
    DType::I64,
    DType::U64,
    DType::Bool,
    DType::BF16,
];

/// Converts every element of `src` into `dst` (same shape): exact integer paths, floats via f64 with a single
/// rounding to the target.
fn convert(src: &View, dst: &View) {
    if src.dtype == dst.dtype {
        dst.write_raw(&src.read_raw());
    } else if !src.dtype.is_float() && !dst.dtype.is_float() {
        dst.write_i64(&src.read_i64());
    } else {
        for (so, d) in src.offsets().zip(dst.offsets()) {
            // SAFETY: views were checked before the kernel runs; offsets lie inside their storages.
            unsafe {
                let v = super::access::load_f64(src.ptr(so), src.dtype);
                super::access::store_f64(dst.ptr(d), dst.dtype, v);
            }
        }
    }
}

unsafe fn build_cast(s: *const AclTensor, dtype: i32, out: *mut AclTensor) -> PResult<Plan> {
    let (s, out) = (tensor_arg(s, "self")?, tensor_arg(out, "out")?);
    dtype_in("self", &s, CONVERTIBLE)?;
    let target = DType::from_code(dtype);
    if !CONVERTIBLE.contains(&target) {
        return invalid(format!(
            "dtype {} is not a supported output type",
            target.name()
        ));
    }
    if out.dtype != target {
        return invalid(format!(
            "out has data type {} but dtype asks for {}",
            out.dtype.name(),
            target.name()
        ));
    }
    format_nd("self", &s, false)?;
    if s.format != out.format {
        return invalid("self and out have different formats");
    }
    rank_in("self", &s, 0, 8)?;
    same_shape("self", &s, "out", &out)?;
    if s.dtype == DType::Bool && !s.is_contiguous() {
        return invalid("self of type BOOL must be contiguous (aclnnCast.md)");
    }
    let plan = Plan::new(|ins: &[View], outs: &[View]| {
        convert(&ins[0], &outs[0]);
        Ok(())
    });
    Ok(plan.input("self", &s).output("out", &out))
}

aclnn_op!("aclnnCast", aclnnCastGetWorkspaceSize, aclnnCast,
    (s: *const AclTensor, dtype: i32, out: *mut AclTensor), build_cast);

unsafe fn build_inplace_copy(s: *mut AclTensor, src: *const AclTensor) -> PResult<Plan> {
    let (s, src) = (tensor_arg(s, "selfRef")?, tensor_arg(src, "src")?);
    dtype_in("selfRef", &s, CONVERTIBLE)?;
    dtype_in("src", &src, CONVERTIBLE)?;
    format_nd("selfRef", &s, false)?;
    format_nd("src", &src, false)?;
    rank_in("selfRef", &s, 1, 8)?;
    rank_in("src", &src, 1, 8)?;
    match broadcast(&s.dims, &src.dims) {
        Some(b) if b == s.dims => {}
        _ => {
            return invalid(format!(
                "src {:?} cannot be broadcast to selfRef {:?}",
                src.dims, s.dims
            ))
        }
    }
    let plan = Plan::new(|ins: &[View], outs: &[View]| {
        let src = ins[0].broadcast_to(&outs[0].dims);
        // Everything is read before anything is written, so a src overlapping selfRef copies through a buffer.
        if src.dtype == outs[0].dtype {
            outs[0].write_raw(&src.read_raw());
        } else if src.dtype.is_float() || outs[0].dtype.is_float() {
            let vals: Vec<f64> = src
                .offsets()
                // SAFETY: checked views.
                .map(|o| unsafe { super::access::load_f64(src.ptr(o), src.dtype) })
                .collect();
            for (o, v) in outs[0].offsets().zip(vals) {
                // SAFETY: checked views.
                unsafe { super::access::store_f64(outs[0].ptr(o), outs[0].dtype, v) }
            }
        } else {
            outs[0].write_i64(&src.read_i64());
        }
        Ok(())
    });
    Ok(plan.input("src", &src).output("selfRef", &s))
}

aclnn_op!("aclnnInplaceCopy", aclnnInplaceCopyGetWorkspaceSize, aclnnInplaceCopy,
    (s: *mut AclTensor, src: *const AclTensor), build_inplace_copy);
