// AVX-512 rows of the CPU prune_rows (x86-64 with AVX-512 F/BW/VL/DQ, checked at run time; see the
// dispatch in prune_rows.cpp). The same algorithm as the AVX2 path, 16 lanes at a time; what AVX-512
// adds is mask registers, which make three steps cheaper:
// - compares give a 16-bit mask, so ranks, counts and compaction need no lane-mask arithmetic;
// - pruned weights are zeroed by a masked store of zeros: kept weights are neither read nor written;
// - vector tails are masked loads and stores instead of scalar loops.
// Candidates are compacted with vpcompressd into a register and then stored whole (the form that
// compresses straight to memory is slow on Intel cores). Results are bit for bit those of the other
// paths (tests/native/test_prune_rows.py runs every path against the PyTorch reference).
#include "prune_rows_x86.h"

// GCC 12's AVX-512 headers trip -W(maybe-)uninitialized on their own _mm512_undefined_* temporaries.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

#ifdef FEATPRUNE_X86_SIMD
#include <cstring>

#include "featprune/score.h"

namespace featprune::x86 {
namespace {

// Lanes [0, n) of 16 (n clamped to [0, 16]).
inline __mmask16 first_lanes(int64_t n) {
  return n >= 16 ? __mmask16(0xFFFF) : n <= 0 ? __mmask16(0) : __mmask16((1u << n) - 1u);
}

// 16 weights as fp32; lanes outside `lanes` read as 0 (and are not read from memory).
template <DType D>
FEATPRUNE_AVX512 inline __m512 load16(const void* base, int64_t j, __mmask16 lanes) {
  if constexpr (D == DType::kFloat32) {
    return _mm512_maskz_loadu_ps(lanes, static_cast<const float*>(base) + j);
  } else {
    const __m256i raw = _mm256_maskz_loadu_epi16(lanes, static_cast<const uint16_t*>(base) + j);
    if constexpr (D == DType::kFloat16)
      return _mm512_cvtph_ps(raw);  // exact (NaN payloads differ: keys canonicalise them)
    else
      return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(raw), 16));
  }
}

// The key of every NaN score. score_key() gives NaN 0x7FFFFFFF; any one value between +inf's key
// and kProtectedKey orders the same (this path's keys never leave it), and this one takes a single
// unsigned min: scores of |w| * |scale| are +0.0..+inf (keys 0..0x7F800000) or NaN (either sign).
constexpr uint32_t kNanKey = 0x7F800001u;

// The keys of 16 scores |w| * |scale|, protected columns forced to kProtectedKey.
FEATPRUNE_AVX512 inline __m512i key16(__m512 s, const uint32_t* prot_or) {
  const __m512i key = _mm512_min_epu32(_mm512_castps_si512(s), _mm512_set1_epi32(int32_t(kNanKey)));
  return _mm512_or_si512(key, _mm512_loadu_si512(prot_or));
}

// |w| * |scale| for 16 columns (abs_scale: CallData::abs_scale, zero-padded, so masked-out weights
// beyond the row give 0).
FEATPRUNE_AVX512 inline __m512 score16(__m512 w, const float* abs_scale) {
  return _mm512_mul_ps(_mm512_abs_ps(w), _mm512_loadu_ps(abs_scale));
}

// Zero the pruned lanes of w[j .. j+16): kept lanes are not touched.
template <DType D>
FEATPRUNE_AVX512 inline void zero_pruned16(void* base, int64_t j, __mmask16 prune) {
  if constexpr (D == DType::kFloat32)
    _mm512_mask_storeu_ps(static_cast<float*>(base) + j, prune, _mm512_setzero_ps());
  else
    _mm256_mask_storeu_epi16(static_cast<uint16_t*>(base) + j, prune, _mm256_setzero_si256());
}

// flags[j + l] = prune bit l, for the lanes in `lanes` only.
FEATPRUNE_AVX512 inline void store_flags16(uint8_t* flags, int64_t j, __mmask16 prune, __mmask16 lanes) {
  _mm_mask_storeu_epi8(flags + j, lanes, _mm_maskz_mov_epi8(prune, _mm_set1_epi8(1)));
}

