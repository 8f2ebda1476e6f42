// CUDA prune_rows: per-row exact k-smallest selection (unstructured) and N:M.
//
// Unstructured: one thread block per row.
//   1. Compute every key (score_key, or kProtectedKey) once; cache them in
//      dynamic shared memory when the row fits, else recompute them from global
//      memory (L2) in each pass.
//   2. Radix select the k-th smallest unprotected key v over 31 bits in up to
//      three passes (digits of 11/10/10 bits, shared-memory histograms). Bit 31
//      is set only in kProtectedKey, so it is fixed to 0 and protected columns
//      never enter a histogram. A pass stops early when the whole selected bin
//      must be pruned.
//   3. Write: prune key < v, and among key == v the first (k - #{key < v}) in
//      column order (block-wide ordered count over column chunks). The ordered
//      count is skipped when every tie is pruned.
// N:M: a block loads a tile of whole groups into shared memory; each thread
//   ranks its own entry within its group (O(m) compares) and prunes rank < m-n.

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "common.cuh"

namespace featprune {
namespace cuda {
namespace {

struct PruneParams {
  void* w = nullptr;
  int64_t rows = 0, cols = 0, rs = 0, cs = 1;
  const float* col_scale = nullptr;
  const uint8_t* protect = nullptr;
  uint8_t* mask = nullptr;
  int64_t mrs = 0, mcs = 1;
  uint32_t k = 0;           // unstructured: zeros per row
  int n = 0, m = 0;         // N:M
  int64_t tile_cols = 0;    // N:M: columns per tile (whole groups)
  int64_t tiles_per_row = 0;
};

constexpr uint32_t kUnprotectedMax = 0x7FFFFFFFu;  // largest key a score can have
constexpr int kMaxBins = 2048;

// Digit layout of the three radix passes: bits 30..20, 19..10, 9..0.
__device__ __forceinline__ int pass_shift(int pass) { return pass == 0 ? 20 : (pass == 1 ? 10 : 0); }
__device__ __forceinline__ uint32_t pass_bins(int pass) { return pass == 0 ? 2048u : 1024u; }

// cs is p.cs, or the literal 1 on the contiguous path (saves a 64-bit multiply).
template <class D>
__device__ __forceinline__ uint32_t load_key(const PruneParams& p, const typename D::storage* row,
                                             int64_t cs, int64_t j) {
  if (p.protect != nullptr && p.protect[j] != 0) return kProtectedKey;
  return score_key(D::to_float(row[j * cs]), p.col_scale[j]);
}

template <class D>
__device__ __forceinline__ void store_result(const PruneParams& p, typename D::storage* row,
                                             int64_t cs, int64_t r, int64_t j, bool prune) {
  using S = typename D::storage;
  if (prune) row[j * cs] = S(0);  // all-zero bits; kept entries are never written
  if (p.mask != nullptr) p.mask[r * p.mrs + j * p.mcs] = prune ? 1 : 0;
}

template <int BLOCK>
__device__ __forceinline__ void clear_bins(uint32_t* hist, uint32_t nbins) {
  for (uint32_t i = threadIdx.x; i < nbins / 4; i += BLOCK)
    reinterpret_cast<uint4*>(hist)[i] = make_uint4(0u, 0u, 0u, 0u);
}

// Reads PER consecutive bins (PER-aligned) with vector loads.
template <int PER>
__device__ __forceinline__ void load_bins(const uint32_t* src, uint32_t (&h)[PER]) {
  if constexpr (PER % 4 == 0) {
#pragma unroll
    for (int i = 0; i < PER; i += 4) {
      const uint4 v = reinterpret_cast<const uint4*>(src)[i / 4];
      h[i] = v.x; h[i + 1] = v.y; h[i + 2] = v.z; h[i + 3] = v.w;
    }
  } else if constexpr (PER == 2) {
    const uint2 v = reinterpret_cast<const uint2*>(src)[0];
    h[0] = v.x; h[1] = v.y;
  } else {
#pragma unroll
    for (int i = 0; i < PER; ++i) h[i] = src[i];
  }
}

// Result of find_bin, written by the one thread that owns the bin.
struct BinChoice {
  uint32_t bin;    // bin holding the rank-th candidate
  uint32_t rank;   // rank of the target within that bin (1-based)
  uint32_t count;  // candidates in that bin
};

// Finds the bin holding the rank-th smallest candidate (1-based) of hist[0, nbins).
// Each thread owns PER = nbins / BLOCK consecutive bins; a block scan of the
// per-thread sums locates the owner. Returns the histogram total (uniform).
// If rank > total nobody writes *choice. Ends with a barrier.
template <int BLOCK, int PER>
__device__ uint32_t find_bin(const uint32_t* hist, uint32_t rank, uint32_t* warp_sums,
                             BinChoice* choice) {
  uint32_t h[PER];
  load_bins<PER>(hist + threadIdx.x * PER, h);
  uint32_t local = 0;
#pragma unroll
  for (int i = 0; i < PER; ++i) local += h[i];
  uint32_t total;
  const uint32_t before = block_exclusive_sum<BLOCK>(local, warp_sums, &total);
  if (before < rank && rank <= before + local) {
    uint32_t c = before;
#pragma unroll
    for (int i = 0; i < PER; ++i) {
      if (c + h[i] >= rank) {
        choice->bin = threadIdx.x * PER + uint32_t(i);
        choice->rank = rank - c;
        choice->count = h[i];
        break;
      }
      c += h[i];
    }
  }
  __syncthreads();
  return total;
}

// Pass 0, fused with the first read of the row: computes the keys, caches them
// (kCached) and histograms bits 30..20 of the unprotected ones.
template <class D, int BLOCK, bool kCached, bool kVec>
__device__ __forceinline__ void load_row_keys(const PruneParams& p,
                                              const typename D::storage* row, uint32_t* keys,
                                              uint32_t* hist) {
  const uint32_t C = uint32_t(p.cols);
  auto add = [&](uint32_t j, uint32_t key) {
    if constexpr (kCached) keys[j] = key;
    if (key <= kUnprotectedMax) atomicAdd(&hist[key >> 20], 1u);
  };
  uint32_t tail = 0;
  if constexpr (kVec) {  // col stride 1, row and col_scale 16-byte aligned
    constexpr int V = D::kVec;
    const uint32_t nvec = C / V;
    for (uint32_t i = threadIdx.x; i < nvec; i += BLOCK) {
      float vals[V], scales[V];
      unpack16<D>(reinterpret_cast<const uint4*>(row)[i], vals);
#pragma unroll
      for (int e = 0; e < V; e += 4) {
        const float4 s = reinterpret_cast<const float4*>(p.col_scale + size_t(i) * V)[e / 4];
        scales[e] = s.x; scales[e + 1] = s.y; scales[e + 2] = s.z; scales[e + 3] = s.w;
      }
      uint32_t kv[V];
#pragma unroll
      for (int e = 0; e < V; ++e) {
        const bool prot = p.protect != nullptr && p.protect[i * V + uint32_t(e)] != 0;
        kv[e] = prot ? kProtectedKey : score_key(vals[e], scales[e]);
      }
      if constexpr (kCached) {  // vector stores: no shared-memory bank conflicts
#pragma unroll
        for (int e = 0; e < V; e += 4)
          reinterpret_cast<uint4*>(keys + size_t(i) * V)[e / 4] =
              make_uint4(kv[e], kv[e + 1], kv[e + 2], kv[e + 3]);
      }
#pragma unroll
      for (int e = 0; e < V; ++e)
        if (kv[e] <= kUnprotectedMax) atomicAdd(&hist[kv[e] >> 20], 1u);
    }
    tail = nvec * V;
  }
  for (uint32_t j = tail + threadIdx.x; j < C; j += BLOCK) add(j, load_key<D>(p, row, kVec ? 1 : p.cs, j));
}

// Threshold found by the select: prune key < v, plus the first `ties` keys
// equal to v in column order. all_ties: every key == v is pruned (no ordering).
struct Threshold {
  uint32_t v;
  uint32_t ties;
  bool all_ties;
};

template <class D, int BLOCK, bool kCached, bool kVec>
__global__ void __launch_bounds__(BLOCK) prune_rows_kernel(PruneParams p) {
  using S = typename D::storage;
  __shared__ __align__(16) uint32_t hist[kMaxBins];
  __shared__ uint32_t warp_sums[2][BLOCK / 32];
  __shared__ BinChoice choice;
  FEATPRUNE_DYNAMIC_SMEM(uint32_t, keys);  // [cols] when kCached

  const int64_t r = blockIdx.x;
  S* row = static_cast<S*>(p.w) + r * p.rs;
  const uint32_t C = uint32_t(p.cols);
  const int64_t cs = kVec ? 1 : p.cs;  // kVec implies a unit column stride
  auto key_at = [&](uint32_t j) -> uint32_t {
    if constexpr (kCached) return keys[j];
    else return load_key<D>(p, row, cs, j);
  };

  // ---- select: find the k-th smallest unprotected key ----
  clear_bins<BLOCK>(hist, pass_bins(0));
  __syncthreads();
  load_row_keys<D, BLOCK, kCached, kVec>(p, row, keys, hist);
  __syncthreads();

  Threshold th{kUnprotectedMax, 0u, true};
  uint32_t prefix = 0;            // digits chosen so far
  uint32_t fixed = 0x80000000u;   // bits covered by prefix (bit 31 = 0: unprotected)
  uint32_t rank = p.k;            // 1-based rank of the target among candidates
  for (int pass = 0; pass < 3; ++pass) {
    const int shift = pass_shift(pass);
    const uint32_t nbins = pass_bins(pass);
    if (pass > 0) {  // histogram the next digit of keys matching the prefix
      clear_bins<BLOCK>(hist, nbins);
      __syncthreads();
      for (uint32_t j = threadIdx.x; j < C; j += BLOCK) {
        const uint32_t key = key_at(j);
        if ((key & fixed) == prefix) atomicAdd(&hist[(key >> shift) & (nbins - 1u)], 1u);
      }
      __syncthreads();
    }
    const uint32_t total = nbins == 2048u
                               ? find_bin<BLOCK, 2048 / BLOCK>(hist, rank, warp_sums[0], &choice)
                               : find_bin<BLOCK, 1024 / BLOCK>(hist, rank, warp_sums[0], &choice);
    if (rank > total) break;  // only in pass 0: k >= #unprotected, prune all of them
    const BinChoice c = choice;
    prefix |= c.bin << shift;
    fixed |= (nbins - 1u) << shift;
    rank = c.rank;
    if (rank == c.count) {  // the whole bin is pruned: threshold = its largest key
      th = Threshold{prefix | ((1u << shift) - 1u), 0u, true};
      break;
    }
    if (pass == 2) th = Threshold{prefix, rank, false};  // exact v, some ties kept
  }

  // ---- write ----
  if (th.all_ties) {
    for (uint32_t j = threadIdx.x; j < C; j += BLOCK)
      store_result<D>(p, row, cs, r, j, key_at(j) <= th.v);
    return;
  }
  // Ordered pass: the tie rank of column j is the number of earlier ties.
  uint32_t seen = 0;  // ties in previous chunks
  for (uint32_t c0 = 0, it = 0; c0 < C; c0 += BLOCK, ++it) {
    const uint32_t j = c0 + threadIdx.x;
    const uint32_t key = j < C ? key_at(j) : kProtectedKey;
    const bool tie = key == th.v;
    uint32_t chunk_ties;
    const uint32_t before = block_exclusive_count<BLOCK>(tie, warp_sums[it & 1], &chunk_ties);
    if (j < C) store_result<D>(p, row, cs, r, j, key < th.v || (tie && seen + before < th.ties));
    seen += chunk_ties;
  }
}

// N:M. Tiles hold whole groups (tile_cols is a multiple of m), so a group's
// keys are all in shared memory. The last group of a row may be partial when
// cols % m != 0; it prunes up to m - n of its entries.
template <class D, int BLOCK>
__global__ void __launch_bounds__(BLOCK) prune_nm_kernel(PruneParams p) {
  using S = typename D::storage;
  FEATPRUNE_DYNAMIC_SMEM(uint32_t, keys);  // [tile_cols]
  const int64_t total_tiles = p.rows * p.tiles_per_row;
  const uint32_t m = uint32_t(p.m);
  const int drop = p.m - p.n;
  for (int64_t t = blockIdx.x; t < total_tiles; t += gridDim.x) {
    const int64_t r = t / p.tiles_per_row;
    const int64_t c0 = (t % p.tiles_per_row) * p.tile_cols;
    const int64_t left = p.cols - c0;
    const uint32_t ncols = uint32_t(left < p.tile_cols ? left : p.tile_cols);
    S* row = static_cast<S*>(p.w) + r * p.rs;
    for (uint32_t i = threadIdx.x; i < ncols; i += BLOCK) keys[i] = load_key<D>(p, row, p.cs, c0 + i);
    __syncthreads();
    for (uint32_t i = threadIdx.x; i < ncols; i += BLOCK) {
      const uint32_t g0 = i - i % m;
      const uint32_t g1 = g0 + m < ncols ? g0 + m : ncols;
      const uint32_t mine = keys[i];
      int rank = 0;  // entries of the group that sort before this one
      for (uint32_t q = g0; q < g1; ++q) {
        const uint32_t other = keys[q];
        rank += (other < mine) || (other == mine && q < i);
      }
      store_result<D>(p, row, p.cs, r, c0 + i, mine != kProtectedKey && rank < drop);
    }
    __syncthreads();  // keys is reloaded for the next tile
  }
}

__global__ void zero_mask_kernel(PruneParams p) {
  const int64_t total = p.rows * p.cols;
  const int64_t step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += step)
    p.mask[(i / p.cols) * p.mrs + (i % p.cols) * p.mcs] = 0;
}

// ---- host side ------------------------------------------------------------

constexpr size_t kDefaultKeyCacheBytes = 64 * 1024;
constexpr size_t kDefaultDynamicSmem = 48 * 1024;

// Largest key cache (bytes) worth using. Larger rows recompute keys from L2:
// a huge cache would leave one block per SM with nothing to overlap its loads.
// FEATPRUNE_CUDA_KEY_CACHE_BYTES overrides it (0 forces the recompute path;
// used by tests to exercise both paths on small matrices).
size_t key_cache_limit() {
  if (const char* env = std::getenv("FEATPRUNE_CUDA_KEY_CACHE_BYTES"))
    return size_t(std::strtoull(env, nullptr, 10));
  return kDefaultKeyCacheBytes;
}

int max_optin_smem() {
  int dev = 0, bytes = 0;
  check_cuda(cudaGetDevice(&dev), "cudaGetDevice");
  check_cuda(cudaDeviceGetAttribute(&bytes, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev),
             "cudaDeviceGetAttribute");
  return bytes;
}

size_t static_smem(void (*kernel)(PruneParams)) {
  cudaFuncAttributes attr{};
  check_cuda(cudaFuncGetAttributes(&attr, kernel), "cudaFuncGetAttributes");
  return attr.sharedSizeBytes;
}

// Lets `kernel` use `dyn` bytes of dynamic shared memory.
void allow_dynamic_smem(void (*kernel)(PruneParams), size_t dyn, const char* name) {
  if (dyn + static_smem(kernel) <= kDefaultDynamicSmem) return;
  check_cuda(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(dyn)),
             std::string("cudaFuncSetAttribute(") + name + ")");
}

bool aligned16(const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 16 == 0; }

template <class D, int BLOCK>
void launch_unstructured(const PruneParams& p, cudaStream_t stream) {
  using K = void (*)(PruneParams);
  const size_t key_bytes = size_t(p.cols) * sizeof(uint32_t);
  const K probe = prune_rows_kernel<D, BLOCK, true, false>;
  const bool cached = key_bytes <= key_cache_limit() &&
                      key_bytes + static_smem(probe) <= size_t(max_optin_smem());
  const bool vec = p.cs == 1 && aligned16(p.w) && aligned16(p.col_scale) &&
                   (p.rs * int64_t(sizeof(typename D::storage))) % 16 == 0;
  const K kernel = cached ? (vec ? prune_rows_kernel<D, BLOCK, true, true>
                                 : prune_rows_kernel<D, BLOCK, true, false>)
                          : (vec ? prune_rows_kernel<D, BLOCK, false, true>
                                 : prune_rows_kernel<D, BLOCK, false, false>);
  const size_t dyn = cached ? key_bytes : 0;
  if (cached) allow_dynamic_smem(kernel, dyn, "prune_rows_kernel");
  launch_kernel(kernel, dim3(unsigned(p.rows)), dim3(BLOCK), dyn, stream, p, "prune_rows_kernel");
}

template <class D>
void launch_nm(PruneParams p, cudaStream_t stream) {
  constexpr int kBlock = 256;
  const int64_t m = p.m;
  p.tile_cols = m <= kBlock ? (kBlock / m) * m : m;
  p.tiles_per_row = (p.cols + p.tile_cols - 1) / p.tile_cols;
  const size_t dyn = size_t(p.tile_cols) * sizeof(uint32_t);
  FEATPRUNE_CHECK(dyn + 1024 <= size_t(max_optin_smem()), "prune_rows: N:M group size m too large");
  const auto kernel = prune_nm_kernel<D, kBlock>;
  allow_dynamic_smem(kernel, dyn, "prune_nm_kernel");
  const int64_t tiles = p.rows * p.tiles_per_row;
  const unsigned grid = unsigned(std::min<int64_t>(tiles, int64_t(1) << 30));
  launch_kernel(kernel, dim3(grid), dim3(kBlock), dyn, stream, p, "prune_nm_kernel");
}

void launch_zero_mask(const PruneParams& p, cudaStream_t stream) {
  constexpr int kBlock = 256;
  const int64_t blocks = (p.rows * p.cols + kBlock - 1) / kBlock;
  const unsigned grid = unsigned(std::min<int64_t>(blocks, 65536));
  launch_kernel(zero_mask_kernel, dim3(grid), dim3(kBlock), 0, stream, p, "zero_mask_kernel");
}

}  // namespace
}  // namespace cuda

