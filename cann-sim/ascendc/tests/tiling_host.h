// Host-side tiling for the kernels (kernels/tiling.h), within the 910B's buffer sizes. The engine's Rust
// code will compute the same structures; these are the C++ tests' copies of the rules.
#ifndef ASCENDC_TESTS_TILING_HOST_H
#define ASCENDC_TESTS_TILING_HOST_H

#include <stdexcept>
#include <string>

#include "tiling.h"

namespace test {

constexpr uint32_t kUbBytes = 192 * 1024;

inline uint32_t align_up(uint32_t x, uint32_t a) { return (x + a - 1) / a * a; }
inline uint32_t div_up(uint32_t x, uint32_t a) { return (x + a - 1) / a; }

/// UB bytes matmul_gemv's InitBuffer calls take for these parameters (kernels/matmul.cpp, Gemv::Run).
inline uint32_t gemv_ub_bytes(uint32_t k, uint32_t rows, uint32_t chunk, uint32_t perCore) {
  uint32_t ra = align_up(perCore, 8);
  return align_up(align_up(k, 8) * 4, 32) + chunk * 2 + 2 * rows * chunk * 2 + 2 * rows * chunk * 4 +
         align_up(rows * 32 + 256, 32) + 2 * ra * 4 + align_up(ra * 4 + 32, 32);
}

/// Tiling for out[m,n] = A[m,k] W[n,k]^T; `vecCores` / `cubeCores` are the cores a launch may use
/// (910B3: 40 and 20). Returns the blocks to launch in `blocks`.
inline MatmulTiling matmul_tiling(uint32_t m, uint32_t n, uint32_t k, uint32_t inDt, uint32_t outDt, bool bias,
                                  bool gelu, uint32_t vecCores, uint32_t cubeCores, uint32_t &blocks) {
  if (!m || !n || !k) throw std::invalid_argument("matmul_tiling: empty shape");
  MatmulTiling t{};
  t.m = m;
  t.n = n;
  t.k = k;
  t.inDtype = inDt;
  t.outDtype = outDt;
  t.hasBias = bias;
  t.gelu = gelu;
  t.gemvRows = 8;
  t.rowsPerCore = div_up(n, vecCores);
  t.gemvChunk = 0;
  for (uint32_t c : {1024u, 512u, 256u, 128u})
    if (gemv_ub_bytes(k, t.gemvRows, c, t.rowsPerCore) <= kUbBytes) {
      t.gemvChunk = c;
      break;
    }
  t.baseM = 128;
  t.baseN = 128;
  t.baseK = 64;
  t.l1K = 256;
  t.tilesM = div_up(m, t.baseM);
  t.tilesN = div_up(n, t.baseN);
  t.epilogueRows = 16;
  if (m == 1) {
    if (!t.gemvChunk) throw std::invalid_argument("matmul_tiling: K=" + std::to_string(k) + " too long for the GEMV path's UB");
    blocks = div_up(n, t.rowsPerCore);
  } else {
    blocks = std::min(cubeCores, t.tilesM * t.tilesN);
  }
  return t;
}

}  // namespace test

#endif  // ASCENDC_TESTS_TILING_HOST_H
