// CPU prune_rows: per row, O(C) selection of the k smallest score keys.
//
// Radix select over the 32-bit keys: a 512-bin histogram of the top 9 bits
// (sign + exponent) finds the bin holding the k-th smallest key; its keys are
// compacted (branch-free: a bin often holds a quarter of the row) and refined
// by the next 8, 8 and 7 bits until few remain, then nth_element gives the
// exact threshold v. (A 12-bit first level with a branchy gather measured
// 25% slower.) One branch-free pass flags keys < v,
// and the first (k - #less) keys == v in column order: exactly what a stable
// ascending sort selects. Writes are branch-free blends (a 50% mask is
// unpredictable, so branching on it would cost a mispredict per weight).
//
// That portable path serves strided rows, unusual N:M shapes and CPUs without
// AVX2. On x86-64 CPUs with AVX2+F16C (checked at run time) the AVX2 path below
// is used instead; same results:
// - N:M with m in {1, 2, 4, 8} on contiguous rows: one fused pass per row. Eight
//   keys at a time; each entry's rank in its group is counted against the m - 1
//   rotations of the group (in-lane shuffles for m = 2, 4; a cross-lane permute for m = 8), so
//   nothing goes through memory.
// - Unstructured: keys computed 8 at a time into a row buffer (with the row's mean
//   score); a bracket [lo, hi] around the k-th key, predicted from the previous
//   rows (threshold / mean score is nearly constant across a matrix's rows; a few %
//   of the row fall inside) or, until that prediction is steady, from a fixed
//   sample of the row (~28% inside); one pass counts keys < lo and compacts keys
//   in [lo, hi] (AVX2 compress by lookup table); radix select with 8-bit digits
//   over the bracket's differing bits refines those few; one fused pass flags,
//   blends the weights and writes the mask. A bracket that misses (a row unlike
//   the others, a skewed row) falls back to the sample's bracket, then to a radix
//   select over the whole row: slower, same result.
// On CPUs with AVX-512 (F, BW, VL, DQ), contiguous rows go to prune_rows_avx512.cpp
// instead (the same algorithm at 16 lanes; it shares the selection below through
// prune_rows_x86.h). FEATPRUNE_CPU_SIMD=avx2 pins the AVX2 path, =0 the portable one.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <vector>

#include "featprune/dtype_traits.h"
#include "featprune/score.h"
#include "featprune/kernels.h"
#include "prune_rows_x86.h"

