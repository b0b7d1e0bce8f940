//! Normalisations: aclnnRmsNorm (ops-nn `norm/rms_norm/docs/aclnnRmsNorm.md`) and aclnnLayerNorm
//! (`norm/layer_norm_v4/docs/aclnnLayerNorm&aclnnLayerNormWithImplMode.md`). Both report a workspace (per-row
//! f32 statistics), so the workspace path of the protocol is exercised.

use super::access::View;
use super::check::{dtype_in, format_nd, rank_in, same_dtype, FLOATS};
use super::executor::{invalid, tiling, PResult, Plan};
use super::tensor::{handle_arg, opt_tensor_arg, tensor_arg, AclIntArray, AclTensor, Kind};
use super::types::DType;
use crate::aclnn_op;

unsafe fn build_rms_norm(
    x: *const AclTensor,
    gamma: *const AclTensor,
    epsilon: f64,
    y: *const AclTensor,
    rstd: *const AclTensor,
) -> PResult<Plan> {
    let x = tensor_arg(x, "x")?;
    let gamma = tensor_arg(gamma, "gamma")?;
    let y = tensor_arg(y, "yOut")?;
    let rstd = tensor_arg(rstd, "rstdOut")?;
    dtype_in("x", &x, FLOATS)?;
    dtype_in("gamma", &gamma, FLOATS)?;
    dtype_in("yOut", &y, FLOATS)?;
    dtype_in("rstdOut", &rstd, &[DType::F32])?;
    // Atlas A2 table: gamma is x's type or FLOAT; y is x's type.
    if gamma.dtype != x.dtype && gamma.dtype != DType::F32 {
        return invalid(format!(
            "gamma is {} with x {}; gamma must be x's type or FLOAT",
            gamma.dtype.name(),
            x.dtype.name()
        ));
    }
    same_dtype("x", &x, "yOut", &y)?;
    for (n, t) in [
        ("x", &x),
        ("gamma", &gamma),
        ("yOut", &y),
        ("rstdOut", &rstd),
    ] {
        format_nd(n, t, false)?;
    }
    // The document lists shape violations under 561002.
    let (xr, gr) = (x.dims.len(), gamma.dims.len());
    if !(1..=8).contains(&xr) || gr == 0 || gr > xr {
        return tiling(format!(
            "x {:?} and gamma {:?}: need 1-8 dims and gamma no longer than x",
            x.dims, gamma.dims
        ));
    }
    let lead = xr - gr;
    if x.dims[lead..] != gamma.dims[..] {
        return tiling(format!(
            "gamma {:?} must equal the trailing dims of x {:?}",
            gamma.dims, x.dims
        ));
    }
    if y.dims != x.dims {
        return tiling(format!(
            "yOut {:?} must have the shape of x {:?}",
            y.dims, x.dims
        ));
    }
    // rstd holds one value per normalised row: x's leading dims, optionally followed by 1s for the reduced ones.
    let head = &x.dims[..lead];
    let ok = rstd.dims == head
        || (rstd.dims.len() == xr
            && &rstd.dims[..lead] == head
            && rstd.dims[lead..].iter().all(|d| *d == 1));
    if !ok {
        return tiling(format!(
            "rstdOut {:?} must be x's leading dims {head:?} (optionally followed by 1s)",
            rstd.dims
        ));
    }
    let n: i64 = gamma.dims.iter().product();
    let rows: i64 = head.iter().product();
    let eps = epsilon as f32;
    let plan = Plan::new(move |ins: &[View], outs: &[View]| {
        let (xv, gv) = (ins[0].read_f32(), ins[1].read_f32());
        let n = n as usize;
        let mut yv = vec![0f32; xv.len()];
        let mut rv = vec![0f32; rows as usize];
        for r in 0..rows as usize {
            let row = &xv[r * n..(r + 1) * n];
            let ms = row.iter().map(|v| v * v).sum::<f32>() / n as f32;
            let inv = 1.0 / (ms + eps).sqrt();
            rv[r] = inv;
            for i in 0..n {
                yv[r * n + i] = row[i] * inv * gv[i];
            }
        }
        outs[0].write_f32(&yv);
        outs[1].write_f32(&rv);
        Ok(())
    });
    Ok(plan
        .input("x", &x)
        .input("gamma", &gamma)
        .output("yOut", &y)
        .output("rstdOut", &rstd)
        .workspace(4 * rows.max(1) as u64 + 512))
}

aclnn_op!("aclnnRmsNorm", aclnnRmsNormGetWorkspaceSize, aclnnRmsNorm,
    (x: *const AclTensor, gamma: *const AclTensor, epsilon: f64, y: *const AclTensor, rstd: *const AclTensor),
    build_rms_norm);