// The BracketPass of prune_rows_x86.h, 16 keys at a time.
FEATPRUNE_AVX512 size_t bracket_pass16(const uint32_t* keys, size_t n, uint32_t lo, uint32_t hi, uint32_t* dst,
                                       int64_t* n_below, const char* prefetch, size_t prefetch_bytes) {
  const __m512i lov = _mm512_set1_epi32(int32_t(lo)), hiv = _mm512_set1_epi32(int32_t(hi));
  size_t m = 0, at_least_lo = 0, i = 0;
  auto step = [&](__mmask16 lanes) FEATPRUNE_AVX512 {
    const __m512i x = _mm512_maskz_loadu_epi32(lanes, keys + i);
    const __mmask16 ge = _mm512_mask_cmpge_epu32_mask(lanes, x, lov);
    const __mmask16 in = _mm512_mask_cmple_epu32_mask(ge, x, hiv);
    _mm512_storeu_si512(dst + m, _mm512_maskz_compress_epi32(in, x));
    m += size_t(_mm_popcnt_u32(in));
    at_least_lo += size_t(_mm_popcnt_u32(ge));
  };
  for (; i + 16 <= n; i += 16) {  // whole vectors: a constant mask, which the compiler drops
    step(0xFFFF);
    if (prefetch_bytes) {
      _mm_prefetch(prefetch, _MM_HINT_T0);
      prefetch += 64;
      prefetch_bytes = prefetch_bytes > 64 ? prefetch_bytes - 64 : 0;
    }
  }
  if (i < n) step(first_lanes(int64_t(n - i)));
  *n_below = int64_t(n - at_least_lo);
  return m;
}

// Rotation r of every group of M lanes (lane i of a group takes lane (i + r) mod M). Groups of 2
// and 4 lie within a 128-bit lane, so an in-lane shuffle does it; groups of 8 need a permute.
template <int M>
FEATPRUNE_AVX512 inline __m512i rotate_groups16(__m512i x, int r, __m512i idx) {
  if constexpr (M == 2) {
    return _mm512_shuffle_epi32(x, _MM_PERM_ENUM(0xB1));  // lanes (1, 0, 3, 2)
  } else if constexpr (M == 4) {
    if (r == 1) return _mm512_shuffle_epi32(x, _MM_PERM_ENUM(0x39));  // lanes (1, 2, 3, 0)
    if (r == 2) return _mm512_shuffle_epi32(x, _MM_PERM_ENUM(0x4E));  // lanes (2, 3, 0, 1)
    return _mm512_shuffle_epi32(x, _MM_PERM_ENUM(0x93));              // lanes (3, 0, 1, 2)
  } else {
    return _mm512_permutexvar_epi32(idx, x);
  }
}

// N:M with groups of 2 or 4 (1:2, 2:4, ...): each lane's rank in its group from two compares at
// most, and the rest on 16-bit masks in general-purpose registers. (AVX-512 compares into masks run
// on one port; the generic path below needs 2 (M - 1) of them per vector, this one M / 2.)
// - Protected keys become 0x7FFFFFFF, above every score's key (NaN's included), so key + 1 cannot
//   overflow; they are never pruned whatever their rank.
// - before_r (lane i): "lane i + r of the group comes before lane i" in a stable ascending sort,
//   i.e. its key is smaller, or equal with a lower column (the "wrap" lanes, where (i + r) mod M < i):
//   key_i + wrap > key_(i+r) in one unsigned compare.
// - For M = 4, before_3 (lane i) = not before_1 (lane i - 1): the same pair seen from the other side.
template <DType D, int M>
FEATPRUNE_AVX512 void n_m_small_row(const PruneRowsArgs& a, const CallData& cd, int64_t row, uint8_t* flags) {
  static_assert(M == 2 || M == 4, "groups of 2 or 4 lanes");
  constexpr size_t elem = D == DType::kFloat32 ? 4 : 2;
  void* w = const_cast<char*>(row_ptr(a, row, elem));
  const int64_t cols = a.weight.cols;
  const float* scale = cd.abs_scale.data();
  const uint16_t* prot_bits = cd.prot_bits.data();
  const int drop = M - a.n;
  const __m512i wrap1 = M == 2 ? _mm512_setr_epi32(0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1)
                               : _mm512_setr_epi32(0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1);
  const __m512i wrap2 = _mm512_setr_epi32(0, 0, 1, 1, 0, 0, 1, 1, 0, 0, 1, 1, 0, 0, 1, 1);
  const __m512i nan_key = _mm512_set1_epi32(int32_t(kNanKey)), top_key = _mm512_set1_epi32(0x7FFFFFFF);
  const char* next = row + 1 < a.weight.rows ? row_ptr(a, row + 1, elem) : nullptr;
  int64_t j = 0;
  auto step = [&](__mmask16 lanes) FEATPRUNE_AVX512 {
    const __mmask16 prot = prot_bits[j / 16];
    __m512i key = _mm512_min_epu32(_mm512_castps_si512(score16(load16<D>(w, j, lanes), scale + j)), nan_key);
    key = _mm512_mask_mov_epi32(key, prot, top_key);
    // Lanes (1, 0, 3, 2) for M = 2, (1, 2, 3, 0) for M = 4.
    const __m512i o1 = _mm512_shuffle_epi32(key, _MM_PERM_ENUM(M == 2 ? 0xB1 : 0x39));
    const unsigned b1 = _mm512_cmpgt_epu32_mask(_mm512_add_epi32(key, wrap1), o1);
    unsigned keep_rank;  // lanes whose rank is >= drop
    if constexpr (M == 2) {
      keep_rank = drop == 0 ? 0xFFFFu : drop == 1 ? b1 : 0u;  // rank = b1
    } else {
      const __m512i o2 = _mm512_shuffle_epi32(key, _MM_PERM_ENUM(0x4E));  // lanes (2, 3, 0, 1)
      const unsigned b2 = _mm512_cmpgt_epu32_mask(_mm512_add_epi32(key, wrap2), o2);
      const unsigned b3 = ~(((b1 << 1) & 0xEEEEu) | ((b1 >> 3) & 0x1111u)) & 0xFFFFu;
      const unsigned ones = b1 ^ b2 ^ b3, twos = (b1 & b2) | (b1 & b3) | (b2 & b3);  // rank = 2 twos + ones
      switch (drop) {
        case 0: keep_rank = 0xFFFFu; break;
        case 1: keep_rank = ones | twos; break;
        case 2: keep_rank = twos; break;
        case 3: keep_rank = twos & ones; break;
        default: keep_rank = 0u; break;
      }
    }
    const __mmask16 prune = __mmask16(lanes & ~prot & ~keep_rank);
    zero_pruned16<D>(w, j, prune);
    if (flags) store_flags16(flags, j, prune, lanes);
  };
  for (; j + 16 <= cols; j += 16) {
    prefetch_next_row(next, j, elem);
    step(0xFFFF);
  }
  if (j < cols) step(first_lanes(cols - j));  // whole groups: cols % 16 is a multiple of M
}

}  // namespace

