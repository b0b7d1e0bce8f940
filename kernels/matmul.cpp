// Matmul for the Ascend 910B: out[M,N] = epilogue(A[M,K] x W[N,K]^T + bias), W as the checkpoint stores
// it, bf16/fp16 inputs, f32 accumulation, bf16/fp16/f32 output, optional bias and GELU-tanh.
//   matmul_gemv: M == 1 (decoding), vector cores only; each core streams its share of W rows once.
//   matmul_cube: many rows; the cube core of each block computes baseM x baseN tiles
//     (GM -> L1 by Nd2Nz, L1 -> L0A/L0B by LoadData, Mmad into L0C, Fixpipe out). Without an epilogue it
//     writes the output directly; with bias or GELU it writes f32 to a per-block GM workspace and its two
//     vector cores finish the tile (cube results reach the vector cores only through GM on the 910B).
// Tiling: kernels/tiling.h (MatmulTiling), computed on the host.
#include "kernel_operator.h"
#include "tiling.h"
#include "epilogue.h"

using namespace AscendC;
using idefics3::Align;
using idefics3::Min;

namespace {

template <class T, class To>
class Gemv {
 public:
  __aicore__ inline void Run(GM_ADDR a, GM_ADDR w, GM_ADDR bias, GM_ADDR out, const MatmulTiling &t) {
    const uint32_t K = t.k, R = t.gemvRows, KC = t.gemvChunk;
    const uint32_t n0 = static_cast<uint32_t>(GetBlockIdx()) * t.rowsPerCore;
    if (n0 >= t.n) return;
    const uint32_t rows = Min(t.rowsPerCore, t.n - n0);
    aGm.SetGlobalBuffer((__gm__ T *)a, K);
    wGm.SetGlobalBuffer((__gm__ T *)w, uint64_t(t.n) * K);
    biasGm.SetGlobalBuffer((__gm__ T *)bias, t.hasBias ? t.n : 0);
    outGm.SetGlobalBuffer((__gm__ To *)out, t.n);
    const uint32_t rowsA = Align(rows, 8);
    pipe.InitBuffer(aF, Align(K, 8) * sizeof(float));
    pipe.InitBuffer(inQ, 1, KC * sizeof(T));
    pipe.InitBuffer(wQ, 2, R * KC * sizeof(T));
    pipe.InitBuffer(wF, R * KC * sizeof(float));
    pipe.InitBuffer(acc, R * KC * sizeof(float));
    pipe.InitBuffer(red, R * 8 * sizeof(float) + 256);
    pipe.InitBuffer(outF, rowsA * sizeof(float));
    pipe.InitBuffer(tmpF, rowsA * sizeof(float));
    pipe.InitBuffer(outQ, 1, rowsA * sizeof(To) + 32);

    // A once, as f32.
    LocalTensor<float> af = aF.Get<float>();
    for (uint32_t k0 = 0; k0 < K; k0 += KC) {
      const uint32_t kc = Min(KC, K - k0);
      LocalTensor<T> s = inQ.AllocTensor<T>();
      DataCopyPad(s, aGm[k0], DataCopyExtParams(1, kc * sizeof(T), 0, 0, 0), DataCopyPadExtParams<T>());
      inQ.EnQue(s);
      s = inQ.DeQue<T>();
      Cast(af[k0], s, RoundMode::CAST_NONE, kc);
      inQ.FreeTensor(s);
    }
    LocalTensor<float> of = outF.Get<float>();
    LocalTensor<float> wf = wF.Get<float>();
    LocalTensor<float> ac = acc.Get<float>();
    LocalTensor<float> rd = red.Get<float>();
    for (uint32_t g = 0; g < rows; g += R) {
      const uint32_t r = Min(R, rows - g);
      Duplicate(ac, 0.0f, static_cast<int32_t>(R * KC));
      for (uint32_t k0 = 0; k0 < K; k0 += KC) {
        const uint32_t kc = Min(KC, K - k0);
        LocalTensor<T> wt = wQ.AllocTensor<T>();
        // r rows of kc elements; UB rows kept KC elements apart whatever kc is.
        const uint32_t rowBytes = Align(kc * sizeof(T), 32);
        DataCopyPad(wt, wGm[uint64_t(n0 + g) * K + k0],
                    DataCopyExtParams(r, kc * sizeof(T), (K - kc) * sizeof(T), (KC * sizeof(T) - rowBytes) / 32, 0),
                    DataCopyPadExtParams<T>());
        wQ.EnQue(wt);
        wt = wQ.DeQue<T>();
        for (uint32_t i = 0; i < r; ++i) {
          Cast(wf[i * KC], wt[i * KC], RoundMode::CAST_NONE, kc);
          Mul(wf[i * KC], wf[i * KC], af[k0], static_cast<int32_t>(kc));
          Add(ac[i * KC], ac[i * KC], wf[i * KC], static_cast<int32_t>(kc));
        }
        wQ.FreeTensor(wt);
      }
      for (uint32_t i = 0; i < r; ++i)
        ReduceSum(rd[i * 8], ac[i * KC], rd[R * 8], static_cast<int32_t>(Min(KC, K)));
      SetFlag<HardEvent::V_S>(0);
      WaitFlag<HardEvent::V_S>(0);
      for (uint32_t i = 0; i < r; ++i) of.SetValue(g + i, rd.GetValue(i * 8));
      SetFlag<HardEvent::S_V>(0);
      WaitFlag<HardEvent::S_V>(0);
    }
    LocalTensor<float> tf = tmpF.Get<float>();
    if (t.hasBias) {
      LocalTensor<T> b = inQ.AllocTensor<T>();
      DataCopyPad(b, biasGm[n0], DataCopyExtParams(1, rows * sizeof(T), 0, 0, 0), DataCopyPadExtParams<T>());
      inQ.EnQue(b);
      b = inQ.DeQue<T>();
      Cast(tf, b, RoundMode::CAST_NONE, rows);
      inQ.FreeTensor(b);
      Add(of, of, tf, static_cast<int32_t>(rows));
    }
    if (t.gelu) idefics3::GeluTanh(of, tf, static_cast<int32_t>(rows));
    LocalTensor<To> o = outQ.AllocTensor<To>();
    idefics3::ToOutput(o, of, rows);
    outQ.EnQue(o);
    o = outQ.DeQue<To>();
    DataCopyPad(outGm[n0], o, DataCopyExtParams(1, rows * sizeof(To), 0, 0, 0));
    outQ.FreeTensor(o);
  }