#[allow(clippy::too_many_arguments)]
unsafe fn build_layer_norm(
    input: *const AclTensor,
    normalized_shape: *const AclIntArray,
    weight: *const AclTensor,
    bias: *const AclTensor,
    eps: f64,
    out: *mut AclTensor,
    mean: *mut AclTensor,
    rstd: *mut AclTensor,
) -> PResult<Plan> {
    let x = tensor_arg(input, "input")?;
    let ns = handle_arg(normalized_shape, Kind::IntArray, "normalizedShape")?
        .0
        .clone();
    let out = tensor_arg(out, "out")?;
    let w = opt_tensor_arg(weight, "weightOptional")?;
    let b = opt_tensor_arg(bias, "biasOptional")?;
    let mean = opt_tensor_arg(mean, "meanOutOptional")?;
    let rstd = opt_tensor_arg(rstd, "rstdOutOptional")?;
    dtype_in("input", &x, FLOATS)?;
    dtype_in("out", &out, FLOATS)?;
    same_dtype("input", &x, "out", &out)?;
    rank_in("input", &x, 1, 8)?;
    format_nd("input", &x, false)?;
    format_nd("out", &out, false)?;
    if ns.is_empty() {
        return invalid("normalizedShape is empty; it needs at least one dim");
    }
    if ns.len() > x.dims.len() {
        return invalid(format!(
            "normalizedShape {ns:?} has more dims than input {:?}",
            x.dims
        ));
    }
    let lead = x.dims.len() - ns.len();
    if x.dims[lead..] != ns[..] {
        return invalid(format!(
            "normalizedShape {ns:?} does not match the trailing dims of input {:?}",
            x.dims
        ));
    }
    if out.dims != x.dims {
        return invalid(format!(
            "out {:?} must have the shape of input {:?}",
            out.dims, x.dims
        ));
    }
    for (n, t) in [("weightOptional", &w), ("biasOptional", &b)] {
        if let Some(t) = t {
            dtype_in(n, t, FLOATS)?;
            format_nd(n, t, false)?;
            if t.dims != ns {
                return invalid(format!(
                    "{n} has shape {:?}; it must equal normalizedShape {ns:?}",
                    t.dims
                ));
            }
            if t.dtype != x.dtype && t.dtype != DType::F32 {
                return invalid(format!(
                    "{n} is {}; it must be input's type ({}) or FLOAT",
                    t.dtype.name(),
                    x.dtype.name()
                ));
            }
        }
    }
    match (&w, &b) {
        (Some(w), Some(b)) if w.dtype != b.dtype => {
            return invalid(format!(
                "weightOptional ({}) and biasOptional ({}) must have the same type",
                w.dtype.name(),
                b.dtype.name()
            ))
        }
        (Some(t), None) | (None, Some(t)) if t.dtype != x.dtype => {
            return invalid(format!(
                "a lone weight or bias must have input's type {}, not {}",
                x.dtype.name(),
                t.dtype.name()
            ))
        }
        _ => {}
    }
    let mut stat_shape = x.dims[..lead].to_vec();
    stat_shape.extend(std::iter::repeat_n(1, ns.len()));
    for (n, t) in [("meanOutOptional", &mean), ("rstdOutOptional", &rstd)] {
        if let Some(t) = t {
            dtype_in(n, t, FLOATS)?;
            same_dtype("input", &x, n, t)?;
            format_nd(n, t, false)?;
            if t.dims != stat_shape {
                return invalid(format!(
                    "{n} has shape {:?}; it must be {stat_shape:?}",
                    t.dims
                ));
            }
        }
    }
    let n: i64 = ns.iter().product();
    let rows: i64 = x.dims[..lead].iter().product();
    let (has_w, has_b, has_m, has_r) = (w.is_some(), b.is_some(), mean.is_some(), rstd.is_some());
    let eps = eps as f32;
    let kernel = move |ins: &[View], outs: &[View]| {
        let n = n as usize;
        let xv = ins[0].read_f32();
        let mut k = 1;
        let wv = if has_w {
            k += 1;
            ins[k - 1].read_f32()
        } else {
            vec![1.0; n]
        };
        let bv = if has_b {
            ins[k].read_f32()
        } else {
            vec![0.0; n]
        };
        let mut yv = vec![0f32; xv.len()];
        let mut mv = vec![0f32; rows as usize];
        let mut rv = vec![0f32; rows as usize];
        for r in 0..rows as usize {
            let row = &xv[r * n..(r + 1) * n];
            let m = row.iter().sum::<f32>() / n as f32;
            let var = row.iter().map(|v| (v - m) * (v - m)).sum::<f32>() / n as f32;
            let inv = 1.0 / (var + eps).sqrt();
            mv[r] = m;
            rv[r] = inv;
            for i in 0..n {
                yv[r * n + i] = (row[i] - m) * inv * wv[i] + bv[i];
            }
        }
        outs[0].write_f32(&yv);
        let mut o = 1;
        if has_m {
            outs[o].write_f32(&mv);
            o += 1;
        }
        if has_r {
            outs[o].write_f32(&rv);
        }
        Ok(())
    };
    let mut plan = Plan::new(kernel).input("input", &x);
    if let Some(w) = &w {
        plan = plan.input("weightOptional", w);
    }
    if let Some(b) = &b {
        plan = plan.input("biasOptional", b);
    }
    plan = plan.output("out", &out);
    if let Some(m) = &mean {
        plan = plan.output("meanOutOptional", m);
    }
    if let Some(r) = &rstd {
        plan = plan.output("rstdOutOptional", r);
    }
    Ok(plan.workspace(8 * rows.max(1) as u64 + 512))
}

aclnn_op!("aclnnLayerNorm", aclnnLayerNormGetWorkspaceSize, aclnnLayerNorm,
    (input: *const AclTensor, normalized_shape: *const AclIntArray, weight: *const AclTensor, bias: *const AclTensor,
     eps: f64, out: *mut AclTensor, mean: *mut AclTensor, rstd: *mut AclTensor),
    build_layer_norm);
