// flash_attention (kernels/flash_attention.cpp) against a double-precision reference: head dims
// 64/72/80/128, GQA ratios 1/3/4/8, lengths that are not multiples of the 128-row tiles, per-key
// validity masks (vision tiles with padding patches, one tile with no valid key), causal attention with
// an offset over a [kvHeads][rows][D] KV cache, bf16 and fp16.
#include <algorithm>

#include "host.h"
#include "tiling_host.h"

using namespace test;

namespace {

struct Case {
  uint32_t batch, heads, kvHeads, d, qLen, kvLen, dt;
  bool causal, mask, cacheLayout;
  uint32_t offset = 0;
};

void run_case(Binary &bin, const Case &c, std::mt19937 &rng) {
  FlashTiling t{};
  t.batch = c.batch;
  t.heads = c.heads;
  t.kvHeads = c.kvHeads;
  t.headDim = c.d;
  t.qLen = c.qLen;
  t.kvLen = c.kvLen;
  // q/out in BSND; k/v in BSND too, or as a KV cache [kvHeads][kvRows][D] (batch 1) with spare rows.
  t.qRowStride = c.heads * c.d;
  t.qHeadStride = c.d;
  t.qBatchStride = c.qLen * t.qRowStride;
  t.oRowStride = t.qRowStride;
  t.oHeadStride = c.d;
  t.oBatchStride = t.qBatchStride;
  const uint32_t cacheRows = c.kvLen + 9;
  if (c.cacheLayout) {
    t.kRowStride = c.d;
    t.kHeadStride = cacheRows * c.d;
    t.kBatchStride = c.kvHeads * t.kHeadStride;
  } else {
    t.kRowStride = c.kvHeads * c.d;
    t.kHeadStride = c.d;
    t.kBatchStride = c.kvLen * t.kRowStride;
  }
  t.vRowStride = t.kRowStride;
  t.vHeadStride = t.kHeadStride;
  t.vBatchStride = t.kBatchStride;
  t.causal = c.causal;
  t.causalOffset = c.offset;
  t.hasKeyMask = c.mask;
  t.dtype = c.dt;
  t.scale = 1.0f / std::sqrt(float(c.d));
  t.blockM = 128;
  t.blockN = 128;
  t.qTiles = div_up(c.qLen, 128);
  const uint32_t items = c.batch * c.heads * t.qTiles, blocks = std::min(20u, items);
  const uint64_t wsPerBlock = 128ull * 128 * 6 + 128ull * align_up(c.d, 8) * 4;

  size_t kvElems = size_t(c.batch) * t.kBatchStride;
  auto q = random16(size_t(c.batch) * t.qBatchStride, c.dt, rng);
  auto k = random16(kvElems, c.dt, rng, 1.5f);
  auto v = random16(kvElems, c.dt, rng);
  std::vector<uint8_t> valid(size_t(c.batch) * c.kvLen, 1);
  if (c.mask)
    for (uint32_t b = 0; b < c.batch; ++b) {
      // batch 0: the last keys are padding; batch 1: scattered holes; batch 2: no valid key at all.
      for (uint32_t j = 0; j < c.kvLen; ++j) {
        uint8_t ok = b == 0 ? j < c.kvLen * 2 / 3 : b == 1 ? (j % 7 != 3) : 0;
        valid[size_t(b) * c.kvLen + j] = ok;
      }
    }
  Device dev;
  uint64_t dq = dev.upload(q), dk = dev.upload(k), dv = dev.upload(v), dm = dev.upload(valid);
  uint64_t dout = dev.alloc(size_t(c.batch) * t.oBatchStride * 2), dws = dev.alloc(blocks * wsPerBlock);
  Args a;
  a.add(dq).add(dk).add(dv).add(dm).add(dout).add(dws).add(t);
  std::string name = "flash b=" + std::to_string(c.batch) + " h=" + std::to_string(c.heads) + " kv=" +
                     std::to_string(c.kvHeads) + " d=" + std::to_string(c.d) + " q=" + std::to_string(c.qLen) +
                     " k=" + std::to_string(c.kvLen) + (c.dt ? " f16" : " bf16") + (c.causal ? " causal+" + std::to_string(c.offset) : "") +
                     (c.mask ? " mask" : "") + (c.cacheLayout ? " cache" : "");
  std::string err = bin.launch(dev, "flash_attention", blocks, a);
  if (!err.empty()) {
    check(false, name + ": " + err);
    return;
  }
  auto out = dev.download<uint16_t>(dout, size_t(c.batch) * t.oBatchStride);
  const uint32_t g = c.heads / c.kvHeads;
  const double ulp = c.dt == 0 ? 1.0 / 128 : 1.0 / 1024, pround = c.dt == 0 ? 1.0 / 256 : 1.0 / 2048;
  size_t bad = 0;
  std::vector<double> s(c.kvLen);
  for (uint32_t b = 0; b < c.batch; ++b)
    for (uint32_t h = 0; h < c.heads; ++h)
      for (uint32_t i = 0; i < c.qLen; ++i) {
        const uint32_t kvh = h / g;
        double mx = -INFINITY;
        for (uint32_t j = 0; j < c.kvLen; ++j) {
          bool vis = valid[size_t(b) * c.kvLen + j] && (!c.causal || j <= i + c.offset);
          if (!vis) {
            s[j] = -INFINITY;
            continue;
          }
          double dot = 0;
          for (uint32_t e = 0; e < c.d; ++e)
            dot += double(from16(q[b * t.qBatchStride + i * t.qRowStride + h * t.qHeadStride + e], c.dt)) *
                   from16(k[size_t(b) * t.kBatchStride + size_t(j) * t.kRowStride + kvh * t.kHeadStride + e], c.dt);
          s[j] = dot * t.scale;
          mx = std::max(mx, s[j]);
        }
        double sum = 0;
        for (auto &x : s) sum += (x = mx == -INFINITY ? 0.0 : std::exp(x - mx));
        for (uint32_t e = 0; e < c.d; ++e) {
          double o = 0, oa = 0;
          for (uint32_t j = 0; j < c.kvLen; ++j) {
            if (s[j] == 0) continue;
            double p = s[j] / sum * from16(v[size_t(b) * t.vBatchStride + size_t(j) * t.vRowStride + kvh * t.vHeadStride + e], c.dt);
            o += p;
            oa += std::fabs(p);
          }
          double got = from16(out[b * t.oBatchStride + i * t.oRowStride + h * t.oHeadStride + e], c.dt);
          // P is rounded to the input type before P V (as in Huawei's kernels); the output once more.
          double tol = ulp * std::fabs(o) + (pround + 1e-5) * oa + 1e-6;
          if (!(std::fabs(got - o) <= tol)) {
            if (!bad)
              std::printf("  %s [b%u h%u q%u d%u]: got %.6g want %.6g (tol %.3g)\n", name.c_str(), b, h, i, e, got, o, tol);
            ++bad;
          }
        }
      }
  check(bad == 0, name + ": " + std::to_string(bad) + " outputs outside tolerance");
}

}  // namespace

int main(int argc, char **argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s flash_attention.so\n", argv[0]);
    return 2;
  }
  Binary bin(argv[1]);
  std::mt19937 rng(5);
  std::vector<Case> cases = {
      // vision-like: bidirectional, per-key validity, SigLIP's head dim 72
      {3, 2, 2, 72, 150, 150, 0, false, true, false},
      {1, 1, 1, 64, 1, 1, 1, false, false, false},
      // GQA 3, fp16, ragged
      {1, 6, 2, 80, 200, 200, 1, false, false, false},
      // causal prefill over a KV cache with 50 cached keys, GQA 4
      {1, 8, 2, 128, 70, 120, 0, true, false, true, 50},
      // causal from zero, GQA 8, two query tiles
      {1, 8, 1, 64, 129, 129, 1, true, false, true, 0},
      // causal + key mask, bf16, d=80
      {2, 2, 1, 80, 40, 300, 0, true, true, false, 260},
      // one SigLIP tile of Idefics3-8B (676 patches, head dim 72), four of its 16 heads
      {1, 4, 4, 72, 676, 676, 0, false, false, false},
  };
  for (const Case &c : cases) run_case(bin, c, rng);
  return finish("flash_attention");
}
