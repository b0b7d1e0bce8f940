//! The descriptor API and the two-phase protocol: null pointers, views outside their storage or allocation,
//! executor reuse, repeatable executors with rebound addresses, workspace checks, destroyed handles.

mod aclnn_util;
use aclnn_util::*;
use cann_sim::aclnn::elementwise::*;
use cann_sim::aclnn::executor::*;
use cann_sim::aclnn::matmul::*;
use cann_sim::aclnn::tensor::*;
use std::ffi::c_void;
use std::ptr::{null, null_mut};

fn alpha(v: f32) -> *mut AclScalar {
    let mut v = v;
    unsafe { aclCreateScalar(&mut v as *mut f32 as *mut c_void, F32) }
}

#[test]
fn add_runs_and_a_plain_executor_is_consumed() {
    let dev = setup();
    let (a, b, out) = (
        tensor(&[1.0, 2.0, 3.0], &[3], F32),
        tensor(&[10.0, 20.0, 30.0], &[3], F32),
        zeros(&[3], F32),
    );
    let al = alpha(2.0);
    let (mut ws, mut ex) = (0u64, null_mut());
    let rc = unsafe { aclnnAddGetWorkspaceSize(a.h, b.h, al, out.h, &mut ws, &mut ex) };
    ok(&dev, rc, ws, ex, aclnnAdd);
    assert_eq!(out.storage(), vec![21.0, 42.0, 63.0]);
    // Phase 2 again with the consumed executor.
    let (rc, _) = run(&dev, ws, ex, aclnnAdd);
    fails(rc, INVALID, "consumed");
    unsafe { aclDestroyScalar(al) };
}

#[test]
fn repeatable_executor_reruns_with_rebound_addresses_and_is_destroyed() {
    let dev = setup();
    let (a, b, out) = (
        tensor(&[1.0, 2.0], &[2], F32),
        tensor(&[3.0, 4.0], &[2], F32),
        zeros(&[2], F32),
    );
    let al = alpha(1.0);
    let (mut ws, mut ex) = (0u64, null_mut());
    assert_eq!(
        unsafe { aclnnAddGetWorkspaceSize(a.h, b.h, al, out.h, &mut ws, &mut ex) },
        0,
        "{}",
        recent()
    );
    assert_eq!(unsafe { aclSetAclOpExecutorRepeatable(ex) }, 0);
    assert_eq!(run(&dev, ws, ex, aclnnAdd), (0, 0));
    assert_eq!(out.storage(), vec![4.0, 6.0]);
    // Rebind input 1 (other) and output 0 to fresh buffers and run again.
    let other2 = upload(&encode(&[100.0, 200.0], F32));
    let out2 = alloc(8);
    assert_eq!(
        unsafe { aclSetInputTensorAddr(ex, 1, b.h, other2.ptr) },
        0,
        "{}",
        recent()
    );
    assert_eq!(
        unsafe { aclSetOutputTensorAddr(ex, 0, out.h, out2.ptr) },
        0,
        "{}",
        recent()
    );
    assert_eq!(run(&dev, ws, ex, aclnnAdd), (0, 0), "{}", recent());
    assert_eq!(decode(&download(&out2), F32), vec![101.0, 202.0]);
    // Index outside the inputs, and a tensor that is not the indexed one.
    fails(
        unsafe { aclSetInputTensorAddr(ex, 2, b.h, other2.ptr) },
        INVALID,
        "index 2",
    );
    fails(
        unsafe { aclSetInputTensorAddr(ex, 0, b.h, other2.ptr) },
        INVALID,
        "is not the self",
    );
    fails(
        unsafe { aclSetInputTensorAddr(null_mut(), 0, b.h, other2.ptr) },
        561103,
        "null",
    );
    // Rebound to freed memory: phase 2 refuses it.
    let gone = alloc(8);
    let gp = gone.ptr;
    drop(gone);
    assert_eq!(unsafe { aclSetOutputTensorAddr(ex, 0, out.h, gp) }, 0);
    let (rc, _) = run(&dev, ws, ex, aclnnAdd);
    fails(rc, INVALID, "freed");
    assert_eq!(unsafe { aclDestroyAclOpExecutor(ex) }, 0);
    fails(unsafe { aclDestroyAclOpExecutor(ex) }, INVALID, "executor");
    unsafe { aclDestroyScalar(al) };
}

#[test]
fn phase_one_null_pointers() {
    let _dev = setup();
    let (a, out) = (tensor(&[1.0], &[1], F32), zeros(&[1], F32));
    let al = alpha(1.0);
    let (mut ws, mut ex) = (0u64, null_mut());
    fails(
        unsafe { aclnnAddGetWorkspaceSize(a.h, null(), al, out.h, &mut ws, &mut ex) },
        NULLPTR,
        "other is null",
    );
    fails(
        unsafe { aclnnAddGetWorkspaceSize(a.h, a.h, null(), out.h, &mut ws, &mut ex) },
        NULLPTR,
        "alpha is null",
    );
    fails(
        unsafe { aclnnAddGetWorkspaceSize(a.h, a.h, al, out.h, null_mut(), &mut ex) },
        NULLPTR,
        "workspaceSize",
    );
    fails(
        unsafe { aclnnAddGetWorkspaceSize(a.h, a.h, al, out.h, &mut ws, null_mut()) },
        NULLPTR,
        "executor",
    );
    fails(
        unsafe { aclnnAdd(null_mut(), 0, null_mut(), null_mut()) },
        NULLPTR,
        "executor is null",
    );
    unsafe { aclDestroyScalar(al) };
}

