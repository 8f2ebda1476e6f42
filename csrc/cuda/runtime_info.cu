// Build facts of the CUDA part: that it exists, the version of the CUDA runtime
// it links (statically) and of the installed driver, and whether a given GPU can
// run the compiled kernels. Only cuda_kernel_problem touches a device.

#include "common.cuh"

namespace featprune {

namespace {
// Compiled for the same architectures as every other kernel of this build, so
// whether the driver can load it answers for all of them.
__global__ void kernel_image_probe(int) {}
}  // namespace

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

std::string cuda_kernel_problem(int device) {
  int previous = -1;
  if (cudaGetDevice(&previous) != cudaSuccess) previous = -1;
  cudaError_t err = cudaSetDevice(device);
  if (err == cudaSuccess) {
    cudaFuncAttributes attr{};
    err = cudaFuncGetAttributes(&attr, kernel_image_probe);  // loads SASS, or JIT-compiles PTX
  }
  if (previous >= 0 && previous != device) cudaSetDevice(previous);
  cudaGetLastError();  // the answer is the return value; leave no sticky error behind
  if (err == cudaSuccess) return std::string();
  return std::string(cudaGetErrorName(err)) + ": " + cudaGetErrorString(err);
}

}  // namespace featprune
