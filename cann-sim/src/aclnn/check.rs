//! Argument checks shared by the operators' phase 1.

use super::executor::{invalid, PResult};
use super::tensor::TensorDesc;
use super::types::{format_name, DType, ACL_FORMAT_ND};

/// FLOAT, FLOAT16, BFLOAT16: the float types most Atlas A2 operators accept.
pub const FLOATS: &[DType] = &[DType::F32, DType::F16, DType::BF16];

/// Fails unless `t` has one of `allowed` types.
pub fn dtype_in(name: &str, t: &TensorDesc, allowed: &[DType]) -> PResult<()> {
    if allowed.contains(&t.dtype) {
        return Ok(());
    }
    let list: Vec<String> = allowed.iter().map(|d| d.name()).collect();
    invalid(format!(
        "{name} has data type {}, not one of {}",
        t.dtype.name(),
        list.join(", ")
    ))
}

/// Fails unless `a` and `b` have the same type.
pub fn same_dtype(an: &str, a: &TensorDesc, bn: &str, b: &TensorDesc) -> PResult<()> {
    if a.dtype != b.dtype {
        return invalid(format!(
            "{an} is {} but {bn} is {}; they must match",
            a.dtype.name(),
            b.dtype.name()
        ));
    }
    Ok(())
}

/// Fails unless `a` and `b` have the same shape.
pub fn same_shape(an: &str, a: &TensorDesc, bn: &str, b: &TensorDesc) -> PResult<()> {
    if a.dims != b.dims {
        return invalid(format!(
            "{an} has shape {:?} but {bn} has {:?}; they must match",
            a.dims, b.dims
        ));
    }
    Ok(())
}

/// Fails unless the format is ND (the only format these operators document, besides plain aliases where a
/// document lists NCHW and friends: `allow_aliases`).
pub fn format_nd(name: &str, t: &TensorDesc, allow_aliases: bool) -> PResult<()> {
    let ok =
        t.format == ACL_FORMAT_ND || (allow_aliases && matches!(t.format, 0 | 1 | 16 | 27 | 30));
    if !ok {
        return invalid(format!(
            "{name} has format {}, which the operator does not support here",
            format_name(t.format)
        ));
    }
    Ok(())
}

/// Fails unless the rank is within `[lo, hi]`.
pub fn rank_in(name: &str, t: &TensorDesc, lo: usize, hi: usize) -> PResult<()> {
    let r = t.dims.len();
    if r < lo || r > hi {
        return invalid(format!(
            "{name} has {r} dims {:?}; the operator accepts {lo} to {hi}",
            t.dims
        ));
    }
    Ok(())
}

/// Fails unless the view is row-major contiguous (for arguments whose document marks non-contiguous ×).
pub fn contiguous(name: &str, t: &TensorDesc) -> PResult<()> {
    if !t.is_contiguous() {
        return invalid(format!(
            "{name} must be contiguous; got shape {:?} strides {:?}",
            t.dims, t.strides
        ));
    }
    Ok(())
}

/// The broadcast of two shapes (right-aligned; each pair equal or one of them 1), or `None`.
pub fn broadcast(a: &[i64], b: &[i64]) -> Option<Vec<i64>> {
    let n = a.len().max(b.len());
    let mut out = vec![0; n];
    for i in 0..n {
        let da = if i + a.len() >= n {
            a[i + a.len() - n]
        } else {
            1
        };
        let db = if i + b.len() >= n {
            b[i + b.len() - n]
        } else {
            1
        };
        out[i] = if da == db || db == 1 {
            da
        } else if da == 1 {
            db
        } else {
            return None;
        };
    }
    Some(out)
}

/// A possibly negative axis resolved against `rank`, or an error naming the valid range.
pub fn axis(name: &str, dim: i64, rank: usize) -> PResult<usize> {
    let r = rank as i64;
    if dim < -r || dim >= r {
        return invalid(format!("{name} = {dim} is outside [{}, {}]", -r, r - 1));
    }
    Ok(if dim < 0 {
        (dim + r) as usize
    } else {
        dim as usize
    })
}
