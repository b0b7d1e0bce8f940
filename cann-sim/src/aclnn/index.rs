//! Gathers, scatters and reductions to an index: aclnnEmbedding (ops-nn `index/embedding/docs/aclnnEmbedding.md`),
//! aclnnIndexSelect (`index/gather_v2/docs/aclnnIndexSelect.md`), aclnnIndexCopy / aclnnInplaceIndexCopy
//! (`index/scatter_update/docs/aclnnIndexCopy&aclnnInplaceIndexCopy.md`), aclnnArgMax (ops-math
//! `math/arg_max_v2/docs/aclnnArgMax.md`).
//!
//! Data is moved as raw element bytes, exact for every type. An index outside its dim fails the task (the
//! stream's sticky error names it): the documents call negative indices an error and leave larger ones
//! undefined; the simulator is strict about both.

use super::access::View;
use super::check::{axis, dtype_in, format_nd, rank_in, same_dtype};
use super::executor::{invalid, PResult, Plan};
use super::tensor::{tensor_arg, AclTensor};
use super::types::DType;
use crate::aclnn_op;

const INDEX: &[DType] = &[DType::I32, DType::I64];

/// Element types these data-movement operators accept on Atlas A2 that the simulator can store.
const MOVABLE: &[DType] = &[
    DType::F32,
    DType::F16,
    DType::BF16,
    DType::F64,
    DType::I64,
    DType::I32,
    DType::I16,
    DType::I8,
    DType::U8,
    DType::Bool,
];

/// The slice of `v` at position `i` of axis `d` (that axis kept with size 1).
fn slice_at(v: &View, d: usize, i: i64) -> View {
    let mut s = v.clone();
    s.dims[d] = 1;
    s.offset += i * v.strides[d];
    s
}

fn check_index(what: &str, idx: i64, size: i64) -> Result<(), String> {
    if idx < 0 || idx >= size {
        return Err(format!("{what} {idx} is outside [0, {size})"));
    }
    Ok(())
}

unsafe fn build_embedding(
    weight: *const AclTensor,
    indices: *const AclTensor,
    out: *const AclTensor,
) -> PResult<Plan> {
    let w = tensor_arg(weight, "weight")?;
    let ix = tensor_arg(indices, "indices")?;
    let out = tensor_arg(out, "out")?;
    dtype_in("weight", &w, MOVABLE)?;
    dtype_in("indices", &ix, INDEX)?;
    same_dtype("weight", &w, "out", &out)?;
    for (n, t) in [("weight", &w), ("indices", &ix), ("out", &out)] {
        format_nd(n, t, false)?;
        rank_in(n, t, 0, 8)?;
    }
    if w.dims.len() != 2 {
        return invalid(format!("weight has shape {:?}; it must be 2-D", w.dims));
    }
    let mut want = ix.dims.clone();
    want.push(w.dims[1]);
    if out.dims != want {
        return invalid(format!(
            "out has shape {:?}; indices {:?} over weight {:?} give {want:?}",
            out.dims, ix.dims, w.dims
        ));
    }
    let plan = Plan::new(|ins: &[View], outs: &[View]| {
        let (w, ix, out) = (&ins[0], ins[1].read_i64(), &outs[0]);
        let rank = out.dims.len();
        let rows = View {
            dims: out.dims[..rank - 1].to_vec(),
            strides: out.strides[..rank - 1].to_vec(),
            ..out.clone()
        };
        for (i, base) in ix.iter().zip(rows.offsets()) {
            check_index("index", *i, w.dims[0])?;
            let src = View {
                dims: vec![w.dims[1]],
                strides: vec![w.strides[1]],
                offset: w.offset + i * w.strides[0],
                ..w.clone()
            };
            let dst = View {
                dims: vec![out.dims[rank - 1]],
                strides: vec![out.strides[rank - 1]],
                offset: base,
                ..out.clone()
            };
            dst.write_raw(&src.read_raw());
        }
        Ok(())
    });
    Ok(plan
        .input("weight", &w)
        .input("indices", &ix)
        .output("out", &out))
}

aclnn_op!("aclnnEmbedding", aclnnEmbeddingGetWorkspaceSize, aclnnEmbedding,
    (weight: *const AclTensor, indices: *const AclTensor, out: *const AclTensor), build_embedding);

