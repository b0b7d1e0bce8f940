//! Delay mode (`CANN_SIM_DELAY_US`): every stream task sleeps first, so a missing synchronisation reads
//! stale data, while the correctly synchronised program still gets the right result.

mod common;

use std::ffi::c_void;
use std::ptr::null_mut;
use std::time::{Duration, Instant};

use cann_sim::copy::*;
use cann_sim::event::*;
use cann_sim::mem::*;
use cann_sim::stream::*;
use common::*;

const H2D: u32 = 1;
const D2H: u32 = 2;
const D2D: u32 = 3;
const DELAY_MS: u64 = 100;

fn setup_delayed() {
    static ENV: std::sync::Once = std::sync::Once::new();
    // Set before the one aclInit of this test binary; nothing else here reads the environment.
    ENV.call_once(|| std::env::set_var("CANN_SIM_DELAY_US", (DELAY_MS * 1000).to_string()));
    setup();
}

#[test]
fn a_missing_stream_sync_reads_stale_data() {
    setup_delayed();
    let s = new_stream();
    let d = dmalloc(64);
    let src = hmalloc(64) as *mut u8;
    // SAFETY: buffers of the sizes passed.
    unsafe {
        std::ptr::write_bytes(src, 7, 64);
        let t0 = Instant::now();
        assert_eq!(aclrtMemcpyAsync(d, 64, src as *const c_void, 64, H2D, s), 0);
        assert!(
            t0.elapsed() < Duration::from_millis(DELAY_MS / 2),
            "pinned async copy returns at once"
        );
        let mut v = [0u8; 64];
        // Wrong: no aclrtSynchronizeStream before the synchronous read.
        assert_eq!(
            aclrtMemcpy(v.as_mut_ptr() as *mut c_void, 64, d, 64, D2H),
            0
        );
        assert!(
            v.iter().all(|&x| x == 0),
            "without synchronisation the copy has not happened yet"
        );
        // Right.
        assert_eq!(aclrtSynchronizeStream(s), 0);
        assert!(
            t0.elapsed() >= Duration::from_millis(DELAY_MS),
            "the task slept first"
        );
        assert_eq!(
            aclrtMemcpy(v.as_mut_ptr() as *mut c_void, 64, d, 64, D2H),
            0
        );
        assert!(v.iter().all(|&x| x == 7));

        // Pageable host memory: the async copy returns only after it ran, so the data is there at once.
        let page = [9u8; 64];
        let t0 = Instant::now();
        assert_eq!(
            aclrtMemcpyAsync(d, 64, page.as_ptr() as *const c_void, 64, H2D, s),
            0
        );
        assert!(
            t0.elapsed() >= Duration::from_millis(DELAY_MS),
            "pageable async copy blocked until done"
        );
        assert_eq!(
            aclrtMemcpy(v.as_mut_ptr() as *mut c_void, 64, d, 64, D2H),
            0
        );
        assert!(v.iter().all(|&x| x == 9));
        aclrtDestroyStream(s);
        aclrtFreeHost(src as *mut c_void);
        aclrtFree(d);
    }
}

#[test]
fn a_missing_cross_stream_wait_reads_stale_data() {
    setup_delayed();
    for wait in [false, true] {
        let a = new_stream();
        let b = new_stream();
        let x = dmalloc(64);
        let y = dmalloc(64);
        let src = hmalloc(64) as *mut u8;
        let mut e = null_mut();
        // SAFETY: buffers of the sizes passed, handles valid.
        unsafe {
            std::ptr::write_bytes(src, 5, 64);
            assert_eq!(aclrtCreateEvent(&mut e), 0);
            // a: two delayed tasks, so x holds 5 only after about 2 delays.
            assert_eq!(aclrtMemsetAsync(x, 64, 0, 64, a), 0);
            assert_eq!(aclrtMemcpyAsync(x, 64, src as *const c_void, 64, H2D, a), 0);
            assert_eq!(aclrtRecordEvent(e, a), 0);
            if wait {
                assert_eq!(aclrtStreamWaitEvent(b, e), 0);
            }
            // b: copies x to y after one delay, i.e. before a's copy unless it waited.
            assert_eq!(aclrtMemcpyAsync(y, 64, x, 64, D2D, b), 0);
            assert_eq!(aclrtSynchronizeStream(b), 0);
            assert_eq!(aclrtSynchronizeStream(a), 0);
            let mut v = [1u8; 64];
            assert_eq!(
                aclrtMemcpy(v.as_mut_ptr() as *mut c_void, 64, y, 64, D2H),
                0
            );
            if wait {
                assert!(
                    v.iter().all(|&x| x == 5),
                    "with aclrtStreamWaitEvent b sees a's data"
                );
            } else {
                assert!(
                    v.iter().all(|&x| x != 5),
                    "without the wait b copies before a has written"
                );
            }
            aclrtDestroyEvent(e);
            aclrtDestroyStream(a);
            aclrtDestroyStream(b);
            aclrtFreeHost(src as *mut c_void);
            aclrtFree(x);
            aclrtFree(y);
        }
    }
}

#[test]
fn event_time_is_measured_on_the_stream() {
    setup_delayed();
    let s = new_stream();
    let (mut e0, mut e1) = (null_mut(), null_mut());
    let d = dmalloc(64);
    // SAFETY: valid handles.
    unsafe {
        assert_eq!(aclrtCreateEvent(&mut e0), 0);
        assert_eq!(aclrtCreateEvent(&mut e1), 0);
        assert_eq!(aclrtRecordEvent(e0, s), 0);
        assert_eq!(aclrtMemsetAsync(d, 64, 1, 64, s), 0);
        assert_eq!(aclrtMemsetAsync(d, 64, 2, 64, s), 0);
        assert_eq!(aclrtRecordEvent(e1, s), 0);
        assert_eq!(aclrtSynchronizeEvent(e1), 0);
        let mut ms = 0f32;
        assert_eq!(aclrtEventElapsedTime(&mut ms, e0, e1), 0);
        // Between the records: two memsets and the second record, each delayed.
        assert!(ms >= (3 * DELAY_MS) as f32 * 0.95, "elapsed {ms} ms");
        aclrtDestroyEvent(e0);
        aclrtDestroyEvent(e1);
        aclrtDestroyStream(s);
        aclrtFree(d);
    }
}
