// C ABI over the CUDA launchers compiled against cuda_sim.h, for ctypes.
// Pointers are host memory standing in for device memory; the stream is null.
// Every entry point returns 0, or 1 with a message in err[0, errlen).
#include <cstdint>
#include <cstring>
#include <exception>
#include <string>

#include "featprune/kernels.h"
#include FEATPRUNE_CUDA_SIM

namespace {

int report(const char* what, char* err, int errlen) {
  if (err != nullptr && errlen > 0) {
    std::strncpy(err, what, size_t(errlen) - 1);
    err[errlen - 1] = '\0';
  }
  return 1;
}

template <class Fn>
int guarded(char* err, int errlen, Fn&& fn) {
  try {
    fn();
    return 0;
  } catch (const std::exception& e) {
    return report(e.what(), err, errlen);
  } catch (...) {
    return report("unknown exception", err, errlen);
  }
}

featprune::MatrixView matrix(void* data, int dtype, int64_t rows, int64_t cols, int64_t rs, int64_t cs) {
  featprune::MatrixView v;
  v.data = data;
  v.dtype = static_cast<featprune::DType>(dtype);
  v.rows = rows;
  v.cols = cols;
  v.row_stride = rs;
  v.col_stride = cs;
  return v;
}

}  // namespace

extern "C" {

int fp_sim_prune_rows(void* w, int dtype, int64_t rows, int64_t cols, int64_t rs, int64_t cs, const float* col_scale,
                      const uint8_t* protect, uint8_t* mask, int64_t mrs, int64_t mcs, int64_t k, int n, int m,
                      char* err, int errlen) {
  return guarded(err, errlen, [&] {
    featprune::PruneRowsArgs a;
    a.weight = matrix(w, dtype, rows, cols, rs, cs);
    a.col_scale = col_scale;
    a.protect = protect;
    a.mask_out = mask;
    a.mask_row_stride = mrs;
    a.mask_col_stride = mcs;
    a.k = k;
    a.n = n;
    a.m = m;
    featprune::prune_rows_cuda(a, nullptr);
  });
}

int fp_sim_accumulate_stats(void* x, int dtype, int64_t tokens, int64_t features, int64_t rs, int64_t cs,
                            const uint8_t* token_mask, float* sumsq, float* absmax, int64_t* count, char* err,
                            int errlen) {
  return guarded(err, errlen, [&] {
    featprune::AccumulateStatsArgs a;
    a.x = matrix(x, dtype, tokens, features, rs, cs);
    a.token_mask = token_mask;
    a.sumsq = sumsq;
    a.absmax = absmax;
    a.count = count;
    featprune::accumulate_stats_cuda(a, nullptr);
  });
}

// workers: OS threads running blocks; schedule: 0 thread order, 1 reverse,
// 2 seeded shuffle; driver_version: what cudaDriverGetVersion reports.
void fp_sim_configure(int workers, int schedule, uint64_t seed, int driver_version) {
  featprune_sim::Runtime& rt = featprune_sim::Runtime::get();
  std::lock_guard<std::mutex> g(rt.mu);
  rt.cfg.workers = workers < 1 ? 1 : workers;
  rt.cfg.schedule = schedule;
  rt.cfg.seed = seed;
  rt.cfg.driver_version = driver_version;
}

// The emulated GPU: compute capability (10 * major + minor), opt-in shared memory per
// block, the static shared memory every kernel reports, and the archs the "build" carries
// ("" = every device runs it).
void fp_sim_configure_device(int cc, int max_optin_smem, int static_smem, const char* images) {
  featprune_sim::Runtime& rt = featprune_sim::Runtime::get();
  std::lock_guard<std::mutex> g(rt.mu);
  rt.cfg.device_cc = cc;
  rt.cfg.max_optin_smem = max_optin_smem;
  rt.cfg.static_smem = static_smem;
  rt.cfg.images = images == nullptr ? "" : images;
  rt.max_dyn_smem.clear();  // a new device: no kernel has raised its limit yet
}

// featprune::cuda_kernel_problem(device) as compiled here.
void fp_sim_kernel_problem(int device, char* out, int outlen) {
  report(featprune::cuda_kernel_problem(device).c_str(), out, outlen);
}

// featprune::cuda_runtime_version() / cuda_driver_version() as compiled here.
void fp_sim_cuda_versions(int* runtime, int* driver) {
  *runtime = featprune::cuda_runtime_version();
  *driver = featprune::cuda_driver_version();
}

// Live cudaMalloc(Async) allocations (0 after every launcher returns).
int64_t fp_sim_live_allocations() {
  featprune_sim::Runtime& rt = featprune_sim::Runtime::get();
  std::lock_guard<std::mutex> g(rt.mu);
  return int64_t(rt.allocations.size());
}

// Launches since the last call, one per line: "name gx gy gz bx by bz smem".
// Clears the record. Returns the length needed (the text is cut to buflen - 1).
int fp_sim_take_launches(char* buf, int buflen) {
  featprune_sim::Runtime& rt = featprune_sim::Runtime::get();
  std::string text;
  {
    std::lock_guard<std::mutex> g(rt.mu);
    for (const featprune_sim::LaunchRecord& l : rt.launches) {
      text += l.name + " " + std::to_string(l.grid.x) + " " + std::to_string(l.grid.y) + " " +
              std::to_string(l.grid.z) + " " + std::to_string(l.block.x) + " " + std::to_string(l.block.y) + " " +
              std::to_string(l.block.z) + " " + std::to_string(l.smem) + "\n";
    }
    rt.launches.clear();
  }
  if (buf != nullptr && buflen > 0) {
    const size_t n = std::min(text.size(), size_t(buflen) - 1);
    std::memcpy(buf, text.data(), n);
    buf[n] = '\0';
  }
  return int(text.size()) + 1;
}

}  // extern "C"