bool avx512_usable() {
  static const bool ok = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
                         __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c") &&
                         __builtin_cpu_supports("popcnt");
  return ok;
}

// Writes the row's keys, and returns the sum of its scores (protected ones included: it only feeds
// the predicted bracket's estimate of the mean). Keys past cols (up to the next 16) are written too;
// every later pass masks them out. Without protected columns the 4 bytes per column of prot_or are
// not read: the row's keys, weights, scales and protection flags would not all fit in L1 together.
template <DType D, bool kProtect>
FEATPRUNE_AVX512 float key_pass(const void* w, const float* scale, const uint32_t* prot, int64_t cols, uint32_t* keys) {
  auto key = [&](__m512 s, int64_t j) FEATPRUNE_AVX512 {
    if constexpr (kProtect) return key16(s, prot + j);
    return _mm512_min_epu32(_mm512_castps_si512(s), _mm512_set1_epi32(int32_t(kNanKey)));
  };
  __m512 sum0 = _mm512_setzero_ps(), sum1 = _mm512_setzero_ps();  // two chains: the adds stay off the critical path
  int64_t j = 0;
  for (; j + 32 <= cols; j += 32) {
    const __m512 s0 = score16(load16<D>(w, j, 0xFFFF), scale + j);
    const __m512 s1 = score16(load16<D>(w, j + 16, 0xFFFF), scale + j + 16);
    sum0 = _mm512_add_ps(sum0, s0);
    sum1 = _mm512_add_ps(sum1, s1);
    _mm512_storeu_si512(keys + j, key(s0, j));
    _mm512_storeu_si512(keys + j + 16, key(s1, j + 16));
  }
  for (; j < cols; j += 16) {
    const __m512 s0 = score16(load16<D>(w, j, first_lanes(cols - j)), scale + j);
    sum0 = _mm512_add_ps(sum0, s0);
    _mm512_storeu_si512(keys + j, key(s0, j));
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(sum0, sum1));
}

template <DType D>
FEATPRUNE_AVX512 void unstructured_row_avx512(const PruneRowsArgs& a, const CallData& cd, Scratch& s, int64_t row,
                                              uint8_t* flags) {
  constexpr size_t elem = D == DType::kFloat32 ? 4 : 2;
  void* w = const_cast<char*>(row_ptr(a, row, elem));
  const int64_t cols = a.weight.cols, k = a.k;
  if (k == 0) {
    if (flags) std::memset(flags, 0, size_t(cols));
    return;
  }
  const float* scale = cd.abs_scale.data();
  uint32_t* keys = s.keys.data();
  const float mean = (cd.any_protected ? key_pass<D, true> : key_pass<D, false>)(w, scale, cd.prot_or.data(), cols,
                                                                                   keys) / float(cols);
  int64_t cut;  // pruned: keys < v, and keys == v in columns < cut
  const uint32_t v = row_threshold(a, cd, s, row, elem, mean, true, bracket_pass16, &cut);
  const __m512i vv = _mm512_set1_epi32(int32_t(v));
  for (int64_t j = 0; j < cols; j += 16) {
    const __mmask16 lanes = first_lanes(cols - j);
    const __m512i x = _mm512_loadu_si512(keys + j);
    __mmask16 prune = _mm512_mask_cmple_epu32_mask(lanes, x, vv);
    if (j + 16 > cut)  // keys == v at columns >= cut stay
      prune &= __mmask16(~(_mm512_cmpeq_epu32_mask(x, vv) & ~first_lanes(cut - j)));
    zero_pruned16<D>(w, j, prune);
    if (flags) store_flags16(flags, j, prune, lanes);
  }
}

