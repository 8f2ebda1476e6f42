// CUDA accumulate_stats: per-feature sum of squares and max |x| over counted
// tokens, plus the token count. Deterministic by construction:
//   * a block covers 32 features x 8 token lanes; lane ty visits tokens
//     t0+ty, t0+ty+8, ... of its split in order, then the 8 lanes are combined
//     in lane order through shared memory;
//   * when T is long the tokens are cut into `splits` fixed ranges (a function
//     of T and F only, never of the device), whose partials go to a workspace
//     and are combined in split order by a second kernel;
//   * the count uses integer atomics, which are exact.
// Threads along x walk features, so a contiguous row gives coalesced loads; for
// a transposed x the 8 token lanes of a block touch the same sectors.

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "common.cuh"

namespace featprune {
namespace cuda {
namespace {

constexpr int kFeatPerBlock = 32;
constexpr int kTokenLanes = 8;
constexpr int kUnroll = 8;  // loads in flight per thread
// Aim for this many blocks in total: enough to fill any current GPU, fixed so
// the reduction order (hence the bits) never depends on the device.
constexpr int64_t kTargetBlocks = 2048;
constexpr int64_t kMinTokensPerSplit = 256;

struct StatsParams {
  const void* x = nullptr;
  int64_t tokens = 0, feats = 0, rs = 0, cs = 1;
  const uint8_t* token_mask = nullptr;
  int64_t tokens_per_split = 0;
  int64_t splits = 1;
  float* sumsq = nullptr;
  float* absmax = nullptr;
  float* part_sumsq = nullptr;   // [splits, feats] when splits > 1
  float* part_absmax = nullptr;  // [splits, feats] when splits > 1 and absmax
  unsigned long long* count = nullptr;
};

template <class D, bool kDirect>
__global__ void __launch_bounds__(kFeatPerBlock* kTokenLanes) stats_kernel(StatsParams p) {
  using S = typename D::storage;
  __shared__ float red_sum[kTokenLanes][kFeatPerBlock + 1];
  __shared__ float red_max[kTokenLanes][kFeatPerBlock + 1];

  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t f = int64_t(blockIdx.x) * kFeatPerBlock + tx;
  const int64_t t0 = int64_t(blockIdx.y) * p.tokens_per_split;
  const int64_t t1 = t0 + p.tokens_per_split < p.tokens ? t0 + p.tokens_per_split : p.tokens;
  float sum = 0.0f, mx = -INFINITY;

  if (f < p.feats) {
    const S* col = static_cast<const S*>(p.x) + f * p.cs;
    const uint8_t* tm = p.token_mask;
    auto counted = [&](int64_t t) { return tm == nullptr || tm[t] != 0; };
    int64_t t = t0 + ty;
    constexpr int64_t kStep = kTokenLanes;
    // Unrolled body: issue kUnroll independent loads, then accumulate in order.
    for (; t + (kUnroll - 1) * kStep < t1; t += kUnroll * kStep) {
      float v[kUnroll];
      bool use[kUnroll];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        use[u] = counted(t + u * kStep);
        v[u] = use[u] ? D::to_float(col[(t + u * kStep) * p.rs]) : 0.0f;
      }
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        if (use[u]) {
          sum = fmaf(v[u], v[u], sum);
          mx = nan_max(mx, fabsf(v[u]));
        }
      }
    }
    for (; t < t1; t += kStep) {
      if (!counted(t)) continue;
      const float v = D::to_float(col[t * p.rs]);
      sum = fmaf(v, v, sum);
      mx = nan_max(mx, fabsf(v));
    }
  }