namespace featprune {
namespace {

struct RadixLevel {
  int shift;
  int bits;
};
constexpr std::array<RadixLevel, 4> kLevels{{{23, 9}, {15, 8}, {7, 8}, {0, 7}}};
constexpr int kMaxBins = 512;
constexpr size_t kFewCandidates = 48;  // below this, nth_element beats another pass

struct RowScratch {
  std::vector<uint32_t> keys;
  std::vector<uint32_t> candidates;
  std::vector<uint32_t> next;
  std::vector<uint8_t> pruned;
  std::vector<uint32_t> hist;
  explicit RowScratch(int64_t cols)
      : keys(cols), candidates(cols), next(cols), pruned(cols), hist(4 * kMaxBins) {}
};

template <typename Tag>
void compute_keys(const PruneRowsArgs& a, int64_t row, uint32_t* keys) {
  using S = typename Tag::storage;
  const S* w = static_cast<const S*>(a.weight.data) + row * a.weight.row_stride;
  const int64_t cols = a.weight.cols, cs = a.weight.col_stride;
  if (cs == 1) {
    for (int64_t j = 0; j < cols; ++j) keys[j] = score_key(Tag::load(w + j), a.col_scale[j]);
  } else {
    for (int64_t j = 0; j < cols; ++j) keys[j] = score_key(Tag::load(w + j * cs), a.col_scale[j]);
  }
  if (a.protect)
    for (int64_t j = 0; j < cols; ++j) keys[j] = a.protect[j] ? kProtectedKey : keys[j];
}

// Exact k-th smallest key (1-based k >= 1) and how many keys are strictly smaller.
void select_threshold(RowScratch& s, int64_t cols, int64_t k, uint32_t* threshold, int64_t* n_less,
                      int64_t* n_equal) {
  uint32_t* src = s.keys.data();
  size_t n = size_t(cols);
  int64_t before = 0;   // keys known to be smaller than every remaining candidate
  int64_t rank = k - 1; // 0-based rank of the target among the remaining candidates
  for (const RadixLevel& level : kLevels) {
    if (n <= kFewCandidates) break;
    // Locals, so the compiler need not reload them after every store below.
    const int shift = level.shift;
    const uint32_t bins = 1u << level.bits, digit_mask = bins - 1;
    // Four interleaved histograms break the store-to-load chain on hot bins.
    uint32_t (*hist)[kMaxBins] = reinterpret_cast<uint32_t (*)[kMaxBins]>(s.hist.data());
    std::memset(hist, 0, 4 * kMaxBins * sizeof(uint32_t));
    size_t i = 0;
    for (; i + 4 <= n; i += 4)
      for (int l = 0; l < 4; ++l) ++hist[l][(src[i + l] >> shift) & digit_mask];
    for (; i < n; ++i) ++hist[0][(src[i] >> shift) & digit_mask];
    uint32_t digit = 0;
    int64_t below = 0;
    for (; digit < bins; ++digit) {
      const int64_t c = int64_t(hist[0][digit]) + hist[1][digit] + hist[2][digit] + hist[3][digit];
      if (below + c > rank) break;
      below += c;
    }
    before += below;
    rank -= below;
    // Keep only the keys in the chosen bin (branch-free compaction).
    uint32_t* dst = (src == s.candidates.data()) ? s.next.data() : s.candidates.data();
    size_t m = 0;
    for (size_t j = 0; j < n; ++j) {
      const uint32_t key = src[j];
      dst[m] = key;
      m += ((key >> shift) & digit_mask) == digit;
    }
    src = dst;
    n = m;
  }
  // nth_element needs a writable copy; the keys themselves are still needed.
  uint32_t* c = src;
  if (src == s.keys.data()) {
    std::copy(s.keys.begin(), s.keys.begin() + int64_t(n), s.candidates.begin());
    c = s.candidates.data();
  }
  std::nth_element(c, c + rank, c + n);
  const uint32_t v = c[rank];
  int64_t less = 0, equal = 0;
  for (size_t j = 0; j < n; ++j) {
    less += c[j] < v;
    equal += c[j] == v;
  }
  *threshold = v;
  *n_less = before + less;
  *n_equal = equal;
}

void flag_unstructured(RowScratch& s, int64_t cols, int64_t k) {
  uint8_t* pruned = s.pruned.data();
  if (k == 0) {
    std::memset(pruned, 0, size_t(cols));
    return;
  }
  uint32_t v;
  int64_t n_less, n_equal;
  select_threshold(s, cols, k, &v, &n_less, &n_equal);
  const uint32_t* keys = s.keys.data();
  int64_t ties_left = k - n_less;
  if (ties_left == n_equal) {  // every key equal to v goes: the common case
    for (int64_t j = 0; j < cols; ++j) pruned[j] = keys[j] <= v;
    return;
  }
  for (int64_t j = 0; j < cols; ++j) pruned[j] = keys[j] < v;
  for (int64_t j = 0; j < cols && ties_left > 0; ++j) {  // lower column index first
    if (keys[j] == v) {
      pruned[j] = 1;
      --ties_left;
    }
  }
}

void flag_n_m(RowScratch& s, int64_t cols, int n, int m) {
  const uint32_t* keys = s.keys.data();
  uint8_t* pruned = s.pruned.data();
  const int drop = m - n;
  for (int64_t g = 0; g < cols; g += m) {
    const uint32_t* key = keys + g;
    for (int i = 0; i < m; ++i) {
      // rank = position of entry i in a stable ascending sort of the group;
      // protected keys are the largest, so with enough free columns they rank last.
      int rank = 0;
      for (int o = 0; o < m; ++o) rank += (key[o] < key[i]) | ((key[o] == key[i]) & (o < i));
      pruned[g + i] = (rank < drop) & (key[i] != kProtectedKey);
    }
  }
}

template <typename Tag>
void apply_row(const PruneRowsArgs& a, int64_t row, const uint8_t* pruned) {
  using S = typename Tag::storage;
  S* w = static_cast<S*>(a.weight.data) + row * a.weight.row_stride;
  const int64_t cols = a.weight.cols, cs = a.weight.col_stride;
  if (cs == 1) {
    // Rewriting a kept value with itself is bit-identical and lets this vectorise.
    for (int64_t j = 0; j < cols; ++j) w[j] = pruned[j] ? S(0) : w[j];
  } else {
    for (int64_t j = 0; j < cols; ++j)
      if (pruned[j]) w[j * cs] = S(0);
  }
  if (a.mask_out) {
    uint8_t* mask = a.mask_out + row * a.mask_row_stride;
    if (a.mask_col_stride == 1)
      std::memcpy(mask, pruned, size_t(cols));
    else
      for (int64_t j = 0; j < cols; ++j) mask[j * a.mask_col_stride] = pruned[j];
  }
}

void check_args(const PruneRowsArgs& a) {
  const MatrixView& w = a.weight;
  FEATPRUNE_CHECK(w.rows >= 0 && w.cols >= 0, "prune_rows: weight has a negative dimension");
  FEATPRUNE_CHECK(w.rows == 0 || w.cols == 0 || w.data != nullptr, "prune_rows: weight is null");
  FEATPRUNE_CHECK(w.cols == 0 || a.col_scale != nullptr, "prune_rows: col_scale is null");
  if (a.m > 0) {
    FEATPRUNE_CHECK(a.n >= 0 && a.n <= a.m, "prune_rows: need 0 <= n <= m");
    FEATPRUNE_CHECK(w.cols % a.m == 0, "prune_rows: weight columns must be a multiple of m");
    if (a.protect) {
      for (int64_t g = 0; g < w.cols; g += a.m) {
        int64_t free_cols = 0;
        for (int i = 0; i < a.m; ++i) free_cols += a.protect[g + i] == 0;
        FEATPRUNE_CHECK(free_cols >= a.m - a.n, "prune_rows: an N:M group has too many protected columns");
      }
    }
    return;
  }
  FEATPRUNE_CHECK(a.k >= 0 && a.k <= w.cols, "prune_rows: k must be in [0, cols]");
  if (a.protect) {
    int64_t free_cols = 0;
    for (int64_t j = 0; j < w.cols; ++j) free_cols += a.protect[j] == 0;
    FEATPRUNE_CHECK(a.k <= free_cols, "prune_rows: k exceeds the number of unprotected columns");
  }
}

}  // namespace

#ifdef FEATPRUNE_X86_SIMD
namespace x86 {
namespace {

constexpr int64_t kMinSampledCols = 512;  // narrower rows go straight to the radix select
constexpr int64_t kSamples = 64;
constexpr double kSpread = 2.0;  // bracket half-width in standard deviations of the sample rank

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

// For each 8-bit lane mask, the indices of its set lanes packed from the low byte.
struct CompressTable {
  uint64_t idx[256];
  CompressTable() {
    for (int mask = 0; mask < 256; ++mask) {
      uint64_t v = 0;
      int n = 0;
      for (int l = 0; l < 8; ++l)
        if ((mask >> l) & 1) v |= uint64_t(l) << (8 * n++);
      idx[mask] = v;
    }
  }
};
const CompressTable kCompress;

template <DType D>
FEATPRUNE_AVX2 inline __m256 load8(const void* base, int64_t j) {
  if constexpr (D == DType::kFloat32) {
    return _mm256_loadu_ps(static_cast<const float*>(base) + j);
  } else {
    const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(base) + j));
    if constexpr (D == DType::kFloat16)
      return _mm256_cvtph_ps(raw);  // exact, like fp16_bits_to_float (NaN payloads differ: keys canonicalise)
    else
      return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(raw), 16));
  }
}

