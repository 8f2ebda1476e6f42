// Kernels that check the emulation itself: warp operations give the values
// CUDA defines, and misuse that would hang or corrupt a real GPU is reported.
// fp_sim_selftest(case, out, n, err, errlen) launches one case; it returns 0
// with out[0, n) filled, or 1 with the launch error in err.
#include <cstdint>
#include <cstring>
#include <string>

#include FEATPRUNE_CUDA_SIM

namespace {

struct P {
  int which;
  int32_t* out;
};

// Case 0: warp operations. out[i] for 64 threads: shfl_up(i, 1), shfl_down(i, 2),
// shfl_xor(i, 5), shfl(i, 7), then ballot(i % 3 == 0) per warp, then a block
// sum through shared memory.
__global__ void warp_ops_kernel(P p) {
  __shared__ int32_t tot[2];
  const int i = int(threadIdx.x), lane = i & 31, warp = i >> 5;
  int32_t* o = p.out + i * 6;
  o[0] = __shfl_up_sync(0xFFFFFFFFu, i, 1);
  o[1] = __shfl_down_sync(0xFFFFFFFFu, i, 2);
  o[2] = __shfl_xor_sync(0xFFFFFFFFu, i, 5);
  o[3] = __shfl_sync(0xFFFFFFFFu, i, 7);
  o[4] = int32_t(__ballot_sync(0xFFFFFFFFu, i % 3 == 0));
  int32_t v = i;
  for (int d = 16; d > 0; d >>= 1) v += __shfl_down_sync(0xFFFFFFFFu, v, d);
  if (lane == 0) tot[warp] = v;
  __syncthreads();
  o[5] = tot[0] + tot[1];
}

// Case 1: __syncthreads in divergent code (threads at two different barriers).
__global__ void divergent_barrier_kernel(P p) {
  if (threadIdx.x < 32) {
    __syncthreads();
  } else {
    __syncthreads();
  }
  p.out[threadIdx.x] = 1;
}

// Case 2: a full-mask shuffle after half the warp has exited.
__global__ void exited_lanes_kernel(P p) {
  if (threadIdx.x >= 16) return;
  p.out[threadIdx.x] = __shfl_down_sync(0xFFFFFFFFu, int(threadIdx.x), 1);
}

// Case 3: lanes split between a warp operation and __syncthreads: a deadlock.
__global__ void deadlock_kernel(P p) {
  if (threadIdx.x % 32 < 8) {
    __syncthreads();
  } else {
    p.out[threadIdx.x] = int(__ballot_sync(0xFFFFFFFFu, 1));
  }
}

// Case 4: a read of another warp's shared write with no barrier in between:
// the result depends on the schedule (reverse order sees the write).
__global__ void race_kernel(P p) {
  __shared__ int32_t flag;
  if (threadIdx.x == 0) flag = 0;
  __syncthreads();
  if (threadIdx.x == 32) flag = 1;
  if (threadIdx.x == 0) p.out[0] = flag;  // missing __syncthreads before this read
}

// Case 5: dynamic shared memory above 48 KiB without cudaFuncSetAttribute.
__global__ void big_smem_kernel(P p) {
  FEATPRUNE_DYNAMIC_SMEM(int32_t, buf);
  buf[threadIdx.x] = 1;
  p.out[threadIdx.x] = buf[threadIdx.x];
}

}  // namespace

extern "C" int fp_sim_selftest(int which, int32_t* out, char* err, int errlen) {
  P p{which, out};
  switch (which) {
    case 0: sim_launch(warp_ops_kernel, dim3(1), dim3(64), 0, p, "warp_ops_kernel"); break;
    case 1: sim_launch(divergent_barrier_kernel, dim3(1), dim3(64), 0, p, "divergent_barrier_kernel"); break;
    case 2: sim_launch(exited_lanes_kernel, dim3(1), dim3(32), 0, p, "exited_lanes_kernel"); break;
    case 3: sim_launch(deadlock_kernel, dim3(1), dim3(64), 0, p, "deadlock_kernel"); break;
    case 4: sim_launch(race_kernel, dim3(1), dim3(64), 0, p, "race_kernel"); break;
    case 5: sim_launch(big_smem_kernel, dim3(1), dim3(32), 64 * 1024, p, "big_smem_kernel"); break;
    case 6:  // the same with the attribute raised first: runs
      cudaFuncSetAttribute(big_smem_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 64 * 1024);
      sim_launch(big_smem_kernel, dim3(1), dim3(32), 64 * 1024, p, "big_smem_kernel");
      if (cudaPeekAtLastError() == cudaSuccess)  // back to the default for case 5
        cudaFuncSetAttribute(big_smem_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 0);
      break;
    case 7: sim_launch(warp_ops_kernel, dim3(1), dim3(2048), 0, p, "warp_ops_kernel"); break;  // too many threads
    default: return -1;
  }
  const cudaError_t e = cudaGetLastError();
  if (e == cudaSuccess) return 0;
  const char* text = cudaGetErrorString(e);
  if (err != nullptr && errlen > 0) {
    std::strncpy(err, text, size_t(errlen) - 1);
    err[errlen - 1] = '\0';
  }
  return 1;
}
