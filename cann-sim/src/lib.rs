//! `cann-sim`: a host implementation of the CANN ACL runtime C symbols (and, in [`aclnn`], of the aclnn
//! operators), written from CANN's documented semantics so that a program built against CANN runs on the CPU
//! as it would on an Ascend device, under checks at least as strict as the hardware's.
//!
//! Device memory lives in a reserved, inaccessible address range (a host read of a device pointer faults);
//! its bytes are kept in a shadow mapping that only the simulator touches, after [`mem::check_range`].
//! Streams are worker threads that run [`stream::Task`]s in order. Counters, the JSON report and fault
//! injection are the simulator's own extension API, declared in `include/cann_sim.h`.
// The exported C functions follow the safety contract of the CANN document each one names (valid pointers
// of the documented sizes); repeating it as a `# Safety` section on every symbol would only restate that.
#![allow(clippy::missing_safety_doc)]

pub mod aclnn;
pub mod codes;
pub mod config;
pub mod copy;
pub mod counters;
pub mod errors;
pub mod event;
pub mod fault;
pub mod handle;
pub mod kernel;
pub mod mem;
pub mod runtime;
pub mod stream;
