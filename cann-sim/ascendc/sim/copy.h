// Data movement and the cube: DataCopy (GM<->UB, GM->L1, UB->UB, with and without DataCopyParams),
// DataCopyPad (DataCopyExtParams / DataCopyPadExtParams), Nd2Nz GM->L1, LoadData L1->L0A/L0B
// (LoadData2DParams), Mmad (MmadParams) and Fixpipe L0C->GM (FixpipeParamsV220).
// Facts: asc-devkit docs DataCopy, DataCopyPad, DataCopyParams, DataCopyExtParams, Nd2NzParams,
// LoadData, Mmad, Fixpipe; ascendc-notes.md ("Data movement"). Where the hardware silently rounds a length
// down, this runtime fails instead.
//
// Fractal layouts modelled (16-bit types; a fractal is 16 rows x 16 elements = 512 B):
//   L1 "Nz":  column blocks of 16 elements, each block stores its rows contiguously (32 B a row).
//   L0A "Zz": fractal (mb, kb) at index mb*Kb + kb, row-major inside.
//   L0B "Zn": fractal (kb, nb) at index kb*Nb + nb, inside element (k, n) at n*16 + k.
//   L0C "Nz": f32 fractal (mb, nb) at index nb*Mb + mb, row-major inside (16 x 16 x 4 B = 1 KiB).
// So W[N,K] brought to L1 as an Nz matrix is already B = Wᵀ in Zn order fractal by fractal.
#ifndef ASCENDC_SIM_COPY_H
#define ASCENDC_SIM_COPY_H

#include "memory.h"