// |w| * scale for 8 columns (the score, before it becomes a key).
FEATPRUNE_AVX2 inline __m256 score8(__m256 w, const float* scale) {
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
  return _mm256_mul_ps(_mm256_and_ps(w, abs_mask), _mm256_loadu_ps(scale));
}

// score_key() of 8 scores, then protected columns forced to kProtectedKey.
FEATPRUNE_AVX2 inline __m256i key_of8(__m256 s, const uint32_t* prot_or) {
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
  const __m256 nan = _mm256_cmp_ps(s, s, _CMP_UNORD_Q);
  // NaN -> 0x7FFFFFFF; otherwise the bits without the sign of a -0.0.
  const __m256i key = _mm256_castps_si256(_mm256_and_ps(_mm256_or_ps(s, nan), abs_mask));
  return _mm256_or_si256(key, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(prot_or)));
}

FEATPRUNE_AVX2 inline __m256i key8(__m256 w, const float* scale, const uint32_t* prot_or) {
  return key_of8(score8(w, scale), prot_or);
}

// Zero the pruned lanes of w[j .. j+8) (kept lanes rewritten with their own bits).
template <DType D>
FEATPRUNE_AVX2 inline void blend_store8(void* base, int64_t j, __m256i prune) {
  if constexpr (D == DType::kFloat32) {
    float* p = static_cast<float*>(base) + j;
    _mm256_storeu_ps(p, _mm256_andnot_ps(_mm256_castsi256_ps(prune), _mm256_loadu_ps(p)));
  } else {
    __m128i* p = reinterpret_cast<__m128i*>(static_cast<uint16_t*>(base) + j);
    const __m128i m16 = _mm_packs_epi32(_mm256_castsi256_si128(prune), _mm256_extracti128_si256(prune, 1));
    _mm_storeu_si128(p, _mm_andnot_si128(m16, _mm_loadu_si128(p)));
  }
}

FEATPRUNE_AVX2 inline void store_flags8(uint8_t* dst, __m256i prune) {
  const __m128i m16 = _mm_packs_epi32(_mm256_castsi256_si128(prune), _mm256_extracti128_si256(prune, 1));
  _mm_storel_epi64(reinterpret_cast<__m128i*>(dst), _mm_and_si128(_mm_packs_epi16(m16, m16), _mm_set1_epi8(1)));
}

// Appends the selected lanes of x to dst + m; returns the new count.
FEATPRUNE_AVX2 inline size_t compress8(uint32_t* dst, size_t m, __m256i x, __m256i sel) {
  const unsigned mask = unsigned(_mm256_movemask_ps(_mm256_castsi256_ps(sel)));
  const __m256i perm = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(&kCompress.idx[mask])));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + m), _mm256_permutevar8x32_epi32(x, perm));
  return m + size_t(_mm_popcnt_u32(mask));
}

// ---- N:M, contiguous rows, m in {1, 2, 4, 8} ----
// Rotation r of every group of M lanes. Groups of 2 and 4 lie within a 128-bit half, so an in-lane
// shuffle does it (cheaper than the cross-lane permute groups of 8 need).
template <int M>
FEATPRUNE_AVX2 inline __m256i rotate_groups(__m256i x, int r, __m256i idx) {
  if constexpr (M == 2) {
    return _mm256_shuffle_epi32(x, 0xB1);  // lanes (1, 0, 3, 2)
  } else if constexpr (M == 4) {
    if (r == 1) return _mm256_shuffle_epi32(x, 0x39);  // lanes (1, 2, 3, 0)
    if (r == 2) return _mm256_shuffle_epi32(x, 0x4E);  // lanes (2, 3, 0, 1)
    return _mm256_shuffle_epi32(x, 0x93);              // lanes (3, 0, 1, 2)
  } else {
    return _mm256_permutevar8x32_epi32(x, idx);
  }
}

