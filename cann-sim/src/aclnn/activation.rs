//! Activations: aclnnSilu (ops-nn `activation/swish/docs/aclnnSilu.md`), aclnnGeluV2
//! (`activation/gelu_v2/docs/aclnnGeluV2.md`), aclnnSwiGlu (`activation/swi_glu/docs/aclnnSwiGlu.md`).

use super::access::View;
use super::check::{
    axis, contiguous, dtype_in, format_nd, rank_in, same_dtype, same_shape, FLOATS,
};
use super::executor::{invalid, PResult, Plan};
use super::tensor::{tensor_arg, AclTensor};
use crate::aclnn_op;

/// `x·σ(x)` in f32.
pub fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// erf in f64: Taylor series below 3, the asymptotic series of erfc above (both far below f32 resolution).
pub fn erf(x: f64) -> f64 {
    let a = x.abs();
    let r = if a < 3.0 {
        // erf(x) = 2/√π Σ (-1)^n x^(2n+1) / (n! (2n+1))
        let mut term = a;
        let mut sum = a;
        let x2 = a * a;
        let mut n = 0.0;
        while term.abs() > 1e-17 * sum.abs() {
            n += 1.0;
            term *= -x2 / n;
            sum += term / (2.0 * n + 1.0);
        }
        sum * std::f64::consts::FRAC_2_SQRT_PI
    } else {
        let x2 = a * a;
        let mut series = 1.0;
        let mut t = 1.0;
        for k in 1..8 {
            t *= -((2 * k - 1) as f64) / (2.0 * x2);
            series += t;
        }
        1.0 - (-x2).exp() / (a * std::f64::consts::PI.sqrt()) * series
    };
    if x < 0.0 {
        -r
    } else {
        r
    }
}

/// GELU: approximate 0 is `x·Φ(x)` with erf, 1 the tanh form `0.5x(1+tanh(√(2/π)(x+0.044715x³)))`.
pub fn gelu(x: f32, tanh: bool) -> f32 {
    if tanh {
        let k = (2.0f32 / std::f32::consts::PI).sqrt();
        0.5 * x * (1.0 + (k * (x + 0.044715 * x * x * x)).tanh())
    } else {
        (0.5 * x as f64 * (1.0 + erf(x as f64 / std::f64::consts::SQRT_2))) as f32
    }
}

fn unary(
    xn: &str,
    x: *const AclTensor,
    yn: &str,
    y: *mut AclTensor,
    f: fn(f32, bool) -> f32,
    flag: bool,
) -> PResult<Plan> {
    // SAFETY: handles are checked by tensor_arg.
    let (x, y) = unsafe { (tensor_arg(x, xn)?, tensor_arg(y, yn)?) };
    dtype_in(xn, &x, FLOATS)?;
    dtype_in(yn, &y, FLOATS)?;
    format_nd(xn, &x, false)?;
    format_nd(yn, &y, false)?;
    rank_in(xn, &x, 0, 8)?;
    same_dtype(xn, &x, yn, &y)?;
    same_shape(xn, &x, yn, &y)?;
    let plan = Plan::new(move |ins: &[View], outs: &[View]| {
        let v: Vec<f32> = ins[0].read_f32().into_iter().map(|e| f(e, flag)).collect();
        outs[0].write_f32(&v);
        Ok(())
    });
    Ok(plan.input(xn, &x).output(yn, &y))
}

unsafe fn build_silu(s: *const AclTensor, out: *mut AclTensor) -> PResult<Plan> {
    unary("self", s, "out", out, |x, _| silu(x), false)
}

unsafe fn build_gelu_v2(x: *const AclTensor, approximate: i64, y: *mut AclTensor) -> PResult<Plan> {
    if approximate != 0 && approximate != 1 {
        // Checked after the tensors so that null pointers report 161001 first.
        tensor_arg(x, "x")?;
        tensor_arg(y, "y")?;
        return invalid(format!(
            "approximate = {approximate}; it must be 0 (none) or 1 (tanh)"
        ));
    }
    unary("x", x, "y", y, gelu, approximate == 1)
}

aclnn_op!("aclnnSilu", aclnnSiluGetWorkspaceSize, aclnnSilu, (s: *const AclTensor, out: *mut AclTensor), build_silu);
aclnn_op!("aclnnGeluV2", aclnnGeluV2GetWorkspaceSize, aclnnGeluV2,
    (x: *const AclTensor, approximate: i64, y: *mut AclTensor), build_gelu_v2);

unsafe fn build_swiglu(x: *const AclTensor, dim: i64, out: *mut AclTensor) -> PResult<Plan> {
    let (x, out) = (tensor_arg(x, "x")?, tensor_arg(out, "out")?);
    dtype_in("x", &x, FLOATS)?;
    dtype_in("out", &out, FLOATS)?;
    same_dtype("x", &x, "out", &out)?;
    format_nd("x", &x, false)?;
    format_nd("out", &out, false)?;
    rank_in("x", &x, 1, 8)?;
    let d = axis("dim", dim, x.dims.len())?;
    if x.dims[d] % 2 != 0 {
        return invalid(format!(
            "x {:?} has an odd size along dim {d}; it is split in halves",
            x.dims
        ));
    }
    let mut want = x.dims.clone();
    want[d] /= 2;
    if out.dims != want {
        return invalid(format!(
            "out has shape {:?}; x {:?} split along dim {d} gives {want:?}",
            out.dims, x.dims
        ));
    }
    contiguous("x", &x)?;
    contiguous("out", &out)?;
    let plan = Plan::new(move |ins: &[View], outs: &[View]| {
        // out = Swish(A)·B where [A, B] are the halves of x along `d`.
        let x = &ins[0];
        let half = x.dims[d] / 2;
        let mut a = x.clone();
        a.dims[d] = half;
        let mut b = a.clone();
        b.offset += half * x.strides[d];
        let (va, vb) = (a.read_f32(), b.read_f32());
        let r: Vec<f32> = va.iter().zip(&vb).map(|(p, q)| silu(*p) * q).collect();
        outs[0].write_f32(&r);
        Ok(())
    });
    Ok(plan.input("x", &x).output("out", &out))
}

aclnn_op!("aclnnSwiGlu", aclnnSwiGluGetWorkspaceSize, aclnnSwiGlu,
    (x: *const AclTensor, dim: i64, out: *mut AclTensor), build_swiglu);