template <DType D, int M>
FEATPRUNE_AVX512 void n_m_row_avx512(const PruneRowsArgs& a, const CallData& cd, int64_t row, uint8_t* flags) {
  if constexpr (M == 2 || M == 4) {
    n_m_small_row<D, M>(a, cd, row, flags);
    return;
  }
  constexpr size_t elem = D == DType::kFloat32 ? 4 : 2;
  void* w = const_cast<char*>(row_ptr(a, row, elem));
  const int64_t cols = a.weight.cols;
  const float* scale = cd.abs_scale.data();
  const uint32_t* prot = cd.prot_or.data();
  // Rotation r brings lane (i + r) mod M of the group to lane i; "wrap" lanes see a lower column
  // index, where an equal key ranks first (stable order).
  __m512i idx[M > 1 ? M : 2];
  __mmask16 wrap[M > 1 ? M : 2] = {};
  for (int r = 1; r < M; ++r) {
    alignas(64) int32_t iv[16];
    unsigned wv = 0;
    for (int i = 0; i < 16; ++i) {
      const int g = i / M * M, pos = i % M;
      iv[i] = g + (pos + r) % M;
      if (pos + r >= M) wv |= 1u << i;
    }
    idx[r] = _mm512_load_si512(iv);
    wrap[r] = __mmask16(wv);
  }
  const __m512i dropv = _mm512_set1_epi32(M - a.n), one = _mm512_set1_epi32(1);
  const __m512i protected_key = _mm512_set1_epi32(int32_t(kProtectedKey));
  const char* next = row + 1 < a.weight.rows ? row_ptr(a, row + 1, elem) : nullptr;
  // cols % 16 is a multiple of M, so the tail holds whole groups: masked-out lanes never mix with
  // kept ones inside a group.
  for (int64_t j = 0; j < cols; j += 16) {
    prefetch_next_row(next, j, elem);
    const __mmask16 lanes = first_lanes(cols - j);
    const __m512i key = key16(score16(load16<D>(w, j, lanes), scale + j), prot + j);
    __m512i rank = _mm512_setzero_si512();
    for (int r = 1; r < M; ++r) {
      const __m512i o = rotate_groups16<M>(key, r, idx[r]);
      const __mmask16 before = _mm512_cmpgt_epu32_mask(key, o) | _mm512_mask_cmpeq_epu32_mask(wrap[r], key, o);
      rank = _mm512_mask_add_epi32(rank, before, rank, one);
    }
    const __mmask16 unprotected = _mm512_mask_cmpneq_epu32_mask(lanes, key, protected_key);
    const __mmask16 prune = _mm512_mask_cmpgt_epi32_mask(unprotected, dropv, rank);
    zero_pruned16<D>(w, j, prune);
    if (flags) store_flags16(flags, j, prune, lanes);
  }
}

#define FEATPRUNE_INSTANTIATE(D)                                                                          \
  template void unstructured_row_avx512<D>(const PruneRowsArgs&, const CallData&, Scratch&, int64_t, uint8_t*); \
  template void n_m_row_avx512<D, 1>(const PruneRowsArgs&, const CallData&, int64_t, uint8_t*);               \
  template void n_m_row_avx512<D, 2>(const PruneRowsArgs&, const CallData&, int64_t, uint8_t*);               \
  template void n_m_row_avx512<D, 4>(const PruneRowsArgs&, const CallData&, int64_t, uint8_t*);               \
  template void n_m_row_avx512<D, 8>(const PruneRowsArgs&, const CallData&, int64_t, uint8_t*);
FEATPRUNE_INSTANTIATE(DType::kFloat32)
FEATPRUNE_INSTANTIATE(DType::kFloat16)
FEATPRUNE_INSTANTIATE(DType::kBFloat16)
#undef FEATPRUNE_INSTANTIATE

}  // namespace featprune::x86
#endif  // FEATPRUNE_X86_SIMD