#[test]
fn views_must_lie_inside_storage_and_allocation() {
    let _dev = setup();
    let al = alpha(1.0);
    let out = zeros(&[4], F32);
    // View of 4 elements at offset 2 over a storage of 5.
    let buf = upload(&encode(&[0.0; 5], F32));
    let (dims, strides, sd) = ([4i64], [1i64], [5i64]);
    let t = unsafe {
        aclCreateTensor(
            dims.as_ptr(),
            1,
            F32,
            strides.as_ptr(),
            2,
            ND,
            sd.as_ptr(),
            1,
            buf.ptr,
        )
    };
    let (mut ws, mut ex) = (0u64, null_mut());
    fails(
        unsafe { aclnnAddGetWorkspaceSize(t, out.h, al, out.h, &mut ws, &mut ex) },
        INVALID,
        "outside its storage",
    );
    // Storage of 8 elements declared over an allocation of 5.
    let sd8 = [8i64];
    let t2 = unsafe {
        aclCreateTensor(
            dims.as_ptr(),
            1,
            F32,
            strides.as_ptr(),
            4,
            ND,
            sd8.as_ptr(),
            1,
            buf.ptr,
        )
    };
    fails(
        unsafe { aclnnAddGetWorkspaceSize(t2, out.h, al, out.h, &mut ws, &mut ex) },
        INVALID,
        "out of bounds",
    );
    // A host pointer as tensor data.
    let host = [0f32; 4];
    let t3 = unsafe {
        aclCreateTensor(
            dims.as_ptr(),
            1,
            F32,
            strides.as_ptr(),
            0,
            ND,
            dims.as_ptr(),
            1,
            host.as_ptr() as *mut c_void,
        )
    };
    fails(
        unsafe { aclnnAddGetWorkspaceSize(t3, out.h, al, out.h, &mut ws, &mut ex) },
        INVALID,
        "not a device address",
    );
    unsafe {
        aclDestroyTensor(t);
        aclDestroyTensor(t2);
        aclDestroyTensor(t3);
        aclDestroyScalar(al);
    }
}

#[test]
fn freed_between_phases_is_caught_at_phase_two() {
    let dev = setup();
    let al = alpha(1.0);
    let a = tensor(&[1.0, 2.0], &[2], F32);
    let mut out = zeros(&[2], F32);
    let (mut ws, mut ex) = (0u64, null_mut());
    assert_eq!(
        unsafe { aclnnAddGetWorkspaceSize(a.h, a.h, al, out.h, &mut ws, &mut ex) },
        0
    );
    drop(std::mem::replace(
        &mut out.buf,
        Buf {
            ptr: null_mut(),
            bytes: 0,
        },
    ));
    let (rc, _) = run(&dev, ws, ex, aclnnAdd);
    fails(rc, INVALID, "freed");
    unsafe { aclDestroyScalar(al) };
}

#[test]
fn destroyed_handles_are_refused() {
    let _dev = setup();
    let al = alpha(1.0);
    let a = tensor(&[1.0], &[1], F32);
    let mut b = tensor(&[1.0], &[1], F32);
    let bh = b.release();
    assert_eq!(unsafe { aclDestroyTensor(bh) }, 0);
    fails(
        unsafe { aclDestroyTensor(bh) },
        INVALID,
        "not a live handle",
    );
    let (mut ws, mut ex) = (0u64, null_mut());
    fails(
        unsafe { aclnnAddGetWorkspaceSize(a.h, bh, al, a.h, &mut ws, &mut ex) },
        INVALID,
        "not a live aclTensor",
    );
    unsafe { aclDestroyScalar(al) };
}

#[test]
fn workspace_is_required_and_checked() {
    let dev = setup();
    let (a, b, out) = (
        tensor(&[1.0; 4], &[2, 2], F32),
        tensor(&[1.0; 4], &[2, 2], F32),
        zeros(&[2, 2], F32),
    );
    let mk = || {
        let (mut ws, mut ex) = (0u64, null_mut());
        assert_eq!(
            unsafe { aclnnMmGetWorkspaceSize(a.h, b.h, out.h, 0, &mut ws, &mut ex) },
            0,
            "{}",
            recent()
        );
        assert!(ws > 0, "aclnnMm reports a workspace");
        (ws, ex)
    };
    let (ws, ex) = mk();
    fails(
        unsafe { aclnnMm(null_mut(), ws, ex, dev.stream) },
        NULLPTR,
        "workspace is null",
    );
    let (ws, ex) = mk();
    let short = alloc(ws as usize);
    fails(
        unsafe { aclnnMm(short.ptr, ws - 1, ex, dev.stream) },
        INVALID,
        "less than",
    );
    let (ws, ex) = mk();
    let small = alloc(ws as usize - 1);
    fails(
        unsafe { aclnnMm(small.ptr, ws, ex, dev.stream) },
        INVALID,
        "workspace",
    );
    // The right executor for the wrong operator.
    let (ws, ex) = mk();
    let w = alloc(ws as usize);
    fails(
        unsafe { aclnnAdd(w.ptr, ws, ex, dev.stream) },
        INVALID,
        "made by aclnnMm",
    );
    let (ws, ex) = mk();
    ok(&dev, 0, ws, ex, aclnnMm);
    assert_eq!(out.storage(), vec![2.0; 4]);
}