unsafe fn build_index_select(
    s: *const AclTensor,
    dim: i64,
    index: *const AclTensor,
    out: *mut AclTensor,
) -> PResult<Plan> {
    let s = tensor_arg(s, "self")?;
    let ix = tensor_arg(index, "index")?;
    let out = tensor_arg(out, "out")?;
    dtype_in("self", &s, MOVABLE)?;
    dtype_in("index", &ix, INDEX)?;
    same_dtype("self", &s, "out", &out)?;
    for (n, t) in [("self", &s), ("index", &ix), ("out", &out)] {
        format_nd(n, t, true)?;
    }
    rank_in("self", &s, 1, 8)?;
    if ix.dims.len() > 1 {
        return invalid(format!(
            "index has shape {:?}; it must be 0-D or 1-D",
            ix.dims
        ));
    }
    let d = axis("dim", dim, s.dims.len())?;
    let mut want = s.dims.clone();
    want[d] = ix.numel();
    if out.dims != want {
        return invalid(format!(
            "out has shape {:?}; selecting {} entries of dim {d} of self {:?} gives {want:?}",
            out.dims,
            ix.numel(),
            s.dims
        ));
    }
    let plan = Plan::new(move |ins: &[View], outs: &[View]| {
        let (src, ix, out) = (&ins[0], ins[1].read_i64(), &outs[0]);
        for (k, i) in ix.iter().enumerate() {
            check_index("index", *i, src.dims[d])?;
            slice_at(out, d, k as i64).write_raw(&slice_at(src, d, *i).read_raw());
        }
        Ok(())
    });
    Ok(plan
        .input("self", &s)
        .input("index", &ix)
        .output("out", &out))
}

aclnn_op!("aclnnIndexSelect", aclnnIndexSelectGetWorkspaceSize, aclnnIndexSelect,
    (s: *const AclTensor, dim: i64, index: *const AclTensor, out: *mut AclTensor), build_index_select);

/// Checks shared by IndexCopy and InplaceIndexCopy; returns the resolved axis.
fn check_index_copy(
    s: &super::tensor::TensorDesc,
    d: i64,
    ix: &super::tensor::TensorDesc,
    src: &super::tensor::TensorDesc,
) -> PResult<usize> {
    dtype_in("selfRef", s, MOVABLE)?;
    dtype_in("index", ix, INDEX)?;
    same_dtype("selfRef", s, "source", src)?;
    for (n, t) in [("selfRef", s), ("index", ix), ("source", src)] {
        format_nd(n, t, false)?;
    }
    if ix.dims.len() > 1 {
        return invalid(format!(
            "index has shape {:?}; it must have at most 1 dim",
            ix.dims
        ));
    }
    let d = axis("dim", d, s.dims.len().max(1))?;
    if src.dims.is_empty() {
        if ix.numel() != 1 {
            return invalid(format!(
                "source is a scalar but index has {} elements",
                ix.numel()
            ));
        }
        return Ok(d);
    }
    if src.dims.len() != s.dims.len() {
        return invalid(format!(
            "source {:?} and selfRef {:?} have different ranks",
            src.dims, s.dims
        ));
    }
    if src.dims[d] != ix.numel() {
        return invalid(format!(
            "source has {} entries along dim {d} but index has {}",
            src.dims[d],
            ix.numel()
        ));
    }
    for a in 0..s.dims.len() {
        if a != d && s.dims[a] != src.dims[a] {
            return invalid(format!(
                "source {:?} and selfRef {:?} differ outside dim {d}",
                src.dims, s.dims
            ));
        }
    }
    Ok(d)
}

/// `dst[.., index[k], ..] = src[.., k, ..]` along axis `d`.
fn scatter_rows(dst: &View, src: &View, ix: &[i64], d: usize) -> Result<(), String> {
    let size = if dst.dims.is_empty() { 1 } else { dst.dims[d] };
    for i in ix {
        check_index("index", *i, size)?;
    }
    if src.dims.is_empty() || dst.dims.is_empty() {
        // Scalar source (or 0-D selfRef): one element.
        let mut dv = dst.clone();
        if !dv.dims.is_empty() {
            dv = slice_at(dst, d, ix[0]);
        }
        dv.write_raw(&src.read_raw());
        return Ok(());
    }
    for (k, i) in ix.iter().enumerate() {
        slice_at(dst, d, *i).write_raw(&slice_at(src, d, k as i64).read_raw());
    }
    Ok(())
}

