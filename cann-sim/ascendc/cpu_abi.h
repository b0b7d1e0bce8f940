/* C ABI between the CANN simulator (cann-sim) and kernel binaries built by scripts/build_kernel_cpu.sh.
 *
 * A kernel binary is a shared object holding AscendC kernels compiled with the host compiler against our
 * CPU implementation of the AscendC kernel API (cann-sim/ascendc/kernel_operator.h). The simulator
 * dlopen()s it from aclrtBinaryLoadFromFile, finds kernels by their extern "C" names, and launches them
 * from a stream task. Global memory is never touched directly: every access goes through map_gm, so the
 * simulator's allocation table bounds-checks each one.
 *
 * The Rust side (cann-sim/src/kernel.rs) mirrors this file. Bump the version on any change of layout or
 * meaning.
 */
#ifndef ASCENDC_CPU_ABI_H
#define ASCENDC_CPU_ABI_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define ASCENDC_CPU_ABI_VERSION 1

typedef struct AscendcCpuHost {
  uint32_t version; /* ASCENDC_CPU_ABI_VERSION */
  void *ctx;        /* passed back to the callbacks */
  /* Host-accessible memory for the device range [addr, addr+len); NULL if it is not inside one live
     allocation, with a message written into err (NUL-terminated, at most errlen bytes). write != 0 for a
     store. Thread-safe: called from every core's thread. */
  void *(*map_gm)(void *ctx, uint64_t addr, uint64_t len, int write, char *err, size_t errlen);
} AscendcCpuHost;

/* Exported by every binary that build_kernel_cpu.sh produces (a shared object, dlopen'ed by
   aclrtBinaryLoadFromFile in the simulator). */

/* ASCENDC_CPU_ABI_VERSION of the runtime the binary was built against. */
uint32_t ascendc_cpu_abi_version(void);

/* 1 if the binary holds a kernel of this extern "C" name, else 0. */
int ascendc_cpu_has_kernel(const char *name);

/* Runs kernel `name` over num_blocks blocks (and their cube/vector sub-cores for mixed kernels), arguments
   packed as on the device (each argument at its natural alignment, in order, as aclrtKernelArgsAppend
   appends them). Returns 0 on success; otherwise non-zero with a message naming the kernel, block (and
   sub-core), API call and offending values in err. Blocks until every core has finished. */
int ascendc_cpu_launch(const AscendcCpuHost *host, const char *name, uint32_t num_blocks,
                       const void *args, size_t args_size, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif

#endif /* ASCENDC_CPU_ABI_H */