 private:
  TPipe pipe;
  TBuf<TPosition::VECCALC> aF, wF, acc, red, outF, tmpF;
  TQue<TPosition::VECIN, 1> inQ;
  TQue<TPosition::VECIN, 2> wQ;
  TQue<TPosition::VECOUT, 1> outQ;
  GlobalTensor<T> aGm, wGm, biasGm;
  GlobalTensor<To> outGm;
};

template <class T, class To>
class CubeMatmul {
 public:
  __aicore__ inline void Run(GM_ADDR a, GM_ADDR w, GM_ADDR bias, GM_ADDR out, GM_ADDR ws, const MatmulTiling &t) {
    const bool epilogue = t.hasBias || t.gelu;
    const uint64_t tileElems = uint64_t(t.baseM) * t.baseN;
    aGm.SetGlobalBuffer((__gm__ T *)a, uint64_t(t.m) * t.k);
    wGm.SetGlobalBuffer((__gm__ T *)w, uint64_t(t.n) * t.k);
    biasGm.SetGlobalBuffer((__gm__ T *)bias, t.hasBias ? t.n : 0);
    outGm.SetGlobalBuffer((__gm__ To *)out, uint64_t(t.m) * t.n);
    const uint32_t total = t.tilesM * t.tilesN;
    if ASCEND_IS_AIC {
      const uint32_t block = static_cast<uint32_t>(GetBlockIdx());
      wsGm.SetGlobalBuffer((__gm__ float *)ws + block * tileElems, epilogue ? tileElems : 0);
      pipe.InitBuffer(a1Q, 2, t.baseM * t.l1K * sizeof(T));
      pipe.InitBuffer(b1Q, 2, t.baseN * t.l1K * sizeof(T));
      pipe.InitBuffer(a2Q, 2, t.baseM * t.baseK * sizeof(T));
      pipe.InitBuffer(b2Q, 2, t.baseN * t.baseK * sizeof(T));
      pipe.InitBuffer(cQ, 1, tileElems * sizeof(float));
      for (uint32_t tile = block; tile < total; tile += static_cast<uint32_t>(GetBlockNum())) {
        const uint32_t m0 = tile / t.tilesN * t.baseM, n0 = tile % t.tilesN * t.baseN;
        const uint32_t mt = Min(t.baseM, t.m - m0), nt = Min(t.baseN, t.n - n0);
        const uint32_t Mb = Align(mt, 16) / 16, Nb = Align(nt, 16) / 16;
        LocalTensor<float> c = cQ.AllocTensor<float>();
        for (uint32_t kk = 0; kk < t.k; kk += t.l1K) {
          const uint32_t kt = Min(t.l1K, t.k - kk);
          LocalTensor<T> a1 = a1Q.AllocTensor<T>();
          DataCopy(a1, aGm[uint64_t(m0) * t.k + kk], Nd2NzParams(1, mt, kt, 0, t.k, Mb * 16, 1, 0));
          a1Q.EnQue(a1);
          LocalTensor<T> b1 = b1Q.AllocTensor<T>();
          DataCopy(b1, wGm[uint64_t(n0) * t.k + kk], Nd2NzParams(1, nt, kt, 0, t.k, Nb * 16, 1, 0));
          b1Q.EnQue(b1);
          a1 = a1Q.DeQue<T>();
          b1 = b1Q.DeQue<T>();
          for (uint32_t k0 = 0; k0 < kt; k0 += t.baseK) {
            const uint32_t ks = Min(t.baseK, kt - k0), Kb = Align(ks, 16) / 16;
            LocalTensor<T> a2 = a2Q.AllocTensor<T>();
            for (uint32_t mb = 0; mb < Mb; ++mb)
              LoadData(a2[mb * Kb * 256], a1, LoadData2DParams(k0 / 16 * Mb + mb, Kb, Mb, 0, 0, false, 0));
            a2Q.EnQue(a2);
            LocalTensor<T> b2 = b2Q.AllocTensor<T>();
            // W's Nz fractals are already B = W^T in Zn order: one contiguous run per k slice.
            LoadData(b2, b1, LoadData2DParams(k0 / 16 * Nb, Kb * Nb, 1, 0, 0, false, 0));
            b2Q.EnQue(b2);
            a2 = a2Q.DeQue<T>();
            b2 = b2Q.DeQue<T>();
            MmadParams mp;
            mp.m = mt;
            mp.n = nt;
            mp.k = ks;
            mp.cmatrixInitVal = kk == 0 && k0 == 0;
            Mmad(c, a2, b2, mp);
            a2Q.FreeTensor(a2);
            b2Q.FreeTensor(b2);
          }
          a1Q.FreeTensor(a1);
          b1Q.FreeTensor(b1);
        }
        cQ.EnQue(c);
        c = cQ.DeQue<float>();
        FixpipeParamsV220 fp;
        fp.mSize = mt;
        fp.nSize = nt;
        fp.srcStride = Mb * 16;
        if (epilogue) {
          fp.dstStride = t.baseN;
          fp.quantPre = NoQuant;
          Fixpipe<float, float, CFG_ROW_MAJOR>(wsGm, c, fp);
          CrossCoreSetFlag<2, PIPE_FIX>(0);
          CrossCoreWaitFlag(1);  // both vector cores have read the workspace
        } else {
          fp.dstStride = t.n;
          fp.quantPre = std::is_same_v<To, float> ? NoQuant : std::is_same_v<To, half> ? F322F16 : F322BF16;
          Fixpipe<To, float, CFG_ROW_MAJOR>(outGm[uint64_t(m0) * t.n + n0], c, fp);
        }
        cQ.FreeTensor(c);
      }
    }
    if ASCEND_IS_AIV {
      if (!epilogue) return;
      const uint32_t block = static_cast<uint32_t>(GetBlockIdx() / GetSubBlockNum());
      const uint32_t sub = static_cast<uint32_t>(GetSubBlockIdx());
      wsGm.SetGlobalBuffer((__gm__ float *)ws + block * tileElems, tileElems);
      const uint32_t ER = t.epilogueRows;
      pipe.InitBuffer(biasQ, 1, t.baseN * sizeof(T));
      pipe.InitBuffer(biasF, t.baseN * sizeof(float));
      pipe.InitBuffer(xQ, 1, ER * t.baseN * sizeof(float));
      pipe.InitBuffer(tmpF, ER * t.baseN * sizeof(float));
      pipe.InitBuffer(oQ, 1, ER * t.baseN * sizeof(To));
      for (uint32_t tile = block; tile < total; tile += static_cast<uint32_t>(GetBlockNum())) {
        const uint32_t m0 = tile / t.tilesN * t.baseM, n0 = tile % t.tilesN * t.baseN;
        const uint32_t mt = Min(t.baseM, t.m - m0), nt = Min(t.baseN, t.n - n0);
        const uint32_t half0 = (mt + 1) / 2;
        const uint32_t r0 = sub == 0 ? 0 : half0, r1 = sub == 0 ? half0 : mt;
        CrossCoreWaitFlag(0);
        LocalTensor<float> bf = biasF.Get<float>();
        if (t.hasBias && r1 > r0) {
          LocalTensor<T> b = biasQ.AllocTensor<T>();
          DataCopyPad(b, biasGm[n0], DataCopyExtParams(1, nt * sizeof(T), 0, 0, 0), DataCopyPadExtParams<T>());
          biasQ.EnQue(b);
          b = biasQ.DeQue<T>();
          Cast(bf, b, RoundMode::CAST_NONE, nt);
          biasQ.FreeTensor(b);
        }
        LocalTensor<float> tf = tmpF.Get<float>();
        for (uint32_t r = r0; r < r1; r += ER) {
          const uint32_t rn = Min(ER, r1 - r);
          LocalTensor<float> x = xQ.AllocTensor<float>();
          DataCopyPad(x, wsGm[uint64_t(r) * t.baseN],
                      DataCopyExtParams(rn, nt * 4, (t.baseN - nt) * 4, (t.baseN * 4 - Align(nt * 4, 32)) / 32, 0),
                      DataCopyPadExtParams<float>());
          xQ.EnQue(x);
          x = xQ.DeQue<float>();
          if (t.hasBias)
            for (uint32_t i = 0; i < rn; ++i) Add(x[i * t.baseN], x[i * t.baseN], bf, static_cast<int32_t>(nt));
          if (t.gelu)
            for (uint32_t i = 0; i < rn; ++i) idefics3::GeluTanh(x[i * t.baseN], tf, static_cast<int32_t>(nt));
          LocalTensor<To> o = oQ.AllocTensor<To>();
          for (uint32_t i = 0; i < rn; ++i) idefics3::ToOutput(o[i * t.baseN], x[i * t.baseN], nt);
          xQ.FreeTensor(x);
          oQ.EnQue(o);
          o = oQ.DeQue<To>();
          DataCopyPad(outGm[uint64_t(m0 + r) * t.n + n0], o,
                      DataCopyExtParams(rn, nt * sizeof(To), (t.baseN * sizeof(To) - Align(nt * sizeof(To), 32)) / 32,
                                        (t.n - nt) * sizeof(To), 0));
          oQ.FreeTensor(o);
        }
        CrossCoreSetFlag<2, PIPE_MTE3>(1);
      }
    }
  }

