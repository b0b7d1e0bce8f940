// Flash attention for the 910B as a mixed kernel (one cube core and two vector cores per block).
// Work item = (batch, head, block of blockM query rows); per block of blockN keys:
//   cube:   S = Q K^T (Q and K brought to L1 by Nd2Nz from their strided rows; K's Nz fractals are
//           B = K^T in Zn order), Fixpipe S (f32) to the block's GM workspace, flag S_READY;
//   vector: each vector core takes half of the rows: scale, key mask, causal mask, online softmax in f32
//           (running max m, sum l), P = exp(S - m) rounded to the input type into the workspace, P_READY;
//   cube:   O_step = P V (V by Nd2Nz, fractals transposed by LoadData into Zn), Fixpipe, O_READY;
//   vector: O = O * exp(m_old - m_new) + O_step, then O_DONE. At the end O / l goes to out.
// Head dims that are not a multiple of 16 (72) are padded only in L1/L0 (Nd2Nz zero-fills the columns).
// Tiling: kernels/tiling.h (FlashTiling).
#include "kernel_operator.h"
#include "tiling.h"
#include "epilogue.h"

using namespace AscendC;
using idefics3::Align;
using idefics3::Min;

namespace {

constexpr uint16_t S_READY = 0, P_READY = 1, O_READY = 2, O_DONE = 3;

__aicore__ inline void VectorToScalar() {
  SetFlag<HardEvent::V_S>(0);
  WaitFlag<HardEvent::V_S>(0);
}
__aicore__ inline void ScalarToVector() {
  SetFlag<HardEvent::S_V>(0);
  WaitFlag<HardEvent::S_V>(0);
}

struct Item {
  uint32_t b, h, kvh, q0, mq, kvEnd;
};

__aicore__ inline Item ItemOf(const FlashTiling &t, uint32_t item) {
  Item it;
  it.b = item / (t.heads * t.qTiles);
  it.h = item / t.qTiles % t.heads;
  it.kvh = it.h / (t.heads / t.kvHeads);
  it.q0 = item % t.qTiles * t.blockM;
  it.mq = Min(t.blockM, t.qLen - it.q0);
  // Keys any row of the block can see (causal: up to the last row's diagonal).
  it.kvEnd = t.causal ? Min(t.kvLen, it.q0 + it.mq + t.causalOffset) : t.kvLen;
  return it;
}

/// Per-block GM workspace: S (f32, blockM x blockN), P (input type, blockM x blockN), O_step (f32, blockM x Da).
__aicore__ inline uint64_t WorkspaceBytes(const FlashTiling &t) {
  const uint32_t Da = Align(t.headDim, 8);
  return uint64_t(t.blockM) * t.blockN * 4 + uint64_t(t.blockM) * t.blockN * 2 + uint64_t(t.blockM) * Da * 4;
}

template <class T>
class Flash {
 public:
  __aicore__ inline void Run(GM_ADDR q, GM_ADDR k, GM_ADDR v, GM_ADDR keyValid, GM_ADDR out, GM_ADDR ws,
                             const FlashTiling &t) {
    const uint32_t items = t.batch * t.heads * t.qTiles;
    const uint32_t block = static_cast<uint32_t>(ASCEND_IS_AIC ? GetBlockIdx() : GetBlockIdx() / GetSubBlockNum());
    const uint32_t BM = t.blockM, BN = t.blockN, Da = Align(t.headDim, 8);
    __gm__ uint8_t *w = ws + block * WorkspaceBytes(t);
    sGm.SetGlobalBuffer((__gm__ float *)w, uint64_t(BM) * BN);
    pGm.SetGlobalBuffer((__gm__ T *)(w + uint64_t(BM) * BN * 4), uint64_t(BM) * BN);
    oStepGm.SetGlobalBuffer((__gm__ float *)(w + uint64_t(BM) * BN * 6), uint64_t(BM) * Da);
    qGm.SetGlobalBuffer((__gm__ T *)q);
    kGm.SetGlobalBuffer((__gm__ T *)k);
    vGm.SetGlobalBuffer((__gm__ T *)v);
    oGm.SetGlobalBuffer((__gm__ T *)out);
    maskGm.SetGlobalBuffer((__gm__ uint8_t *)keyValid);
    if ASCEND_IS_AIC {
      CubeInit(t);
      for (uint32_t i = block; i < items; i += static_cast<uint32_t>(GetBlockNum())) Cube(t, ItemOf(t, i));
    }
    if ASCEND_IS_AIV {
      VecInit(t);
      for (uint32_t i = block; i < items; i += static_cast<uint32_t>(GetBlockNum())) Vec(t, ItemOf(t, i));
    }
  }

