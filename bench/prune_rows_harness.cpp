// Standalone timing of the CPU prune_rows kernel (bf16, 50% or PATTERN=N:M, no Python, no torch): kernel vs a
// memcpy of the same bytes, on random normal weights or on a matrix dumped from a checkpoint.
// A/B of two versions of csrc/cpu/prune_rows.cpp (e.g. `git show 438bb86:csrc/cpu/prune_rows.cpp > old.cpp`):
//
//   g++ -O3 -fopenmp -std=c++17 -DFEATPRUNE_OPENMP=1 -I csrc/include bench/prune_rows_harness.cpp csrc/cpu/prune_rows.cpp csrc/cpu/prune_rows_avx512.cpp -o kh
//   OMP_NUM_THREADS=2 [PATTERN=2:4] ./kh ROWS COLS ITERS [MATRIX.bin]
//
// MATRIX.bin: ROWS x COLS bf16, row-major, e.g. from Python:
//   safe_open(path, "pt").get_tensor(name).to(torch.bfloat16).view(torch.int16).numpy().tofile("m.bin")
// Prints a hash of the pruned matrix (equal hashes: equal results) and the mean times per call.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "featprune/kernels.h"

using namespace featprune;

static uint16_t float_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return uint16_t(u >> 16);
}

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr, "usage: %s ROWS COLS ITERS [MATRIX.bin]\n", argv[0]);
    return 2;
  }
  const int64_t rows = std::atoll(argv[1]), cols = std::atoll(argv[2]);
  const int iters = std::atoi(argv[3]);
  std::mt19937 gen(0);
  std::normal_distribution<float> normal;
  std::uniform_real_distribution<float> uniform;
  std::vector<uint16_t> original(rows * cols), w(rows * cols), dst(rows * cols);
  for (auto& x : original) x = float_to_bf16(normal(gen));
  if (argc > 4) {
    FILE* f = std::fopen(argv[4], "rb");
    if (!f || std::fread(original.data(), 2, size_t(rows * cols), f) != size_t(rows * cols)) {
      std::fprintf(stderr, "cannot read %lld x %lld bf16 values from %s\n", (long long)rows, (long long)cols, argv[4]);
      return 1;
    }
    std::fclose(f);
  }
  std::vector<float> scale(cols);
  for (auto& x : scale) x = uniform(gen);
  PruneRowsArgs a;
  a.weight.data = w.data();
  a.weight.dtype = DType::kBFloat16;
  a.weight.rows = rows;
  a.weight.cols = cols;
  a.weight.row_stride = cols;
  a.weight.col_stride = 1;
  a.col_scale = scale.data();
  a.k = cols / 2;
  if (const char* nm = std::getenv("PATTERN")) {  // e.g. PATTERN=2:4 for N:M instead of 50%
    a.n = std::atoi(nm);
    a.m = std::atoi(std::strchr(nm, ':') + 1);
    a.k = 0;
  }
  double kernel_s = 0, copy_s = 0;
  for (int i = 0; i <= iters; ++i) {  // the first round warms up
    std::memcpy(w.data(), original.data(), w.size() * 2);
    const auto t0 = std::chrono::steady_clock::now();
    prune_rows_cpu(a);
    const auto t1 = std::chrono::steady_clock::now();
    std::memcpy(dst.data(), original.data(), dst.size() * 2);
    const auto t2 = std::chrono::steady_clock::now();
    if (i) {
      kernel_s += std::chrono::duration<double>(t1 - t0).count();
      copy_s += std::chrono::duration<double>(t2 - t1).count();
    }
  }
  uint64_t hash = 1469598103934665603ull;  // FNV-1a
  for (uint16_t x : w) hash = (hash ^ x) * 1099511628211ull;
  std::printf("hash %016llx kernel %.3f ms memcpy %.3f ms\n", (unsigned long long)hash, kernel_s / iters * 1e3,
              copy_s / iters * 1e3);
  return 0;
}