template <DType D, int M>
FEATPRUNE_AVX2 void n_m_row(const PruneRowsArgs& a, const CallData& cd, int64_t row, uint8_t* flags) {
  constexpr size_t elem = D == DType::kFloat32 ? 4 : 2;
  void* w = const_cast<char*>(row_ptr(a, row, elem));
  const int64_t cols = a.weight.cols;
  const float* scale = a.col_scale;
  const uint32_t* prot = cd.prot_or.data();
  const int drop = M - a.n;
  // Rotation r brings lane (i + r) mod M of the group to lane i; "wrap" lanes see a lower
  // column index, where an equal key ranks first (stable order).
  __m256i idx[M > 1 ? M : 2], wrap[M > 1 ? M : 2];
  for (int r = 1; r < M; ++r) {
    alignas(32) int32_t iv[8], wv[8];
    for (int i = 0; i < 8; ++i) {
      const int g = i / M * M, pos = i % M;
      iv[i] = g + (pos + r) % M;
      wv[i] = pos + r >= M ? -1 : 0;
    }
    idx[r] = _mm256_load_si256(reinterpret_cast<const __m256i*>(iv));
    wrap[r] = _mm256_load_si256(reinterpret_cast<const __m256i*>(wv));
  }
  const __m256i bias = _mm256_set1_epi32(int32_t(0x80000000u)), dropv = _mm256_set1_epi32(drop);
  const __m256i all_ones = _mm256_set1_epi32(-1);
  const char* next = row + 1 < a.weight.rows ? row_ptr(a, row + 1, elem) : nullptr;
  int64_t j = 0;
  for (; j + 8 <= cols; j += 8) {
    prefetch_next_row(next, j, elem);
    const __m256i key = key8(load8<D>(w, j), scale + j, prot + j);
    const __m256i ks = _mm256_xor_si256(key, bias);  // unsigned order as signed
    __m256i rank = _mm256_setzero_si256();
    for (int r = 1; r < M; ++r) {
      const __m256i o = rotate_groups<M>(ks, r, idx[r]);
      const __m256i before = _mm256_or_si256(_mm256_cmpgt_epi32(ks, o), _mm256_and_si256(wrap[r], _mm256_cmpeq_epi32(ks, o)));
      rank = _mm256_sub_epi32(rank, before);
    }
    const __m256i prune = _mm256_andnot_si256(_mm256_cmpeq_epi32(key, all_ones), _mm256_cmpgt_epi32(dropv, rank));
    blend_store8<D>(w, j, prune);
    if (flags) store_flags8(flags + j, prune);
  }
  for (; j < cols; j += M) {  // whole groups (8 % M == 0 and cols % M == 0)
    uint32_t key[M];
    for (int i = 0; i < M; ++i) key[i] = score_key(load1<D>(w, j + i), scale[j + i]) | prot[j + i];
    for (int i = 0; i < M; ++i) {
      int rank = 0;
      for (int o = 0; o < M; ++o) rank += (key[o] < key[i]) | ((key[o] == key[i]) & (o < i));
      const bool p = (rank < drop) & (key[i] != kProtectedKey);
      if (p) zero1<D>(w, j + i);
      if (flags) flags[j + i] = p;
    }
  }
}

// ---- unstructured ----
// Also prefetches the next row's weights, one line per 8 keys: the selection is compute-bound,
// so the next row's key pass then overlaps its DRAM reads with this row's work.
FEATPRUNE_AVX2 size_t bracket_pass(const uint32_t* keys, size_t n, uint32_t lo, uint32_t hi, uint32_t* dst,
                                   int64_t* n_below, const char* prefetch, size_t prefetch_bytes) {
  const __m256i lov = _mm256_set1_epi32(int32_t(lo)), hiv = _mm256_set1_epi32(int32_t(hi));
  size_t m = 0, i = 0;
  __m256i ge_count = _mm256_setzero_si256();  // per lane, minus the keys >= lo
  for (; i + 8 <= n; i += 8) {
    const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(keys + i));
    const __m256i ge = _mm256_cmpeq_epi32(_mm256_max_epu32(x, lov), x);
    const __m256i le = _mm256_cmpeq_epi32(_mm256_min_epu32(x, hiv), x);
    ge_count = _mm256_add_epi32(ge_count, ge);
    m = compress8(dst, m, x, _mm256_and_si256(ge, le));
    if (prefetch_bytes) {
      _mm_prefetch(prefetch, _MM_HINT_T0);
      prefetch += 64;
      prefetch_bytes = prefetch_bytes > 64 ? prefetch_bytes - 64 : 0;
    }
  }
  alignas(32) int32_t lanes[8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), ge_count);
  int64_t below = int64_t(i);
  for (int l = 0; l < 8; ++l) below += lanes[l];  // lanes hold -(keys >= lo); i keys seen
  for (; i < n; ++i) {
    const uint32_t x = keys[i];
    below += x < lo;
    dst[m] = x;
    m += (x >= lo) & (x <= hi);
  }
  *n_below = below;
  return m;
}

