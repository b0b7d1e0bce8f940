//! aclnn tensors, executors and operators: owned by the sim-aclnn helper (placeholder committed by sim-runtime so that the crate builds).