namespace AscendC {

struct DataCopyParams {
  DataCopyParams() = default;
  DataCopyParams(uint16_t count, uint16_t len, uint16_t srcGap, uint16_t dstGap)
      : blockCount(count), blockLen(len), srcStride(srcGap), dstStride(dstGap) {}
  uint16_t blockCount = 1;
  uint16_t blockLen = 0;  // 32-byte blocks
  uint16_t srcStride = 0;
  uint16_t dstStride = 0;
};

struct DataCopyExtParams {
  DataCopyExtParams() = default;
  DataCopyExtParams(uint16_t count, uint32_t len, uint32_t srcGap, uint32_t dstGap, uint32_t r)
      : blockCount(count), blockLen(len), srcStride(srcGap), dstStride(dstGap), rsv(r) {}
  uint16_t blockCount = 1;
  uint32_t blockLen = 0;   // bytes
  uint32_t srcStride = 0;  // bytes on the GM side, 32-byte blocks on the UB side
  uint32_t dstStride = 0;
  uint32_t rsv = 0;
};

template <class T>
struct DataCopyPadExtParams {
  DataCopyPadExtParams() = default;
  DataCopyPadExtParams(bool pad, uint8_t left, uint8_t right, T value)
      : isPad(pad), leftPadding(left), rightPadding(right), paddingValue(value) {}
  bool isPad = false;
  uint8_t leftPadding = 0;
  uint8_t rightPadding = 0;
  T paddingValue = T(0);
};

struct Nd2NzParams {
  Nd2NzParams() = default;
  Nd2NzParams(uint16_t nd, uint16_t n, uint16_t d, uint16_t srcNdStride, uint16_t srcD, uint16_t c0Stride,
              uint16_t nStride, uint16_t dstNdStride)
      : ndNum(nd), nValue(n), dValue(d), srcNdMatrixStride(srcNdStride), srcDValue(srcD), dstNzC0Stride(c0Stride),
        dstNzNStride(nStride), dstNzMatrixStride(dstNdStride) {}
  uint16_t ndNum = 1;
  uint16_t nValue = 0;
  uint16_t dValue = 0;
  uint16_t srcNdMatrixStride = 0;
  uint16_t srcDValue = 0;
  uint16_t dstNzC0Stride = 0;
  uint16_t dstNzNStride = 1;
  uint16_t dstNzMatrixStride = 0;
};

struct LoadData2DParams {
  LoadData2DParams() = default;
  LoadData2DParams(uint16_t start, uint8_t repeat, uint16_t srcStr, uint8_t s, uint16_t gap, bool trans, uint8_t mode)
      : startIndex(start), repeatTimes(repeat), srcStride(srcStr), sid(s), dstGap(gap), ifTranspose(trans),
        addrMode(mode) {}
  uint16_t startIndex = 0;
  uint8_t repeatTimes = 0;
  uint16_t srcStride = 0;
  uint8_t sid = 0;
  uint16_t dstGap = 0;
  bool ifTranspose = false;
  uint8_t addrMode = 0;
};

struct MmadParams {
  MmadParams() = default;
  MmadParams(uint16_t m_, uint16_t n_, uint16_t k_, bool bias, int32_t fm, bool sparse, bool wa, bool wb)
      : m(m_), n(n_), k(k_), isBias(bias), fmOffset(fm), enSsparse(sparse), enWinogradA(wa), enWinogradB(wb) {}
  uint16_t m = 0;
  uint16_t n = 0;
  uint16_t k = 0;
  bool isBias = false;
  int32_t fmOffset = 0;
  bool enSsparse = false;
  bool enWinogradA = false;
  bool enWinogradB = false;
  uint8_t unitFlag = 0;
  bool kDirectionAlign = false;
  bool cmatrixSource = false;
  bool cmatrixInitVal = true;
};

enum QuantMode_t : int { NoQuant = 0, F322F16, F322BF16 };

struct FixpipeParamsV220 {
  uint16_t nSize = 0;
  uint16_t mSize = 0;
  uint32_t srcStride = 0;  // rows between column blocks of the L0C matrix (M aligned to 16)
  uint32_t dstStride = 0;  // elements between rows of the ND output
  QuantMode_t quantPre = NoQuant;
  uint64_t deqScalar = 0;
  uint16_t ndNum = 1;
  uint16_t srcNdStride = 0;
  uint16_t dstNdStride = 0;
  bool reluEn = false;
  uint8_t unitFlag = 0;
  bool isChannelSplit = false;
};

enum class CO2Layout : int { NZ = 0, ROW_MAJOR, COLUMN_MAJOR };
struct FixpipeConfig {
  CO2Layout format;
};
constexpr FixpipeConfig CFG_NZ = {CO2Layout::NZ};
constexpr FixpipeConfig CFG_ROW_MAJOR = {CO2Layout::ROW_MAJOR};

namespace sim {
inline void need_mem(const char *api, const char *what, Mem have, std::initializer_list<Mem> ok) {
  for (Mem m : ok)
    if (m == have) return;
  std::string names;
  for (Mem m : ok) names += std::string(names.empty() ? "" : " or ") + mem_name(m);
  fail(api, fmt(what, " is in ", mem_name(have), ", expected ", names));
}
template <class T>
inline void need_aligned(const char *api, const char *what, const LocalTensor<T> &t, uint32_t a) {
  if (t.offset() % a) fail(api, fmt(what, " at ", mem_name(t.mem()), " offset ", t.offset(), " is not ", a, "-byte aligned"));
}
}  // namespace sim

// ---- GM -> local, count form ----
template <class T>
inline void DataCopy(const LocalTensor<T> &dst, const GlobalTensor<T> &src, uint32_t count) {
  const char *api = "DataCopy(GM->local)";
  sim::need_mem(api, "destination", dst.mem(), {sim::Mem::UB, sim::Mem::L1});
  sim::need_aligned(api, "destination", dst, 32);
  uint64_t bytes = uint64_t(count) * sizeof(T);
  if (bytes % 32)
    sim::fail(api, sim::fmt(count, " ", sim::type_name<T>(), " elements = ", bytes,
                            " bytes is not a multiple of 32 (the hardware would copy ", bytes / 32 * 32,
                            "); use DataCopyPad for tails"));
  if (!count) return;
  T *d = dst.ptr(api, 0, count);
  std::memcpy(d, src.bytes(api, 0, bytes, false), bytes);
}
template <class T>
inline void DataCopy(const GlobalTensor<T> &dst, const LocalTensor<T> &src, uint32_t count) {
  const char *api = "DataCopy(local->GM)";
  sim::need_mem(api, "source", src.mem(), {sim::Mem::UB});
  sim::need_aligned(api, "source", src, 32);
  uint64_t bytes = uint64_t(count) * sizeof(T);
  if (bytes % 32)
    sim::fail(api, sim::fmt(count, " ", sim::type_name<T>(), " elements = ", bytes,
                            " bytes is not a multiple of 32 (the hardware would copy ", bytes / 32 * 32,
                            "); use DataCopyPad for tails"));
  if (!count) return;
  const T *s = src.ptr(api, 0, count);
  std::memcpy(dst.bytes(api, 0, bytes, true), s, bytes);
}
template <class T>
inline void DataCopy(const LocalTensor<T> &dst, const LocalTensor<T> &src, uint32_t count) {
  const char *api = "DataCopy(local->local)";
  sim::need_mem(api, "source", src.mem(), {sim::Mem::UB});
  sim::need_mem(api, "destination", dst.mem(), {sim::Mem::UB});
  sim::need_aligned(api, "source", src, 32);
  sim::need_aligned(api, "destination", dst, 32);
  uint64_t bytes = uint64_t(count) * sizeof(T);
  if (bytes % 32) sim::fail(api, sim::fmt(bytes, " bytes is not a multiple of 32"));
  if (!count) return;
  std::memmove(dst.ptr(api, 0, count), src.ptr(api, 0, count), bytes);
}

// ---- block-strided forms (all lengths and gaps in 32-byte blocks) ----
template <class T>
inline void DataCopy(const LocalTensor<T> &dst, const GlobalTensor<T> &src, const DataCopyParams &p) {
  const char *api = "DataCopy(GM->local, DataCopyParams)";
  sim::need_mem(api, "destination", dst.mem(), {sim::Mem::UB, sim::Mem::L1});
  sim::need_aligned(api, "destination", dst, 32);
  if (p.blockCount < 1 || p.blockCount > 4095) sim::fail(api, sim::fmt("blockCount ", p.blockCount, " outside 1..4095"));
  if (p.blockLen < 1) sim::fail(api, "blockLen 0");
  uint64_t len = p.blockLen * 32ull, sstep = len + p.srcStride * 32ull, dstep = len + p.dstStride * 32ull;
  uint64_t span = sstep * (p.blockCount - 1) + len;
  const uint8_t *s = src.bytes(api, 0, span, false);
  uint8_t *d = reinterpret_cast<uint8_t *>(dst.ptr(api, 0, (dstep * (p.blockCount - 1) + len) / sizeof(T)));
  for (uint32_t i = 0; i < p.blockCount; ++i) std::memcpy(d + i * dstep, s + i * sstep, len);
}
template <class T>
inline void DataCopy(const GlobalTensor<T> &dst, const LocalTensor<T> &src, const DataCopyParams &p) {
  const char *api = "DataCopy(local->GM, DataCopyParams)";
  sim::need_mem(api, "source", src.mem(), {sim::Mem::UB});
  sim::need_aligned(api, "source", src, 32);
  if (p.blockCount < 1 || p.blockCount > 4095) sim::fail(api, sim::fmt("blockCount ", p.blockCount, " outside 1..4095"));
  if (p.blockLen < 1) sim::fail(api, "blockLen 0");
  uint64_t len = p.blockLen * 32ull, sstep = len + p.srcStride * 32ull, dstep = len + p.dstStride * 32ull;
  const uint8_t *s = reinterpret_cast<const uint8_t *>(src.ptr(api, 0, (sstep * (p.blockCount - 1) + len) / sizeof(T)));
  for (uint32_t i = 0; i < p.blockCount; ++i) std::memcpy(dst.bytes(api, i * dstep, len, true), s + i * sstep, len);
}

// ---- DataCopyPad: byte lengths, GM gaps in bytes, UB gaps in 32-byte blocks ----
template <class T>
inline void DataCopyPad(const LocalTensor<T> &dst, const GlobalTensor<T> &src, const DataCopyExtParams &p,
                        const DataCopyPadExtParams<T> &pad) {
  const char *api = "DataCopyPad(GM->UB)";
  sim::need_mem(api, "destination", dst.mem(), {sim::Mem::UB, sim::Mem::L1});
  sim::need_aligned(api, "destination", dst, 32);
  if (p.blockCount == 0 || p.blockLen == 0) return;
  if (p.blockCount > 4095) sim::fail(api, sim::fmt("blockCount ", p.blockCount, " above 4095"));
  if (p.blockLen > 2097151) sim::fail(api, sim::fmt("blockLen ", p.blockLen, " bytes above 2097151"));
  if (p.blockLen % sizeof(T)) sim::fail(api, sim::fmt("blockLen ", p.blockLen, " bytes is not a multiple of sizeof(", sim::type_name<T>(), ")"));
  uint32_t lb = pad.leftPadding * sizeof(T), rb = pad.rightPadding * sizeof(T);
  if (lb > 32 || rb > 32) sim::fail(api, sim::fmt("padding of ", int(pad.leftPadding), "+", int(pad.rightPadding), " elements exceeds one 32-byte block"));
  uint64_t row = (lb + p.blockLen + rb + 31) / 32 * 32;
  uint64_t sstep = p.blockLen + uint64_t(p.srcStride), dstep = row + p.dstStride * 32ull;
  const uint8_t *s = src.bytes(api, 0, sstep * (p.blockCount - 1) + p.blockLen, false);
  uint8_t *d = reinterpret_cast<uint8_t *>(dst.ptr(api, 0, (dstep * (p.blockCount - 1) + row) / sizeof(T)));
  for (uint32_t i = 0; i < p.blockCount; ++i) {
    uint8_t *r = d + i * dstep;
    std::memcpy(r + lb, s + i * sstep, p.blockLen);
    if (pad.isPad) {
      for (uint32_t e = 0; e < pad.leftPadding; ++e) std::memcpy(r + e * sizeof(T), &pad.paddingValue, sizeof(T));
      for (uint32_t e = 0; e < pad.rightPadding; ++e)
        std::memcpy(r + lb + p.blockLen + e * sizeof(T), &pad.paddingValue, sizeof(T));
    }
  }
}
template <class T>
inline void DataCopyPad(const GlobalTensor<T> &dst, const LocalTensor<T> &src, const DataCopyExtParams &p) {
  const char *api = "DataCopyPad(UB->GM)";
  sim::need_mem(api, "source", src.mem(), {sim::Mem::UB});
  sim::need_aligned(api, "source", src, 32);
  if (p.blockCount == 0 || p.blockLen == 0) return;
  if (p.blockCount > 4095) sim::fail(api, sim::fmt("blockCount ", p.blockCount, " above 4095"));
  if (p.blockLen > 2097151) sim::fail(api, sim::fmt("blockLen ", p.blockLen, " bytes above 2097151"));
  if (p.blockLen % sizeof(T)) sim::fail(api, sim::fmt("blockLen ", p.blockLen, " bytes is not a multiple of sizeof(", sim::type_name<T>(), ")"));
  uint64_t row = (p.blockLen + 31ull) / 32 * 32;
  uint64_t sstep = row + p.srcStride * 32ull, dstep = p.blockLen + uint64_t(p.dstStride);
  const uint8_t *s = reinterpret_cast<const uint8_t *>(src.ptr(api, 0, (sstep * (p.blockCount - 1) + p.blockLen) / sizeof(T)));
  for (uint32_t i = 0; i < p.blockCount; ++i) {
    uint8_t *d = dst.bytes(api, i * dstep, p.blockLen, true);
    if (sim::cur().atomic_add && std::is_same_v<T, float>) {
      for (uint32_t e = 0; e < p.blockLen / sizeof(float); ++e) {
        float a, b;
        std::memcpy(&a, d + 4 * e, 4);
        std::memcpy(&b, s + i * sstep + 4 * e, 4);
        a += b;
        std::memcpy(d + 4 * e, &a, 4);
      }
    } else {
      std::memcpy(d, s + i * sstep, p.blockLen);
    }
  }
}

// ---- GM (ND) -> L1 (Nz) ----
template <class T>
inline void DataCopy(const LocalTensor<T> &dst, const GlobalTensor<T> &src, const Nd2NzParams &p) {
  const char *api = "DataCopy(GM->L1, Nd2NzParams)";
  sim::need_mem(api, "destination", dst.mem(), {sim::Mem::L1});
  sim::need_aligned(api, "destination", dst, 32);
  constexpr uint32_t c0 = 32 / sizeof(T);
  if (p.ndNum == 0 || p.nValue == 0 || p.dValue == 0) return;
  if (p.nValue > 16384) sim::fail(api, sim::fmt("nValue ", p.nValue, " above 16384"));
  if (p.dValue > p.srcDValue) sim::fail(api, sim::fmt("dValue ", p.dValue, " exceeds the source row length srcDValue ", p.srcDValue));
  uint32_t cblocks = (p.dValue + c0 - 1) / c0;
  if (p.dstNzC0Stride < p.nValue)
    sim::fail(api, sim::fmt("dstNzC0Stride ", p.dstNzC0Stride, " is smaller than nValue ", p.nValue, ": column blocks would overlap"));
  for (uint32_t j = 0; j < p.ndNum; ++j) {
    uint64_t sbase = uint64_t(j) * p.srcNdMatrixStride;
    const uint8_t *s = src.bytes(api, sbase * sizeof(T), (uint64_t(p.nValue - 1) * p.srcDValue + p.dValue) * sizeof(T), false);
    uint64_t dbase = uint64_t(j) * p.dstNzMatrixStride * c0;
    uint64_t last = dbase + uint64_t(cblocks - 1) * p.dstNzC0Stride * c0 + uint64_t(p.nValue - 1) * p.dstNzNStride * c0 + c0;
    T *d = dst.ptr(api, 0, last);
    for (uint32_t r = 0; r < p.nValue; ++r)
      for (uint32_t cb = 0; cb < cblocks; ++cb) {
        T *row = d + dbase + uint64_t(cb) * p.dstNzC0Stride * c0 + uint64_t(r) * p.dstNzNStride * c0;
        for (uint32_t e = 0; e < c0; ++e) {
          uint32_t c = cb * c0 + e;
          if (c < p.dValue)
            std::memcpy(row + e, s + (uint64_t(r) * p.srcDValue + c) * sizeof(T), sizeof(T));
          else
            row[e] = sim::from_f<T>(0.0f);  // short rows are zero-padded to the fractal width
        }
      }
  }
}

// ---- L1 -> L0A / L0B, in 512-byte fractals ----
template <class T>
inline void LoadData(const LocalTensor<T> &dst, const LocalTensor<T> &src, const LoadData2DParams &p) {
  const char *api = "LoadData(LoadData2DParams)";
  static_assert(sizeof(T) == 2, "this runtime models LoadData for 16-bit types (half, bfloat16_t)");
  sim::need_mem(api, "source", src.mem(), {sim::Mem::L1});
  sim::need_mem(api, "destination", dst.mem(), {sim::Mem::L0A, sim::Mem::L0B});
  sim::need_aligned(api, "destination", dst, 512);
  sim::need_aligned(api, "source", src, 32);
  if (p.repeatTimes == 0) sim::fail(api, "repeatTimes 0");
  constexpr uint32_t fr = 256;  // elements per fractal
  for (uint32_t i = 0; i < p.repeatTimes; ++i) {
    const T *s = src.ptr(api, uint64_t(p.startIndex + i * p.srcStride) * fr, fr);
    T *d = dst.ptr(api, uint64_t(i) * (1 + p.dstGap) * fr, fr);
    if (p.ifTranspose) {
      for (int r = 0; r < 16; ++r)
        for (int c = 0; c < 16; ++c) d[c * 16 + r] = s[r * 16 + c];
    } else {
      std::memcpy(d, s, fr * sizeof(T));
    }
  }
}

// ---- cube: C (L0C, f32, Nz) = A (L0A, Zz) x B (L0B, Zn) [+ C] ----
template <class Tc, class Ta, class Tb>
inline void Mmad(const LocalTensor<Tc> &c, const LocalTensor<Ta> &a, const LocalTensor<Tb> &b, const MmadParams &p) {
  const char *api = "Mmad";
  static_assert(std::is_same_v<Tc, float>, "Mmad here accumulates in float (bf16/fp16 inputs)");
  static_assert(std::is_same_v<Ta, Tb> && (std::is_same_v<Ta, half> || std::is_same_v<Ta, bfloat16_t>),
                "Mmad inputs: half x half or bfloat16_t x bfloat16_t");
  sim::need_mem(api, "A", a.mem(), {sim::Mem::L0A});
  sim::need_mem(api, "B", b.mem(), {sim::Mem::L0B});
  sim::need_mem(api, "C", c.mem(), {sim::Mem::L0C});
  if (p.isBias) sim::fail(api, "isBias (bias table) is not modelled by this runtime");
  if (p.m == 0 || p.n == 0 || p.k == 0) sim::fail(api, sim::fmt("empty shape m=", p.m, " n=", p.n, " k=", p.k));
  if (p.k > 4095 || p.m > 4095 || p.n > 4095) sim::fail(api, sim::fmt("m=", p.m, " n=", p.n, " k=", p.k, ": each must be at most 4095"));
  uint32_t Mb = (p.m + 15) / 16, Nb = (p.n + 15) / 16, Kb = (p.k + 15) / 16;
  const Ta *A = a.ptr(api, 0, uint64_t(Mb) * Kb * 256);
  const Tb *B = b.ptr(api, 0, uint64_t(Kb) * Nb * 256);
  Tc *C = c.ptr(api, 0, uint64_t(Mb) * Nb * 256);
  // Whole fractals are multiplied, as on the device: the k padding must hold zeros (Nd2Nz writes them).
  std::vector<float> af(uint64_t(Mb) * 16 * Kb * 16), bf(uint64_t(Kb) * 16 * Nb * 16);
  uint32_t K = Kb * 16, N = Nb * 16;
  for (uint32_t mb = 0; mb < Mb; ++mb)
    for (uint32_t kb = 0; kb < Kb; ++kb)
      for (int r = 0; r < 16; ++r)
        for (int e = 0; e < 16; ++e) af[(mb * 16 + r) * K + kb * 16 + e] = sim::to_f(A[(mb * Kb + kb) * 256 + r * 16 + e]);
  for (uint32_t kb = 0; kb < Kb; ++kb)
    for (uint32_t nb = 0; nb < Nb; ++nb)
      for (int n = 0; n < 16; ++n)
        for (int k = 0; k < 16; ++k) bf[(kb * 16 + k) * N + nb * 16 + n] = sim::to_f(B[(kb * Nb + nb) * 256 + n * 16 + k]);
  for (uint32_t m = 0; m < Mb * 16; ++m)
    for (uint32_t n = 0; n < N; ++n) {
      float acc = 0;
      for (uint32_t k = 0; k < K; ++k) acc += af[m * K + k] * bf[k * N + n];
      float &out = C[((n / 16) * Mb + m / 16) * 256 + (m % 16) * 16 + n % 16];
      out = p.cmatrixInitVal ? acc : out + acc;
    }
}

// ---- L0C (Nz, f32) -> GM (ND), converting on the way ----
template <class Td, class Ts, const FixpipeConfig &cfg = CFG_ROW_MAJOR>
inline void Fixpipe(const GlobalTensor<Td> &dst, const LocalTensor<Ts> &src, const FixpipeParamsV220 &p) {
  const char *api = "Fixpipe(L0C->GM)";
  static_assert(std::is_same_v<Ts, float>, "Fixpipe source here is the f32 L0C");
  sim::need_mem(api, "source", src.mem(), {sim::Mem::L0C});
  if (cfg.format != CO2Layout::ROW_MAJOR) sim::fail(api, "only the ND (CFG_ROW_MAJOR) output is modelled");
  if (p.mSize == 0 || p.nSize == 0) sim::fail(api, sim::fmt("empty mSize=", p.mSize, " nSize=", p.nSize));
  if (p.srcStride % 16 || p.srcStride < p.mSize)
    sim::fail(api, sim::fmt("srcStride ", p.srcStride, " must be a multiple of 16 and at least mSize ", p.mSize));
  if (p.dstStride < p.nSize) sim::fail(api, sim::fmt("dstStride ", p.dstStride, " is below nSize ", p.nSize, ": output rows would overlap"));
  if (p.ndNum != 1) sim::fail(api, "ndNum other than 1 is not modelled");
  QuantMode_t want = std::is_same_v<Td, float> ? NoQuant : std::is_same_v<Td, half> ? F322F16 : F322BF16;
  if (!(std::is_same_v<Td, float> || std::is_same_v<Td, half> || std::is_same_v<Td, bfloat16_t>))
    sim::fail(api, "output type must be float, half or bfloat16_t");
  if (p.quantPre != want)
    sim::fail(api, sim::fmt("quantPre ", int(p.quantPre), " does not convert f32 to ", sim::type_name<Td>(), " (expected ", int(want), ")"));
  uint32_t Nb = (p.nSize + 15) / 16;
  const float *s = src.ptr(api, 0, uint64_t(Nb - 1) * p.srcStride * 16 + uint64_t(p.mSize) * 16);
  std::vector<Td> row(p.nSize);
  for (uint32_t r = 0; r < p.mSize; ++r) {
    for (uint32_t c = 0; c < p.nSize; ++c) {
      float v = s[uint64_t(c / 16) * p.srcStride * 16 + r * 16 + c % 16];
      if (p.reluEn && v < 0) v = 0;
      row[c] = sim::from_f<Td>(v);
    }
    std::memcpy(dst.bytes(api, uint64_t(r) * p.dstStride * sizeof(Td), p.nSize * sizeof(Td), true), row.data(), p.nSize * sizeof(Td));
  }
}

// ---- fill of L1 / L0A / L0B with a constant (InitConstValue) ----
// [U] unit of blockNum and dstGap taken as 32-byte blocks; the docs' exact unit on dav-c220 is unverified.
template <class T>
struct InitConstValueParams {
  InitConstValueParams() = default;
  InitConstValueParams(uint16_t repeat, uint16_t blocks, uint16_t gap, T value)
      : repeatTimes(repeat), blockNum(blocks), dstGap(gap), initValue(value) {}
  uint16_t repeatTimes = 0;
  uint16_t blockNum = 0;
  uint16_t dstGap = 0;
  T initValue = T(0);
};
template <class T>
inline void InitConstValue(const LocalTensor<T> &dst, const InitConstValueParams<T> &p) {
  const char *api = "InitConstValue";
  sim::need_mem(api, "destination", dst.mem(), {sim::Mem::L1, sim::Mem::L0A, sim::Mem::L0B});
  sim::need_aligned(api, "destination", dst, 32);
  constexpr uint32_t per = 32 / sizeof(T);
  for (uint32_t r = 0; r < p.repeatTimes; ++r) {
    T *d = dst.ptr(api, uint64_t(r) * (p.blockNum + p.dstGap) * per, uint64_t(p.blockNum) * per);
    for (uint32_t e = 0; e < uint32_t(p.blockNum) * per; ++e) d[e] = p.initValue;
  }
}

}  // namespace AscendC

#endif  // ASCENDC_SIM_COPY_H
