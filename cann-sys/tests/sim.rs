//! The safe layer against the host simulator (libcann_sim.so, built by the test). Delay mode is on
//! (every stream task sleeps first), so a missing synchronisation or stream wait shows as wrong data.

mod common;

use std::sync::Arc;

use cann_sys::aclnn::{self, Workspace};
use cann_sys::bindings::{
    aclOpExecutor, ACLNN_ERR_PARAM_NULLPTR, ACL_ERROR_RT_MEMORY_FREE, ACL_FLOAT, ACL_FORMAT_ND,
    ACL_MEMCPY_HOST_TO_DEVICE, ACL_MEM_MALLOC_HUGE_FIRST,
};
use cann_sys::{
    check, Context, DeviceBuffer, Error, Event, HostBuffer, IntArray, Scalar, Stream, Tensor,
    TensorList,
};

/// Per-task delay of the simulator's streams in this binary.
const DELAY_US: u64 = 2000;

fn ctx() -> Arc<Context> {
    common::context_with(&[("CANN_SIM_DELAY_US", "2000")])
}

fn call_error(r: cann_sys::Result<()>) -> (String, i32, String) {
    match r {
        Err(Error::Call {
            call,
            status,
            message,
        }) => (call, status, message),
        other => panic!("expected a failed call, got {other:?}"),
    }
}

#[test]
fn memory_round_trip_memset_and_device_copy() {
    let ctx = ctx();
    let data = common::values(256, 1);
    let mut a = DeviceBuffer::new(&ctx, 1024).unwrap();
    a.copy_from_host(0, &data).unwrap();
    assert_eq!(a.to_vec::<f32>().unwrap(), data);

    let mut b = DeviceBuffer::new(&ctx, 512).unwrap();
    b.copy_from_device(0, &a, 512, 512).unwrap();
    assert_eq!(b.to_vec::<f32>().unwrap(), data[128..]);

    a.memset(16, 0xff, 16).unwrap();
    let mut bytes = vec![0u8; 1024];
    a.copy_to_host(0, &mut bytes).unwrap();
    let mut want: Vec<u8> = data.iter().flat_map(|v| v.to_ne_bytes()).collect();
    want[16..32].fill(0xff);
    assert_eq!(bytes, want);
}

#[test]
fn device_reports_soc_and_capacity() {
    let ctx = ctx();
    assert_eq!(cann_sys::soc_name().unwrap(), "Ascend910B3");
    assert!(cann_sys::device_count().unwrap() >= 1);
    let (_, total) = ctx.mem_info().unwrap();
    assert_eq!(total, 64 << 30, "default simulated capacity is 64 GiB");
    let buf = DeviceBuffer::new(&ctx, 8 << 20).unwrap();
    let (free, _) = ctx.mem_info().unwrap();
    assert!(
        free <= total - buf.len(),
        "free {free} should drop by the 8 MiB held"
    );
}

#[test]
fn cross_stream_wait_orders_the_copies() {
    let ctx = ctx();
    let n = 4096usize;
    let data = common::values(n, 2);
    let mut src = HostBuffer::new(&ctx, n * 4).unwrap();
    src.as_typed_mut::<f32>().unwrap().copy_from_slice(&data);
    let mut dst = HostBuffer::new(&ctx, n * 4).unwrap();
    let mut first = DeviceBuffer::new(&ctx, n * 4).unwrap();
    first.memset(0, 0, n * 4).unwrap();
    let mut second = DeviceBuffer::new(&ctx, n * 4).unwrap();
    let (s1, s2) = (Stream::new(&ctx).unwrap(), Stream::new(&ctx).unwrap());
    let ready = Event::new(&ctx).unwrap();
    // SAFETY: every buffer outlives both synchronisations below.
    unsafe {
        first
            .copy_from_host_async(0, src.as_typed_mut::<f32>().unwrap(), &s1)
            .unwrap();
        ready.record(&s1).unwrap();
        s2.wait(&ready).unwrap();
        second
            .copy_from_device_async(0, &first, 0, n * 4, &s2)
            .unwrap();
        second
            .copy_to_host_async(0, dst.as_typed_mut::<f32>().unwrap(), &s2)
            .unwrap();
    }
    s2.synchronize().unwrap();
    s1.synchronize().unwrap();
    assert_eq!(dst.as_typed_mut::<f32>().unwrap(), &data[..]);
}