unsafe fn build_inplace_index_copy(
    s: *mut AclTensor,
    dim: i64,
    index: *const AclTensor,
    source: *const AclTensor,
) -> PResult<Plan> {
    let s = tensor_arg(s, "selfRef")?;
    let ix = tensor_arg(index, "index")?;
    let src = tensor_arg(source, "source")?;
    let d = check_index_copy(&s, dim, &ix, &src)?;
    let plan = Plan::new(move |ins: &[View], outs: &[View]| {
        scatter_rows(&outs[0], &ins[1], &ins[0].read_i64(), d)
    });
    Ok(plan
        .input("index", &ix)
        .input("source", &src)
        .output("selfRef", &s))
}

aclnn_op!("aclnnInplaceIndexCopy", aclnnInplaceIndexCopyGetWorkspaceSize, aclnnInplaceIndexCopy,
    (s: *mut AclTensor, dim: i64, index: *const AclTensor, source: *const AclTensor), build_inplace_index_copy);

unsafe fn build_index_copy(
    s: *mut AclTensor,
    dim: i64,
    index: *const AclTensor,
    source: *const AclTensor,
    out: *mut AclTensor,
) -> PResult<Plan> {
    let s = tensor_arg(s, "selfRef")?;
    let ix = tensor_arg(index, "index")?;
    let src = tensor_arg(source, "source")?;
    let out = tensor_arg(out, "outRef")?;
    let d = check_index_copy(&s, dim, &ix, &src)?;
    if out.dims != s.dims || out.dtype != s.dtype {
        return invalid(format!(
            "outRef {} must have selfRef's shape and type {}",
            out.describe(),
            s.describe()
        ));
    }
    let plan = Plan::new(move |ins: &[View], outs: &[View]| {
        let ix = ins[1].read_i64();
        let bytes = ins[0].read_raw();
        outs[0].write_raw(&bytes);
        scatter_rows(&outs[0], &ins[2], &ix, d)
    });
    Ok(plan
        .input("selfRef", &s)
        .input("index", &ix)
        .input("source", &src)
        .output("outRef", &out))
}

aclnn_op!("aclnnIndexCopy", aclnnIndexCopyGetWorkspaceSize, aclnnIndexCopy,
    (s: *mut AclTensor, dim: i64, index: *const AclTensor, source: *const AclTensor, out: *mut AclTensor),
    build_index_copy);

unsafe fn build_argmax(
    s: *const AclTensor,
    dim: i64,
    keepdim: bool,
    out: *mut AclTensor,
) -> PResult<Plan> {
    let s = tensor_arg(s, "self")?;
    let out = tensor_arg(out, "out")?;
    dtype_in(
        "self",
        &s,
        &[
            DType::F32,
            DType::F16,
            DType::BF16,
            DType::F64,
            DType::I8,
            DType::I16,
            DType::I32,
            DType::I64,
            DType::U8,
        ],
    )?;
    dtype_in("out", &out, INDEX)?;
    format_nd("self", &s, false)?;
    format_nd("out", &out, false)?;
    rank_in("self", &s, 1, 8)?;
    let d = axis("dim", dim, s.dims.len())?;
    let mut want = s.dims.clone();
    if keepdim {
        want[d] = 1;
    } else {
        want.remove(d);
    }
    if out.dims != want {
        return invalid(format!(
            "out has shape {:?}; argmax of self {:?} over dim {d} (keepdim {keepdim}) is {want:?}",
            out.dims, s.dims
        ));
    }
    let plan = Plan::new(move |ins: &[View], outs: &[View]| {
        // Move the reduced axis last; the remaining order is the output's row-major order.
        let rank = ins[0].dims.len();
        let perm: Vec<usize> = (0..rank).filter(|a| *a != d).chain([d]).collect();
        let v = ins[0].permuted(&perm);
        let len = v.dims[rank - 1] as usize;
        // SAFETY: the view was checked before the kernel runs.
        let vals: Vec<f64> = v
            .offsets()
            .map(|o| unsafe { super::access::load_f64(v.ptr(o), v.dtype) })
            .collect();
        let res: Vec<i64> = vals
            .chunks(len.max(1))
            .map(|row| {
                // The first maximum wins; a NaN counts as larger than everything (as in PyTorch).
                let mut best = 0usize;
                for (i, x) in row.iter().enumerate() {
                    let b = row[best];
                    if !b.is_nan() && (x.is_nan() || *x > b) {
                        best = i;
                    }
                }
                best as i64
            })
            .collect();
        outs[0].write_i64(&res);
        Ok(())
    });
    Ok(plan.input("self", &s).output("out", &out))
}

aclnn_op!("aclnnArgMax", aclnnArgMaxGetWorkspaceSize, aclnnArgMax,
    (s: *const AclTensor, dim: i64, keepdim: bool, out: *mut AclTensor), build_argmax);
