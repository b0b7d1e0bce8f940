// Vector epilogue pieces shared by the kernels: GELU (tanh approximation) on f32 UB data and the
// conversion of f32 results to the output type.
#ifndef IDEFICS3_KERNELS_EPILOGUE_H
#define IDEFICS3_KERNELS_EPILOGUE_H

#include <type_traits>

#include "kernel_operator.h"

namespace idefics3 {

/// -inf for masks and empty softmax rows (a compiler builtin: no <cmath> needed in device code).
constexpr float kNegInf = -__builtin_inff();

/// x <- x * sigmoid(2u), u = sqrt(2/pi) (x + 0.044715 x^3): the same value as 0.5 x (1 + tanh u), from
/// the Exp and Div the vector unit has (no Tanh in the basic API). tmp holds n floats.
__aicore__ inline void GeluTanh(const AscendC::LocalTensor<float> &x, const AscendC::LocalTensor<float> &tmp,
                                int32_t n) {
  AscendC::Mul(tmp, x, x, n);
  AscendC::Mul(tmp, tmp, x, n);
  AscendC::Muls(tmp, tmp, 0.044715f, n);
  AscendC::Add(tmp, tmp, x, n);
  AscendC::Muls(tmp, tmp, -1.5957691216057308f, n);  // -2 sqrt(2/pi)
  AscendC::Exp(tmp, tmp, n);
  AscendC::Adds(tmp, tmp, 1.0f, n);
  AscendC::Div(x, x, tmp, n);
}

/// dst <- src converted to To (round to nearest even); a plain copy when To is float.
template <class To>
__aicore__ inline void ToOutput(const AscendC::LocalTensor<To> &dst, const AscendC::LocalTensor<float> &src,
                                uint32_t n) {
  if constexpr (std::is_same_v<To, float>) {
    AscendC::Adds(dst, src, 0.0f, static_cast<int32_t>(n));
  } else {
    AscendC::Cast(dst, src, AscendC::RoundMode::CAST_RINT, n);
  }
}

__aicore__ inline uint32_t Align(uint32_t x, uint32_t a) { return (x + a - 1) / a * a; }
__aicore__ inline uint32_t Min(uint32_t a, uint32_t b) { return a < b ? a : b; }

}  // namespace idefics3

#endif  // IDEFICS3_KERNELS_EPILOGUE_H
