// Shared by the x86 SIMD paths of the CPU prune_rows (prune_rows.cpp: AVX2 and the dispatch;
// prune_rows_avx512.cpp: AVX-512): per-call data, per-thread scratch, the predicted bracket and the
// exact selection over a row's keys. Internal to csrc/cpu; not part of the kernel API.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "featprune/dtype_traits.h"
#include "featprune/kernels.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define FEATPRUNE_X86_SIMD 1
#define FEATPRUNE_AVX2 __attribute__((target("avx2,f16c,popcnt")))
#define FEATPRUNE_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,f16c,popcnt")))
#endif

#ifdef FEATPRUNE_X86_SIMD
namespace featprune::x86 {

constexpr size_t kPad = 32;  // compress8 writes, and order_stats reads, up to 32 keys past the count
constexpr int64_t kMinSampledCols = 512;  // narrower rows go straight to the radix select
constexpr int64_t kSamples = 64;
constexpr double kSpread = 2.0;  // bracket half-width in standard deviations of the sample rank

// Read-only per call, shared by the threads.
struct CallData {
  std::vector<uint32_t> prot_or;   // per column: 0, or 0xFFFFFFFF where protected
  bool any_protected = false;
  std::vector<uint16_t> prot_bits; // bit j % 16 of entry j / 16: column j is protected (AVX-512 N:M)
  std::vector<float> abs_scale;    // |col_scale| (a -0.0 scale becomes +0.0), zero-padded by kPad
  std::vector<int64_t> sample_pos; // fixed pseudo-random columns (empty: no sampling)
  int64_t sample_lo = -1, sample_hi = 0;  // bracket ranks in the sorted sample (-1 / size: open)
};

struct Scratch {
  std::vector<uint32_t> keys, a, b, sample, hist;
  std::vector<uint8_t> flags;
  const char* prefetch = nullptr;  // the next row's weights, fetched during this row's selection
  size_t prefetch_bytes = 0;
  // Threshold / mean score of the rows this thread selected so far (a running average), and the
  // running mean relative error of that ratio as a predictor: see predicted_bracket().
  float ratio = 0.0f, ratio_err = 1.0f;
  int rows_seen = 0;
  explicit Scratch(int64_t cols, size_t samples)
      : keys(size_t(cols) + kPad), a(size_t(cols) + kPad), b(size_t(cols) + kPad), sample(samples + kPad),
        hist(4 * 256), flags(size_t(cols) + kPad) {}
};

template <DType D>
inline float load1(const void* base, int64_t j) {
  if constexpr (D == DType::kFloat32) return static_cast<const float*>(base)[j];
  else if constexpr (D == DType::kFloat16) return fp16_bits_to_float(static_cast<const uint16_t*>(base)[j]);
  else return bf16_bits_to_float(static_cast<const uint16_t*>(base)[j]);
}

template <DType D>
inline void zero1(void* base, int64_t j) {
  if constexpr (D == DType::kFloat32) static_cast<float*>(base)[j] = 0.0f;
  else static_cast<uint16_t*>(base)[j] = 0;
}

inline const char* row_ptr(const PruneRowsArgs& a, int64_t row, size_t elem) {
  return static_cast<const char*>(a.weight.data) + row * a.weight.row_stride * int64_t(elem);
}

// For the one-pass (N:M) rows: call at every column j of the pass; once per 64 bytes it prefetches the
// next row's line at the same offset (next: row_ptr of the next row, or nullptr for the last row).
// Without it the pass waits for lines, e.g. the ones another core wrote last; with it, measured 2x
// faster on two threads (bench/RESULTS.md, "AVX-512 path").
inline void prefetch_next_row(const char* next, int64_t j, size_t elem) {
  if (next && (j * int64_t(elem)) % 64 == 0) _mm_prefetch(next + j * int64_t(elem), _MM_HINT_T0);
}

inline float key_float(uint32_t key) {
  float f;
  std::memcpy(&f, &key, sizeof f);
  return f;
}

inline uint32_t float_key(float f) {
  uint32_t key;
  std::memcpy(&key, &f, sizeof key);
  return key;
}

// Wanda's threshold of a row, divided by the row's mean score, is nearly the same from row to row
// (the rows' score distributions differ mostly by scale), so previous rows predict this row's
// threshold far better than a 64-key sample does: the bracket around it holds a few % of the row
// instead of ~28%, and the radix select after it has little left to do. Only a speed-up: a miss
// (the k-th key outside the bracket) falls back to the sample's bracket, the result is the same.
inline bool predicted_bracket(const Scratch& s, float mean, uint32_t* lo, uint32_t* hi) {
  if (s.rows_seen < 4 || !(s.ratio_err < 0.08f) || !(mean > 0.0f) || !std::isfinite(mean)) return false;
  const float t = s.ratio * mean, width = std::max(0.01f, 3.0f * s.ratio_err);
  *lo = float_key(t * (1.0f - width));
  *hi = float_key(t * (1.0f + width));
  return true;
}

inline void update_ratio(Scratch& s, float mean, uint32_t threshold) {
  if (threshold >= 0x7F800000u || !(mean > 0.0f) || !std::isfinite(mean)) return;  // inf, NaN, protected
  const float r = key_float(threshold) / mean;
  if (s.rows_seen == 0) {
    s.ratio = r;
  } else {
    const float err = std::fabs(r / s.ratio - 1.0f);  // NaN when ratio is 0: disables the prediction
    s.ratio_err = s.rows_seen == 1 ? err : 0.75f * s.ratio_err + 0.25f * err;
    s.ratio = 0.75f * s.ratio + 0.25f * r;
  }
  ++s.rows_seen;
}

// One pass over a row's keys: counts the keys < lo into *n_below and appends the keys in [lo, hi]
// to dst (which has room for n + kPad); returns how many it appended. Also prefetches the next
// row's weights (prefetch, prefetch_bytes), one cache line per vector of keys.
using BracketPass = size_t (*)(const uint32_t* keys, size_t n, uint32_t lo, uint32_t hi, uint32_t* dst,
                               int64_t* n_below, const char* prefetch, size_t prefetch_bytes);

// The key of 0-based rank `rank` among the row's keys (s.keys[0, cols)), how many keys are smaller
// and how many equal: a bracket pass (predicted [plo, phi] when `predicted`, else the sample's),
// then a radix select over the bracketed few. Exact whatever the bracket (AVX2 code).
void select_row(Scratch& s, const CallData& cd, int64_t cols, int64_t rank, uint32_t* threshold, int64_t* n_less,
                int64_t* n_equal, bool predicted, uint32_t plo, uint32_t phi, BracketPass pass);

// Pruned: keys < v, and the first k - n_less keys == v in column order. Returns the column before
// which keys == v are pruned (cols when all of them are: the common case).
int64_t tie_cut(const uint32_t* keys, int64_t cols, uint32_t v, int64_t k, int64_t n_less, int64_t n_equal);

// AVX-512 rows (prune_rows_avx512.cpp); contiguous rows only; call only where avx512_usable().
bool avx512_usable();
template <DType D>
FEATPRUNE_AVX512 void unstructured_row_avx512(const PruneRowsArgs& a, const CallData& cd, Scratch& s, int64_t row, uint8_t* flags);
template <DType D, int M>
FEATPRUNE_AVX512 void n_m_row_avx512(const PruneRowsArgs& a, const CallData& cd, int64_t row, uint8_t* flags);

}  // namespace featprune::x86
#endif  // FEATPRUNE_X86_SIMD
