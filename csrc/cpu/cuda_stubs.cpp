// Compiled only when the build has no CUDA: the CUDA entry points exist so the
// bindings link, and say clearly why they cannot run.
#include "featprune/kernels.h"

namespace featprune {

static const char* kNoCuda =
    "featprune: this build has no CUDA kernels (built without nvcc or with FEATPRUNE_CUDA=OFF); "
    "reinstall with nvcc on PATH, or use CPU tensors";

void accumulate_stats_cuda(const AccumulateStatsArgs&, void*) { throw Error(kNoCuda); }
void prune_rows_cuda(const PruneRowsArgs&, void*) { throw Error(kNoCuda); }
bool cuda_compiled() { return false; }
int cuda_runtime_version() { return 0; }
int cuda_driver_version() { return 0; }
std::string cuda_kernel_problem(int) { return kNoCuda; }

}  // namespace featprune
