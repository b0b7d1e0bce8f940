// Decode attention on the 910B's vector cores: one query row per head over a KV cache, the keys of each
// kv head split into ranges processed by different cores (flash-decoding), then merged.
//   attention_decode:       work item = (kv head, key range); all query heads of the GQA group share
//                           each K/V chunk load; writes per head and range a partial softmax
//                           (f32 acc[headDim], running max, running sum) to the workspace.
//   attention_decode_merge: one head per step; rescales and sums the partials, writes out[h][headDim].
// Head dims that are not a multiple of 16 elements (72) are padded only in UB (row stride 80).
// Tiling: kernels/tiling.h (DecodeTiling), computed on the host.
#include "kernel_operator.h"
#include "tiling.h"
#include "epilogue.h"

using namespace AscendC;
using idefics3::Align;
using idefics3::Min;

namespace {

__aicore__ inline void VectorToScalar() {
  SetFlag<HardEvent::V_S>(0);
  WaitFlag<HardEvent::V_S>(0);
}
__aicore__ inline void ScalarToVector() {
  SetFlag<HardEvent::S_V>(0);
  WaitFlag<HardEvent::S_V>(0);
}

/// Partial rows in the workspace: acc[headDim], then max and sum, padded to headDim + 8 floats.
__aicore__ inline uint32_t PartialStride(uint32_t d) { return d + 8; }

template <class T>
class Decode {
 public:
  __aicore__ inline void Run(GM_ADDR q, GM_ADDR k, GM_ADDR v, GM_ADDR partial, const DecodeTiling &t) {
    const uint32_t D = t.headDim, G = t.heads / t.kvHeads, KC = t.keyChunk;
    const uint32_t Dp = Align(D * sizeof(T), 32) / sizeof(T);  // UB row stride of K/V rows
    const uint32_t Da = Align(D, 8);                            // f32 rows, 32-byte aligned
    qGm.SetGlobalBuffer((__gm__ T *)q, uint64_t(t.heads) * D);
    kGm.SetGlobalBuffer((__gm__ T *)k, uint64_t(t.kvHeads) * t.kvStride * D);
    vGm.SetGlobalBuffer((__gm__ T *)v, uint64_t(t.kvHeads) * t.kvStride * D);
    pGm.SetGlobalBuffer((__gm__ float *)partial, uint64_t(t.heads) * t.splits * PartialStride(D));
    pipe.InitBuffer(inQ, 2, KC * Dp * sizeof(T));
    pipe.InitBuffer(kF, KC * Dp * sizeof(float));
    pipe.InitBuffer(vF, KC * Dp * sizeof(float));
    pipe.InitBuffer(qF, G * Da * sizeof(float));
    pipe.InitBuffer(accF, G * Align(D + 8, 8) * sizeof(float));
    pipe.InitBuffer(sc, G * Align(KC, 8) * sizeof(float));
    pipe.InitBuffer(tmp, Align(D, 8) * sizeof(float) + 256);
    pipe.InitBuffer(small, 64 * sizeof(float));
    pipe.InitBuffer(outQ, 1, Align(D + 8, 8) * sizeof(float));
    const uint32_t items = t.kvHeads * t.splits;
    const uint32_t As = Align(D + 8, 8);
    LocalTensor<float> qf = qF.Get<float>(), kf = kF.Get<float>(), vf = vF.Get<float>();
    LocalTensor<float> acc = accF.Get<float>(), s = sc.Get<float>(), tp = tmp.Get<float>(), sm = small.Get<float>();
    for (uint32_t item = GetBlockIdx(); item < items; item += GetBlockNum()) {
      const uint32_t kvh = item / t.splits, split = item % t.splits;
      const uint32_t k0 = split * t.keysPerSplit;
      const uint32_t k1 = Min(t.keys, k0 + t.keysPerSplit);
      // The group's query rows, as f32.
      for (uint32_t j = 0; j < G; ++j) {
        LocalTensor<T> x = inQ.AllocTensor<T>();
        DataCopyPad(x, qGm[uint64_t(kvh * G + j) * D], DataCopyExtParams(1, D * sizeof(T), 0, 0, 0),
                    DataCopyPadExtParams<T>());
        inQ.EnQue(x);
        x = inQ.DeQue<T>();
        Cast(qf[j * Da], x, RoundMode::CAST_NONE, D);
        inQ.FreeTensor(x);
        Duplicate(acc[j * As], 0.0f, static_cast<int32_t>(As));
      }
      float m[8], l[8];
      for (uint32_t j = 0; j < G; ++j) {
        m[j] = idefics3::kNegInf;
        l[j] = 0.0f;
      }
      for (uint32_t c0 = k0; c0 < k1; c0 += KC) {
        const uint32_t n = Min(KC, k1 - c0);
        const uint64_t row = uint64_t(kvh) * t.kvStride + c0;
        LoadRows(kf, kGm[row * D], n, D, Dp);
        LoadRows(vf, vGm[row * D], n, D, Dp);
        for (uint32_t j = 0; j < G; ++j) {
          LocalTensor<float> sj = s[j * Align(KC, 8)];
          for (uint32_t r = 0; r < n; ++r) {
            Mul(tp, kf[r * Dp], qf[j * Da], static_cast<int32_t>(D));
            ReduceSum(sm[8], tp, sm[16], static_cast<int32_t>(D));
            VectorToScalar();
            sj.SetValue(r, sm.GetValue(8) * t.scale);
            ScalarToVector();
          }
          ReduceMax(sm[8], sj, sm[16], static_cast<int32_t>(n));
          VectorToScalar();
          const float mc = sm.GetValue(8);
          const float mn = mc > m[j] ? mc : m[j];
          ScalarToVector();
          Adds(sj, sj, -mn, static_cast<int32_t>(n));
          Exp(sj, sj, static_cast<int32_t>(n));
          ReduceSum(sm[8], sj, sm[16], static_cast<int32_t>(n));
          Duplicate(sm[24], m[j] - mn, 8);  // exp(-inf) = 0 on the first chunk
          Exp(sm[24], sm[24], 8);
          VectorToScalar();
          const float lc = sm.GetValue(8), alpha = sm.GetValue(24);
          l[j] = l[j] * alpha + lc;
          m[j] = mn;
          ScalarToVector();
          LocalTensor<float> aj = acc[j * As];
          Muls(aj, aj, alpha, static_cast<int32_t>(D));
          for (uint32_t r = 0; r < n; ++r) {
            VectorToScalar();
            const float p = sj.GetValue(r);
            ScalarToVector();
            Axpy(aj, vf[r * Dp], p, static_cast<int32_t>(D));
          }
        }
      }
      for (uint32_t j = 0; j < G; ++j) {
        LocalTensor<float> o = outQ.AllocTensor<float>();
        DataCopy(o, acc[j * As], As);
        VectorToScalar();
        o.SetValue(D, m[j]);
        o.SetValue(D + 1, l[j]);
        outQ.EnQue(o);
        o = outQ.DeQue<float>();
        DataCopyPad(pGm[(uint64_t(kvh * G + j) * t.splits + split) * PartialStride(D)], o,
                    DataCopyExtParams(1, (D + 2) * 4, 0, 0, 0));
        outQ.FreeTensor(o);
      }
    }
  }

