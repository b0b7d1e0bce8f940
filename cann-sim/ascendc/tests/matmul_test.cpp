// matmul_gemv and matmul_cube (kernels/matmul.cpp) against a double-precision reference over ragged
// shapes, both input types, all output types, with and without bias and GELU.
#include <algorithm>

#include "host.h"
#include "tiling_host.h"

using namespace test;

namespace {

double gelu_ref(double x) { return 0.5 * x * (1.0 + std::tanh(0.7978845608028654 * (x + 0.044715 * x * x * x))); }

struct Case {
  uint32_t m, n, k, in, out;
  bool bias, gelu;
  uint32_t vec = 40, cube = 20;
};

void run_case(Binary &bin, const Case &c, std::mt19937 &rng) {
  Device dev;
  auto a = random16(size_t(c.m) * c.k, c.in, rng);
  auto w = random16(size_t(c.n) * c.k, c.in, rng, 0.5f);
  auto b = random16(c.n, c.in, rng);
  uint32_t blocks = 0;
  MatmulTiling t = matmul_tiling(c.m, c.n, c.k, c.in, c.out, c.bias, c.gelu, c.vec, c.cube, blocks);
  uint32_t osz = c.out == KDT_F32 ? 4 : 2;
  uint64_t da = dev.upload(a), dw = dev.upload(w), db = dev.upload(b);
  uint64_t dout = dev.alloc(size_t(c.m) * c.n * osz);
  Args args;
  const char *kernel = c.m == 1 ? "matmul_gemv" : "matmul_cube";
  args.add(da).add(dw).add(db).add(dout);
  if (c.m != 1) args.add(dev.alloc(size_t(blocks) * t.baseM * t.baseN * 4));
  args.add(t);
  std::string name = std::string(kernel) + " m=" + std::to_string(c.m) + " n=" + std::to_string(c.n) +
                     " k=" + std::to_string(c.k) + " in=" + std::to_string(c.in) + " out=" + std::to_string(c.out) +
                     (c.bias ? " bias" : "") + (c.gelu ? " gelu" : "");
  std::string err = bin.launch(dev, kernel, blocks, args);
  if (!err.empty()) {
    check(false, name + ": " + err);
    return;
  }
  const uint8_t *o = dev.host(dout);
  double worst = 0;
  size_t bad = 0;
  for (uint32_t i = 0; i < c.m; ++i)
    for (uint32_t j = 0; j < c.n; ++j) {
      double s = 0, sa = 0;
      for (uint32_t k = 0; k < c.k; ++k) {
        double p = double(from16(a[size_t(i) * c.k + k], c.in)) * from16(w[size_t(j) * c.k + k], c.in);
        s += p;
        sa += std::fabs(p);
      }
      if (c.bias) {
        s += from16(b[j], c.in);
        sa += std::fabs(from16(b[j], c.in));
      }
      double x = s;
      if (c.gelu) x = gelu_ref(s);
      float got;
      if (c.out == KDT_F32)
        std::memcpy(&got, o + (size_t(i) * c.n + j) * 4, 4);
      else {
        uint16_t u;
        std::memcpy(&u, o + (size_t(i) * c.n + j) * 2, 2);
        got = from16(u, c.out);
      }
      // f32 accumulation error (bounded by the sum of |products|) plus one unit in the last place of the
      // output type (the kernel's f32 result may round to the other neighbour).
      double ulp = c.out == KDT_BF16 ? 1.0 / 128 : c.out == KDT_F16 ? 1.0 / 1024 : 0;
      double tol = 2e-6 * sa + 1e-6 * std::fabs(x) + ulp * std::fabs(x) + (c.out == KDT_F16 ? 6e-8 : 1e-30);
      double e = std::fabs(double(got) - x);
      if (!(e <= tol)) {
        if (!bad) std::printf("  %s [%u,%u]: got %.7g want %.7g (tol %.3g)\n", name.c_str(), i, j, got, x, tol);
        ++bad;
      }
      worst = std::max(worst, e / (tol > 0 ? tol : 1));
    }
  check(bad == 0, name + ": " + std::to_string(bad) + " outputs outside tolerance");
}

}  // namespace

int main(int argc, char **argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s matmul.so\n", argv[0]);
    return 2;
  }
  Binary bin(argv[1]);
  check(bin.has("matmul_gemv") && bin.has("matmul_cube") && !bin.has("nope"), "ascendc_cpu_has_kernel");
  std::mt19937 rng(7);
  std::vector<Case> cases = {
      // M = 1: decode GEMV, ragged N and K, tails of every chunk.
      {1, 1, 16, KDT_BF16, KDT_BF16, false, false},
      {1, 37, 70, KDT_BF16, KDT_F32, true, false},
      {1, 300, 1030, KDT_F16, KDT_F16, true, true},
      {1, 129, 2100, KDT_BF16, KDT_BF16, false, true, 7},
      {1, 64, 14336, KDT_BF16, KDT_BF16, false, false, 5},
      // many rows: cube path, ragged in every dimension, direct and epilogue outputs.
      {2, 3, 5, KDT_BF16, KDT_F32, false, false},
      {37, 50, 70, KDT_BF16, KDT_BF16, false, false},
      {37, 50, 70, KDT_F16, KDT_F16, true, false},
      {130, 140, 300, KDT_BF16, KDT_BF16, true, true, 40, 3},
      {129, 257, 520, KDT_F16, KDT_F32, false, true, 40, 4},
      {200, 129, 64, KDT_BF16, KDT_F16, true, false, 40, 20},
  };
  for (const Case &c : cases) run_case(bin, c, rng);
  return finish("matmul");
}
