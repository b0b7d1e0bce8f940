//! The simulator's runtime through its C symbols (in-process): memory checks, copies, streams, events,
//! sticky errors, contexts, counters, fault injection and the kernel launch path.

mod common;

use std::ffi::{c_void, CString};
use std::ptr::{null, null_mut};
use std::time::Duration;

use cann_sim::codes::*;
use cann_sim::copy::*;
use cann_sim::event::*;
use cann_sim::kernel::*;
use cann_sim::mem::{self, *};
use cann_sim::runtime::*;
use cann_sim::stream::{self, *};
use common::*;

const H2H: u32 = 0;
const H2D: u32 = 1;
const D2H: u32 = 2;
const D2D: u32 = 3;
const DEFAULT: u32 = 4;

#[test]
fn malloc_alignment_bounds_and_free_errors() {
    setup();
    let p = dmalloc(100);
    assert_eq!(
        p as u64 % 64,
        0,
        "aclrtMalloc is documented 64-byte aligned"
    );
    assert!(mem::check_range(p as u64, 100).is_ok());
    assert!(
        mem::check_range(p as u64 + 100, 0).is_ok(),
        "len 0 at the end is allowed"
    );
    let e = mem::check_range(p as u64 + 96, 8).unwrap_err();
    assert!(e.contains("out of bounds of allocation #"), "{e}");
    // Past every allocation: the top of the device address space (concurrent tests may place their
    // blocks right after this one, but addresses are handed out from the bottom and never reused).
    let (mut lo, mut hi) = (p as u64, p as u64 + 1);
    while mem::is_device_addr(hi) {
        (lo, hi) = (hi, hi + 2 * (hi - lo));
    }
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if mem::is_device_addr(mid) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    let e = mem::check_range(lo - 63, 1).unwrap_err();
    assert!(e.contains("unknown device address"), "{e}");
    let e = mem::check_range(0x1000, 4).unwrap_err();
    assert!(e.contains("not a device address"), "{e}");
    // SAFETY: the pointers below are only compared and passed back to the simulator.
    unsafe {
        expect_err(
            aclrtFree((p as *mut u8).add(8) as *mut c_void),
            ACL_ERROR_RT_MEMORY_FREE,
            "not the start of an allocation",
        );
        let host = Box::into_raw(Box::new(0u64));
        expect_err(
            aclrtFree(host as *mut c_void),
            ACL_ERROR_RT_MEMORY_FREE,
            "was not returned by aclrtMalloc",
        );
        drop(Box::from_raw(host));
        assert_eq!(aclrtFree(p), 0);
        let e = mem::check_range(p as u64, 4).unwrap_err();
        assert!(e.contains("use of freed allocation"), "{e}");
        expect_err(
            aclrtFree(p),
            ACL_ERROR_RT_MEMORY_FREE,
            "double free of allocation",
        );
        expect_err(
            aclrtFree(null_mut()),
            ACL_ERROR_INVALID_PARAM,
            "devPtr is NULL",
        );
        let mut q = null_mut();
        expect_err(
            aclrtMalloc(&mut q, 0, 0),
            ACL_ERROR_INVALID_PARAM,
            "size is 0",
        );
        expect_err(
            aclrtMalloc(null_mut(), 16, 0),
            ACL_ERROR_INVALID_PARAM,
            "devPtr is NULL",
        );
        // Addresses are never reused: a new block does not land on the freed one.
        let r = dmalloc(100);
        assert_ne!(r, p);
        assert!(mem::check_range(p as u64, 4).unwrap_err().contains("freed"));
        assert_eq!(aclrtFree(r), 0);
    }
}

#[test]
fn charged_sizes_follow_the_documented_rounding() {
    setup();
    // Measured on the free HBM; other tests allocate concurrently, so retry until a quiet window shows it.
    let mut seen = (false, false);
    for _ in 0..200 {
        let (_, before, _) = mem::usage();
        let p = dmalloc(33);
        let (_, after, _) = mem::usage();
        // SAFETY: p is a live block.
        unsafe { aclrtFree(p) };
        seen.0 |= after - before == 64 + 32;
        let mut q = null_mut();
        let (_, before, _) = mem::usage();
        // SAFETY: valid out pointer.
        assert_eq!(unsafe { aclrtMallocAlign32(&mut q, 33, 0) }, 0);
        let (_, after, _) = mem::usage();
        // SAFETY: q is a live block.
        unsafe { aclrtFree(q) };
        seen.1 |= after - before == 64;
        if seen == (true, true) {
            break;
        }
    }
    assert_eq!(
        seen,
        (true, true),
        "aclrtMalloc charges ALIGN_UP(size,32)+32, aclrtMallocAlign32 ALIGN_UP(size,32)"
    );
}

