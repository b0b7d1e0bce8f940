//! aclnnPermute (ops-math `conversion/transpose/docs/aclnnPermute.md`): out is self with its axes reordered.

use super::access::View;
use super::check::{dtype_in, format_nd, rank_in, same_dtype};
use super::executor::{invalid, PResult, Plan};
use super::tensor::{handle_arg, tensor_arg, AclIntArray, AclTensor, Kind};
use super::types::DType;
use crate::aclnn_op;

unsafe fn build_permute(
    s: *const AclTensor,
    dims: *const AclIntArray,
    out: *mut AclTensor,
) -> PResult<Plan> {
    let s = tensor_arg(s, "self")?;
    let dims = handle_arg(dims, Kind::IntArray, "dims")?.0.clone();
    let out = tensor_arg(out, "out")?;
    let types = [
        DType::F32,
        DType::F16,
        DType::F64,
        DType::U64,
        DType::I64,
        DType::U32,
        DType::I32,
        DType::U16,
        DType::I16,
        DType::U8,
        DType::I8,
        DType::Bool,
        DType::BF16,
    ];
    dtype_in("self", &s, &types)?;
    same_dtype("self", &s, "out", &out)?;
    format_nd("self", &s, false)?;
    format_nd("out", &out, false)?;
    rank_in("self", &s, 0, 8)?;
    let r = s.dims.len() as i64;
    if dims.len() as i64 != r {
        return invalid(format!(
            "dims {dims:?} has {} entries for self of {r} dims",
            dims.len()
        ));
    }
    let mut perm = Vec::with_capacity(dims.len());
    for d in &dims {
        if *d < -r || *d >= r {
            return invalid(format!("dims entry {d} is outside [{}, {}]", -r, r - 1));
        }
        let a = if *d < 0 { d + r } else { *d } as usize;
        if perm.contains(&a) {
            return invalid(format!(
                "dims {dims:?} names axis {a} twice; it must be a permutation"
            ));
        }
        perm.push(a);
    }
    let want: Vec<i64> = perm.iter().map(|a| s.dims[*a]).collect();
    if out.dims != want {
        return invalid(format!(
            "out has shape {:?}; self {:?} permuted by {dims:?} is {want:?}",
            out.dims, s.dims
        ));
    }
    let plan = Plan::new(move |ins: &[View], outs: &[View]| {
        outs[0].write_raw(&ins[0].permuted(&perm).read_raw());
        Ok(())
    });
    Ok(plan.input("self", &s).output("out", &out))
}

aclnn_op!("aclnnPermute", aclnnPermuteGetWorkspaceSize, aclnnPermute,
    (s: *const AclTensor, dims: *const AclIntArray, out: *mut AclTensor), build_permute);