// Keeps the keys x with (x - lo) >> shift == digit (every key is >= lo).
FEATPRUNE_AVX2 size_t compact_bucket(const uint32_t* src, size_t n, uint32_t lo, int shift, uint32_t digit,
                                     uint32_t* dst) {
  const __m128i sh = _mm_cvtsi32_si128(shift);
  const __m256i lov = _mm256_set1_epi32(int32_t(lo)), dv = _mm256_set1_epi32(int32_t(digit));
  size_t m = 0, i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i));
    m = compress8(dst, m, x, _mm256_cmpeq_epi32(_mm256_srl_epi32(_mm256_sub_epi32(x, lov), sh), dv));
  }
  for (; i < n; ++i) {
    const uint32_t x = src[i];
    dst[m] = x;
    m += ((x - lo) >> shift) == digit;
  }
  return m;
}

// The order statistics at 0-based positions p1 and p2 (p1, p2 < n) of x[0, n), branch-free
// (std::nth_element mispredicts on random keys): each key's count of strictly smaller keys,
// then the value at position p is the largest key whose count is <= p. O(n^2 / 8): for n <= 64.
// x must be readable up to the next multiple of 8.
FEATPRUNE_AVX2 void order_stats(const uint32_t* x, size_t n, size_t p1, size_t p2, uint32_t* v1, uint32_t* v2) {
  const __m256i bias = _mm256_set1_epi32(int32_t(0x80000000u));
  const __m256i q1 = _mm256_set1_epi32(int32_t(p1 + 1)), q2 = _mm256_set1_epi32(int32_t(p2 + 1));
  const __m256i nv = _mm256_set1_epi32(int32_t(n));
  __m256i m1 = _mm256_setzero_si256(), m2 = _mm256_setzero_si256();
  for (size_t b = 0; b < n; b += 32) {  // 4 blocks of 8 at a time: independent chains
    __m256i raw[4], xs[4], rank[4];
    for (int q = 0; q < 4; ++q) {
      raw[q] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + b + 8 * q));
      xs[q] = _mm256_xor_si256(raw[q], bias);
      rank[q] = _mm256_setzero_si256();
    }
    for (size_t j = 0; j < n; ++j) {
      const __m256i xj = _mm256_set1_epi32(int32_t(x[j] ^ 0x80000000u));
      for (int q = 0; q < 4; ++q) rank[q] = _mm256_sub_epi32(rank[q], _mm256_cmpgt_epi32(xs[q], xj));
    }
    for (int q = 0; q < 4; ++q) {
      const __m256i idx = _mm256_add_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                                           _mm256_set1_epi32(int32_t(b + 8 * q)));
      const __m256i valid = _mm256_cmpgt_epi32(nv, idx);
      m1 = _mm256_max_epu32(m1, _mm256_and_si256(raw[q], _mm256_and_si256(valid, _mm256_cmpgt_epi32(q1, rank[q]))));
      m2 = _mm256_max_epu32(m2, _mm256_and_si256(raw[q], _mm256_and_si256(valid, _mm256_cmpgt_epi32(q2, rank[q]))));
    }
  }
  alignas(32) uint32_t t1[8], t2[8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(t1), m1);
  _mm256_store_si256(reinterpret_cast<__m256i*>(t2), m2);
  *v1 = *std::max_element(t1, t1 + 8);
  *v2 = *std::max_element(t2, t2 + 8);
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