 private:
  // ---------------- cube ----------------
  __aicore__ inline void CubeInit(const FlashTiling &t) {
    const uint32_t Dp = Align(t.headDim, 16);
    pipe.InitBuffer(qL1, 1, t.blockM * Dp * sizeof(T));
    pipe.InitBuffer(kL1, 1, t.blockN * Dp * sizeof(T));
    pipe.InitBuffer(pL1, 1, t.blockM * t.blockN * sizeof(T));
    pipe.InitBuffer(vL1, 1, t.blockN * Dp * sizeof(T));
    pipe.InitBuffer(aL0, 2, t.blockM * Align(t.blockN > Dp ? t.blockN : Dp, 16) * sizeof(T));
    pipe.InitBuffer(bL0, 1, t.blockN * Dp * sizeof(T));
    pipe.InitBuffer(cL0, 1, t.blockM * (t.blockN > Dp ? t.blockN : Dp) * sizeof(float));
  }

  __aicore__ inline void Cube(const FlashTiling &t, const Item &it) {
    const uint32_t D = t.headDim, Dp = Align(D, 16), Db = Dp / 16, Mb = Align(it.mq, 16) / 16;
    LocalTensor<T> q1 = qL1.AllocTensor<T>();
    DataCopy(q1, qGm[uint64_t(it.b) * t.qBatchStride + uint64_t(it.q0) * t.qRowStride + uint64_t(it.h) * t.qHeadStride],
             Nd2NzParams(1, it.mq, D, 0, t.qRowStride, Mb * 16, 1, 0));
    qL1.EnQue(q1);
    q1 = qL1.DeQue<T>();
    LocalTensor<T> qa = aL0.AllocTensor<T>();
    for (uint32_t mb = 0; mb < Mb; ++mb) LoadData(qa[mb * Db * 256], q1, LoadData2DParams(mb, Db, Mb, 0, 0, false, 0));
    aL0.EnQue(qa);
    qa = aL0.DeQue<T>();
    qL1.FreeTensor(q1);
    const uint64_t kBase = uint64_t(it.b) * t.kBatchStride + uint64_t(it.kvh) * t.kHeadStride;
    const uint64_t vBase = uint64_t(it.b) * t.vBatchStride + uint64_t(it.kvh) * t.vHeadStride;
    for (uint32_t k0 = 0; k0 < it.kvEnd; k0 += t.blockN) {
      const uint32_t nk = Min(t.blockN, it.kvEnd - k0), Nb = Align(nk, 16) / 16;
      // S = Q K^T
      LocalTensor<T> k1 = kL1.AllocTensor<T>();
      DataCopy(k1, kGm[kBase + uint64_t(k0) * t.kRowStride], Nd2NzParams(1, nk, D, 0, t.kRowStride, Nb * 16, 1, 0));
      kL1.EnQue(k1);
      k1 = kL1.DeQue<T>();
      LocalTensor<T> kb = bL0.AllocTensor<T>();
      LoadData(kb, k1, LoadData2DParams(0, Db * Nb, 1, 0, 0, false, 0));
      bL0.EnQue(kb);
      kb = bL0.DeQue<T>();
      kL1.FreeTensor(k1);
      LocalTensor<float> c = cL0.AllocTensor<float>();
      MmadParams mp;
      mp.m = it.mq;
      mp.n = nk;
      mp.k = D;
      Mmad(c, qa, kb, mp);
      bL0.FreeTensor(kb);
      cL0.EnQue(c);
      c = cL0.DeQue<float>();
      FixpipeParamsV220 fp;
      fp.mSize = it.mq;
      fp.nSize = nk;
      fp.srcStride = Mb * 16;
      fp.dstStride = t.blockN;
      Fixpipe<float, float, CFG_ROW_MAJOR>(sGm, c, fp);
      cL0.FreeTensor(c);
      CrossCoreSetFlag<2, PIPE_FIX>(S_READY);
      // O_step = P V
      LocalTensor<T> v1 = vL1.AllocTensor<T>();
      if (nk % 16) {
        // Rows nk..Nb*16 of V meet P's zero columns: they must be finite, so clear them.
        InitConstValue(v1, InitConstValueParams<T>(1, static_cast<uint16_t>(Nb * 16 * Dp * sizeof(T) / 32), 0, T(0)));
      }
      DataCopy(v1, vGm[vBase + uint64_t(k0) * t.vRowStride], Nd2NzParams(1, nk, D, 0, t.vRowStride, Nb * 16, 1, 0));
      vL1.EnQue(v1);
      v1 = vL1.DeQue<T>();
      LocalTensor<T> vb = bL0.AllocTensor<T>();
      // V is [keys, D] in Nz (fractal (kb, db) at db*Nb + kb); Zn wants kb*Db + db, each fractal transposed.
      for (uint32_t kb2 = 0; kb2 < Nb; ++kb2)
        LoadData(vb[kb2 * Db * 256], v1, LoadData2DParams(kb2, Db, Nb, 0, 0, true, 0));
      bL0.EnQue(vb);
      vb = bL0.DeQue<T>();
      vL1.FreeTensor(v1);
      CrossCoreWaitFlag(P_READY);
      LocalTensor<T> p1 = pL1.AllocTensor<T>();
      DataCopy(p1, pGm, Nd2NzParams(1, it.mq, nk, 0, t.blockN, Mb * 16, 1, 0));
      pL1.EnQue(p1);
      p1 = pL1.DeQue<T>();
      LocalTensor<T> pa = aL0.AllocTensor<T>();
      for (uint32_t mb = 0; mb < Mb; ++mb) LoadData(pa[mb * Nb * 256], p1, LoadData2DParams(mb, Nb, Mb, 0, 0, false, 0));
      aL0.EnQue(pa);
      pa = aL0.DeQue<T>();
      pL1.FreeTensor(p1);
      LocalTensor<float> o = cL0.AllocTensor<float>();
      mp.m = it.mq;
      mp.n = D;
      mp.k = nk;
      Mmad(o, pa, vb, mp);
      aL0.FreeTensor(pa);
      bL0.FreeTensor(vb);
      cL0.EnQue(o);
      o = cL0.DeQue<float>();
      fp.mSize = it.mq;
      fp.nSize = D;
      fp.srcStride = Mb * 16;
      fp.dstStride = Align(D, 8);
      Fixpipe<float, float, CFG_ROW_MAJOR>(oStepGm, o, fp);
      cL0.FreeTensor(o);
      CrossCoreSetFlag<2, PIPE_FIX>(O_READY);
      CrossCoreWaitFlag(O_DONE);
    }
    aL0.FreeTensor(qa);
  }

