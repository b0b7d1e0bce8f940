/* cann_sim.h: the simulator's own extension API, exported by libcann_sim.so next to the ACL symbols.
 *
 * These functions exist only in the simulator (a real CANN install has none of them): look them up with
 * dlsym() and treat their absence as "not running on the simulator".
 *
 * Settings (environment, read at aclInit):
 *   CANN_SIM_MEM_BYTES  device capacity in bytes (default 68719476736 = 64 GiB); aclrtMalloc beyond it fails
 *                       with ACL_ERROR_RT_MEMORY_ALLOCATION (207001); aclrtGetMemInfo(ACL_HBM_MEM) reports it.
 *   CANN_SIM_DELAY_US   every stream task sleeps this long before it runs, so a missing synchronisation
 *                       shows as a wrong result.
 *   CANN_SIM_REPORT     file to which the counters (below) are written as JSON at aclFinalize and at exit.
 *   CANN_SIM_SOC        what aclrtGetSocName() returns (default "Ascend910B3").
 */
#ifndef CANN_SIM_H
#define CANN_SIM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Writes the counters as one NUL-terminated JSON object into json[0..cap). *needed (if not NULL) receives
 * the size required, NUL included. Returns 0, or ACL_ERROR_INVALID_PARAM (100000) when json is NULL or cap
 * is too small (call again with *needed bytes).
 *
 * The object: "streams": one entry per stream ever created, {"id", "destroyed", "ops": {aclnn name: launches},
 * "kernel_launches": {kernel name: launches}, "tasks", "bytes_read", "bytes_written" (device bytes the
 * stream's tasks read and wrote; for kernels the ranges mapped through map_gm), "copy_bytes" and "copies"
 * ({"h2h","h2d","d2h","d2d"}: asynchronous copies), "memsets", "host_syncs" (aclrtSynchronizeStream and
 * device syncs that waited on it), "skipped_after_error", "pageable_async_copies" (aclrtMemcpyAsync calls
 * that blocked because the host side was not from aclrtMallocHost)}; "sync_copy_bytes" / "sync_copies" /
 * "sync_memsets" (aclrtMemcpy, aclrtMemset); "device_syncs"; "event_syncs"; "memory": {"capacity", "in_use",
 * "peak", "allocations"}; "errors": messages of failed stream tasks; "leaks": device allocations still
 * live at aclrtResetDevice / aclFinalize, pinned host blocks still allocated at aclFinalize, and stream
 * errors never reported by a synchronisation. */
int cannSimCounters(char *json, size_t cap, size_t *needed);

/* Zeroes every counter, forgets destroyed streams, errors and leaks. */
void cannSimResetCounters(void);

/* Makes the nth (1-based) next call named `name` fail with `status`, once. Names: ACL calls by their C name
 * ("aclrtMalloc", "aclrtMallocAlign32", "aclrtMallocHost", "aclrtMemcpy", "aclrtMemcpyAsync",
 * "aclrtLaunchKernelWithConfig", "aclrtLaunchKernel"), kernels by their extern "C" name, aclnn operators by
 * their "aclnnXxx" name (the phase-2 call fails). The failing call returns `status` at once, having done
 * nothing, with aclGetRecentErrMsg() saying the fault was injected. nth == 0 disarms `name`. Returns 0, or
 * ACL_ERROR_INVALID_PARAM for a NULL name or status 0. */
int cannSimInjectFault(const char *name, uint32_t nth, int32_t status);

/* Disarms every injected fault. */
void cannSimClearFaults(void);

#ifdef __cplusplus
}
#endif

#endif /* CANN_SIM_H */