  red_sum[ty][tx] = sum;
  red_max[ty][tx] = mx;
  __syncthreads();
  if (ty != 0 || f >= p.feats) return;
#pragma unroll
  for (int l = 1; l < kTokenLanes; ++l) {  // fixed lane order
    sum += red_sum[l][tx];
    mx = nan_max(mx, red_max[l][tx]);
  }
  if constexpr (kDirect) {
    p.sumsq[f] += sum;
    if (p.absmax != nullptr) p.absmax[f] = nan_max(p.absmax[f], mx);
  } else {
    const int64_t i = int64_t(blockIdx.y) * p.feats + f;
    p.part_sumsq[i] = sum;
    if (p.absmax != nullptr) p.part_absmax[i] = mx;
  }
}

// Combines the split partials in split order.
__global__ void stats_finalize_kernel(StatsParams p) {
  const int64_t f = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (f >= p.feats) return;
  float sum = 0.0f, mx = -INFINITY;
  for (int64_t s = 0; s < p.splits; ++s) {
    sum += p.part_sumsq[s * p.feats + f];
    if (p.absmax != nullptr) mx = nan_max(mx, p.part_absmax[s * p.feats + f]);
  }
  p.sumsq[f] += sum;
  if (p.absmax != nullptr) p.absmax[f] = nan_max(p.absmax[f], mx);
}

constexpr int kCountBlock = 256;

// *count += number of counted tokens (all of them when there is no mask).
__global__ void __launch_bounds__(kCountBlock) count_tokens_kernel(StatsParams p) {
  __shared__ unsigned long long warp_tot[kCountBlock / 32];
  if (p.token_mask == nullptr) {
    if (blockIdx.x == 0 && threadIdx.x == 0) atomicAdd(p.count, (unsigned long long)p.tokens);
    return;
  }
  unsigned long long local = 0;
  const int64_t step = int64_t(gridDim.x) * kCountBlock;
  for (int64_t t = int64_t(blockIdx.x) * kCountBlock + threadIdx.x; t < p.tokens; t += step)
    local += p.token_mask[t] != 0;
#pragma unroll
  for (int d = 16; d > 0; d >>= 1) local += __shfl_down_sync(0xFFFFFFFFu, local, d);
  if (lane_id() == 0) warp_tot[warp_id()] = local;
  __syncthreads();
  if (threadIdx.x != 0) return;
  unsigned long long total = 0;
  for (int w = 0; w < kCountBlock / 32; ++w) total += warp_tot[w];
  if (total != 0) atomicAdd(p.count, total);
}

// Deterministic split of the tokens: depends on T and F only.
void choose_splits(StatsParams& p) {
  const int64_t feat_blocks = (p.feats + kFeatPerBlock - 1) / kFeatPerBlock;
  int64_t splits = (kTargetBlocks + feat_blocks - 1) / feat_blocks;
  splits = std::min(splits, (p.tokens + kMinTokensPerSplit - 1) / kMinTokensPerSplit);
  splits = std::max<int64_t>(splits, 1);
  p.tokens_per_split = (p.tokens + splits - 1) / splits;
  p.splits = (p.tokens + p.tokens_per_split - 1) / p.tokens_per_split;  // no empty split
}

template <class D>
void launch_stats(StatsParams p, cudaStream_t stream) {
  choose_splits(p);
  const int64_t feat_blocks = (p.feats + kFeatPerBlock - 1) / kFeatPerBlock;
  FEATPRUNE_CHECK(feat_blocks <= INT32_MAX, "accumulate_stats: too many features");
  const dim3 grid(unsigned(feat_blocks), unsigned(p.splits));
  const dim3 block(kFeatPerBlock, kTokenLanes);
  if (p.splits == 1) {
    launch_kernel(stats_kernel<D, true>, grid, block, 0, stream, p, "stats_kernel");
    return;
  }
  const size_t part = size_t(p.splits) * size_t(p.feats);
  const size_t bytes = part * sizeof(float) * (p.absmax != nullptr ? 2 : 1);
  void* ws = nullptr;
  check_cuda(cudaMallocAsync(&ws, bytes, stream), "accumulate_stats: cudaMallocAsync");
  p.part_sumsq = static_cast<float*>(ws);
  p.part_absmax = p.absmax != nullptr ? p.part_sumsq + part : nullptr;
  try {
    launch_kernel(stats_kernel<D, false>, grid, block, 0, stream, p, "stats_kernel");
    const unsigned fin_blocks = unsigned((p.feats + 255) / 256);
    launch_kernel(stats_finalize_kernel, dim3(fin_blocks), dim3(256), 0, stream, p,
                  "stats_finalize_kernel");
  } catch (...) {
    cudaFreeAsync(ws, stream);
    throw;
  }
  check_cuda(cudaFreeAsync(ws, stream), "accumulate_stats: cudaFreeAsync");
}

void launch_count(const StatsParams& p, cudaStream_t stream) {
  int64_t blocks = 1;
  if (p.token_mask != nullptr)
    blocks = std::min<int64_t>((p.tokens + 4 * kCountBlock - 1) / (4 * kCountBlock), 1024);
  launch_kernel(count_tokens_kernel, dim3(unsigned(blocks)), dim3(kCountBlock), 0, stream, p,
                "count_tokens_kernel");
}

}  // namespace
}  // namespace cuda

void accumulate_stats_cuda(const AccumulateStatsArgs& a, void* stream_ptr) {
  using namespace cuda;
  const MatrixView& x = a.x;
  FEATPRUNE_CHECK(x.rows >= 0 && x.cols >= 0, "accumulate_stats: negative shape");
  FEATPRUNE_CHECK(a.count != nullptr, "accumulate_stats: null count");
  if (x.rows == 0) return;  // nothing counted, nothing accumulated
  FEATPRUNE_CHECK(x.cols == 0 || (x.data != nullptr && a.sumsq != nullptr),
                  "accumulate_stats: null x or sumsq");

  StatsParams p;
  p.x = x.data;
  p.tokens = x.rows;
  p.feats = x.cols;
  p.rs = x.row_stride;
  p.cs = x.col_stride;
  p.token_mask = a.token_mask;
  p.sumsq = a.sumsq;
  p.absmax = a.absmax;
  p.count = reinterpret_cast<unsigned long long*>(a.count);  // two's complement add
  const cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);

  if (p.feats > 0)
    dispatch_dtype(x.dtype, [&](auto tag) { launch_stats<decltype(tag)>(p, stream); }, "accumulate_stats");
  launch_count(p, stream);
}

}  // namespace featprune
