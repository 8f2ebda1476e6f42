// Helpers shared by the CUDA kernels: error checks, the launch wrapper, 16-byte
// vector unpacking and small block-wide scans. The dtype traits (F32, F16, BF16)
// and dispatch_dtype are featprune/dtype_traits.h, shared with the CPU code.
#pragma once

#include <cstdint>
#include <string>

#include "featprune/dtype_traits.h"
#include "featprune/kernels.h"
#include "featprune/score.h"
#include "featprune/tensor.h"

#if defined(FEATPRUNE_CUDA_SIM)
// Offline host-thread emulation of the CUDA runtime, used only to test these
// kernels on a machine without a GPU. Never defined in the real build.
#include FEATPRUNE_CUDA_SIM
#else
#include <cuda_runtime.h>
#endif

// Dynamic shared memory viewed as an array of T (16-byte aligned).
#ifndef FEATPRUNE_DYNAMIC_SMEM
#define FEATPRUNE_DYNAMIC_SMEM(T, name)                                 \
  extern __shared__ __align__(16) unsigned char featprune_dyn_smem_[]; \
  T* name = reinterpret_cast<T*>(featprune_dyn_smem_)
#endif

namespace featprune {
namespace cuda {

inline void check_cuda(cudaError_t err, const std::string& what) {
  if (err != cudaSuccess) {
    cudaGetLastError();  // reported here: the next launch check must not report it again
    throw Error("featprune: " + what + ": " + cudaGetErrorString(err));
  }
}

// Call right after a launch: reports configuration errors with the kernel name.
inline void check_launch(const char* kernel) {
  check_cuda(cudaGetLastError(), std::string("launch of ") + kernel + " failed");
}

template <class Params>
void launch_kernel(void (*kernel)(Params), dim3 grid, dim3 block, size_t smem,
                   cudaStream_t stream, const Params& params, const char* name) {
#if defined(FEATPRUNE_CUDA_SIM)
  (void)stream;  // the emulation runs everything synchronously
  sim_launch(kernel, grid, block, smem, params, name);
#else
  kernel<<<grid, block, smem, stream>>>(params);
#endif
  check_launch(name);
}

// Unpacks one 16-byte vector of D::kVec elements into floats.
template <class D>
__device__ __forceinline__ void unpack16(const uint4& raw, float* out) {
  const uint32_t w[4] = {raw.x, raw.y, raw.z, raw.w};
  if constexpr (D::kVec == 4) {
#pragma unroll
    for (int i = 0; i < 4; ++i) out[i] = bits_to_float(w[i]);
  } else {
#pragma unroll
    for (int i = 0; i < 4; ++i) {  // little endian: low half is the lower index
      out[2 * i] = D::to_float(uint16_t(w[i] & 0xFFFFu));
      out[2 * i + 1] = D::to_float(uint16_t(w[i] >> 16));
    }
  }
}

// ---- block-wide scans (blockDim.x == BLOCK, a multiple of 32) -------------

__device__ __forceinline__ int lane_id() { return int(threadIdx.x) & 31; }
__device__ __forceinline__ int warp_id() { return int(threadIdx.x) >> 5; }

// Exclusive prefix sum of v over the block in thread order; *total gets the sum.
// warp_sums: BLOCK/32 shared words. Ends with a barrier, so warp_sums may be
// reused right away.
template <int BLOCK>
__device__ __forceinline__ uint32_t block_exclusive_sum(uint32_t v, uint32_t* warp_sums,
                                                        uint32_t* total) {
  constexpr int kWarps = BLOCK / 32;
  const int lane = lane_id(), warp = warp_id();
  uint32_t incl = v;
#pragma unroll
  for (int d = 1; d < 32; d <<= 1) {
    const uint32_t other = __shfl_up_sync(0xFFFFFFFFu, incl, d);
    if (lane >= d) incl += other;
  }
  if (lane == 31) warp_sums[warp] = incl;
  __syncthreads();
  uint32_t before = 0, sum = 0;
#pragma unroll
  for (int w = 0; w < kWarps; ++w) {
    const uint32_t s = warp_sums[w];
    before += (w < warp) ? s : 0u;
    sum += s;
  }
  __syncthreads();
  *total = sum;
  return before + incl - v;
}

// Number of threads before this one (in thread order) whose pred is true;
// *total gets the block-wide count. One barrier only: callers that call it in
// a loop must alternate between two warp_counts buffers (BLOCK/32 words each).
template <int BLOCK>
__device__ __forceinline__ uint32_t block_exclusive_count(bool pred, uint32_t* warp_counts,
                                                          uint32_t* total) {
  constexpr int kWarps = BLOCK / 32;
  const int lane = lane_id(), warp = warp_id();
  const uint32_t ballot = __ballot_sync(0xFFFFFFFFu, pred);
  if (lane == 0) warp_counts[warp] = uint32_t(__popc(ballot));
  __syncthreads();
  uint32_t before = 0, sum = 0;
#pragma unroll
  for (int w = 0; w < kWarps; ++w) {
    const uint32_t c = warp_counts[w];
    before += (w < warp) ? c : 0u;
    sum += c;
  }
  *total = sum;
  return before + uint32_t(__popc(ballot & ((1u << lane) - 1u)));
}

}  // namespace cuda
}  // namespace featprune
