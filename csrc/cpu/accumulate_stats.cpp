// CPU accumulate_stats: each feature is owned by exactly one thread and summed in
// token order, so results are bit-identical whatever the thread count.
#include <algorithm>
#include <cmath>
#include <vector>

#include "dtype_access.h"
#include "featprune/kernels.h"

namespace featprune {
namespace {

// Features per task: small enough to give every thread work for narrow models,
// large enough that each token row is read in contiguous runs.
constexpr int64_t kFeatureChunk = 128;

template <typename Tag>
void accumulate_chunk(const AccumulateStatsArgs& a, int64_t f0, int64_t f1, std::vector<uint8_t>& counted) {
  using S = typename Tag::storage;
  const S* x = static_cast<const S*>(a.x.data);
  const int64_t width = f1 - f0;
  // double accumulators: a few million tokens per feature stay accurate.
  std::vector<double> sum(width, 0.0);
  std::vector<float> amax(width, 0.0f);
  for (int64_t t = 0; t < a.x.rows; ++t) {
    if (!counted[t]) continue;
    const S* row = x + t * a.x.row_stride;
    for (int64_t f = 0; f < width; ++f) {
      const float v = Tag::load(row + (f0 + f) * a.x.col_stride);
      sum[f] += double(v) * double(v);
      amax[f] = std::max(amax[f], std::fabs(v));
    }
  }
  for (int64_t f = 0; f < width; ++f) {
    a.sumsq[f0 + f] = float(double(a.sumsq[f0 + f]) + sum[f]);
    if (a.absmax) a.absmax[f0 + f] = std::max(a.absmax[f0 + f], amax[f]);
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
  const int64_t n_chunks = (a.x.cols + kFeatureChunk - 1) / kFeatureChunk;
  cpu::dispatch_dtype(a.x.dtype, [&](auto tag) {
    using Tag = decltype(tag);
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t c = 0; c < n_chunks; ++c) {
      const int64_t f0 = c * kFeatureChunk;
      const int64_t f1 = std::min(a.x.cols, f0 + kFeatureChunk);
      accumulate_chunk<Tag>(a, f0, f1, counted);
    }
  });
}

}  // namespace featprune