#[test]
fn tensor_list_owns_its_tensors() {
    let _dev = setup();
    let mut a = tensor(&[1.0], &[1], F32);
    let mut b = tensor(&[2.0], &[1], F32);
    let hs = [
        a.release() as *const AclTensor,
        b.release() as *const AclTensor,
    ];
    let l = unsafe { aclCreateTensorList(hs.as_ptr(), 2) };
    assert!(!l.is_null(), "{}", recent());
    assert_eq!(unsafe { aclDestroyTensorList(l) }, 0);
    // The list destroyed its tensors.
    fails(
        unsafe { aclDestroyTensor(hs[0]) },
        INVALID,
        "not a live handle",
    );
    let bad = [null::<AclTensor>()];
    assert!(unsafe { aclCreateTensorList(bad.as_ptr(), 1) }.is_null());
    assert!(recent().contains("element 0"));
}

#[test]
fn create_tensor_refuses_bad_arguments_and_arrays_copy() {
    let dims = [2i64, -1];
    assert!(unsafe {
        aclCreateTensor(dims.as_ptr(), 2, F32, null(), 0, ND, null(), 0, null_mut())
    }
    .is_null());
    assert!(recent().contains("negative"), "{}", recent());
    assert!(
        unsafe { aclCreateTensor(null(), 2, F32, null(), 0, ND, null(), 0, null_mut()) }.is_null()
    );
    let v = [1i64, 2, 3];
    let arr = unsafe { aclCreateIntArray(v.as_ptr(), 3) };
    assert!(!arr.is_null());
    assert_eq!(unsafe { &(*arr).0 }, &vec![1, 2, 3]);
    assert_eq!(unsafe { aclDestroyIntArray(arr) }, 0);
    let fv = [1.5f32];
    let fa = unsafe { aclCreateFloatArray(fv.as_ptr(), 1) };
    assert_eq!(unsafe { aclDestroyFloatArray(fa) }, 0);
    let bv = [true, false];
    let ba = unsafe { aclCreateBoolArray(bv.as_ptr(), 2) };
    assert_eq!(unsafe { &(*ba).0 }, &vec![true, false]);
    assert_eq!(unsafe { aclDestroyBoolArray(ba) }, 0);
    assert!(unsafe { aclCreateScalar(null_mut(), F32) }.is_null());
}

#[test]
fn a_failing_task_becomes_the_stream_error() {
    let dev = setup();
    // Index 5 into a 2-row embedding table: phase 1 cannot see it, the task reports it.
    let w = tensor(&[1.0, 2.0, 3.0, 4.0], &[2, 2], F32);
    let ix = tensor(&[5.0], &[1], I64);
    let out = zeros(&[1, 2], F32);
    let (mut ws, mut ex) = (0u64, null_mut());
    let rc = unsafe {
        cann_sim::aclnn::index::aclnnEmbeddingGetWorkspaceSize(w.h, ix.h, out.h, &mut ws, &mut ex)
    };
    assert_eq!(rc, 0, "{}", recent());
    let (r2, sync) = run(&dev, ws, ex, cann_sim::aclnn::index::aclnnEmbedding);
    assert_eq!(r2, 0);
    assert_ne!(sync, 0);
    assert!(
        recent().contains("index 5 is outside [0, 2)"),
        "{}",
        recent()
    );
}

#[test]
fn injected_fault_is_returned_by_phase_two_once() {
    let dev = setup();
    let (x, y) = (tensor(&[1.0, -1.0], &[2], F32), zeros(&[2], F32));
    cann_sim::fault::inject("aclnnSilu", 1, 361001);
    let go = || {
        let (mut ws, mut ex) = (0u64, null_mut());
        let rc = unsafe {
            cann_sim::aclnn::activation::aclnnSiluGetWorkspaceSize(x.h, y.h, &mut ws, &mut ex)
        };
        assert_eq!(rc, 0, "{}", recent());
        run(&dev, ws, ex, cann_sim::aclnn::activation::aclnnSilu)
    };
    let (rc, _) = go();
    fails(rc, 361001, "fault injected");
    assert_eq!(go(), (0, 0), "the fault fires once");
    assert!((y.storage()[0] - 1.0 / (1.0 + (-1.0f64).exp())).abs() < 1e-6);
}