 private:
  /// n rows of d elements from GM (contiguous) into f32 UB rows dp elements apart.
  __aicore__ inline void LoadRows(const LocalTensor<float> &dst, const GlobalTensor<T> &src, uint32_t n, uint32_t d,
                                  uint32_t dp) {
    LocalTensor<T> x = inQ.AllocTensor<T>();
    DataCopyPad(x, src, DataCopyExtParams(n, d * sizeof(T), 0, 0, 0), DataCopyPadExtParams<T>());
    inQ.EnQue(x);
    x = inQ.DeQue<T>();
    Cast(dst, x, RoundMode::CAST_NONE, n * dp);
    inQ.FreeTensor(x);
  }

  TPipe pipe;
  TQue<TPosition::VECIN, 2> inQ;
  TQue<TPosition::VECOUT, 1> outQ;
  TBuf<TPosition::VECCALC> kF, vF, qF, accF, sc, tmp, small;
  GlobalTensor<T> qGm, kGm, vGm;
  GlobalTensor<float> pGm;
};

template <class T>
class Merge {
 public:
  __aicore__ inline void Run(GM_ADDR partial, GM_ADDR out, const DecodeTiling &t) {
    const uint32_t D = t.headDim, S = t.splits, Ps = PartialStride(D);
    const uint32_t Us = Align((D + 2) * 4, 32) / 4;  // UB row stride of a partial
    pGm.SetGlobalBuffer((__gm__ float *)partial, uint64_t(t.heads) * S * Ps);
    oGm.SetGlobalBuffer((__gm__ T *)out, uint64_t(t.heads) * D);
    pipe.InitBuffer(inQ, 1, S * Us * sizeof(float));
    pipe.InitBuffer(accF, Align(D, 8) * sizeof(float));
    pipe.InitBuffer(wF, Align(S, 8) * sizeof(float) + 64);
    pipe.InitBuffer(outQ, 1, Align(D * sizeof(T), 32));
    LocalTensor<float> acc = accF.Get<float>(), w = wF.Get<float>();
    for (uint32_t h = GetBlockIdx(); h < t.heads; h += GetBlockNum()) {
      LocalTensor<float> p = inQ.AllocTensor<float>();
      DataCopyPad(p, pGm[uint64_t(h) * S * Ps], DataCopyExtParams(S, (D + 2) * 4, (Ps - D - 2) * 4, 0, 0),
                  DataCopyPadExtParams<float>());
      inQ.EnQue(p);
      p = inQ.DeQue<float>();
      SetFlag<HardEvent::MTE2_S>(0);
      WaitFlag<HardEvent::MTE2_S>(0);
      float mx = idefics3::kNegInf;
      for (uint32_t s = 0; s < S; ++s) {
        const float ms = p.GetValue(s * Us + D);
        mx = ms > mx ? ms : mx;
      }
      for (uint32_t s = 0; s < S; ++s) w.SetValue(s, p.GetValue(s * Us + D) - mx);
      ScalarToVector();
      Exp(w, w, static_cast<int32_t>(S));
      Duplicate(acc, 0.0f, static_cast<int32_t>(D));
      VectorToScalar();
      float total = 0.0f;
      for (uint32_t s = 0; s < S; ++s) {
        const float ws = w.GetValue(s);
        total += ws * p.GetValue(s * Us + D + 1);
        ScalarToVector();
        Axpy(acc, p[s * Us], ws, static_cast<int32_t>(D));
        VectorToScalar();
      }
      inQ.FreeTensor(p);
      ScalarToVector();
      Muls(acc, acc, 1.0f / total, static_cast<int32_t>(D));
      LocalTensor<T> o = outQ.AllocTensor<T>();
      Cast(o, acc, RoundMode::CAST_RINT, D);
      outQ.EnQue(o);
      o = outQ.DeQue<T>();
      DataCopyPad(oGm[uint64_t(h) * D], o, DataCopyExtParams(1, D * sizeof(T), 0, 0, 0));
      outQ.FreeTensor(o);
    }
  }

 private:
  TPipe pipe;
  TQue<TPosition::VECIN, 1> inQ;
  TQue<TPosition::VECOUT, 1> outQ;
  TBuf<TPosition::VECCALC> accF, wF;
  GlobalTensor<float> pGm;
  GlobalTensor<T> oGm;
};

}  // namespace

extern "C" __global__ __aicore__ void attention_decode(GM_ADDR q, GM_ADDR k, GM_ADDR v, GM_ADDR partial,
                                                       DecodeTiling t) {
  KERNEL_TASK_TYPE_DEFAULT(KERNEL_TYPE_AIV_ONLY);
  if (t.dtype == KDT_BF16)
    Decode<bfloat16_t>().Run(q, k, v, partial, t);
  else
    Decode<half>().Run(q, k, v, partial, t);
}

extern "C" __global__ __aicore__ void attention_decode_merge(GM_ADDR partial, GM_ADDR out, DecodeTiling t) {
  KERNEL_TASK_TYPE_DEFAULT(KERNEL_TYPE_AIV_ONLY);
  if (t.dtype == KDT_BF16)
    Merge<bfloat16_t>().Run(partial, out, t);
  else
    Merge<half>().Run(partial, out, t);
}