#[test]
fn host_read_of_a_device_pointer_faults() {
    setup();
    let p = dmalloc(64) as *const u8;
    // SAFETY: the child only reads the pointer (expected to fault) and exits; the parent waits for it.
    unsafe {
        let pid = libc::fork();
        assert!(pid >= 0);
        if pid == 0 {
            let v = std::ptr::read_volatile(p);
            libc::_exit(if v == 0 { 0 } else { 1 });
        }
        let mut status = 0;
        libc::waitpid(pid, &mut status, 0);
        assert!(
            libc::WIFSIGNALED(status),
            "reading a device pointer on the host must crash (status {status})"
        );
        assert_eq!(libc::WTERMSIG(status), libc::SIGSEGV);
        aclrtFree(p as *mut c_void);
    }
}

#[test]
fn sync_copies_round_trip_and_reject_bad_arguments() {
    setup();
    let src: Vec<u8> = (0..256u32).map(|i| (i * 7) as u8).collect();
    let mut back = vec![0u8; 256];
    let a = dmalloc(256);
    let b = dmalloc(256);
    // SAFETY: buffers of the sizes passed.
    unsafe {
        assert_eq!(
            aclrtMemcpy(a, 256, src.as_ptr() as *const c_void, 256, H2D),
            0
        );
        assert_eq!(aclrtMemcpy(b, 256, a, 256, D2D), 0);
        assert_eq!(
            aclrtMemcpy(back.as_mut_ptr() as *mut c_void, 256, b, 256, D2H),
            0
        );
        assert_eq!(back, src);
        let mut h2 = vec![0u8; 256];
        assert_eq!(
            aclrtMemcpy(
                h2.as_mut_ptr() as *mut c_void,
                256,
                src.as_ptr() as *const c_void,
                256,
                H2H
            ),
            0
        );
        assert_eq!(h2, src);
        back.fill(0);
        assert_eq!(
            aclrtMemcpy(back.as_mut_ptr() as *mut c_void, 256, b, 256, DEFAULT),
            0,
            "DEFAULT infers D2H"
        );
        assert_eq!(back, src);

        expect_err(
            aclrtMemcpy(a, 255, src.as_ptr() as *const c_void, 256, H2D),
            ACL_ERROR_INVALID_PARAM,
            "exceeds destMax",
        );
        expect_err(
            aclrtMemcpy(a, 512, src.as_ptr() as *const c_void, 257, H2D),
            ACL_ERROR_INVALID_PARAM,
            "out of bounds",
        );
        expect_err(
            aclrtMemcpy(
                back.as_mut_ptr() as *mut c_void,
                256,
                src.as_ptr() as *const c_void,
                256,
                H2D,
            ),
            ACL_ERROR_INVALID_PARAM,
            "dst 0x",
        );
        expect_err(
            aclrtMemcpy(a, 256, b, 256, H2D),
            ACL_ERROR_INVALID_PARAM,
            "is a device address",
        );
        expect_err(
            aclrtMemcpy(a, 256, b, 256, 9),
            ACL_ERROR_INVALID_PARAM,
            "not a supported aclrtMemcpyKind",
        );
        expect_err(
            aclrtMemcpy(null_mut(), 256, b, 256, D2H),
            ACL_ERROR_INVALID_PARAM,
            "NULL",
        );

        assert_eq!(aclrtMemset(a, 256, 0x1ab, 100), 0);
        assert_eq!(
            aclrtMemcpy(back.as_mut_ptr() as *mut c_void, 256, a, 256, D2H),
            0
        );
        assert!(
            back[..100].iter().all(|&x| x == 0xab),
            "memset uses the low byte of value"
        );
        assert_eq!(&back[100..], &src[100..]);
        expect_err(
            aclrtMemset(a, 10, 0, 11),
            ACL_ERROR_INVALID_PARAM,
            "exceeds maxCount",
        );
        expect_err(
            aclrtMemset(a, 1000, 0, 257),
            ACL_ERROR_INVALID_PARAM,
            "out of bounds",
        );
        aclrtFree(a);
        aclrtFree(b);
        let mut buf = [0u8; 4];
        expect_err(
            aclrtMemcpy(buf.as_mut_ptr() as *mut c_void, 4, a, 4, D2H),
            ACL_ERROR_INVALID_PARAM,
            "use of freed allocation",
        );
    }
}

/// A task that sleeps, then fills `n` device bytes at `addr` with `v` (exercises the stream API of the rlib).
fn slow_fill(addr: u64, n: u64, v: u8, ms: u64) -> Task {
    Task {
        kind: TaskKind::Other("test fill"),
        bytes_read: 0,
        bytes_written: n,
        run: Box::new(move || {
            std::thread::sleep(Duration::from_millis(ms));
            mem::check_range(addr, n)?;
            // SAFETY: checked just above.
            unsafe { std::ptr::write_bytes(mem::shadow(addr), v, n as usize) };
            Ok(())
        }),
    }
}

