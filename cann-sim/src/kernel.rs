//! Kernel binaries and launches (hicann/runtime `docs/zh/api_ref/14_Kernel_loading_and_execution.md`).
