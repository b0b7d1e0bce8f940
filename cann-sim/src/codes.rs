//! The aclError values the simulator returns.
//!
//! `ACL_ERROR_*` follow hicann/runtime `include/external/acl/acl_base_rt.h` (also listed in
//! `docs/zh/api_ref/25-01_aclError.md`); `ACL_ERROR_RT_*` follow hicann/runtime
//! `include/external/acl/error_codes/rt_error_codes.h`.

/// Success.
pub const ACL_SUCCESS: i32 = 0;
/// A parameter is invalid (null pointer, zero size, count above destMax, unknown enum value).
pub const ACL_ERROR_INVALID_PARAM: i32 = 100000;
/// A call that needs `aclInit` came before it (or after `aclFinalize`).
pub const ACL_ERROR_UNINITIALIZE: i32 = 100001;
/// `aclInit` was called a second time.
pub const ACL_ERROR_REPEAT_INITIALIZE: i32 = 100002;
/// A file is not usable (here: a kernel binary that is not a loadable shared object of our ABI).
pub const ACL_ERROR_INVALID_FILE: i32 = 100003;
/// `aclFinalize` was called a second time.
pub const ACL_ERROR_REPEAT_FINALIZE: i32 = 100037;
/// Host memory could not be allocated (`aclrtMallocHost`).
pub const ACL_ERROR_BAD_ALLOC: i32 = 200000;
/// The device id does not name a device.
pub const ACL_ERROR_INVALID_DEVICE: i32 = 200002;

/// Runtime parameter check failed (a handle that is not one of ours, or was destroyed).
pub const ACL_ERROR_RT_PARAM_INVALID: i32 = 107000;
/// The device id is out of range.
pub const ACL_ERROR_RT_INVALID_DEVICEID: i32 = 107001;
/// The calling thread has no current context (no aclrtSetDevice / aclrtSetCurrentContext on it).
pub const ACL_ERROR_RT_CONTEXT_NULL: i32 = 107002;
/// A kernel binary could not be opened.
pub const ACL_ERROR_RT_FILE_OPEN: i32 = 107009;
/// A handle (binary, function, arguments) is invalid or in the wrong state.
pub const ACL_ERROR_RT_INVALID_HANDLE: i32 = 107017;
/// The device's memory capacity would be exceeded.
pub const ACL_ERROR_RT_MEMORY_ALLOCATION: i32 = 207001;
/// Freeing memory failed: double free, or a pointer that no allocation returned.
pub const ACL_ERROR_RT_MEMORY_FREE: i32 = 207002;
/// Internal simulator failure (a task of an unexpected kind failed).
pub const ACL_ERROR_RT_INTERNAL_ERROR: i32 = 507000;
/// aclrtSynchronizeStreamWithTimeout ran out of time.
pub const ACL_ERROR_RT_STREAM_SYNC_TIMEOUT: i32 = 507046;
/// An event used for elapsed time has not completed.
pub const ACL_ERROR_RT_EVENT_NOT_COMPLETE: i32 = 507006;
/// A copy or memset task failed while executing on the stream (e.g. its memory was freed meanwhile).
pub const ACL_ERROR_RT_SYS_DMA: i32 = 507013;
/// A kernel or operator failed while executing on the stream (out-of-bounds access, kernel check).
pub const ACL_ERROR_RT_AICORE_EXCEPTION: i32 = 507015;
/// No kernel of the requested name in the binary.
pub const ACL_ERROR_RT_KERNEL_LOOKUP: i32 = 507027;
