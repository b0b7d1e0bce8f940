// attention_decode + attention_decode_merge (kernels/attention_decode.cpp) against a double-precision
// softmax reference: head dims 64/72/80/128, GQA ratios 1/3/4/8, 1..8192 keys, bf16 and fp16, a KV
// cache with more rows than valid keys.
#include <algorithm>

#include "host.h"
#include "tiling_host.h"

using namespace test;

namespace {

DecodeTiling decode_tiling(uint32_t heads, uint32_t kvHeads, uint32_t d, uint32_t keys, uint32_t stride, uint32_t dt,
                           uint32_t cores) {
  if (!keys || heads % kvHeads || heads / kvHeads > 8 || keys > stride)
    throw std::invalid_argument("decode_tiling: bad shape");
  DecodeTiling t{};
  t.heads = heads;
  t.kvHeads = kvHeads;
  t.headDim = d;
  t.keys = keys;
  t.kvStride = stride;
  t.keyChunk = 64;
  t.dtype = dt;
  t.scale = 1.0f / std::sqrt(float(d));
  uint32_t want = std::max(1u, div_up(2 * cores, kvHeads));
  uint32_t splits = std::min(want, div_up(keys, t.keyChunk));
  t.keysPerSplit = div_up(keys, splits);
  t.splits = div_up(keys, t.keysPerSplit);  // no empty range
  return t;
}

void run_case(Binary &bin, uint32_t heads, uint32_t kvHeads, uint32_t d, uint32_t keys, uint32_t dt, std::mt19937 &rng) {
  const uint32_t cores = 40, stride = keys + 3;
  DecodeTiling t = decode_tiling(heads, kvHeads, d, keys, stride, dt, cores);
  Device dev;
  auto q = random16(size_t(heads) * d, dt, rng);
  auto k = random16(size_t(kvHeads) * stride * d, dt, rng, 2.0f);
  auto v = random16(size_t(kvHeads) * stride * d, dt, rng);
  uint64_t dq = dev.upload(q), dk = dev.upload(k), dv = dev.upload(v);
  uint64_t dp = dev.alloc(size_t(heads) * t.splits * (d + 8) * 4), dout = dev.alloc(size_t(heads) * d * 2);
  std::string name = "decode heads=" + std::to_string(heads) + " kv=" + std::to_string(kvHeads) + " d=" +
                     std::to_string(d) + " keys=" + std::to_string(keys) + (dt ? " f16" : " bf16") + " splits=" +
                     std::to_string(t.splits);
  Args a1;
  a1.add(dq).add(dk).add(dv).add(dp).add(t);
  std::string err = bin.launch(dev, "attention_decode", std::min(cores, kvHeads * t.splits), a1);
  if (err.empty()) {
    Args a2;
    a2.add(dp).add(dout).add(t);
    err = bin.launch(dev, "attention_decode_merge", std::min(cores, heads), a2);
  }
  if (!err.empty()) {
    check(false, name + ": " + err);
    return;
  }
  auto out = dev.download<uint16_t>(dout, size_t(heads) * d);
  size_t bad = 0;
  const uint32_t g = heads / kvHeads;
  for (uint32_t h = 0; h < heads; ++h) {
    const uint32_t kvh = h / g;
    std::vector<double> s(keys);
    double mx = -1e300;
    for (uint32_t j = 0; j < keys; ++j) {
      double dot = 0;
      for (uint32_t e = 0; e < d; ++e)
        dot += double(from16(q[size_t(h) * d + e], dt)) * from16(k[(size_t(kvh) * stride + j) * d + e], dt);
      s[j] = dot * t.scale;
      mx = std::max(mx, s[j]);
    }
    double sum = 0;
    for (auto &x : s) sum += (x = std::exp(x - mx));
    for (uint32_t e = 0; e < d; ++e) {
      double o = 0, oa = 0;
      for (uint32_t j = 0; j < keys; ++j) {
        double p = s[j] / sum * from16(v[(size_t(kvh) * stride + j) * d + e], dt);
        o += p;
        oa += std::fabs(p);
      }
      double got = from16(out[size_t(h) * d + e], dt);
      double ulp = dt == 0 ? 1.0 / 128 : 1.0 / 1024;
      double tol = ulp * std::fabs(o) + 2e-5 * oa + 1e-6;
      if (!(std::fabs(got - o) <= tol)) {
        if (!bad) std::printf("  %s head %u [%u]: got %.6g want %.6g (tol %.3g)\n", name.c_str(), h, e, got, o, tol);
        ++bad;
      }
    }
  }
  check(bad == 0, name + ": " + std::to_string(bad) + " outputs outside tolerance");
}

}  // namespace

int main(int argc, char **argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s attention_decode.so\n", argv[0]);
    return 2;
  }
  Binary bin(argv[1]);
  std::mt19937 rng(11);
  // (heads, kvHeads, headDim, keys, dtype)
  struct C {
    uint32_t h, kv, d, keys, dt;
  };
  std::vector<C> cases = {
      {1, 1, 64, 1, 0},    {3, 1, 72, 7, 1},     {8, 2, 80, 100, 0},   {4, 1, 128, 65, 1},
      {16, 2, 128, 1000, 0}, {6, 2, 72, 333, 0}, {32, 8, 128, 8192, 0}, {8, 8, 64, 129, 1},
      {24, 8, 80, 2049, 1}, {16, 16, 72, 64, 0},
  };
  for (const C &c : cases) run_case(bin, c.h, c.kv, c.d, c.keys, c.dt, rng);
  return finish("attention_decode");
}