#[test]
fn events_time_the_work_between_them() {
    let ctx = ctx();
    let stream = Stream::new(&ctx).unwrap();
    let (start, end) = (Event::new(&ctx).unwrap(), Event::new(&ctx).unwrap());
    let mut buf = DeviceBuffer::new(&ctx, 4096).unwrap();
    let tasks = 5;
    start.record(&stream).unwrap();
    for i in 0..tasks {
        // SAFETY: `buf` outlives the synchronisation below.
        unsafe { buf.memset_async(0, i as u8, 4096, &stream).unwrap() };
    }
    end.record(&stream).unwrap();
    end.synchronize().unwrap();
    assert!(end.is_complete().unwrap());
    let ms = start.elapsed_ms(&end).unwrap();
    let floor = (tasks as u64 * DELAY_US) as f32 / 1000.0;
    assert!(
        ms >= floor && ms < 10_000.0,
        "elapsed {ms} ms, want at least {floor} ms ({tasks} delayed tasks)"
    );
    assert_eq!(buf.to_vec::<u8>().unwrap(), vec![tasks as u8 - 1; 4096]);
}

#[test]
fn synchronize_with_timeout_waits_for_the_work() {
    let ctx = ctx();
    let stream = Stream::new(&ctx).unwrap();
    let mut buf = DeviceBuffer::new(&ctx, 256).unwrap();
    // SAFETY: `buf` outlives the synchronisation below.
    unsafe { buf.memset_async(0, 9, 256, &stream).unwrap() };
    stream.synchronize_timeout(5000).unwrap();
    assert_eq!(buf.to_vec::<u8>().unwrap(), vec![9u8; 256]);
}

#[test]
fn bad_and_double_free_are_reported() {
    let _ctx = ctx();
    let api = cann_sys::api().unwrap();
    let mut p = std::ptr::null_mut();
    // SAFETY: out-pointer to a local.
    check(api, "aclrtMalloc", unsafe {
        (api.aclrtMalloc)(&mut p, 256, ACL_MEM_MALLOC_HUGE_FIRST)
    })
    .unwrap();
    // SAFETY: frees the allocation just made.
    check(api, "aclrtFree", unsafe { (api.aclrtFree)(p) }).unwrap();
    // SAFETY: a second free of the same address: the runtime must refuse it, not crash.
    let (call, status, message) =
        call_error(check(api, "aclrtFree", unsafe { (api.aclrtFree)(p) }));
    assert_eq!(
        (call.as_str(), status),
        ("aclrtFree", ACL_ERROR_RT_MEMORY_FREE),
        "{message}"
    );
    assert!(!message.starts_with('('), "no runtime message: {message}");

    let bogus = 0x1234_5678usize as *mut std::ffi::c_void;
    // SAFETY: an address that was never allocated: refused by the runtime.
    let (_, status, message) =
        call_error(check(api, "aclrtFree", unsafe { (api.aclrtFree)(bogus) }));
    assert_ne!(status, 0);
    assert!(!message.starts_with('('), "no runtime message: {message}");
}

#[test]
fn use_after_free_is_reported() {
    let _ctx = ctx();
    let api = cann_sys::api().unwrap();
    let mut p = std::ptr::null_mut();
    // SAFETY: out-pointer to a local.
    check(api, "aclrtMalloc", unsafe {
        (api.aclrtMalloc)(&mut p, 64, ACL_MEM_MALLOC_HUGE_FIRST)
    })
    .unwrap();
    // SAFETY: frees the allocation just made.
    check(api, "aclrtFree", unsafe { (api.aclrtFree)(p) }).unwrap();
    let src = [1u8; 64];
    // SAFETY: a copy into freed device memory: refused by the runtime.
    let status =
        unsafe { (api.aclrtMemcpy)(p, 64, src.as_ptr().cast(), 64, ACL_MEMCPY_HOST_TO_DEVICE) };
    let (_, status, message) = call_error(check(api, "aclrtMemcpy", status));
    assert_ne!(status, 0);
    assert!(
        message.contains("freed"),
        "message should say the memory was freed: {message}"
    );
}

