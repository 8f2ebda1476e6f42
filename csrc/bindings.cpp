// pybind11 bindings: export only. Tensors arrive as (pointer, shape, strides,
// dtype code, stream); validation with friendly messages lives in ops.py.
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

#include "featprune/kernels.h"

#ifdef FEATPRUNE_OPENMP
#include <omp.h>
#endif

namespace py = pybind11;
using featprune::DType;
using featprune::MatrixView;

namespace {

enum Device : int { kCPU = 0, kCUDA = 1 };

MatrixView matrix(uintptr_t ptr, int dtype, int64_t rows, int64_t cols, int64_t row_stride, int64_t col_stride) {
  MatrixView v;
  v.data = reinterpret_cast<void*>(ptr);
  v.dtype = static_cast<DType>(dtype);
  v.rows = rows;
  v.cols = cols;
  v.row_stride = row_stride;
  v.col_stride = col_stride;
  return v;
}

template <typename T>
T* as_ptr(uintptr_t p) { return reinterpret_cast<T*>(p); }

void accumulate_stats(int device, uintptr_t x, int dtype, int64_t tokens, int64_t features, int64_t row_stride,
                      int64_t col_stride, uintptr_t token_mask, uintptr_t sumsq, uintptr_t absmax, uintptr_t count,
                      uintptr_t stream) {
  featprune::AccumulateStatsArgs a;
  a.x = matrix(x, dtype, tokens, features, row_stride, col_stride);
  a.token_mask = as_ptr<const uint8_t>(token_mask);
  a.sumsq = as_ptr<float>(sumsq);
  a.absmax = as_ptr<float>(absmax);
  a.count = as_ptr<int64_t>(count);
  if (device == kCUDA)
    featprune::accumulate_stats_cuda(a, reinterpret_cast<void*>(stream));
  else
    featprune::accumulate_stats_cpu(a);
}

void prune_rows(int device, uintptr_t w, int dtype, int64_t rows, int64_t cols, int64_t row_stride,
                int64_t col_stride, uintptr_t col_scale, uintptr_t protect, uintptr_t mask_out,
                int64_t mask_row_stride, int64_t mask_col_stride, int64_t k, int n, int m, uintptr_t stream) {
  featprune::PruneRowsArgs a;
  a.weight = matrix(w, dtype, rows, cols, row_stride, col_stride);
  a.col_scale = as_ptr<const float>(col_scale);
  a.protect = as_ptr<const uint8_t>(protect);
  a.mask_out = as_ptr<uint8_t>(mask_out);
  a.mask_row_stride = mask_row_stride;
  a.mask_col_stride = mask_col_stride;
  a.k = k;
  a.n = n;
  a.m = m;
  if (device == kCUDA)
    featprune::prune_rows_cuda(a, reinterpret_cast<void*>(stream));
  else
    featprune::prune_rows_cpu(a);
}

py::dict build_info() {
  py::dict info;
  info["version"] = FEATPRUNE_VERSION;
  info["cuda"] = featprune::cuda_compiled();
  info["cuda_archs"] = featprune::cuda_compiled() ? std::string(FEATPRUNE_CUDA_ARCHS) : std::string();
  info["cpu_prune_path"] = std::string(featprune::prune_rows_cpu_path());
#ifdef FEATPRUNE_OPENMP
  info["openmp"] = true;
  info["openmp_max_threads"] = omp_get_max_threads();
#else
  info["openmp"] = false;
  info["openmp_max_threads"] = 1;
#endif
  return info;
}

// (runtime, driver) CUDA versions, e.g. (13000, 12040); see kernels.h.
py::tuple cuda_versions() {
  return py::make_tuple(featprune::cuda_runtime_version(), featprune::cuda_driver_version());
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "featprune native kernels (torch-free; see featprune_ext.ops for the typed API)";
  py::register_exception<featprune::Error>(m, "KernelError", PyExc_ValueError);
  m.def("accumulate_stats", &accumulate_stats, py::call_guard<py::gil_scoped_release>(), py::arg("device"),
        py::arg("x"), py::arg("dtype"), py::arg("tokens"), py::arg("features"), py::arg("row_stride"),
        py::arg("col_stride"), py::arg("token_mask"), py::arg("sumsq"), py::arg("absmax"), py::arg("count"),
        py::arg("stream"));
  m.def("prune_rows", &prune_rows, py::call_guard<py::gil_scoped_release>(), py::arg("device"), py::arg("w"),
        py::arg("dtype"), py::arg("rows"), py::arg("cols"), py::arg("row_stride"), py::arg("col_stride"),
        py::arg("col_scale"), py::arg("protect"), py::arg("mask_out"), py::arg("mask_row_stride"),
        py::arg("mask_col_stride"), py::arg("k"), py::arg("n"), py::arg("m"), py::arg("stream"));
  m.def("build_info", &build_info);
  m.def("cuda_kernel_problem", &featprune::cuda_kernel_problem, py::arg("device"),
        "'' when CUDA device `device` can run this build's kernels, else the CUDA error saying why "
        "(no kernel image for its architecture, driver too old, ...). Loads the kernels on that device.");
  m.def("cuda_versions", &cuda_versions,
        "(runtime, driver) CUDA versions as 1000 * major + 10 * minor: the runtime this build links "
        "(0 without CUDA kernels) and the installed driver (0 when none is found). Creates no CUDA context.");
}