#[test]
fn stream_runs_in_order_and_async_copies_with_pinned_memory_return_early() {
    setup();
    let s = new_stream();
    let d = dmalloc(4096);
    let h = hmalloc(4096) as *mut u8;
    // SAFETY: buffers of the sizes passed; h stays alive until after the synchronisation.
    unsafe {
        std::ptr::write_bytes(h, 0, 4096);
        assert_eq!(stream::enqueue(s, slow_fill(d as u64, 4096, 3, 300)), 0);
        assert_eq!(aclrtMemsetAsync(d, 4096, 9, 16, s), 0);
        let t0 = std::time::Instant::now();
        assert_eq!(aclrtMemcpyAsync(h as *mut c_void, 4096, d, 4096, D2H, s), 0);
        assert!(
            t0.elapsed() < Duration::from_millis(250),
            "a pinned async copy must not wait for the stream"
        );
        assert_eq!(
            *h, 0,
            "the copy has not run yet (the stream is busy for 300 ms)"
        );
        expect_err(
            aclrtSynchronizeStreamWithTimeout(s, 10),
            ACL_ERROR_RT_STREAM_SYNC_TIMEOUT,
            "still busy after 10 ms",
        );
        expect_err(
            aclrtSynchronizeStreamWithTimeout(s, -5),
            ACL_ERROR_INVALID_PARAM,
            "must be -1 or positive",
        );
        assert_eq!(aclrtSynchronizeStreamWithTimeout(s, 5000), 0);
        assert_eq!(aclrtSynchronizeStream(s), 0);
        assert!(
            (0..16).all(|i| *h.add(i) == 9),
            "memset after the fill, in order"
        );
        assert!((16..4096).all(|i| *h.add(i) == 3));
        let c = stream_counters(s);
        assert_eq!(c["copies"]["d2h"], 1);
        assert_eq!(c["copy_bytes"]["d2h"], 4096);
        assert_eq!(c["memsets"], 1);
        // At least the two synchronisations above (a concurrent test's aclrtSynchronizeDevice adds one).
        assert!(c["host_syncs"].as_u64().unwrap() >= 2);
        assert_eq!(c["bytes_written"], 4096 + 16);
        assert_eq!(c["bytes_read"], 4096);
        assert_eq!(c["tasks"], 3);
        assert_eq!(c["pageable_async_copies"], 0);

        // Pageable host memory: the call returns only once the copy has run.
        let mut v = vec![0u8; 64];
        assert_eq!(stream::enqueue(s, slow_fill(d as u64, 64, 5, 50)), 0);
        assert_eq!(
            aclrtMemcpyAsync(v.as_mut_ptr() as *mut c_void, 64, d, 64, D2H, s),
            0
        );
        assert!(
            v.iter().all(|&x| x == 5),
            "pageable D2H async copy returns after completion"
        );
        assert_eq!(stream_counters(s)["pageable_async_copies"], 1);

        expect_err(
            aclrtMemcpyAsync(h as *mut c_void, 10, d, 11, D2H, s),
            ACL_ERROR_INVALID_PARAM,
            "exceeds destMax",
        );
        expect_err(
            aclrtMemsetAsync(d, 4, 0, 5, s),
            ACL_ERROR_INVALID_PARAM,
            "exceeds maxCount",
        );
        assert_eq!(aclrtDestroyStream(s), 0);
        expect_err(
            aclrtSynchronizeStream(s),
            ACL_ERROR_INVALID_PARAM,
            "not a live stream",
        );
        expect_err(
            aclrtMemcpyAsync(h as *mut c_void, 64, d, 64, D2H, s),
            ACL_ERROR_INVALID_PARAM,
            "not a live stream",
        );
        expect_err(
            aclrtDestroyStream(null_mut()),
            ACL_ERROR_INVALID_PARAM,
            "NULL",
        );
        assert_eq!(aclrtFreeHost(h as *mut c_void), 0);
        expect_err(
            aclrtFreeHost(h as *mut c_void),
            ACL_ERROR_RT_MEMORY_FREE,
            "not returned by aclrtMallocHost",
        );
        aclrtFree(d);
    }
}