#[test]
fn queued_work_on_freed_memory_fails_at_synchronize() {
    let ctx = ctx();
    let api = cann_sys::api().unwrap();
    let stream = Stream::new(&ctx).unwrap();
    let mut p = std::ptr::null_mut();
    // SAFETY: out-pointer to a local.
    check(api, "aclrtMalloc", unsafe {
        (api.aclrtMalloc)(&mut p, 4096, ACL_MEM_MALLOC_HUGE_FIRST)
    })
    .unwrap();
    // SAFETY: queued, then the memory is freed before the (delayed) task runs: the task must fail.
    unsafe {
        check(
            api,
            "aclrtMemsetAsync",
            (api.aclrtMemsetAsync)(p, 4096, 7, 4096, stream.raw()),
        )
        .unwrap();
        check(api, "aclrtFree", (api.aclrtFree)(p)).unwrap();
    }
    let (call, status, message) = call_error(stream.synchronize());
    assert_eq!(call, "aclrtSynchronizeStream");
    assert_ne!(status, 0);
    assert!(
        message.contains("free"),
        "message should name the freed allocation: {message}"
    );
}

#[test]
fn copies_are_bounded_by_the_destination() {
    let ctx = ctx();
    let mut small = DeviceBuffer::new(&ctx, 64).unwrap();
    let (call, status, message) = call_error(small.copy_from_host(0, &[0f32; 32]));
    assert_eq!(call, "aclrtMemcpy");
    assert_ne!(status, 0);
    assert!(
        message.contains("destMax"),
        "message should name destMax: {message}"
    );
    // 16 bytes of room left at offset 48: 32 bytes do not fit.
    assert!(small.copy_from_host(48, &[0u64; 4]).is_err());
    small.copy_from_host(48, &[7u32; 4]).unwrap();
    // Reading past the end of the device allocation.
    let mut big = [0u8; 128];
    let (_, status, _) = call_error(small.copy_to_host(0, &mut big));
    assert_ne!(status, 0);
    // An offset past the end is refused before any call.
    assert!(matches!(
        small.copy_from_host(65, &[0u8; 1]),
        Err(Error::Invalid(_))
    ));
}

#[test]
fn add_runs_through_the_two_phase_helper() {
    let ctx = ctx();
    let api = cann_sys::api().unwrap();
    let stream = Stream::new(&ctx).unwrap();
    let mut ws = Workspace::new(&ctx);
    let (a, b) = (common::values(32, 3), common::values(32, 4));
    let mut da = DeviceBuffer::new(&ctx, 128).unwrap();
    let mut db = DeviceBuffer::new(&ctx, 128).unwrap();
    let out = DeviceBuffer::new(&ctx, 128).unwrap();
    da.copy_from_host(0, &a).unwrap();
    db.copy_from_host(0, &b).unwrap();
    let ta = Tensor::contiguous(da.as_ptr(), ACL_FLOAT, &[4, 8]).unwrap();
    let tb = Tensor::contiguous(db.as_ptr(), ACL_FLOAT, &[4, 8]).unwrap();
    let tout = Tensor::contiguous(out.as_ptr(), ACL_FLOAT, &[4, 8]).unwrap();
    let alpha = Scalar::new(2.0f32).unwrap();
    let phase1 = api.aclnnAddGetWorkspaceSize.get().unwrap();
    aclnn::call(
        "aclnnAdd",
        api.aclnnAdd.get().unwrap(),
        &mut ws,
        &stream,
        |size, exec| {
            // SAFETY: live descriptors over live buffers.
            unsafe { phase1(ta.raw(), tb.raw(), alpha.raw(), tout.raw(), size, exec) }
        },
    )
    .unwrap();
    stream.synchronize().unwrap();
    let got = out.to_vec::<f32>().unwrap();
    for i in 0..32 {
        assert!(
            (got[i] - (a[i] + 2.0 * b[i])).abs() <= 1e-6,
            "element {i}: {} vs {}",
            got[i],
            a[i] + 2.0 * b[i]
        );
    }

    // Phase 1 errors carry the phase-1 name, the documented status and the runtime's message.
    let (call, status, message) = call_error(aclnn::call(
        "aclnnAdd",
        api.aclnnAdd.get().unwrap(),
        &mut ws,
        &stream,
        |size, exec| {
            // SAFETY: a NULL `other`, which phase 1 must reject.
            unsafe {
                phase1(
                    ta.raw(),
                    std::ptr::null(),
                    alpha.raw(),
                    tout.raw(),
                    size,
                    exec,
                )
            }
        },
    ));
    assert_eq!(
        (call.as_str(), status),
        ("aclnnAddGetWorkspaceSize", ACLNN_ERR_PARAM_NULLPTR),
        "{message}"
    );
    assert!(!message.starts_with('('), "no runtime message: {message}");
}

