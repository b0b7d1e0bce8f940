// Our CPU implementation of the AscendC kernel API subset that kernels/*.cpp use (written from CANN's
// documents, mirror-cann/asc-devkit docs/api; no CANN header text). Kernels include it under the name
// CANN uses, so the same source builds for the 910B with CANN's compiler and for the CPU with g++
// (scripts/build_kernel_cpu.sh). Every failed check throws out of the kernel to the launcher, which
// reports kernel, block / sub-core, API call and values.
#ifndef ASCENDC_CPU_KERNEL_OPERATOR_H
#define ASCENDC_CPU_KERNEL_OPERATOR_H

#include "sim/core.h"
#include "sim/types.h"
#include "sim/sync.h"
#include "sim/memory.h"
#include "sim/copy.h"
#include "sim/vector.h"
#include "sim/launch.h"

#endif  // ASCENDC_CPU_KERNEL_OPERATOR_H
