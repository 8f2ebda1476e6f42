// Shared by CPU and CUDA code: the order-preserving score key of prune_rows.
#pragma once

#include <cmath>
#include <cstdint>

#include "featprune/dtype_traits.h"

namespace featprune {

// Scores are >= 0 (|w| * scale with scale >= 0), so their IEEE bits order like
// the values; NaN bits sort above +inf, as torch.sort puts NaN last.
// Protected columns get the largest key, so they are never among the k smallest.
constexpr uint32_t kProtectedKey = 0xFFFFFFFFu;

FEATPRUNE_HOST_DEVICE uint32_t score_key(float w, float scale) {
  float s = fabsf(w) * scale;
  // Every NaN gets one key (above +inf): NaN payloads differ between CPU and GPU
  // multiplies, and NaNs must tie so both keep them in column order.
  if (s != s) return 0x7FFFFFFFu;
  return float_to_bits(s) & 0x7FFFFFFFu;  // clears the sign of a -0.0
}

}  // namespace featprune
