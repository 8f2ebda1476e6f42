// Shared by CPU and CUDA code: dtype loads and the order-preserving score key.
#pragma once

#include <cstdint>
#include <cmath>
#include <cstring>

#if defined(__CUDACC__)
#define FEATPRUNE_HD __host__ __device__ __forceinline__
#else
#define FEATPRUNE_HD inline
#endif

namespace featprune {

FEATPRUNE_HD float bits_to_float(uint32_t b) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(b);
#else
  float f;
  std::memcpy(&f, &b, sizeof f);
  return f;
#endif
}

FEATPRUNE_HD uint32_t float_to_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t b;
  std::memcpy(&b, &f, sizeof b);
  return b;
#endif
}

FEATPRUNE_HD float bf16_bits_to_float(uint16_t h) { return bits_to_float(uint32_t(h) << 16); }

// IEEE binary16 -> binary32, exact (every half is representable as a float).
FEATPRUNE_HD float fp16_bits_to_float(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1Fu;
  uint32_t man = h & 0x3FFu;
  if (exp == 0x1Fu) return bits_to_float(sign | 0x7F800000u | (man << 13));  // inf / nan
  if (exp != 0) return bits_to_float(sign | ((exp + 112u) << 23) | (man << 13));
  if (man == 0) return bits_to_float(sign);  // signed zero
  // subnormal half: value = man * 2^-24, exact in fp32
  float v = float(man) * 5.9604644775390625e-08f;
  return sign ? -v : v;
}

// Scores are >= 0 (|w| * scale with scale >= 0), so their IEEE bits order like
// the values; NaN bits sort above +inf, as torch.sort puts NaN last.
// Protected columns get the largest key, so they are never among the k smallest.
constexpr uint32_t kProtectedKey = 0xFFFFFFFFu;

FEATPRUNE_HD uint32_t score_key(float w, float scale) {
  float s = fabsf(w) * scale;
  // Every NaN gets one key (above +inf): NaN payloads differ between CPU and GPU
  // multiplies, and NaNs must tie so both keep them in column order.
  if (s != s) return 0x7FFFFFFFu;
  return float_to_bits(s) & 0x7FFFFFFFu;  // clears the sign of a -0.0
}

}  // namespace featprune
