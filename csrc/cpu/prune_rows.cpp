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
#include <algorithm>
#include <array>
#include <cstring>
#include <vector>

#include "dtype_access.h"
#include "featprune/kernels.h"

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

void prune_rows_cpu(const PruneRowsArgs& a) {
  check_args(a);
  if (a.weight.rows == 0 || a.weight.cols == 0) return;
  cpu::dispatch_dtype(a.weight.dtype, [&](auto tag) {
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