 private:
  TPipe pipe;
  TQue<TPosition::A1, 2> a1Q;
  TQue<TPosition::B1, 2> b1Q;
  TQue<TPosition::A2, 2> a2Q;
  TQue<TPosition::B2, 2> b2Q;
  TQue<TPosition::CO1, 1> cQ;
  TQue<TPosition::VECIN, 1> biasQ, xQ;
  TQue<TPosition::VECOUT, 1> oQ;
  TBuf<TPosition::VECCALC> biasF, tmpF;
  GlobalTensor<T> aGm, wGm, biasGm;
  GlobalTensor<To> outGm;
  GlobalTensor<float> wsGm;
};

template <template <class, class> class K, class... Args>
__aicore__ inline void Dispatch(const MatmulTiling &t, Args... args) {
  if (t.inDtype == KDT_BF16) {
    if (t.outDtype == KDT_BF16) K<bfloat16_t, bfloat16_t>().Run(args..., t);
    else if (t.outDtype == KDT_F16) K<bfloat16_t, half>().Run(args..., t);
    else K<bfloat16_t, float>().Run(args..., t);
  } else {
    if (t.outDtype == KDT_BF16) K<half, bfloat16_t>().Run(args..., t);
    else if (t.outDtype == KDT_F16) K<half, half>().Run(args..., t);
    else K<half, float>().Run(args..., t);
  }
}

}  // namespace

extern "C" __global__ __aicore__ void matmul_gemv(GM_ADDR a, GM_ADDR w, GM_ADDR bias, GM_ADDR out, MatmulTiling t) {
  KERNEL_TASK_TYPE_DEFAULT(KERNEL_TYPE_AIV_ONLY);
  Dispatch<Gemv>(t, a, w, bias, out);
}

extern "C" __global__ __aicore__ void matmul_cube(GM_ADDR a, GM_ADDR w, GM_ADDR bias, GM_ADDR out, GM_ADDR workspace,
                                                  MatmulTiling t) {
  KERNEL_TASK_TYPE_DEFAULT(KERNEL_TYPE_MIX_AIC_1_2);
  Dispatch<CubeMatmul>(t, a, w, bias, out, workspace);
}
