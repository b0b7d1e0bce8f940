//! Out-of-memory against a simulator with a 1 MiB device (its own test binary: the capacity is read
//! once, at aclInit).

mod common;

use cann_sys::bindings::ACL_ERROR_RT_MEMORY_ALLOCATION;
use cann_sys::{DeviceBuffer, Error};

#[test]
fn allocation_beyond_capacity_fails_with_the_runtime_error() {
    let ctx = common::context_with(&[("CANN_SIM_MEM_BYTES", "1048576")]);
    assert_eq!(ctx.mem_info().unwrap().1, 1 << 20);
    match DeviceBuffer::new(&ctx, 2 << 20) {
        Err(Error::Call {
            call,
            status,
            message,
        }) => {
            assert_eq!(
                (call.as_str(), status),
                ("aclrtMalloc", ACL_ERROR_RT_MEMORY_ALLOCATION),
                "{message}"
            );
            assert!(
                message.contains("2097152"),
                "message should give the size asked for: {message}"
            );
        }
        other => panic!("expected out of memory, got {:?}", other.map(|b| b.len())),
    }
    let held = DeviceBuffer::new(&ctx, 768 << 10).unwrap();
    assert!(
        DeviceBuffer::new(&ctx, 512 << 10).is_err(),
        "768 KiB held, 512 KiB more must not fit in 1 MiB"
    );
    drop(held);
    DeviceBuffer::new(&ctx, 512 << 10).unwrap();
}
