// Build facts of the CUDA part: that it exists, the version of the CUDA runtime
// it links (statically) and of the installed driver. No call creates a CUDA
// context.

#include "common.cuh"

namespace featprune {

bool cuda_compiled() { return true; }

int cuda_runtime_version() { return CUDART_VERSION; }

int cuda_driver_version() {
  int version = 0;
  if (cudaDriverGetVersion(&version) != cudaSuccess) {
    cudaGetLastError();  // do not leave an error for the next launch check to report
    return 0;
  }
  return version;
}

}  // namespace featprune