#[test]
fn sticky_stream_error_is_reported_once_and_skips_later_work() {
    setup();
    let s = new_stream();
    let d = dmalloc(64);
    let failing = Task {
        kind: TaskKind::Op("aclnnTestFail"),
        bytes_read: 0,
        bytes_written: 0,
        run: Box::new(|| Err("boom at element 3".into())),
    };
    assert_eq!(
        stream::enqueue(s, failing),
        0,
        "the failure is not reported at enqueue"
    );
    assert_eq!(stream::enqueue(s, slow_fill(d as u64, 64, 7, 0)), 0);
    // SAFETY: valid stream handle and buffers.
    unsafe {
        expect_err(
            aclrtSynchronizeStream(s),
            ACL_ERROR_RT_AICORE_EXCEPTION,
            "operator aclnnTestFail failed on stream",
        );
        let mut v = [1u8; 64];
        assert_eq!(
            aclrtMemcpy(v.as_mut_ptr() as *mut c_void, 64, d, 64, D2H),
            0
        );
        assert!(
            v.iter().all(|&x| x == 0),
            "the task behind the failure was skipped"
        );
        assert_eq!(aclrtSynchronizeStream(s), 0, "reported once");
        assert_eq!(stream::enqueue(s, slow_fill(d as u64, 64, 7, 0)), 0);
        assert_eq!(aclrtSynchronizeStream(s), 0);
        assert_eq!(
            aclrtMemcpy(v.as_mut_ptr() as *mut c_void, 64, d, 64, D2H),
            0
        );
        assert!(v.iter().all(|&x| x == 7));
        let c = stream_counters(s);
        assert_eq!(c["skipped_after_error"], 1);
        assert_eq!(c["ops"]["aclnnTestFail"], 1);
        assert!(counters()["errors"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e.as_str().unwrap().contains("boom at element 3")));

        // A queued copy whose memory is freed before it runs fails on the stream (use after free).
        let d2 = dmalloc(64);
        assert_eq!(stream::enqueue(s, slow_fill(d2 as u64, 64, 1, 60)), 0);
        assert_eq!(aclrtMemcpyAsync(d2, 64, d, 64, D2D, s), 0);
        assert_eq!(aclrtFree(d), 0);
        expect_err(
            aclrtSynchronizeStream(s),
            ACL_ERROR_RT_SYS_DMA,
            "use of freed allocation",
        );
        // The device-wide sync reports a failure on any stream.
        let failing = Task {
            kind: TaskKind::Kernel("k".into()),
            bytes_read: 0,
            bytes_written: 0,
            run: Box::new(|| Err("bad".into())),
        };
        assert_eq!(stream::enqueue(s, failing), 0);
        expect_err(
            aclrtSynchronizeDevice(),
            ACL_ERROR_RT_AICORE_EXCEPTION,
            "kernel k failed",
        );
        // And a destroyed stream hands over an error no sync reported.
        let failing = Task {
            kind: TaskKind::Memset,
            bytes_read: 0,
            bytes_written: 0,
            run: Box::new(|| Err("lost".into())),
        };
        assert_eq!(stream::enqueue(s, failing), 0);
        expect_err(aclrtDestroyStream(s), ACL_ERROR_RT_SYS_DMA, "lost");
        aclrtFree(d2);
    }
}

