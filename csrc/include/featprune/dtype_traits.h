// The element types of the kernels, shared by the CPU and the CUDA code: exact
// bit-level conversions to fp32 and one trait per dtype. Everything here is
// FEATPRUNE_HOST_DEVICE (callable from host code and CUDA kernels) except the
// runtime dispatch, which is host only.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>

#include "featprune/tensor.h"

#if defined(__CUDACC__)
#include <cuda_fp16.h>
#define FEATPRUNE_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define FEATPRUNE_HOST_DEVICE inline
#endif

namespace featprune {

// ---- bit-level conversions ----------------------------------------------------

FEATPRUNE_HOST_DEVICE float bits_to_float(uint32_t b) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(b);
#else
  float f;
  std::memcpy(&f, &b, sizeof f);
  return f;
#endif
}

FEATPRUNE_HOST_DEVICE uint32_t float_to_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t b;
  std::memcpy(&b, &f, sizeof b);
  return b;
#endif
}

FEATPRUNE_HOST_DEVICE float bf16_bits_to_float(uint16_t h) { return bits_to_float(uint32_t(h) << 16); }

// IEEE binary16 -> binary32, exact (every half is representable as a float).
FEATPRUNE_HOST_DEVICE float fp16_bits_to_float(uint16_t h) {
#if defined(__CUDA_ARCH__)
  return __half2float(__ushort_as_half(h));  // one exact hardware conversion
#else
  uint32_t sign = uint32_t(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1Fu;
  uint32_t man = h & 0x3FFu;
  if (exp == 0x1Fu) return bits_to_float(sign | 0x7F800000u | (man << 13));  // inf / nan
  if (exp != 0) return bits_to_float(sign | ((exp + 112u) << 23) | (man << 13));
  if (man == 0) return bits_to_float(sign);  // signed zero
  // subnormal half: value = man * 2^-24, exact in fp32
  float v = float(man) * 5.9604644775390625e-08f;
  return sign ? -v : v;
#endif
}

// max that propagates NaN (like torch.maximum): NaN if either argument is NaN.
// `a` is the running value; once it is NaN it stays NaN.
FEATPRUNE_HOST_DEVICE float nan_max(float a, float b) { return (b > a || b != b) ? b : a; }

// ---- dtype traits ---------------------------------------------------------------
// storage: what one element is in memory. to_float: exact conversion.
// load(p): to_float(*p). kVec: elements per 16-byte vector load.

struct F32 {
  using storage = float;
  static constexpr DType kDType = DType::kFloat32;
  static constexpr int kVec = 4;
  static FEATPRUNE_HOST_DEVICE float to_float(float v) { return v; }
  static FEATPRUNE_HOST_DEVICE float load(const float* p) { return *p; }
};

struct F16 {
  using storage = uint16_t;
  static constexpr DType kDType = DType::kFloat16;
  static constexpr int kVec = 8;
  static FEATPRUNE_HOST_DEVICE float to_float(uint16_t b) { return fp16_bits_to_float(b); }
  static FEATPRUNE_HOST_DEVICE float load(const uint16_t* p) { return fp16_bits_to_float(*p); }
};

struct BF16 {
  using storage = uint16_t;
  static constexpr DType kDType = DType::kBFloat16;
  static constexpr int kVec = 8;
  static FEATPRUNE_HOST_DEVICE float to_float(uint16_t b) { return bf16_bits_to_float(b); }
  static FEATPRUNE_HOST_DEVICE float load(const uint16_t* p) { return bf16_bits_to_float(*p); }
};

// Host only: calls fn(F32{}) / fn(F16{}) / fn(BF16{}) for the runtime dtype.
template <class Fn>
void dispatch_dtype(DType dtype, Fn&& fn, const char* what = "kernel") {
  switch (dtype) {
    case DType::kFloat32: fn(F32{}); return;
    case DType::kFloat16: fn(F16{}); return;
    case DType::kBFloat16: fn(BF16{}); return;
  }
  throw Error(std::string("featprune: ") + what + ": unsupported dtype code " + std::to_string(int(dtype)));
}

}  // namespace featprune