// The key of 0-based rank `rank` among the row's keys (s.keys[0, cols)), how many keys are smaller
// and how many equal: a bracket pass (predicted [plo, phi] when `predicted`, else the sample's),
// then a radix select over the bracketed few. Exact whatever the bracket.
FEATPRUNE_AVX2 void select_row(Scratch& s, const CallData& cd, int64_t cols, int64_t rank, uint32_t* threshold,
                               int64_t* n_less, int64_t* n_equal, bool predicted, uint32_t plo, uint32_t phi,
                               BracketPass pass) {
  const uint32_t* keys = s.keys.data();
  uint32_t lo = 0, hi = 0xFFFFFFFFu;
  int64_t before = 0, r = rank;
  size_t n = 0;
  // One pass over the row compacts the keys in [blo, bhi] into s.a; they are the candidates if the
  // target rank falls among them.
  auto try_bracket = [&](uint32_t blo, uint32_t bhi) {
    int64_t below = 0;
    const size_t m = pass(keys, size_t(cols), blo, bhi, s.a.data(), &below, s.prefetch, s.prefetch_bytes);
    if (!(below <= rank && rank < below + int64_t(m))) return false;
    lo = blo;
    hi = bhi;
    before = below;
    r = rank - below;
    n = m;
    return true;
  };
  // A narrow bracket from the previous rows first; on a miss, the sample's bracket.
  bool bracketed = predicted && try_bracket(plo, phi);
  const size_t ns = cd.sample_pos.size();
  if (!bracketed && ns) {
    uint32_t* smp = s.sample.data();
    for (size_t i = 0; i < ns; ++i) smp[i] = keys[cd.sample_pos[i]];
    const int64_t li = cd.sample_lo, hi_i = cd.sample_hi;
    uint32_t slo, shi;
    order_stats(smp, ns, size_t(std::max<int64_t>(li, 0)), size_t(std::min<int64_t>(hi_i, int64_t(ns) - 1)), &slo, &shi);
    bracketed = try_bracket(li >= 0 ? slo : 0u, hi_i < int64_t(ns) ? shi : 0xFFFFFFFFu);
  }
  if (!bracketed) {  // no sample, or the k-th key fell outside the bracket
    lo = 0;
    hi = 0xFFFFFFFFu;
    before = 0;
    r = rank;
    n = size_t(cols);
    std::memcpy(s.a.data(), keys, n * sizeof(uint32_t));
  }
  uint32_t* src = s.a.data();
  uint32_t* dst = s.b.data();
  // Every candidate lies in [lo, hi]: bucket x by (x - lo) >> shift into at most 256
  // buckets of equal width; one level usually leaves a few keys.
  while (n > kFewCandidates) {
    const uint32_t range = hi - lo;
    if (range == 0) {  // every candidate equals lo
      *threshold = lo;
      *n_less = before;
      *n_equal = int64_t(n);
      return;
    }
    const int width = 32 - __builtin_clz(range);
    const int shift = width > 8 ? width - 8 : 0;
    const uint32_t bins = (range >> shift) + 1;
    // One histogram: the candidates spread over many buckets, so repeated buckets (a
    // store-to-load chain) are rare.
    uint32_t* h = s.hist.data();
    std::memset(h, 0, bins * sizeof(uint32_t));
    for (size_t i = 0; i < n; ++i) ++h[(src[i] - lo) >> shift];
    uint32_t digit = 0;
    int64_t below = 0;
    for (; digit < bins; ++digit) {
      if (below + h[digit] > r) break;
      below += h[digit];
    }
    before += below;
    r -= below;
    n = compact_bucket(src, n, lo, shift, digit, dst);
    std::swap(src, dst);
    const uint32_t new_lo = lo + (digit << shift);
    hi = uint32_t(std::min<uint64_t>(hi, uint64_t(new_lo) + ((1u << shift) - 1u)));
    lo = new_lo;
  }
  uint32_t v, unused;
  order_stats(src, n, size_t(r), size_t(r), &v, &unused);
  int64_t less = 0, equal = 0;
  for (size_t j = 0; j < n; ++j) {
    less += src[j] < v;
    equal += src[j] == v;
  }
  *threshold = v;
  *n_less = before + less;
  *n_equal = equal;
}

// Pruned: keys < v, and the first k - n_less keys == v in column order. Returns the column before
// which keys == v are pruned (cols when all of them are: the common case).
int64_t tie_cut(const uint32_t* keys, int64_t cols, uint32_t v, int64_t k, int64_t n_less, int64_t n_equal) {
  int64_t ties_left = k - n_less;
  if (ties_left >= n_equal) return cols;
  if (ties_left <= 0) return 0;  // cannot happen (v has rank k - 1); keeps the loop bounded
  for (int64_t c = 0;; ++c)
    if (keys[c] == v && --ties_left == 0) return c + 1;
}

}  // namespace

uint32_t row_threshold(const PruneRowsArgs& a, const CallData& cd, Scratch& s, int64_t row, size_t elem, float mean,
                       bool prefetch_next, BracketPass pass, int64_t* cut) {
  const int64_t cols = a.weight.cols, k = a.k;
  const bool next = prefetch_next && row + 1 < a.weight.rows;
  s.prefetch = next ? row_ptr(a, row + 1, elem) : nullptr;
  s.prefetch_bytes = next ? size_t(cols) * elem : 0;
  uint32_t v, plo = 0, phi = 0;
  int64_t n_less, n_equal;
  const bool predicted = cols >= kMinSampledCols && predicted_bracket(s, mean, &plo, &phi);
  select_row(s, cd, cols, k - 1, &v, &n_less, &n_equal, predicted, plo, phi, pass);
  update_ratio(s, mean, v);
  *cut = tie_cut(s.keys.data(), cols, v, k, n_less, n_equal);
  return v;
}

