// Shared by the x86 SIMD paths of the CPU prune_rows (prune_rows.cpp: AVX2 and the dispatch;
// prune_rows_avx512.cpp: AVX-512): per-call data, per-thread scratch, and the threshold selection of an
// unstructured row. Internal to csrc/cpu; not part of the kernel API.
#pragma once

#include <cstdint>
#include <vector>

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
  // running mean relative error of that ratio as a predictor: see predicted_bracket() in prune_rows.cpp.
  float ratio = 0.0f, ratio_err = 1.0f;
  int rows_seen = 0;
  explicit Scratch(int64_t cols, size_t samples)
      : keys(size_t(cols) + kPad), a(size_t(cols) + kPad), b(size_t(cols) + kPad), sample(samples + kPad),
        hist(4 * 256), flags(size_t(cols) + kPad) {}
};

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

// One pass over a row's keys: counts the keys < lo into *n_below and appends the keys in [lo, hi]
// to dst (which has room for n + kPad); returns how many it appended. Also prefetches the next
// row's weights (prefetch, prefetch_bytes), one cache line per vector of keys.
using BracketPass = size_t (*)(const uint32_t* keys, size_t n, uint32_t lo, uint32_t hi, uint32_t* dst,
                               int64_t* n_below, const char* prefetch, size_t prefetch_bytes);

// An unstructured row's threshold key v from its keys (s.keys[0, cols)) and mean score: the row
// prunes the keys < v, and the keys == v in the columns < *cut (ties go to the lower columns; *cut
// is cols when every key == v goes). A bracket pass (the range predicted from the previous rows'
// threshold / mean score, else a sample's), then a radix select over the bracketed few: exact
// whatever the bracket. Updates the prediction; prefetches the next row's weights (elem bytes
// each) during the bracket pass when prefetch_next. The selection itself is AVX2 code.
uint32_t row_threshold(const PruneRowsArgs& a, const CallData& cd, Scratch& s, int64_t row, size_t elem, float mean,
                       bool prefetch_next, BracketPass pass, int64_t* cut);

// AVX-512 rows (prune_rows_avx512.cpp); contiguous rows only; call only where avx512_usable().
bool avx512_usable();
template <DType D>
FEATPRUNE_AVX512 void unstructured_row_avx512(const PruneRowsArgs& a, const CallData& cd, Scratch& s, int64_t row, uint8_t* flags);
template <DType D, int M>
FEATPRUNE_AVX512 void n_m_row_avx512(const PruneRowsArgs& a, const CallData& cd, int64_t row, uint8_t* flags);

}  // namespace featprune::x86
#endif  // FEATPRUNE_X86_SIMD
