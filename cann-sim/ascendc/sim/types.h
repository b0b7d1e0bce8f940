// Element types of the kernel API (`half`, `bfloat16_t`) and conversions with the rounding the hardware
// applies (round to nearest even unless a Cast names another mode).
#ifndef ASCENDC_SIM_TYPES_H
#define ASCENDC_SIM_TYPES_H

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

using half = _Float16;

/// bfloat16 as the 16 high bits of an IEEE f32; arithmetic goes through float.
struct bfloat16_t {
  uint16_t bits = 0;
  bfloat16_t() = default;
  bfloat16_t(float f) { bits = from_float(f); }  // NOLINT: implicit like the device type
  operator float() const {                       // NOLINT
    uint32_t u = static_cast<uint32_t>(bits) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
  }
  static uint16_t from_float(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);  // quiet NaN
    u += 0x7fffu + ((u >> 16) & 1u);
    return static_cast<uint16_t>(u >> 16);
  }
};

namespace AscendC {
namespace sim {
template <class T>
inline float to_f(T v) {
  return static_cast<float>(v);
}
template <class T>
inline T from_f(float v) {
  if constexpr (std::is_same_v<T, bfloat16_t>)
    return bfloat16_t(v);
  else
    return static_cast<T>(v);
}
template <class T>
constexpr const char *type_name() {
  if constexpr (std::is_same_v<T, half>) return "half";
  else if constexpr (std::is_same_v<T, bfloat16_t>) return "bfloat16_t";
  else if constexpr (std::is_same_v<T, float>) return "float";
  else if constexpr (std::is_same_v<T, int32_t>) return "int32_t";
  else if constexpr (std::is_same_v<T, uint32_t>) return "uint32_t";
  else if constexpr (std::is_same_v<T, int16_t>) return "int16_t";
  else if constexpr (std::is_same_v<T, uint16_t>) return "uint16_t";
  else if constexpr (std::is_same_v<T, int8_t>) return "int8_t";
  else if constexpr (std::is_same_v<T, uint8_t>) return "uint8_t";
  else return "?";
}
}  // namespace sim
}  // namespace AscendC

#endif  // ASCENDC_SIM_TYPES_H