#[test]
fn events_order_streams_and_time_work() {
    setup();
    let a = new_stream();
    let b = new_stream();
    let x = dmalloc(256);
    let y = dmalloc(256);
    let h = hmalloc(256) as *mut u8;
    let (mut e0, mut e1, mut never) = (null_mut(), null_mut(), null_mut());
    // SAFETY: valid handles and buffers.
    unsafe {
        assert_eq!(aclrtCreateEvent(&mut e0), 0);
        assert_eq!(aclrtCreateEventWithFlag(&mut e1, 0x8), 0);
        assert_eq!(aclrtCreateEvent(&mut never), 0);
        assert_eq!(aclrtRecordEvent(e0, a), 0);
        assert_eq!(stream::enqueue(a, slow_fill(x as u64, 256, 42, 80)), 0);
        assert_eq!(aclrtRecordEvent(e1, a), 0);
        let mut st = -1;
        assert_eq!(aclrtQueryEventStatus(e1, &mut st), 0);
        assert_eq!(st, 0, "NOT_READY while the fill runs");
        let mut ms = 0f32;
        expect_err(
            aclrtEventElapsedTime(&mut ms, e0, e1),
            ACL_ERROR_RT_EVENT_NOT_COMPLETE,
            "completed",
        );
        // b copies x only after a's fill, through the event.
        assert_eq!(aclrtStreamWaitEvent(b, e1), 0);
        assert_eq!(aclrtMemcpyAsync(y, 256, x, 256, D2D, b), 0);
        assert_eq!(aclrtMemcpyAsync(h as *mut c_void, 256, y, 256, D2H, b), 0);
        assert_eq!(aclrtSynchronizeStream(b), 0);
        assert!((0..256).all(|i| *h.add(i) == 42), "b waited for a's event");
        assert_eq!(aclrtSynchronizeEvent(e1), 0);
        assert_eq!(aclrtQueryEventStatus(e1, &mut st), 0);
        assert_eq!(st, 1, "COMPLETE");
        assert_eq!(aclrtEventElapsedTime(&mut ms, e0, e1), 0);
        assert!(
            (75.0..2000.0).contains(&ms),
            "elapsed {ms} ms covers the 80 ms fill"
        );
        expect_err(
            aclrtEventElapsedTime(&mut ms, e0, never),
            ACL_ERROR_RT_EVENT_NOT_COMPLETE,
            "recorded",
        );
        assert_eq!(
            aclrtSynchronizeEvent(never),
            0,
            "an event never recorded does not block"
        );
        assert_eq!(aclrtDestroyEvent(e0), 0);
        expect_err(
            aclrtRecordEvent(e0, a),
            ACL_ERROR_INVALID_PARAM,
            "not a live event",
        );
        expect_err(
            aclrtSynchronizeEvent(e0),
            ACL_ERROR_INVALID_PARAM,
            "not a live event",
        );
        // A failure before a record is reported by aclrtSynchronizeEvent.
        let failing = Task {
            kind: TaskKind::Op("aclnnX"),
            bytes_read: 0,
            bytes_written: 0,
            run: Box::new(|| Err("x".into())),
        };
        assert_eq!(stream::enqueue(a, failing), 0);
        assert_eq!(aclrtRecordEvent(e1, a), 0);
        expect_err(
            aclrtSynchronizeEvent(e1),
            ACL_ERROR_RT_AICORE_EXCEPTION,
            "operator aclnnX failed",
        );
        assert!(counters()["event_syncs"].as_u64().unwrap() >= 3);
        for e in [e1, never] {
            assert_eq!(aclrtDestroyEvent(e), 0);
        }
        for s in [a, b] {
            assert_eq!(aclrtDestroyStream(s), 0);
        }
        aclrtFreeHost(h as *mut c_void);
        aclrtFree(x);
        aclrtFree(y);
    }
}

#[test]
fn a_thread_without_context_is_refused_and_messages_are_per_thread() {
    setup();
    // SAFETY: NULL is never a freeable pointer.
    let rc = unsafe { aclrtFree(null_mut()) };
    assert_eq!(rc, ACL_ERROR_INVALID_PARAM);
    let other = std::thread::spawn(|| {
        let before = recent();
        let mut p = null_mut();
        // SAFETY: valid out pointer.
        let rc = unsafe { aclrtMalloc(&mut p, 64, 0) };
        let msg = recent();
        // SAFETY: valid out pointer.
        let rc2 = unsafe { aclrtCreateStream(&mut p) };
        (before, rc, msg, rc2, recent())
    })
    .join()
    .unwrap();
    assert_eq!(
        other.0, "",
        "the main thread's message is not visible on another thread"
    );
    assert_eq!(other.1, ACL_ERROR_RT_CONTEXT_NULL);
    assert!(
        other.2.contains("aclrtMalloc") && other.2.contains("no current context"),
        "{}",
        other.2
    );
    assert_eq!(other.3, ACL_ERROR_RT_CONTEXT_NULL);
    assert!(
        recent().contains("devPtr is NULL"),
        "this thread still has its own message"
    );
    assert_eq!(recent(), "", "a message is handed out once");
}

#[test]
fn contexts_can_be_created_bound_and_destroyed() {
    setup();
    let mut c = null_mut();
    let mut cur = null_mut();
    // SAFETY: valid out pointers.
    unsafe {
        let mut def = null_mut();
        assert_eq!(aclrtGetCurrentContext(&mut def), 0);
        assert_eq!(aclrtCreateContext(&mut c, 0), 0);
        assert_eq!(aclrtGetCurrentContext(&mut cur), 0);
        assert_eq!(cur, c, "a created context becomes current");
        let mut dev = -1;
        assert_eq!(aclrtGetDevice(&mut dev), 0);
        assert_eq!(dev, 0);
        expect_err(
            aclrtCreateContext(&mut cur, 3),
            ACL_ERROR_RT_INVALID_DEVICEID,
            "device 3 does not exist",
        );
        expect_err(
            aclrtDestroyContext(def),
            ACL_ERROR_INVALID_PARAM,
            "default context",
        );
        assert_eq!(aclrtDestroyContext(c), 0);
        expect_err(
            aclrtSetCurrentContext(c),
            ACL_ERROR_INVALID_PARAM,
            "not a live context",
        );
        let mut p = null_mut();
        expect_err(
            aclrtMalloc(&mut p, 8, 0),
            ACL_ERROR_RT_CONTEXT_NULL,
            "no current context",
        );
        assert_eq!(aclrtSetCurrentContext(def), 0);
        let mut n = 0u32;
        assert_eq!(aclrtGetDeviceCount(&mut n), 0);
        assert_eq!(n, 1);
        let soc = std::ffi::CStr::from_ptr(aclrtGetSocName())
            .to_str()
            .unwrap();
        assert_eq!(soc, "Ascend910B3");
        let (mut free, mut total) = (0usize, 0usize);
        assert_eq!(aclrtGetMemInfo(1, &mut free, &mut total), 0);
        assert_eq!(total, 64 << 30, "default capacity 64 GiB");
        assert!(free <= total);
        expect_err(
            aclrtGetMemInfo(77, &mut free, &mut total),
            ACL_ERROR_INVALID_PARAM,
            "not an aclrtMemAttr",
        );
        expect_err(
            aclrtGetMemInfo(1, null_mut(), &mut total),
            ACL_ERROR_INVALID_PARAM,
            "NULL",
        );
    }
}

