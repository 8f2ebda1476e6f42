// CPU accumulate_stats: each feature is owned by exactly one thread and summed in
// token order, so results are bit-identical whatever the thread count.
#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "featprune/dtype_traits.h"
#include "featprune/kernels.h"

#ifdef FEATPRUNE_OPENMP
#include <omp.h>
#endif

namespace featprune {
namespace {

// Each task owns a contiguous feature range and walks the tokens in order, so a
// feature's sum never depends on how features were split among threads. Ranges
// are wide (about F / threads) so each token row is read in long contiguous
// runs that the hardware prefetcher follows.
constexpr int64_t kMinFeatureChunk = 64;

// Tokens summed in fp32 before folding into the double total: the fp32 inner
// loop vectorises, and a short block keeps its rounding error small.
constexpr int64_t kTokenBlock = 64;
constexpr int64_t kFeatureTile = 1024;  // 2 x 4 KiB of accumulators: stays in L1

// The one inner loop: sum of squares and running max |x| over n features of a
// token row with element stride `cs`. The max propagates NaN (the rule in
// kernels.h); it vectorises like a plain max (compare, unordered-compare, blend).
template <typename Tag>
inline void accumulate_row(const typename Tag::storage* __restrict row, int64_t cs, float* __restrict sum,
                           float* __restrict amax, int64_t n) {
  for (int64_t f = 0; f < n; ++f) {
    const float v = Tag::load(row + f * cs);
    sum[f] += v * v;
    amax[f] = nan_max(amax[f], std::fabs(v));
  }
}

// Contiguous fp32/bf16 rows: the same loop (stride 1, inlined), compiled twice (AVX2
// and the portable baseline) and picked at load time, so a pip build stays portable
// yet uses 8-wide vectors where the CPU has them. Plain functions, because
// target_clones does not apply to templates.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define FEATPRUNE_MULTIVERSION __attribute__((target_clones("avx2", "default")))
#else
#define FEATPRUNE_MULTIVERSION
#endif

FEATPRUNE_MULTIVERSION
void row_f32(const float* row, float* sum, float* amax, int64_t n) { accumulate_row<F32>(row, 1, sum, amax, n); }

FEATPRUNE_MULTIVERSION
void row_bf16(const uint16_t* row, float* sum, float* amax, int64_t n) {
  accumulate_row<BF16>(row, 1, sum, amax, n);
}

template <typename Tag>
void accumulate_contiguous_row(const typename Tag::storage* row, float* sum, float* amax, int64_t n) {
  if constexpr (std::is_same_v<Tag, F32>) {
    row_f32(row, sum, amax, n);
  } else if constexpr (std::is_same_v<Tag, BF16>) {
    row_bf16(row, sum, amax, n);
  } else {
    accumulate_row<Tag>(row, 1, sum, amax, n);
  }
}

template <typename Tag>
void accumulate_chunk(const AccumulateStatsArgs& a, int64_t f0, int64_t f1, const std::vector<uint8_t>& counted) {
  using S = typename Tag::storage;
  const S* x = static_cast<const S*>(a.x.data);
  const int64_t width = f1 - f0, cs = a.x.col_stride;
  std::vector<float> block_sum_buf(width), amax_buf(width, 0.0f);
  std::vector<double> total(width, 0.0);
  // __restrict: for fp32 input the compiler must otherwise assume x may alias
  // these float buffers, and would not vectorise the inner loop.
  float* __restrict block_sum = block_sum_buf.data();
  float* __restrict amax = amax_buf.data();
  for (int64_t t0 = 0; t0 < a.x.rows; t0 += kTokenBlock) {
    std::fill(block_sum, block_sum + width, 0.0f);
    const int64_t t1 = std::min(a.x.rows, t0 + kTokenBlock);
    if (cs == 1) {
      // Feature tiles keep the tile's sums and maxima in L1 while 64 token rows stream by.
      for (int64_t ft = 0; ft < width; ft += kFeatureTile) {
        const int64_t n = std::min(kFeatureTile, width - ft);
        for (int64_t t = t0; t < t1; ++t)
          if (counted[t])
            accumulate_contiguous_row<Tag>(x + t * a.x.row_stride + f0 + ft, block_sum + ft, amax + ft, n);
      }
    } else {
      for (int64_t t = t0; t < t1; ++t)
        if (counted[t]) accumulate_row<Tag>(x + t * a.x.row_stride + f0 * cs, cs, block_sum, amax, width);
    }
    for (int64_t f = 0; f < width; ++f) total[f] += block_sum[f];
  }
  for (int64_t f = 0; f < width; ++f) {
    a.sumsq[f0 + f] = float(double(a.sumsq[f0 + f]) + total[f]);
    if (a.absmax) a.absmax[f0 + f] = nan_max(a.absmax[f0 + f], amax[f]);
  }
}

}  // namespace

void accumulate_stats_cpu(const AccumulateStatsArgs& a) {
  FEATPRUNE_CHECK(a.x.rows >= 0 && a.x.cols >= 0, "accumulate_stats: x has a negative dimension");
  FEATPRUNE_CHECK(a.sumsq != nullptr, "accumulate_stats: sumsq is null");
  FEATPRUNE_CHECK(a.count != nullptr, "accumulate_stats: count is null");
  FEATPRUNE_CHECK(a.x.rows == 0 || a.x.cols == 0 || a.x.data != nullptr, "accumulate_stats: x is null");
  std::vector<uint8_t> counted(a.x.rows, 1);
  int64_t n_counted = a.x.rows;
  if (a.token_mask) {
    n_counted = 0;
    for (int64_t t = 0; t < a.x.rows; ++t) {
      counted[t] = a.token_mask[t] != 0;
      n_counted += counted[t];
    }
  }
  *a.count += n_counted;
  if (n_counted == 0 || a.x.cols == 0) return;
#ifdef FEATPRUNE_OPENMP
  const int64_t threads = omp_get_max_threads();
#else
  const int64_t threads = 1;
#endif
  const int64_t chunk = std::max(kMinFeatureChunk, (a.x.cols + threads - 1) / threads);
  const int64_t n_chunks = (a.x.cols + chunk - 1) / chunk;
  dispatch_dtype(
      a.x.dtype,
      [&](auto tag) {
        using Tag = decltype(tag);
#pragma omp parallel for schedule(static, 1)
        for (int64_t c = 0; c < n_chunks; ++c) {
          const int64_t f0 = c * chunk;
          const int64_t f1 = std::min(a.x.cols, f0 + chunk);
          accumulate_chunk<Tag>(a, f0, f1, counted);
        }
      },
      "accumulate_stats");
}

}  // namespace featprune
