// Vector unit, count forms: Add Sub Mul Div Max Min, Adds Muls Maxs Mins, Exp Abs, Axpy, Duplicate, Cast,
// ReduceMax / ReduceSum. Facts: asc-devkit docs for each call (count form: operands 32-byte aligned in UB;
// half and float for arithmetic, int32 for add/sub/max/min; bfloat16_t only through Cast on the 910B);
// ascendc-notes.md ("Vector ops"). Arithmetic is done in f32 and rounded to the element type.
#ifndef ASCENDC_SIM_VECTOR_H
#define ASCENDC_SIM_VECTOR_H

#include "memory.h"

namespace AscendC {

enum class RoundMode : int { CAST_NONE = 0, CAST_RINT, CAST_FLOOR, CAST_CEIL, CAST_ROUND, CAST_TRUNC, CAST_ODD };

namespace sim {
template <class T>
constexpr bool vec_float = std::is_same_v<T, half> || std::is_same_v<T, float>;
template <class T>
constexpr bool vec_arith = vec_float<T> || std::is_same_v<T, int32_t> || std::is_same_v<T, int16_t>;

template <class T>
T *vec_operand(const char *api, const char *what, const LocalTensor<T> &t, uint32_t count) {
  need_mem(api, what, t.mem(), {Mem::UB});
  if (t.offset() % 32) fail(api, fmt(what, " at UB offset ", t.offset(), " is not 32-byte aligned"));
  return t.ptr(api, 0, count);
}
inline void need_count(const char *api, int32_t count) {
  if (count <= 0) fail(api, fmt("count ", count, " must be positive"));
}
template <class T, class F>
void binary(const char *api, const LocalTensor<T> &d, const LocalTensor<T> &a, const LocalTensor<T> &b, int32_t n, F f) {
  need_count(api, n);
  T *pd = vec_operand(api, "dst", d, n);
  const T *pa = vec_operand(api, "src0", a, n);
  const T *pb = vec_operand(api, "src1", b, n);
  for (int32_t i = 0; i < n; ++i) {
    if constexpr (std::is_integral_v<T>)
      pd[i] = static_cast<T>(f(pa[i], pb[i]));
    else
      pd[i] = from_f<T>(f(to_f(pa[i]), to_f(pb[i])));
  }
}
template <class T, class F>
void unary(const char *api, const LocalTensor<T> &d, const LocalTensor<T> &a, int32_t n, F f) {
  need_count(api, n);
  T *pd = vec_operand(api, "dst", d, n);
  const T *pa = vec_operand(api, "src", a, n);
  for (int32_t i = 0; i < n; ++i) {
    if constexpr (std::is_integral_v<T>)
      pd[i] = static_cast<T>(f(pa[i]));
    else
      pd[i] = from_f<T>(f(to_f(pa[i])));
  }
}
}  // namespace sim

#define ASCENDC_SIM_BINARY(NAME, TRAIT, EXPR)                                                              \
  template <class T>                                                                                       \
  inline void NAME(const LocalTensor<T> &dst, const LocalTensor<T> &src0, const LocalTensor<T> &src1,      \
                   const int32_t &count) {                                                                 \
    static_assert(sim::TRAIT<T>, #NAME ": element type not supported by the vector unit");                 \
    sim::binary(#NAME, dst, src0, src1, count, [](auto x, auto y) { return EXPR; });                       \
  }
ASCENDC_SIM_BINARY(Add, vec_arith, x + y)
ASCENDC_SIM_BINARY(Sub, vec_arith, x - y)
ASCENDC_SIM_BINARY(Mul, vec_arith, x * y)
ASCENDC_SIM_BINARY(Div, vec_float, x / y)
ASCENDC_SIM_BINARY(Max, vec_arith, (x > y ? x : y))
ASCENDC_SIM_BINARY(Min, vec_arith, (x < y ? x : y))
#undef ASCENDC_SIM_BINARY

#define ASCENDC_SIM_SCALAR(NAME, TRAIT, EXPR)                                                               \
  template <class T, class U>                                                                               \
  inline void NAME(const LocalTensor<T> &dst, const LocalTensor<T> &src, const U &scalarValue,              \
                   const int32_t &count) {                                                                  \
    static_assert(sim::TRAIT<T>, #NAME ": element type not supported by the vector unit");                  \
    const float s = sim::to_f(static_cast<T>(scalarValue));                                                 \
    sim::unary(#NAME, dst, src, count, [s](auto x) { return EXPR; });                                       \
  }
ASCENDC_SIM_SCALAR(Adds, vec_arith, x + s)
ASCENDC_SIM_SCALAR(Muls, vec_arith, x * s)
ASCENDC_SIM_SCALAR(Maxs, vec_arith, (x > s ? x : s))
ASCENDC_SIM_SCALAR(Mins, vec_arith, (x < s ? x : s))
#undef ASCENDC_SIM_SCALAR

template <class T>
inline void Exp(const LocalTensor<T> &dst, const LocalTensor<T> &src, const int32_t &count) {
  static_assert(sim::vec_float<T>, "Exp: half or float");
  sim::unary("Exp", dst, src, count, [](float x) { return std::exp(x); });
}
template <class T>
inline void Abs(const LocalTensor<T> &dst, const LocalTensor<T> &src, const int32_t &count) {
  static_assert(sim::vec_float<T>, "Abs: half or float");
  sim::unary("Abs", dst, src, count, [](float x) { return std::fabs(x); });
}
/// dst += src * scalar.
template <class T, class U>
inline void Axpy(const LocalTensor<T> &dst, const LocalTensor<U> &src, const U scalarValue, const int32_t &count) {
  static_assert(sim::vec_float<T> && sim::vec_float<U>, "Axpy: half or float");
  const char *api = "Axpy";
  sim::need_count(api, count);
  T *d = sim::vec_operand(api, "dst", dst, count);
  const U *s = sim::vec_operand(api, "src", src, count);
  float a = sim::to_f(scalarValue);
  for (int32_t i = 0; i < count; ++i) d[i] = sim::from_f<T>(sim::to_f(d[i]) + sim::to_f(s[i]) * a);
}
template <class T>
inline void Duplicate(const LocalTensor<T> &dst, const T &scalarValue, const int32_t &count) {
  static_assert(sim::vec_arith<T> || std::is_same_v<T, uint16_t> || std::is_same_v<T, uint32_t>, "Duplicate: element type");
  const char *api = "Duplicate";
  sim::need_count(api, count);
  T *d = sim::vec_operand(api, "dst", dst, count);
  for (int32_t i = 0; i < count; ++i) d[i] = scalarValue;
}

template <class Td, class Ts>
inline void Cast(const LocalTensor<Td> &dst, const LocalTensor<Ts> &src, const RoundMode &mode, const uint32_t count) {
  const char *api = "Cast";
  constexpr bool ok = (std::is_same_v<Ts, bfloat16_t> && std::is_same_v<Td, float>) ||
                      (std::is_same_v<Ts, float> && std::is_same_v<Td, bfloat16_t>) ||
                      (std::is_same_v<Ts, half> && std::is_same_v<Td, float>) ||
                      (std::is_same_v<Ts, float> && std::is_same_v<Td, half>) ||
                      (std::is_same_v<Ts, int32_t> && std::is_same_v<Td, float>) ||
                      (std::is_same_v<Ts, float> && std::is_same_v<Td, int32_t>);
  static_assert(ok, "Cast: conversion not modelled (bf16<->f32, f16<->f32, i32<->f32)");
  sim::need_count(api, static_cast<int32_t>(count));
  if constexpr (std::is_same_v<Td, bfloat16_t>) {
    if (mode == RoundMode::CAST_NONE) sim::fail(api, "float -> bfloat16_t needs a rounding mode (CAST_RINT, ...), not CAST_NONE");
  }
  if constexpr (std::is_same_v<Td, float>) {
    if (mode != RoundMode::CAST_NONE) sim::fail(api, sim::fmt("widening to float takes CAST_NONE, not mode ", int(mode)));
  }
  if (mode != RoundMode::CAST_NONE && mode != RoundMode::CAST_RINT && mode != RoundMode::CAST_TRUNC &&
      mode != RoundMode::CAST_FLOOR && mode != RoundMode::CAST_CEIL && mode != RoundMode::CAST_ROUND)
    sim::fail(api, sim::fmt("rounding mode ", int(mode), " not modelled"));
  Td *d = sim::vec_operand(api, "dst", dst, count);
  const Ts *s = sim::vec_operand(api, "src", src, count);
  for (uint32_t i = 0; i < count; ++i) {
    float v = sim::to_f(s[i]);
    if constexpr (std::is_same_v<Td, float>) {
      d[i] = v;
    } else if constexpr (std::is_same_v<Td, int32_t>) {
      float r = mode == RoundMode::CAST_FLOOR ? std::floor(v) : mode == RoundMode::CAST_CEIL ? std::ceil(v)
                : mode == RoundMode::CAST_TRUNC ? std::trunc(v) : mode == RoundMode::CAST_ROUND ? std::round(v)
                                                                                                : std::nearbyint(v);
      d[i] = static_cast<int32_t>(r);
    } else {
      // Narrowing: round to nearest even (CAST_RINT / CAST_NONE); truncation keeps the high bits.
      if (mode == RoundMode::CAST_TRUNC && std::is_same_v<Td, bfloat16_t>) {
        uint32_t u;
        std::memcpy(&u, &v, 4);
        bfloat16_t b;
        b.bits = static_cast<uint16_t>(u >> 16);
        std::memcpy(&d[i], &b, sizeof b);
      } else if (mode == RoundMode::CAST_NONE || mode == RoundMode::CAST_RINT) {
        d[i] = sim::from_f<Td>(v);
      } else {
        sim::fail(api, sim::fmt("rounding mode ", int(mode), " not modelled for ", sim::type_name<Td>()));
      }
    }
  }
}

namespace sim {
template <class T, class F>
void reduce(const char *api, const LocalTensor<T> &dst, const LocalTensor<T> &src, const LocalTensor<T> &work,
            int32_t count, F f, float init) {
  need_count(api, count);
  T *d = vec_operand(api, "dst", dst, 1);
  const T *s = vec_operand(api, "src", src, count);
  work.check(api);
  need_mem(api, "workLocal", work.mem(), {Mem::UB});
  // Pairwise, as a tree reduction would: the order of f32 sums stays close to the device's.
  std::vector<float> v(count);
  for (int32_t i = 0; i < count; ++i) v[i] = to_f(s[i]);
  size_t n = v.size();
  while (n > 1) {
    size_t h = (n + 1) / 2;
    for (size_t i = 0; i + h < n; ++i) v[i] = f(v[i], v[i + h]);
    n = h;
  }
  d[0] = from_f<T>(count ? v[0] : init);
}
}  // namespace sim

template <class T>
inline void ReduceMax(const LocalTensor<T> &dst, const LocalTensor<T> &src, const LocalTensor<T> &workLocal,
                      const int32_t count, bool calIndex = false) {
  static_assert(sim::vec_float<T>, "ReduceMax: half or float");
  if (calIndex) sim::fail("ReduceMax", "calIndex is not modelled");
  sim::reduce("ReduceMax", dst, src, workLocal, count, [](float a, float b) { return a > b ? a : b; }, -INFINITY);
}
template <class T>
inline void ReduceSum(const LocalTensor<T> &dst, const LocalTensor<T> &src, const LocalTensor<T> &workLocal,
                      const int32_t count) {
  static_assert(sim::vec_float<T>, "ReduceSum: half or float");
  sim::reduce("ReduceSum", dst, src, workLocal, count, [](float a, float b) { return a + b; }, 0.0f);
}

}  // namespace AscendC

#endif  // ASCENDC_SIM_VECTOR_H
