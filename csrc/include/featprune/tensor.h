// Torch-free description of the tensors the kernels touch: a raw pointer, a dtype
// tag, a 2-D shape and element strides. Nothing here depends on libtorch, so one
// build of the extension serves every torch release.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

namespace featprune {

enum class DType : int { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2 };

inline const char* dtype_name(DType d) {
  switch (d) {
    case DType::kFloat32: return "float32";
    case DType::kFloat16: return "float16";
    case DType::kBFloat16: return "bfloat16";
  }
  return "unknown";
}

// Raised by launchers on contract violations; bindings turn it into ValueError.
// Python-side validation (ops.py) should make these unreachable in practice.
struct Error : std::runtime_error {
  explicit Error(const std::string& msg) : std::runtime_error(msg) {}
};

#define FEATPRUNE_CHECK(cond, msg)                                  \
  do {                                                              \
    if (!(cond)) throw ::featprune::Error(std::string("featprune: ") + (msg)); \
  } while (0)

// A 2-D strided matrix. Strides are in elements, may be any non-negative value
// (a transposed view has row_stride == 1).
struct MatrixView {
  void* data = nullptr;
  DType dtype = DType::kFloat32;
  int64_t rows = 0;
  int64_t cols = 0;
  int64_t row_stride = 0;
  int64_t col_stride = 1;
};

}  // namespace featprune