void prune_rows_cuda(const PruneRowsArgs& a, void* stream_ptr) {
  using namespace cuda;
  const MatrixView& w = a.weight;
  FEATPRUNE_CHECK(w.rows >= 0 && w.cols >= 0, "prune_rows: negative shape");
  FEATPRUNE_CHECK(w.rows <= INT32_MAX && w.cols <= INT32_MAX,
                  "prune_rows: rows and cols must fit in int32 on CUDA");
  FEATPRUNE_CHECK(a.m >= 0, "prune_rows: m must be >= 0");
  if (w.rows == 0 || w.cols == 0) return;
  FEATPRUNE_CHECK(w.data != nullptr && a.col_scale != nullptr, "prune_rows: null weight or col_scale");
  if (a.m > 0) {
    FEATPRUNE_CHECK(a.n >= 0 && a.n <= a.m, "prune_rows: need 0 <= n <= m");
  } else {
    FEATPRUNE_CHECK(a.k >= 0 && a.k <= w.cols, "prune_rows: need 0 <= k <= cols");
  }

  PruneParams p;
  p.w = w.data;
  p.rows = w.rows;
  p.cols = w.cols;
  p.rs = w.row_stride;
  p.cs = w.col_stride;
  p.col_scale = a.col_scale;
  p.protect = a.protect;
  p.mask = a.mask_out;
  p.mrs = a.mask_row_stride;
  p.mcs = a.mask_col_stride;
  p.k = uint32_t(a.k);
  p.n = a.n;
  p.m = a.m;
  const cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);

  const bool prunes_nothing = a.m > 0 ? a.n == a.m : a.k == 0;
  if (prunes_nothing) {  // w is not touched; only the mask is written
    if (p.mask != nullptr) launch_zero_mask(p, stream);
    return;
  }
  dispatch_dtype(
      w.dtype,
      [&](auto tag) {
        using D = decltype(tag);
        if (a.m > 0) launch_nm<D>(p, stream);
        else if (p.cols > 8192) launch_unstructured<D, 512>(p, stream);
        else launch_unstructured<D, 256>(p, stream);
      },
      "prune_rows");
}

}  // namespace featprune