#[test]
fn faults_fire_on_the_nth_call_once() {
    setup();
    let name = CString::new("aclrtMallocHost").unwrap();
    // SAFETY: valid C string and out pointers.
    unsafe {
        assert_eq!(
            cann_sim::fault::cannSimInjectFault(name.as_ptr(), 2, ACL_ERROR_BAD_ALLOC),
            0
        );
        let p = hmalloc(64);
        let mut q = null_mut();
        expect_err(
            aclrtMallocHost(&mut q, 64),
            ACL_ERROR_BAD_ALLOC,
            "fault injected",
        );
        let r = hmalloc(64);
        aclrtFreeHost(p);
        aclrtFreeHost(r);
        assert_eq!(
            cann_sim::fault::cannSimInjectFault(null(), 1, 1),
            ACL_ERROR_INVALID_PARAM
        );
        assert_eq!(
            cann_sim::fault::cannSimInjectFault(name.as_ptr(), 1, 0),
            ACL_ERROR_INVALID_PARAM
        );
        // Operators ask through crate::fault::take.
        cann_sim::fault::inject("aclnnFaultProbe", 1, 561103);
        assert_eq!(cann_sim::fault::take("aclnnFaultProbe"), Some(561103));
        assert_eq!(cann_sim::fault::take("aclnnFaultProbe"), None);
        cann_sim::fault::inject("aclnnFaultProbe", 3, 1);
        cann_sim::fault::inject("aclnnFaultProbe", 0, 1);
        for _ in 0..4 {
            assert_eq!(
                cann_sim::fault::take("aclnnFaultProbe"),
                None,
                "nth 0 disarms"
            );
        }
    }
}

#[test]
fn counters_buffer_protocol() {
    setup();
    let mut need = 0usize;
    let mut small = [0u8; 8];
    // SAFETY: buffers of the sizes passed.
    unsafe {
        let rc = cann_sim::counters::cannSimCounters(
            small.as_mut_ptr() as *mut _,
            small.len(),
            &mut need,
        );
        assert_eq!(rc, ACL_ERROR_INVALID_PARAM);
        assert!(need > 8);
        assert!(recent().contains("too small"));
    }
    let v = counters();
    assert_eq!(v["simulator"], "cann-sim");
    assert_eq!(v["memory"]["capacity"], 64u64 << 30);
}

// ---- kernel binaries -------------------------------------------------------------------------------------

fn kernel_so(abi: u32) -> String {
    static BUILT: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    let dir = scratch();
    BUILT.get_or_init(|| {
        let src = c_source("test_kernel.c");
        cc(
            &["-shared", "-fPIC", "-O1", &src],
            &dir.join("kernel_v1.so"),
        );
        cc(
            &["-shared", "-fPIC", "-O1", "-DABI_VERSION=2", &src],
            &dir.join("kernel_v2.so"),
        );
    });
    dir.join(format!("kernel_v{abi}.so"))
        .to_string_lossy()
        .into_owned()
}

unsafe fn load(path: &str) -> (i32, *mut c_void) {
    let c = CString::new(path).unwrap();
    let mut h = null_mut();
    (aclrtBinaryLoadFromFile(c.as_ptr(), null_mut(), &mut h), h)
}

unsafe fn function(bin: *mut c_void, name: &str) -> (i32, *mut c_void) {
    let c = CString::new(name).unwrap();
    let mut f = null_mut();
    (aclrtBinaryGetFunction(bin, c.as_ptr(), &mut f), f)
}

unsafe fn args_of(f: *mut c_void, params: &[&[u8]]) -> *mut c_void {
    let mut a = null_mut();
    assert_eq!(aclrtKernelArgsInit(f, &mut a), 0, "{}", recent());
    for p in params {
        let mut ph = null_mut();
        assert_eq!(
            aclrtKernelArgsAppend(a, p.as_ptr() as *mut c_void, p.len(), &mut ph),
            0,
            "{}",
            recent()
        );
    }
    assert_eq!(aclrtKernelArgsFinalize(a), 0);
    a
}