  // ---------------- vector ----------------
  __aicore__ inline void VecInit(const FlashTiling &t) {
    const uint32_t R = (t.blockM + 1) / 2, Da = Align(t.headDim, 8);
    pipe.InitBuffer(sQ, 1, R * t.blockN * sizeof(float));
    pipe.InitBuffer(pQ, 1, R * t.blockN * sizeof(T));
    pipe.InitBuffer(oStepQ, 1, R * Da * sizeof(float));
    pipe.InitBuffer(maskQ, 1, Align(t.blockN, 32));
    pipe.InitBuffer(outQ, 1, R * Align(t.headDim * sizeof(T), 32));
    pipe.InitBuffer(oAcc, R * Da * sizeof(float));
    pipe.InitBuffer(maskAdd, t.blockN * sizeof(float));
    pipe.InitBuffer(small, 64 * sizeof(float));
  }

  __aicore__ inline void Vec(const FlashTiling &t, const Item &it) {
    const uint32_t D = t.headDim, Da = Align(D, 8), BN = t.blockN;
    const uint32_t half0 = (it.mq + 1) / 2;
    const uint32_t r0 = GetSubBlockIdx() == 0 ? 0 : half0, r1 = GetSubBlockIdx() == 0 ? half0 : it.mq;
    const uint32_t rows = r1 - r0;
    LocalTensor<float> acc = oAcc.Get<float>(), madd = maskAdd.Get<float>(), sm = small.Get<float>();
    float m[64], l[64], alpha[64];
    for (uint32_t i = 0; i < rows; ++i) {
      m[i] = idefics3::kNegInf;
      l[i] = 0.0f;
      Duplicate(acc[i * Da], 0.0f, static_cast<int32_t>(Da));
    }
    for (uint32_t k0 = 0; k0 < it.kvEnd; k0 += BN) {
      const uint32_t nk = Min(BN, it.kvEnd - k0);
      CrossCoreWaitFlag(S_READY);
      if (rows) {
        if (t.hasKeyMask) {
          LocalTensor<uint8_t> mk = maskQ.AllocTensor<uint8_t>();
          DataCopyPad(mk, maskGm[uint64_t(it.b) * t.kvLen + k0], DataCopyExtParams(1, nk, 0, 0, 0),
                      DataCopyPadExtParams<uint8_t>());
          maskQ.EnQue(mk);
          mk = maskQ.DeQue<uint8_t>();
          SetFlag<HardEvent::MTE2_S>(0);
          WaitFlag<HardEvent::MTE2_S>(0);
          for (uint32_t j = 0; j < nk; ++j) madd.SetValue(j, mk.GetValue(j) ? 0.0f : idefics3::kNegInf);
          maskQ.FreeTensor(mk);
          ScalarToVector();
        }
        LocalTensor<float> s = sQ.AllocTensor<float>();
        DataCopyPad(s, sGm[uint64_t(r0) * BN], DataCopyExtParams(rows, nk * 4, (BN - nk) * 4, (BN * 4 - Align(nk * 4, 32)) / 32, 0),
                    DataCopyPadExtParams<float>());
        sQ.EnQue(s);
        s = sQ.DeQue<float>();
        LocalTensor<T> p = pQ.AllocTensor<T>();
        for (uint32_t i = 0; i < rows; ++i) {
          LocalTensor<float> si = s[i * BN];
          Muls(si, si, t.scale, static_cast<int32_t>(nk));
          if (t.hasKeyMask) Add(si, si, madd, static_cast<int32_t>(nk));
          if (t.causal) {
            // Query row qs sees keys up to qs + causalOffset.
            const uint32_t last = it.q0 + r0 + i + t.causalOffset;
            if (k0 + nk - 1 > last) {
              VectorToScalar();
              for (uint32_t j = last + 1 > k0 ? last + 1 - k0 : 0; j < nk; ++j) si.SetValue(j, idefics3::kNegInf);
              ScalarToVector();
            }
          }
          ReduceMax(sm[8], si, sm[16], static_cast<int32_t>(nk));
          VectorToScalar();
          const float mc = sm.GetValue(8);
          const float mn = mc > m[i] ? mc : m[i];
          const float base = mn == idefics3::kNegInf ? 0.0f : mn;  // a row with nothing visible yet stays at zero
          ScalarToVector();
          Adds(si, si, -base, static_cast<int32_t>(nk));
          Exp(si, si, static_cast<int32_t>(nk));
          ReduceSum(sm[8], si, sm[16], static_cast<int32_t>(nk));
          Duplicate(sm[24], m[i] - base, 8);
          Exp(sm[24], sm[24], 8);
          VectorToScalar();
          alpha[i] = sm.GetValue(24);
          l[i] = l[i] * alpha[i] + sm.GetValue(8);
          m[i] = mn;
          ScalarToVector();
          Cast(p[i * BN], si, RoundMode::CAST_RINT, nk);
        }
        sQ.FreeTensor(s);
        pQ.EnQue(p);
        p = pQ.DeQue<T>();
        DataCopyPad(pGm[uint64_t(r0) * BN], p,
                    DataCopyExtParams(rows, nk * sizeof(T), (BN * sizeof(T) - Align(nk * sizeof(T), 32)) / 32, (BN - nk) * sizeof(T), 0));
        pQ.FreeTensor(p);
      }
      CrossCoreSetFlag<2, PIPE_MTE3>(P_READY);
      CrossCoreWaitFlag(O_READY);
      if (rows) {
        LocalTensor<float> os = oStepQ.AllocTensor<float>();
        DataCopyPad(os, oStepGm[uint64_t(r0) * Da], DataCopyExtParams(rows, D * 4, (Da - D) * 4, (Da * 4 - Align(D * 4, 32)) / 32, 0),
                    DataCopyPadExtParams<float>());
        oStepQ.EnQue(os);
        os = oStepQ.DeQue<float>();
        for (uint32_t i = 0; i < rows; ++i) {
          Muls(acc[i * Da], acc[i * Da], alpha[i], static_cast<int32_t>(D));
          Add(acc[i * Da], acc[i * Da], os[i * Da], static_cast<int32_t>(D));
        }
        oStepQ.FreeTensor(os);
      }
      CrossCoreSetFlag<2, PIPE_V>(O_DONE);
    }
    if (!rows) return;
    const uint32_t Do = Align(D * sizeof(T), 32) / sizeof(T);
    LocalTensor<T> o = outQ.AllocTensor<T>();
    for (uint32_t i = 0; i < rows; ++i) {
      Muls(acc[i * Da], acc[i * Da], l[i] > 0.0f ? 1.0f / l[i] : 0.0f, static_cast<int32_t>(D));
      Cast(o[i * Do], acc[i * Da], RoundMode::CAST_RINT, D);
    }
    outQ.EnQue(o);
    o = outQ.DeQue<T>();
    DataCopyPad(oGm[uint64_t(it.b) * t.oBatchStride + uint64_t(it.q0 + r0) * t.oRowStride + uint64_t(it.h) * t.oHeadStride], o,
                DataCopyExtParams(rows, D * sizeof(T), 0, (t.oRowStride - D) * sizeof(T), 0));
    outQ.FreeTensor(o);
  }

