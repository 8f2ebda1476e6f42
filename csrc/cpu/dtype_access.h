// Typed element access for the CPU kernels: one template per storage type, so the
// hot loops are specialised per dtype by the dispatch below.
#pragma once

#include <cstdint>

#include "featprune/score.h"
#include "featprune/tensor.h"

namespace featprune {
namespace cpu {

struct F32 {
  using storage = float;
  static float load(const float* p) { return *p; }
};
struct F16 {
  using storage = uint16_t;
  static float load(const uint16_t* p) { return fp16_bits_to_float(*p); }
};
struct BF16 {
  using storage = uint16_t;
  static float load(const uint16_t* p) { return bf16_bits_to_float(*p); }
};

// Calls fn(Tag{}) with the tag type matching `dtype`.
template <typename Fn>
void dispatch_dtype(DType dtype, Fn&& fn) {
  switch (dtype) {
    case DType::kFloat32: fn(F32{}); return;
    case DType::kFloat16: fn(F16{}); return;
    case DType::kBFloat16: fn(BF16{}); return;
  }
  throw Error("featprune: unsupported dtype code " + std::to_string(int(dtype)));
}

}  // namespace cpu
}  // namespace featprune