#[test]
fn kernel_binaries_are_checked_when_loaded() {
    setup();
    // SAFETY: valid strings and out pointers.
    unsafe {
        expect_err(
            load("relative/k.so").0,
            ACL_ERROR_INVALID_PARAM,
            "not an absolute path",
        );
        expect_err(
            load("/nonexistent/k.so").0,
            ACL_ERROR_RT_FILE_OPEN,
            "no such file",
        );
        let junk = scratch().join("junk.so");
        std::fs::write(&junk, b"not an ELF").unwrap();
        expect_err(
            load(junk.to_str().unwrap()).0,
            ACL_ERROR_INVALID_FILE,
            "not a loadable kernel binary",
        );
        expect_err(
            load(&kernel_so(2)).0,
            ACL_ERROR_INVALID_FILE,
            "ABI version 2",
        );
        let (rc, bin) = load(&kernel_so(1));
        assert_eq!(rc, 0, "{}", recent());
        expect_err(
            function(bin, "no_such_kernel").0,
            ACL_ERROR_RT_KERNEL_LOOKUP,
            "no kernel \"no_such_kernel\"",
        );
        let (rc, f) = function(bin, "add_one");
        assert_eq!(rc, 0);
        assert_eq!(aclrtBinaryUnLoad(bin), 0);
        let mut a = null_mut();
        expect_err(
            aclrtKernelArgsInit(f, &mut a),
            ACL_ERROR_RT_INVALID_HANDLE,
            "unloaded",
        );
        expect_err(
            function(bin, "add_one").0,
            ACL_ERROR_INVALID_PARAM,
            "not a loaded binary",
        );
    }
}

