//! One process's whole life on the simulator: calls before aclInit, settings from the environment,
//! repeat init/finalize codes, capacity, device reset with leaks, and the JSON report at aclFinalize.
//! A single test, because aclInit/aclFinalize are process-wide.

mod common;

use std::ffi::{CStr, CString};
use std::ptr::{null, null_mut};

use cann_sim::codes::*;
use cann_sim::mem::{self, *};
use cann_sim::runtime::*;
use common::*;

const MIB: usize = 1 << 20;

#[test]
fn init_capacity_reset_leaks_finalize_and_report() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.json");
    // SAFETY: every pointer passed is valid for the call.
    unsafe {
        let mut p = null_mut();
        expect_err(
            aclrtSetDevice(0),
            ACL_ERROR_UNINITIALIZE,
            "aclInit has not been called",
        );
        expect_err(
            aclrtMalloc(&mut p, 64, 0),
            ACL_ERROR_UNINITIALIZE,
            "aclInit",
        );
        expect_err(
            aclFinalize(),
            ACL_ERROR_UNINITIALIZE,
            "aclInit has not been called",
        );

        std::env::set_var("CANN_SIM_MEM_BYTES", "lots");
        expect_err(
            aclInit(null()),
            ACL_ERROR_INVALID_PARAM,
            "CANN_SIM_MEM_BYTES=\"lots\"",
        );
        std::env::set_var("CANN_SIM_MEM_BYTES", MIB.to_string());
        std::env::set_var("CANN_SIM_SOC", "Ascend910B4");
        std::env::set_var("CANN_SIM_REPORT", &report);
        let missing = CString::new("/nonexistent/acl.json").unwrap();
        expect_err(
            aclInit(missing.as_ptr()),
            ACL_ERROR_INVALID_FILE,
            "not a readable file",
        );
        assert_eq!(aclInit(null()), 0, "{}", recent());
        expect_err(
            aclInit(null()),
            ACL_ERROR_REPEAT_INITIALIZE,
            "already called",
        );
        assert_eq!(
            CStr::from_ptr(aclrtGetSocName()).to_str().unwrap(),
            "Ascend910B4"
        );

        expect_err(
            aclrtMalloc(&mut p, 64, 0),
            ACL_ERROR_RT_CONTEXT_NULL,
            "no current context",
        );
        expect_err(
            aclrtSetDevice(1),
            ACL_ERROR_RT_INVALID_DEVICEID,
            "device 1 does not exist",
        );
        expect_err(aclrtResetDevice(0), ACL_ERROR_INVALID_DEVICE, "was not set");
        assert_eq!(aclrtSetDevice(0), 0);
        let (mut free, mut total) = (0usize, 0usize);
        assert_eq!(aclrtGetMemInfo(1, &mut free, &mut total), 0);
        assert_eq!(
            (free, total),
            (MIB, MIB),
            "capacity from CANN_SIM_MEM_BYTES"
        );

        // ALIGN_UP(MIB-64, 32) + 32 = MIB - 32 charged; then 32 bytes are left, less than any aclrtMalloc.
        let big = dmalloc(MIB - 64);
        assert_eq!(aclrtGetMemInfo(1, &mut free, &mut total), 0);
        assert_eq!(free, 32);
        expect_err(
            aclrtMalloc(&mut p, 1, 0),
            ACL_ERROR_RT_MEMORY_ALLOCATION,
            "out of device memory",
        );
        let mut q = null_mut();
        assert_eq!(
            aclrtMallocAlign32(&mut q, 32, 0),
            0,
            "aclrtMallocAlign32 charges 32 for 32"
        );
        assert_eq!(aclrtFree(q), 0);
        assert_eq!(aclrtFree(big), 0);
        let leak1 = dmalloc(1000);

        // The last reset releases the device; what was still allocated is reported and freed.
        assert_eq!(aclrtSetDevice(0), 0, "second reference");
        assert_eq!(aclrtResetDevice(0), 0);
        assert!(
            mem::check_range(leak1 as u64, 8).is_ok(),
            "one reference is still held"
        );
        assert_eq!(aclrtResetDevice(0), 0);
        assert!(recent().contains("1 device allocation(s) (1000 bytes) were never freed"));
        assert!(mem::check_range(leak1 as u64, 8)
            .unwrap_err()
            .contains("freed allocation"));
        expect_err(
            aclrtMalloc(&mut p, 64, 0),
            ACL_ERROR_RT_CONTEXT_NULL,
            "no current context",
        );

        assert_eq!(aclrtSetDevice(0), 0);
        let leak2 = dmalloc(4096);
        let pinned = hmalloc(128);
        let s = new_stream();
        let failing = cann_sim::stream::Task {
            kind: cann_sim::stream::TaskKind::Op("aclnnNeverSynced"),
            bytes_read: 0,
            bytes_written: 0,
            run: Box::new(|| Err("unseen failure".into())),
        };
        assert_eq!(cann_sim::stream::enqueue(s, failing), 0);
        assert_eq!(aclFinalize(), 0);
        expect_err(aclFinalize(), ACL_ERROR_REPEAT_FINALIZE, "already called");
        expect_err(
            aclrtMalloc(&mut p, 64, 0),
            ACL_ERROR_UNINITIALIZE,
            "aclFinalize",
        );

        let r: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&report).expect("report written"))
                .unwrap();
        assert_eq!(r["memory"]["capacity"], MIB as u64);
        let leaks = r["leaks"].as_array().unwrap();
        let has = |kind: &str, f: &dyn Fn(&serde_json::Value) -> bool| {
            leaks.iter().any(|l| l["kind"] == kind && f(l))
        };
        assert!(has("device_allocation", &|l| l["at"] == "aclrtResetDevice"
            && l["bytes"] == 1000
            && l["address"] == leak1 as u64));
        assert!(has("device_allocation", &|l| l["at"] == "aclFinalize"
            && l["bytes"] == 4096
            && l["address"] == leak2 as u64));
        assert!(has("pinned_host", &|l| l["address"] == pinned as u64
            && l["bytes"] == 128));
        assert!(has("unreported_stream_error", &|l| l["message"]
            .as_str()
            .unwrap()
            .contains("unseen failure")));
        assert!(r["streams"]
            .as_array()
            .unwrap()
            .iter()
            .any(|st| st["ops"]["aclnnNeverSynced"] == 1));
        libc::free(pinned);
    }
}