namespace {

template <DType D>
FEATPRUNE_AVX2 void unstructured_row(const PruneRowsArgs& a, const CallData& cd, Scratch& s, int64_t row,
                                     uint8_t* flags) {
  constexpr size_t elem = D == DType::kFloat32 ? 4 : 2;
  void* w = const_cast<char*>(row_ptr(a, row, elem));
  const int64_t cols = a.weight.cols, cs = a.weight.col_stride, k = a.k;
  const bool contiguous = cs == 1;
  if (!contiguous && !flags) flags = s.flags.data();
  if (k == 0) {
    if (flags) std::memset(flags, 0, size_t(cols));
    return;
  }
  const float* scale = a.col_scale;
  const uint32_t* prot = cd.prot_or.data();
  uint32_t* keys = s.keys.data();
  int64_t j = 0;
  float mean = std::numeric_limits<float>::quiet_NaN();  // of the row's scores: feeds the predicted bracket
  if (contiguous) {
    __m256 sum0 = _mm256_setzero_ps(), sum1 = _mm256_setzero_ps();  // two chains: the adds stay off the critical path
    for (; j + 16 <= cols; j += 16) {  // the scores also go into the sums (protected ones too: an estimate)
      const __m256 s0 = score8(load8<D>(w, j), scale + j), s1 = score8(load8<D>(w, j + 8), scale + j + 8);
      sum0 = _mm256_add_ps(sum0, s0);
      sum1 = _mm256_add_ps(sum1, s1);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(keys + j), key_of8(s0, prot + j));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(keys + j + 8), key_of8(s1, prot + j + 8));
    }
    alignas(32) float lanes[8];
    _mm256_store_ps(lanes, _mm256_add_ps(sum0, sum1));
    float total = 0.0f;
    for (float x : lanes) total += x;
    for (; j < cols; ++j) {
      const float x = load1<D>(w, j);
      total += std::fabs(x) * scale[j];
      keys[j] = score_key(x, scale[j]) | prot[j];
    }
    mean = total / float(cols);
  }
  for (; j < cols; ++j) keys[j] = score_key(load1<D>(w, j * cs), scale[j]) | prot[j];  // strided rows
  int64_t cut;  // pruned: keys < v, and keys == v in columns < cut
  const uint32_t v = row_threshold(a, cd, s, row, elem, mean, contiguous, bracket_pass, &cut);
  const __m256i vv = _mm256_set1_epi32(int32_t(v));
  j = 0;
  if (cut == cols) {  // every key == v goes: the common case
    for (; j + 8 <= cols; j += 8) {
      const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(keys + j));
      const __m256i prune = _mm256_cmpeq_epi32(_mm256_min_epu32(x, vv), x);
      if (contiguous) blend_store8<D>(w, j, prune);
      if (flags) store_flags8(flags + j, prune);
    }
  } else {
    const __m256i cutv = _mm256_set1_epi32(int32_t(cut)), step = _mm256_set1_epi32(8);
    __m256i col = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    for (; j + 8 <= cols; j += 8) {
      const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(keys + j));
      const __m256i le = _mm256_cmpeq_epi32(_mm256_min_epu32(x, vv), x);
      const __m256i eq = _mm256_cmpeq_epi32(x, vv);
      const __m256i tie_ok = _mm256_cmpgt_epi32(cutv, col);
      const __m256i prune = _mm256_andnot_si256(_mm256_andnot_si256(tie_ok, eq), le);  // le & !(eq & !tie_ok)
      if (contiguous) blend_store8<D>(w, j, prune);
      if (flags) store_flags8(flags + j, prune);
      col = _mm256_add_epi32(col, step);
    }
  }
  for (; j < cols; ++j) {
    const bool p = (keys[j] < v) | ((keys[j] == v) & (j < cut));
    if (contiguous && p) zero1<D>(w, j);
    if (flags) flags[j] = p;
  }
  if (!contiguous)
    for (int64_t c = 0; c < cols; ++c)
      if (flags[c]) zero1<D>(w, c * cs);
}

enum class Level { kPortable, kAvx2, kAvx512 };

// The widest path this CPU has that FEATPRUNE_CPU_SIMD allows: "0" none (the portable path), "avx2"
// AVX2 at most, anything else (or unset) the best available. Read on every call, so tests can
// compare the paths in one process.
Level cpu_level() {
  static const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c") &&
                           __builtin_cpu_supports("popcnt");
  if (!avx2) return Level::kPortable;
  const char* env = std::getenv("FEATPRUNE_CPU_SIMD");
  if (env && env[0] == '0') return Level::kPortable;
  if (env && std::strcmp(env, "avx2") == 0) return Level::kAvx2;
  return avx512_usable() ? Level::kAvx512 : Level::kAvx2;
}

// The path for this call: the CPU's, unless the shape needs the portable one.
Level call_level(const PruneRowsArgs& a) {
  if (a.weight.cols >= (int64_t(1) << 31) - 16) return Level::kPortable;
  if (a.m > 0 && !(a.weight.col_stride == 1 && (a.m == 1 || a.m == 2 || a.m == 4 || a.m == 8)))
    return Level::kPortable;
  return cpu_level();
}

