/* A tiny "kernel binary" for the simulator's launch-path tests: it exports the three functions of
 * cann-sim/ascendc/cpu_abi.h (declared here again so that this file builds on its own) and reaches global
 * memory only through map_gm, like the AscendC CPU runtime. Build: cc -shared -fPIC -o k.so test_kernel.c
 * (-DABI_VERSION=2 gives a binary the simulator must refuse). */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#ifndef ABI_VERSION
#define ABI_VERSION 1
#endif

typedef struct AscendcCpuHost {
  uint32_t version;
  void *ctx;
  void *(*map_gm)(void *ctx, uint64_t addr, uint64_t len, int write, char *err, size_t errlen);
} AscendcCpuHost;

uint32_t ascendc_cpu_abi_version(void) { return ABI_VERSION; }

int ascendc_cpu_has_kernel(const char *name) {
  return strcmp(name, "add_one") == 0 || strcmp(name, "oob_store") == 0 || strcmp(name, "args_probe") == 0;
}

/* add_one(float *x, float *y, uint32_t n): y[i] = x[i] + 1, the n elements split over the blocks.
 * oob_store(float *y, uint32_t n): stores one element past y[n-1].
 * args_probe(uint8_t *out, ...): copies the packed argument bytes to out. */
int ascendc_cpu_launch(const AscendcCpuHost *host, const char *name, uint32_t num_blocks, const void *args,
                       size_t args_size, char *err, size_t errlen) {
  char why[512];
  if (host->version != 1) {
    snprintf(err, errlen, "%s: host ABI %u", name, host->version);
    return 1;
  }
  if (strcmp(name, "add_one") == 0) {
    uint64_t x, y;
    uint32_t n;
    if (args_size < 20) {
      snprintf(err, errlen, "add_one: args_size %zu, expected at least 20", args_size);
      return 2;
    }
    memcpy(&x, (const char *)args, 8);
    memcpy(&y, (const char *)args + 8, 8);
    memcpy(&n, (const char *)args + 16, 4);
    uint32_t per = (n + num_blocks - 1) / num_blocks;
    for (uint32_t b = 0; b < num_blocks; b++) {
      uint32_t lo = b * per, hi = lo + per > n ? n : lo + per;
      if (lo >= hi) continue;
      uint64_t len = (uint64_t)(hi - lo) * 4;
      const float *xs = host->map_gm(host->ctx, x + (uint64_t)lo * 4, len, 0, why, sizeof why);
      if (!xs) { snprintf(err, errlen, "add_one block %u: %s", b, why); return 3; }
      float *ys = host->map_gm(host->ctx, y + (uint64_t)lo * 4, len, 1, why, sizeof why);
      if (!ys) { snprintf(err, errlen, "add_one block %u: %s", b, why); return 3; }
      for (uint32_t i = 0; i < hi - lo; i++) ys[i] = xs[i] + 1.0f;
    }
    return 0;
  }
  if (strcmp(name, "oob_store") == 0) {
    uint64_t y;
    uint32_t n;
    memcpy(&y, (const char *)args, 8);
    memcpy(&n, (const char *)args + 8, 4);
    float *p = host->map_gm(host->ctx, y + (uint64_t)n * 4, 4, 1, why, sizeof why);
    if (!p) { snprintf(err, errlen, "oob_store block 0: DataCopy to y[%u]: %s", n, why); return 4; }
    *p = 1.0f;
    return 0;
  }
  if (strcmp(name, "args_probe") == 0) {
    uint64_t out;
    memcpy(&out, args, 8);
    uint8_t *o = host->map_gm(host->ctx, out, args_size, 1, why, sizeof why);
    if (!o) { snprintf(err, errlen, "args_probe: %s", why); return 5; }
    memcpy(o, args, args_size);
    return 0;
  }
  snprintf(err, errlen, "no kernel %s", name);
  return 9;
}
