// CPU prune_rows: per row, O(C) selection of the k smallest score keys.
//
// A 4096-bin histogram of the keys' top 12 bits (sign, exponent, 3 mantissa
// bits) finds the bin holding the k-th smallest key; nth_element over that bin's
// few candidates gives the exact threshold key v. Then one ordered pass zeroes
// keys < v and the first (k - #less) keys == v, which is exactly what a stable
// ascending sort would select.
#include <algorithm>
#include <cstring>
#include <vector>

#include "dtype_access.h"
#include "featprune/kernels.h"

namespace featprune {
namespace {

constexpr int kHistBits = 12;
constexpr int kHistShift = 32 - kHistBits;
constexpr int kHistBins = 1 << kHistBits;

struct RowScratch {
  std::vector<uint32_t> keys;
  std::vector<uint32_t> candidates;
  std::vector<uint32_t> hist;
  explicit RowScratch(int64_t cols) : keys(cols), hist(kHistBins) { candidates.reserve(cols); }
};

template <typename Tag>
void compute_keys(const PruneRowsArgs& a, int64_t row, uint32_t* keys) {
  using S = typename Tag::storage;
  const S* w = static_cast<const S*>(a.weight.data) + row * a.weight.row_stride;
  const int64_t cs = a.weight.col_stride;
  for (int64_t j = 0; j < a.weight.cols; ++j) keys[j] = score_key(Tag::load(w + j * cs), a.col_scale[j]);
  if (a.protect)
    for (int64_t j = 0; j < a.weight.cols; ++j)
      if (a.protect[j]) keys[j] = kProtectedKey;
}

// Exact k-th smallest key (1-based k >= 1) and how many keys are strictly smaller.
void select_threshold(RowScratch& s, int64_t cols, int64_t k, uint32_t* threshold, int64_t* n_less) {
  std::fill(s.hist.begin(), s.hist.end(), 0u);
  for (int64_t j = 0; j < cols; ++j) ++s.hist[s.keys[j] >> kHistShift];
  int64_t before = 0;
  int bin = 0;
  for (; bin < kHistBins; ++bin) {
    if (before + int64_t(s.hist[bin]) >= k) break;
    before += s.hist[bin];
  }
  s.candidates.clear();
  for (int64_t j = 0; j < cols; ++j)
    if (int(s.keys[j] >> kHistShift) == bin) s.candidates.push_back(s.keys[j]);
  const int64_t rank = k - before - 1;  // 0-based rank inside the bin
  std::nth_element(s.candidates.begin(), s.candidates.begin() + rank, s.candidates.end());
  const uint32_t v = s.candidates[rank];
  int64_t less_in_bin = 0;
  for (uint32_t c : s.candidates) less_in_bin += c < v;
  *threshold = v;
  *n_less = before + less_in_bin;
}

template <typename Tag>
void zero_at(const PruneRowsArgs& a, int64_t row, int64_t col) {
  using S = typename Tag::storage;
  S* w = static_cast<S*>(a.weight.data);
  w[row * a.weight.row_stride + col * a.weight.col_stride] = S(0);
}

void write_mask_row(const PruneRowsArgs& a, int64_t row, const uint8_t* pruned) {
  if (!a.mask_out) return;
  uint8_t* m = a.mask_out + row * a.mask_row_stride;
  for (int64_t j = 0; j < a.weight.cols; ++j) m[j * a.mask_col_stride] = pruned[j];
}

template <typename Tag>
void prune_row_unstructured(const PruneRowsArgs& a, int64_t row, RowScratch& s, std::vector<uint8_t>& pruned) {
  const int64_t cols = a.weight.cols;
  std::fill(pruned.begin(), pruned.end(), uint8_t(0));
  if (a.k > 0) {
    compute_keys<Tag>(a, row, s.keys.data());
    uint32_t v;
    int64_t n_less;
    select_threshold(s, cols, a.k, &v, &n_less);
    int64_t ties_left = a.k - n_less;
    for (int64_t j = 0; j < cols; ++j) {
      const uint32_t key = s.keys[j];
      if (key < v || (key == v && ties_left-- > 0)) {
        pruned[j] = 1;
        zero_at<Tag>(a, row, j);
      }
    }
  }
  write_mask_row(a, row, pruned.data());
}

template <typename Tag>
void prune_row_n_m(const PruneRowsArgs& a, int64_t row, RowScratch& s, std::vector<uint8_t>& pruned) {
  const int64_t cols = a.weight.cols;
  const int m = a.m, drop = a.m - a.n;
  compute_keys<Tag>(a, row, s.keys.data());
  for (int64_t g = 0; g < cols; g += m) {
    const uint32_t* key = s.keys.data() + g;
    for (int i = 0; i < m; ++i) {
      // rank = position of entry i in a stable ascending sort of the group
      int rank = 0;
      for (int o = 0; o < m; ++o) rank += key[o] < key[i] || (key[o] == key[i] && o < i);
      const bool protected_col = a.protect && a.protect[g + i];
      pruned[g + i] = !protected_col && rank < drop;
      if (pruned[g + i]) zero_at<Tag>(a, row, g + i);
    }
  }
  write_mask_row(a, row, pruned.data());
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
      std::vector<uint8_t> pruned(a.weight.cols);
#pragma omp for schedule(static)
      for (int64_t row = 0; row < a.weight.rows; ++row) {
        if (a.m > 0)
          prune_row_n_m<Tag>(a, row, scratch, pruned);
        else
          prune_row_unstructured<Tag>(a, row, scratch, pruned);
      }
    }
  });
}

}  // namespace featprune