#[test]
fn consumed_executor_cannot_run_again() {
    let ctx = ctx();
    let api = cann_sys::api().unwrap();
    let stream = Stream::new(&ctx).unwrap();
    let buf = DeviceBuffer::new(&ctx, 64).unwrap();
    let t = Tensor::contiguous(buf.as_ptr(), ACL_FLOAT, &[16]).unwrap();
    let out = Tensor::contiguous(buf.as_ptr(), ACL_FLOAT, &[16]).unwrap();
    let (phase1, run) = (
        api.aclnnSiluGetWorkspaceSize.get().unwrap(),
        api.aclnnSilu.get().unwrap(),
    );
    let mut size = 0u64;
    let mut exec: *mut aclOpExecutor = std::ptr::null_mut();
    // SAFETY: live descriptors; the executor is run once, then (wrongly) a second time.
    unsafe {
        check(
            api,
            "aclnnSiluGetWorkspaceSize",
            phase1(t.raw(), out.raw(), &mut size, &mut exec),
        )
        .unwrap();
        let mut ws = Workspace::new(&ctx);
        let w = ws.get(size, &stream).unwrap();
        check(api, "aclnnSilu", run(w, size, exec, stream.raw())).unwrap();
        let (_, status, message) =
            call_error(check(api, "aclnnSilu", run(w, size, exec, stream.raw())));
        assert_ne!(status, 0);
        assert!(message.contains("consumed"), "{message}");
    }
    stream.synchronize().unwrap();
}

#[test]
fn repeatable_mm_executor_reruns_on_new_data() {
    let ctx = ctx();
    let api = cann_sys::api().unwrap();
    let stream = Stream::new(&ctx).unwrap();
    let mut ws = Workspace::new(&ctx);
    let (m, k, n) = (3usize, 5usize, 4usize);
    let w = common::values(n * k, 5);
    let mut da = DeviceBuffer::new(&ctx, m * k * 4).unwrap();
    let mut dw = DeviceBuffer::new(&ctx, n * k * 4).unwrap();
    let out = DeviceBuffer::new(&ctx, m * n * 4).unwrap();
    dw.copy_from_host(0, &w).unwrap();
    let ta = Tensor::contiguous(da.as_ptr(), ACL_FLOAT, &[m as i64, k as i64]).unwrap();
    // W is [n, k] row-major; its transpose [k, n] is a strided view of the same storage.
    let twt = Tensor::new(
        dw.as_ptr(),
        ACL_FLOAT,
        &[k as i64, n as i64],
        &[1, k as i64],
        0,
        ACL_FORMAT_ND,
        &[(n * k) as i64],
    )
    .unwrap();
    let tout = Tensor::contiguous(out.as_ptr(), ACL_FLOAT, &[m as i64, n as i64]).unwrap();
    let phase1 = api.aclnnMmGetWorkspaceSize.get().unwrap();
    let exec = aclnn::prepare("aclnnMm", api.aclnnMm.get().unwrap(), |size, exec| {
        // SAFETY: live descriptors over live buffers; cubeMathType 0 keeps f32.
        unsafe { phase1(ta.raw(), twt.raw(), tout.raw(), 0, size, exec) }
    })
    .unwrap();
    assert!(
        exec.workspace_size() > 0,
        "the simulator asks Mm for a workspace, so the pool is exercised"
    );
    for round in 0..2u64 {
        let a = common::values(m * k, 10 + round);
        da.copy_from_host(0, &a).unwrap();
        exec.launch(&mut ws, &stream).unwrap();
        stream.synchronize().unwrap();
        assert!(ws.capacity() as u64 >= exec.workspace_size());
        let got = out.to_vec::<f32>().unwrap();
        for i in 0..m {
            for j in 0..n {
                let want: f32 = (0..k).map(|p| a[i * k + p] * w[j * k + p]).sum();
                assert!(
                    (got[i * n + j] - want).abs() <= 1e-5,
                    "round {round} [{i},{j}]: {} vs {want}",
                    got[i * n + j]
                );
            }
        }
    }
    drop(exec);
}