  TPipe pipe;
  TQue<TPosition::A1, 1> qL1, kL1, pL1, vL1;
  TQue<TPosition::A2, 2> aL0;
  TQue<TPosition::B2, 1> bL0;
  TQue<TPosition::CO1, 1> cL0;
  TQue<TPosition::VECIN, 1> sQ, oStepQ, maskQ;
  TQue<TPosition::VECOUT, 1> pQ, outQ;
  TBuf<TPosition::VECCALC> oAcc, maskAdd, small;
  GlobalTensor<T> qGm, kGm, vGm, oGm, pGm;
  GlobalTensor<float> sGm, oStepGm;
  GlobalTensor<uint8_t> maskGm;
};

}  // namespace

extern "C" __global__ __aicore__ void flash_attention(GM_ADDR q, GM_ADDR k, GM_ADDR v, GM_ADDR keyValid, GM_ADDR out,
                                                      GM_ADDR workspace, FlashTiling t) {
  KERNEL_TASK_TYPE_DEFAULT(KERNEL_TYPE_MIX_AIC_1_2);
  if (t.dtype == KDT_BF16)
    Flash<bfloat16_t>().Run(q, k, v, keyValid, out, workspace, t);
  else
    Flash<half>().Run(q, k, v, keyValid, out, workspace, t);
}
