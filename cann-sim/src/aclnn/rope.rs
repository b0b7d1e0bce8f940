//! aclnnRotaryPositionEmbedding (ops-transformer
//! `posembedding/rotary_position_embedding/docs/aclnnRotaryPositionEmbedding.md`): `y = x·cos + rotate(x)·sin`
//! over 4-D x, with cos/sin broadcast over the first three dims in the documented patterns. Atlas A2 supports
//! mode 0 (half: rotate = [-x2, x1]) and 1 (interleave: pairs (x[2i], x[2i+1]) → (-x[2i+1], x[2i])); the
//! document lists shape and mode violations under 561002.

use super::access::View;
use super::check::{contiguous, dtype_in, format_nd, same_dtype, FLOATS};
use super::executor::{tiling, PResult, Plan};
use super::tensor::{tensor_arg, AclTensor};
use crate::aclnn_op;

unsafe fn build_rope(
    x: *const AclTensor,
    cos: *const AclTensor,
    sin: *const AclTensor,
    mode: i64,
    out: *mut AclTensor,
) -> PResult<Plan> {
    let x = tensor_arg(x, "x")?;
    let cos = tensor_arg(cos, "cos")?;
    let sin = tensor_arg(sin, "sin")?;
    let out = tensor_arg(out, "out")?;
    for (n, t) in [("x", &x), ("cos", &cos), ("sin", &sin), ("out", &out)] {
        dtype_in(n, t, FLOATS)?;
        format_nd(n, t, false)?;
    }
    same_dtype("x", &x, "cos", &cos)?;
    same_dtype("x", &x, "sin", &sin)?;
    same_dtype("x", &x, "out", &out)?;
    if mode != 0 && mode != 1 {
        return tiling(format!(
            "mode = {mode}; Atlas A2 supports 0 (half) and 1 (interleave)"
        ));
    }
    if x.dims.len() != 4 {
        return tiling(format!("x has shape {:?}; it must be 4-D", x.dims));
    }
    let d = x.dims[3];
    if d % 2 != 0 || d > 1024 {
        return tiling(format!(
            "the last dim of x is {d}; it must be even and at most 1024"
        ));
    }
    if out.dims != x.dims {
        return tiling(format!(
            "out {:?} must have the shape of x {:?}",
            out.dims, x.dims
        ));
    }
    if cos.dims != sin.dims {
        return tiling(format!(
            "cos {:?} and sin {:?} must have the same shape",
            cos.dims, sin.dims
        ));
    }
    if cos.dims.len() != 4 || cos.dims[3] != d {
        return tiling(format!(
            "cos has shape {:?}; it must be 4-D with last dim {d}",
            cos.dims
        ));
    }
    // Allowed: (1,1,1), (B,S,N), (B,1,N), (B,S,1), (1,1,N), (1,S,1), (B,1,1) over x's (B,S,N).
    let full: Vec<bool> = (0..3)
        .map(|a| cos.dims[a] == x.dims[a] && x.dims[a] != 1)
        .collect();
    let ones: Vec<bool> = (0..3).map(|a| cos.dims[a] == 1).collect();
    let matches = (0..3).all(|a| ones[a] || cos.dims[a] == x.dims[a]);
    // (1, S, N) is the one combination the document leaves out.
    let pattern_ok = matches && !(ones[0] && x.dims[0] != 1 && full[1] && full[2]);
    if !pattern_ok {
        return tiling(format!(
            "cos/sin shape {:?} is not one of the broadcast patterns allowed over x {:?}",
            cos.dims, x.dims
        ));
    }
    contiguous("out", &out)?;
    let plan = Plan::new(move |ins: &[View], outs: &[View]| {
        let xs = &ins[0].dims;
        let xv = ins[0].read_f32();
        let cv = ins[1].broadcast_to(xs).read_f32();
        let sv = ins[2].broadcast_to(xs).read_f32();
        let d = d as usize;
        let h = d / 2;
        let mut y = vec![0f32; xv.len()];
        for (r, row) in xv.chunks(d).enumerate() {
            for i in 0..d {
                let rot = if mode == 0 {
                    if i < h {
                        -row[i + h]
                    } else {
                        row[i - h]
                    }
                } else if i % 2 == 0 {
                    -row[i + 1]
                } else {
                    row[i - 1]
                };
                let k = r * d + i;
                y[k] = row[i] * cv[k] + rot * sv[k];
            }
        }
        outs[0].write_f32(&y);
        Ok(())
    });
    Ok(plan
        .input("x", &x)
        .input("cos", &cos)
        .input("sin", &sin)
        .output("out", &out))
}

aclnn_op!("aclnnRotaryPositionEmbedding", aclnnRotaryPositionEmbeddingGetWorkspaceSize, aclnnRotaryPositionEmbedding,
    (x: *const AclTensor, cos: *const AclTensor, sin: *const AclTensor, mode: i64, out: *mut AclTensor), build_rope);