#[test]
fn argument_objects_are_made_and_checked() {
    let ctx = ctx();
    let buf = DeviceBuffer::new(&ctx, 256).unwrap();
    let t1 = Tensor::contiguous(buf.as_ptr(), ACL_FLOAT, &[2, 8]).unwrap();
    let t2 = Tensor::new(
        buf.as_ptr(),
        ACL_FLOAT,
        &[2, 8],
        &[8, 1],
        16,
        ACL_FORMAT_ND,
        &[64],
    )
    .unwrap();
    let list = TensorList::new(vec![t1, t2]).unwrap();
    assert!(!list.raw().is_null());
    let dims = IntArray::new(&[1, 0]).unwrap();
    assert!(!dims.raw().is_null());
    assert!(Scalar::new(3i64).is_ok());
    let bad = Tensor::new(
        buf.as_ptr(),
        ACL_FLOAT,
        &[2, 8],
        &[1],
        0,
        ACL_FORMAT_ND,
        &[64],
    );
    assert!(matches!(bad, Err(Error::Invalid(m)) if m.contains("rank")));
}

#[test]
fn missing_kernel_binary_is_reported() {
    let ctx = ctx();
    let err =
        cann_sys::kernel::Binary::load(&ctx, std::path::Path::new("/nonexistent/kernels.so")).err();
    match err {
        Some(Error::Call { call, status, .. }) => {
            assert!(call.starts_with("aclrtBinaryLoadFromFile"), "{call}");
            assert_ne!(status, 0);
        }
        other => panic!(
            "expected a failed aclrtBinaryLoadFromFile, got {:?}",
            other.map(|e| e.to_string())
        ),
    }
}

#[test]
fn other_threads_bind_the_context() {
    let ctx = ctx();
    let handle = std::thread::spawn(move || -> cann_sys::Result<Vec<i32>> {
        ctx.bind()?;
        let mut buf = DeviceBuffer::new(&ctx, 16)?;
        buf.copy_from_host(0, &[1i32, 2, 3, 4])?;
        buf.to_vec::<i32>()
    });
    assert_eq!(handle.join().expect("thread").unwrap(), vec![1, 2, 3, 4]);
}

/// Builds the simulator's tiny test kernel binary (cann-sim/tests/c/test_kernel.c, the CPU kernel ABI).
fn test_kernel_binary() -> std::path::PathBuf {
    let src =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../cann-sim/tests/c/test_kernel.c");
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("cann-sys-test-kernel.so");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let status = std::process::Command::new(cc)
        .args(["-shared", "-fPIC", "-O1", "-o"])
        .arg(&out)
        .arg(&src)
        .status()
        .expect("run the C compiler");
    assert!(status.success(), "compiling {} failed", src.display());
    out
}

#[test]
fn kernel_binary_loads_and_launches() {
    let ctx = ctx();
    let stream = Stream::new(&ctx).unwrap();
    let binary = cann_sys::kernel::Binary::load(&ctx, &test_kernel_binary()).unwrap();
    let n = 1000u32;
    let x = common::values(n as usize, 7);
    let mut dx = DeviceBuffer::new(&ctx, n as usize * 4).unwrap();
    let dy = DeviceBuffer::new(&ctx, n as usize * 4).unwrap();
    dx.copy_from_host(0, &x).unwrap();

    let add_one = binary.function("add_one").unwrap();
    let mut args = add_one.args().unwrap();
    args.push(dx.as_ptr() as u64)
        .unwrap()
        .push(dy.as_ptr() as u64)
        .unwrap()
        .push(n)
        .unwrap();
    assert!(
        matches!(add_one.launch(3, &stream, &args), Err(Error::Invalid(_))),
        "launch before finalize is refused"
    );
    args.finalize().unwrap();
    add_one.launch(3, &stream, &args).unwrap();
    stream.synchronize().unwrap();
    let y = dy.to_vec::<f32>().unwrap();
    assert!(y.iter().zip(&x).all(|(y, x)| *y == x + 1.0));

    // A kernel that stores past its buffer fails at the next synchronisation, with the kernel's message.
    let oob = binary.function("oob_store").unwrap();
    let mut args = oob.args().unwrap();
    args.push(dy.as_ptr() as u64).unwrap().push(n).unwrap();
    args.finalize().unwrap();
    oob.launch(1, &stream, &args).unwrap();
    let (call, status, message) = call_error(stream.synchronize());
    assert_eq!(call, "aclrtSynchronizeStream");
    assert_ne!(status, 0);
    assert!(message.contains("oob_store"), "{message}");

    match binary.function("no_such_kernel") {
        Err(Error::Call { call, .. }) => assert_eq!(call, "aclrtBinaryGetFunction(no_such_kernel)"),
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("a kernel that does not exist was found"),
    }
}