CallData make_call_data(const PruneRowsArgs& a) {
  CallData cd;
  const int64_t cols = a.weight.cols;
  cd.prot_or.assign(size_t(cols) + kPad, 0u);
  if (a.protect)
    for (int64_t j = 0; j < cols; ++j) cd.prot_or[j] = a.protect[j] ? kProtectedKey : 0u;
  cd.any_protected = std::find(cd.prot_or.begin(), cd.prot_or.end(), kProtectedKey) != cd.prot_or.end();
  cd.prot_bits.assign(size_t(cols) / 16 + kPad, 0);
  if (a.protect)
    for (int64_t j = 0; j < cols; ++j) cd.prot_bits[size_t(j / 16)] |= uint16_t((a.protect[j] ? 1u : 0u) << (j % 16));
  cd.abs_scale.resize(size_t(cols) + kPad, 0.0f);
  for (int64_t j = 0; j < cols; ++j) cd.abs_scale[j] = std::fabs(a.col_scale[j]);
  if (a.m == 0 && a.k > 0 && cols >= kMinSampledCols) {
    // Sample size ~ cols / 16 (at most 256); the bracket spans the target rank +- 3 standard
    // deviations of its sample estimate, so it misses rarely, and holds ~1/8-1/4 of the row.
    const int64_t ns = kSamples;
    uint64_t state = 0x9E3779B97F4A7C15ull;
    cd.sample_pos.resize(size_t(ns));
    for (int64_t i = 0; i < ns; ++i) {
      state += 0x9E3779B97F4A7C15ull;  // splitmix64: fixed, so every run samples the same columns
      uint64_t z = state;
      z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
      z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
      z ^= z >> 31;
      cd.sample_pos[size_t(i)] = int64_t((z >> 32) * uint64_t(cols) >> 32);
    }
    const double p = (double(a.k) - 0.5) / double(cols);
    const double center = p * double(ns), spread = kSpread * std::sqrt(double(ns) * p * (1.0 - p)) + 1.0;
    cd.sample_lo = int64_t(std::floor(center - spread));
    cd.sample_hi = int64_t(std::ceil(center + spread));
    if (cd.sample_lo < 0) cd.sample_lo = -1;
    if (cd.sample_hi > ns) cd.sample_hi = ns;
    if (cd.sample_lo < 0 && cd.sample_hi >= ns) cd.sample_pos.clear();  // the bracket would be everything
  }
  return cd;
}

template <DType D>
void run(const PruneRowsArgs& a, Level level) {
  const CallData cd = make_call_data(a);
  const bool wide = level == Level::kAvx512 && a.weight.col_stride == 1;  // AVX-512 rows are contiguous
  const int64_t rows = a.weight.rows, cols = a.weight.cols;
  const bool mask_direct = a.mask_out && a.mask_col_stride == 1;
#pragma omp parallel
  {
    Scratch s(a.m > 0 ? 0 : cols, cd.sample_pos.size());
    if (a.m > 0 && a.mask_out && !mask_direct) s.flags.resize(size_t(cols) + kPad);
#pragma omp for schedule(static)
    for (int64_t row = 0; row < rows; ++row) {
      uint8_t* flags = !a.mask_out ? nullptr : mask_direct ? a.mask_out + row * a.mask_row_stride : s.flags.data();
      switch (a.m) {
        case 0: wide ? unstructured_row_avx512<D>(a, cd, s, row, flags) : unstructured_row<D>(a, cd, s, row, flags); break;
        case 1: wide ? n_m_row_avx512<D, 1>(a, cd, row, flags) : n_m_row<D, 1>(a, cd, row, flags); break;
        case 2: wide ? n_m_row_avx512<D, 2>(a, cd, row, flags) : n_m_row<D, 2>(a, cd, row, flags); break;
        case 4: wide ? n_m_row_avx512<D, 4>(a, cd, row, flags) : n_m_row<D, 4>(a, cd, row, flags); break;
        default: wide ? n_m_row_avx512<D, 8>(a, cd, row, flags) : n_m_row<D, 8>(a, cd, row, flags); break;
      }
      if (a.mask_out && !mask_direct) {
        uint8_t* mask = a.mask_out + row * a.mask_row_stride;
        for (int64_t j = 0; j < cols; ++j) mask[j * a.mask_col_stride] = flags[j];
      }
    }
  }
}

}  // namespace
}  // namespace x86
#endif  // FEATPRUNE_X86_SIMD

const char* prune_rows_cpu_path() {
#ifdef FEATPRUNE_X86_SIMD
  switch (x86::cpu_level()) {
    case x86::Level::kAvx512: return "avx512";
    case x86::Level::kAvx2: return "avx2";
    case x86::Level::kPortable: break;
  }
#endif
  return "portable";
}

void prune_rows_cpu(const PruneRowsArgs& a) {
  check_args(a);
  if (a.weight.rows == 0 || a.weight.cols == 0) return;
#ifdef FEATPRUNE_X86_SIMD
  if (const x86::Level level = x86::call_level(a); level != x86::Level::kPortable) {
    switch (a.weight.dtype) {
      case DType::kFloat32: x86::run<DType::kFloat32>(a, level); return;
      case DType::kFloat16: x86::run<DType::kFloat16>(a, level); return;
      case DType::kBFloat16: x86::run<DType::kBFloat16>(a, level); return;
    }
  }
#endif
  dispatch_dtype(a.weight.dtype, [&](auto tag) {
    using Tag = decltype(tag);
#pragma omp parallel
    {
      RowScratch scratch(a.weight.cols);
#pragma omp for schedule(static)
      for (int64_t row = 0; row < a.weight.rows; ++row) {
        compute_keys<Tag>(a, row, scratch.keys.data());
        if (a.m > 0)
          flag_n_m(scratch, a.weight.cols, a.n, a.m);
        else
          flag_unstructured(scratch, a.weight.cols, a.k);
        apply_row<Tag>(a, row, scratch.pruned.data());
      }
    }
  });
}

}  // namespace featprune