#[test]
fn kernel_launch_packs_arguments_and_checks_global_memory() {
    setup();
    assert_eq!(natural_align(1), 1);
    assert_eq!(natural_align(2), 2);
    assert_eq!(natural_align(12), 4);
    assert_eq!(natural_align(16), 8);
    // SAFETY: valid handles and buffers.
    unsafe {
        let (rc, bin) = load(&kernel_so(1));
        assert_eq!(rc, 0, "{}", recent());
        let s = new_stream();

        // Packing: u64, u8, u32, u16, u64 land at 0, 8, 12, 16, 24 (natural alignment, in order).
        let (_, probe) = function(bin, "args_probe");
        let out = dmalloc(64);
        let args = args_of(
            probe,
            &[
                &(out as u64).to_le_bytes(),
                &[0xAA],
                &7u32.to_le_bytes(),
                &9u16.to_le_bytes(),
                &u64::MAX.to_le_bytes(),
            ],
        );
        assert_eq!(
            aclrtLaunchKernelWithConfig(probe, 1, s, null_mut(), args, null_mut()),
            0,
            "{}",
            recent()
        );
        assert_eq!(aclrtSynchronizeStream(s), 0, "{}", recent());
        let mut got = [0u8; 32];
        assert_eq!(
            aclrtMemcpy(got.as_mut_ptr() as *mut c_void, 32, out, 32, D2H),
            0
        );
        assert_eq!(&got[0..8], &(out as u64).to_le_bytes());
        assert_eq!(got[8], 0xAA);
        assert_eq!(&got[9..12], &[0, 0, 0], "padding before the u32");
        assert_eq!(&got[12..16], &7u32.to_le_bytes());
        assert_eq!(&got[16..18], &9u16.to_le_bytes());
        assert_eq!(&got[24..32], &u64::MAX.to_le_bytes());

        // add_one over 4 blocks.
        let n = 1000u32;
        let xs: Vec<f32> = (0..n).map(|i| i as f32 * 0.5).collect();
        let x = dmalloc(4 * n as usize);
        let y = dmalloc(4 * n as usize);
        assert_eq!(
            aclrtMemcpy(x, 4000, xs.as_ptr() as *const c_void, 4000, H2D),
            0
        );
        let (_, add) = function(bin, "add_one");
        let args = args_of(
            add,
            &[
                &(x as u64).to_le_bytes(),
                &(y as u64).to_le_bytes(),
                &n.to_le_bytes(),
            ],
        );
        let before = stream_counters(s);
        assert_eq!(
            aclrtLaunchKernelWithConfig(add, 4, s, null_mut(), args, null_mut()),
            0,
            "{}",
            recent()
        );
        assert_eq!(aclrtSynchronizeStream(s), 0, "{}", recent());
        let mut ys = vec![0f32; n as usize];
        assert_eq!(
            aclrtMemcpy(ys.as_mut_ptr() as *mut c_void, 4000, y, 4000, D2H),
            0
        );
        assert!(ys.iter().zip(&xs).all(|(a, b)| *a == b + 1.0));
        let c = stream_counters(s);
        assert_eq!(c["kernel_launches"]["add_one"], 1);
        assert_eq!(
            c["bytes_read"].as_u64().unwrap() - before["bytes_read"].as_u64().unwrap(),
            4000
        );
        assert_eq!(
            c["bytes_written"].as_u64().unwrap() - before["bytes_written"].as_u64().unwrap(),
            4000
        );

        // The same launch from arguments in device memory (aclrtLaunchKernel).
        let packed: Vec<u8> = [
            (x as u64).to_le_bytes().as_slice(),
            &(x as u64).to_le_bytes(),
            &n.to_le_bytes(),
            &[0u8; 4],
        ]
        .concat();
        let dargs = dmalloc(24);
        assert_eq!(
            aclrtMemcpy(dargs, 24, packed.as_ptr() as *const c_void, 24, H2D),
            0
        );
        assert_eq!(aclrtLaunchKernel(add, 2, dargs, 24, s), 0, "{}", recent());
        assert_eq!(aclrtSynchronizeStream(s), 0, "{}", recent());
        assert_eq!(
            aclrtMemcpy(ys.as_mut_ptr() as *mut c_void, 4000, x, 4000, D2H),
            0
        );
        assert!(
            ys.iter().zip(&xs).all(|(a, b)| *a == b + 1.0),
            "in place on x"
        );
        expect_err(
            aclrtLaunchKernel(add, 2, packed.as_ptr() as *const c_void, 24, s),
            ACL_ERROR_INVALID_PARAM,
            "argsData must be device memory",
        );

        // An out-of-bounds store fails the stream with the kernel's message.
        let (_, oob) = function(bin, "oob_store");
        let args = args_of(oob, &[&(y as u64).to_le_bytes(), &n.to_le_bytes()]);
        assert_eq!(
            aclrtLaunchKernelWithConfig(oob, 1, s, null_mut(), args, null_mut()),
            0
        );
        expect_err(
            aclrtSynchronizeStream(s),
            ACL_ERROR_RT_AICORE_EXCEPTION,
            "oob_store block 0: DataCopy to y[1000]: global memory store",
        );
        // Launch-time argument checks.
        expect_err(
            aclrtLaunchKernelWithConfig(oob, 0, s, null_mut(), args, null_mut()),
            ACL_ERROR_INVALID_PARAM,
            "blockDim is 0",
        );
        expect_err(
            aclrtLaunchKernelWithConfig(add, 1, s, null_mut(), args, null_mut()),
            ACL_ERROR_INVALID_PARAM,
            "another function",
        );
        expect_err(
            aclrtLaunchKernelWithConfig(oob, 1, s, null_mut(), args, 8 as *mut c_void),
            ACL_ERROR_INVALID_PARAM,
            "reserve must be NULL",
        );
        let mut open = null_mut();
        assert_eq!(aclrtKernelArgsInit(oob, &mut open), 0);
        expect_err(
            aclrtLaunchKernelWithConfig(oob, 1, s, null_mut(), open, null_mut()),
            ACL_ERROR_INVALID_PARAM,
            "not finalized",
        );
        assert_eq!(aclrtKernelArgsFinalize(open), 0);
        let v = 1u32;
        expect_err(
            aclrtKernelArgsAppend(open, &v as *const u32 as *mut c_void, 4, null_mut()),
            ACL_ERROR_INVALID_PARAM,
            "already finalized",
        );
        expect_err(
            aclrtKernelArgsAppend(open, x, 4, null_mut()),
            ACL_ERROR_INVALID_PARAM,
            "host memory",
        );
        // Fault injection by kernel name.
        let name = CString::new("add_one").unwrap();
        assert_eq!(
            cann_sim::fault::cannSimInjectFault(name.as_ptr(), 1, 507015),
            0
        );
        let args = args_of(
            add,
            &[
                &(x as u64).to_le_bytes(),
                &(y as u64).to_le_bytes(),
                &n.to_le_bytes(),
            ],
        );
        expect_err(
            aclrtLaunchKernelWithConfig(add, 4, s, null_mut(), args, null_mut()),
            507015,
            "fault injected",
        );
        assert_eq!(
            aclrtLaunchKernelWithConfig(add, 4, s, null_mut(), args, null_mut()),
            0
        );
        assert_eq!(aclrtSynchronizeStream(s), 0);
        assert_eq!(aclrtDestroyStream(s), 0);
        for p in [out, x, y, dargs] {
            assert_eq!(aclrtFree(p), 0);
        }
    }
}
