// The two fused kernels (contracts in docs/ARCHITECTURE.md). Each has a CPU and a
// CUDA implementation with identical semantics; a build without CUDA defines the
// CUDA entry points as functions that throw featprune::Error.
#pragma once

#include <string>

#include <cstdint>

#include "featprune/tensor.h"

namespace featprune {

// accumulate_stats: for every counted token t (token_mask == nullptr or
// token_mask[t] != 0) and feature f:
//   sumsq[f]  += float(x[t, f])^2        (fp32 accumulation)
//   absmax[f]  = max(absmax[f], |x[t, f]|)   (when absmax != nullptr)
//   *count    += number of counted tokens
// NaN rule (CPU, CUDA and reference.py alike): NaN propagates. If any counted
// x[t, f] is NaN, sumsq[f] and absmax[f] become NaN, and a NaN already in
// either accumulator stays NaN; the max is nan_max() of dtype_traits.h, i.e.
// torch.maximum, never std::max/fmaxf (which drop NaN). So a caller detects a
// NaN activation from the statistics alone. Tokens that are not counted
// (padding) are never read into either value, NaN or not.
// Deterministic: the same input gives bit-identical output on the same device
// (fixed reduction order, no float atomics).
struct AccumulateStatsArgs {
  MatrixView x;                        // [T, F], read only
  const uint8_t* token_mask = nullptr; // [T] contiguous, nonzero = counted
  float* sumsq = nullptr;              // [F] contiguous (one bucket's row)
  float* absmax = nullptr;             // [F] contiguous or nullptr
  int64_t* count = nullptr;            // one int64 (the bucket's token count)
};

// prune_rows: score_ij = |float(w_ij)| * col_scale_j in fp32.
// Unstructured (m == 0): in every row the k smallest scores among unprotected
//   columns are zeroed; among equal scores the lower column index goes first
//   (the order of a stable ascending sort).
// N:M (m > 0): in every group of m consecutive columns, the m - n smallest
//   unprotected scores are zeroed, same tie rule.
// Protected columns (protect[j] != 0) are never zeroed; callers guarantee each
// row (group) has enough unprotected entries. Kept entries are not written.
// mask_out (optional) receives 1 where pruned, 0 elsewhere.
struct PruneRowsArgs {
  MatrixView weight;                  // [R, C], modified in place
  const float* col_scale = nullptr;   // [C] contiguous fp32
  const uint8_t* protect = nullptr;   // [C] contiguous or nullptr
  uint8_t* mask_out = nullptr;        // [R, C] strided or nullptr
  int64_t mask_row_stride = 0;
  int64_t mask_col_stride = 1;
  int64_t k = 0;                      // unstructured: zeros per row
  int n = 0;                          // N:M: kept per group
  int m = 0;                          // N:M: group size; 0 = unstructured
};

void accumulate_stats_cpu(const AccumulateStatsArgs& args);
void prune_rows_cpu(const PruneRowsArgs& args);

// The vector path prune_rows_cpu takes for contiguous rows on this CPU, as FEATPRUNE_CPU_SIMD
// allows now: "avx512", "avx2" or "portable" (same results on every path).
const char* prune_rows_cpu_path();

// `stream` is a cudaStream_t passed as void* so this header stays CUDA-free.
void accumulate_stats_cuda(const AccumulateStatsArgs& args, void* stream);
void prune_rows_cuda(const PruneRowsArgs& args, void* stream);

// True when the CUDA kernels were compiled into this build.
bool cuda_compiled();

// CUDA versions encoded like CUDART_VERSION (1000 * major + 10 * minor): the
// runtime this build was compiled against and links statically, and the newest
// CUDA version the installed driver supports (0 when no driver is found). Both
// are 0 in a build without CUDA. Neither creates a CUDA context.
int cuda_runtime_version();
int cuda_driver_version();

// Whether device `device` can run this build's kernels: "" when it can, else the CUDA
// error (e.g. "cudaErrorNoKernelImageForDevice: ..." when the build carries no SASS the
// GPU runs and no PTX it can JIT, "cudaErrorInsufficientDriver: ..." for an old driver).
// Loads the kernels' module on that device (creates its primary context, as torch
// already has for a tensor there); restores the current device.
std::string cuda_kernel_problem(int device);

}  // namespace featprune
