// Host emulation of the CUDA runtime and device built-ins that csrc/cuda/*.cu
// use, so the real kernels can be tested on a machine without a GPU (or nvcc).
//
// Used only by tests: tests/cuda_sim/simlib.py compiles csrc/cuda/*.cu as C++
// with g++ -x c++ -DFEATPRUNE_CUDA_SIM=<cuda_sim.h>; common.cuh then includes
// this header instead of cuda_runtime.h / cuda_fp16.h and launches kernels with
// sim_launch(kernel, grid, block, smem, params, name) instead of <<<>>>.
//
// Execution model
//  * A launch runs every block of the grid before it returns. Blocks are spread
//    over a few OS worker threads (configure(): workers); the threads of one
//    block run as ucontext fibers on one worker, switched only at __syncthreads
//    and warp operations. Each worker runs one block at a time.
//  * __shared__ variables become `static thread_local`: one copy per worker, so
//    each running block has its own. Dynamic shared memory is a per-worker
//    buffer of exactly the launch's byte count, refilled with noise at every
//    block start (a kernel reading shared memory it never wrote sees garbage,
//    as on a GPU).
//  * Barriers are checked, not just emulated: every live thread of a block
//    must wait at the same __syncthreads (same file:line); every lane named in a
//    warp operation's mask must reach the same operation with the same mask and
//    must not have exited; lanes split between a warp operation and
//    __syncthreads are a deadlock. Any of these fails the launch
//    (cudaGetLastError returns cudaErrorLaunchFailure with the details).
//  * Scheduling is adversarial: between two __syncthreads each warp runs as far
//    as it can (its warp operations complete as soon as its lanes arrive)
//    before the next warp starts, so warps drift apart as far as the barriers
//    allow. Warps and lanes go in thread order, reverse order or a seeded
//    shuffle (configure(): schedule). A kernel that reads another warp's
//    shared-memory write without a barrier in between gives results that
//    depend on the schedule, which tests detect.
//  * Warp shuffles and ballots exchange values through per-warp slots between
//    two warp barriers. Atomics are __atomic builtins (blocks run concurrently
//    on the workers).
//  * Launch checks: block size 1..1024, grid limits, dynamic shared memory
//    above 48 KiB needs cudaFuncSetAttribute(MaxDynamicSharedMemorySize)
//    first, and never above the opt-in limit (H100/H200: 227 KiB).
//  * cudaFuncGetAttributes reports sharedSizeBytes = the configured static
//    footprint (0 by default: the emulation cannot see a kernel's __shared__
//    variables; tests set a real one, read from ptxas, to play a GPU's limits).
//  * The device is configurable (fp_sim_configure_device): its compute
//    capability, opt-in shared memory, and which images the "build" carries.
//    Loading a kernel (cudaFuncGetAttributes) follows the driver's rules: a
//    driver older than the runtime's major version gives
//    cudaErrorInsufficientDriver; no SASS of the same major and a minor <= the
//    device's, and no PTX of a capability <= the device's, gives
//    cudaErrorNoKernelImageForDevice.
//  * FEATPRUNE_HOST_DEVICE helpers compile their host branch (__CUDA_ARCH__ is
//    not defined), e.g. fp16 loads use the exact software conversion rather
//    than the __half2float instruction (both are exact).
//  * Not emulated: performance, memory-model effects between blocks, stream
//    ordering (everything is synchronous), textures, cooperative groups.
#pragma once

#include <math.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <new>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

// ---- language extensions -----------------------------------------------------

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __shared__ static thread_local
#define __align__(n) __attribute__((aligned(n)))
#define __restrict__ __restrict
#ifndef CUDART_VERSION
#define CUDART_VERSION 13000
#endif

// ---- vector types --------------------------------------------------------------

struct uint3 {
  unsigned x, y, z;
};
struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned vx = 1, unsigned vy = 1, unsigned vz = 1) : x(vx), y(vy), z(vz) {}
  constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
};
struct __attribute__((aligned(8))) uint2 {
  unsigned x, y;
};
struct __attribute__((aligned(16))) uint4 {
  unsigned x, y, z, w;
};
struct __attribute__((aligned(8))) float2 {
  float x, y;
};
struct __attribute__((aligned(16))) float4 {
  float x, y, z, w;
};
inline uint2 make_uint2(unsigned x, unsigned y) { return uint2{x, y}; }
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return uint4{x, y, z, w}; }
inline float2 make_float2(float x, float y) { return float2{x, y}; }
inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }

// ---- built-in variables (per OS thread; the scheduler sets them per fiber) -----

inline thread_local uint3 threadIdx{0, 0, 0};
inline thread_local uint3 blockIdx{0, 0, 0};
inline thread_local dim3 blockDim{1, 1, 1};
inline thread_local dim3 gridDim{1, 1, 1};
constexpr int warpSize = 32;

// ---- bit casts, integer intrinsics, fp16 -----------------------------------------

inline float __uint_as_float(unsigned u) { float f; std::memcpy(&f, &u, 4); return f; }
inline unsigned __float_as_uint(float f) { unsigned u; std::memcpy(&u, &f, 4); return u; }
inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
inline int __float_as_int(float f) { int i; std::memcpy(&i, &f, 4); return i; }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(unsigned x) { return x == 0 ? 32 : __builtin_clz(x); }
inline int __ffs(unsigned x) { return __builtin_ffs(int(x)); }
inline unsigned __brev(unsigned x) {
  unsigned r = 0;
  for (int i = 0; i < 32; ++i) r |= ((x >> i) & 1u) << (31 - i);
  return r;
}

struct __half {
  uint16_t bits;
};
inline __half __ushort_as_half(unsigned short b) { return __half{b}; }
inline unsigned short __half_as_ushort(__half h) { return h.bits; }

// Independent of featprune's own fp16 decoder: the compiler's _Float16 where it
// has one, else a direct evaluation of the binary16 formula.
inline float __half2float(__half h) {
#if defined(__FLT16_MAX__)
  _Float16 v;
  std::memcpy(&v, &h.bits, 2);
  return float(v);
#else
  const int e = (h.bits >> 10) & 0x1F, man = h.bits & 0x3FF;
  const float sign = (h.bits & 0x8000) ? -1.0f : 1.0f;
  if (e == 0x1F) return man ? NAN : sign * INFINITY;
  if (e == 0) return sign * std::ldexp(float(man), -24);
  return sign * std::ldexp(float(man | 0x400), e - 25);
#endif
}
inline __half __float2half(float f) {  // round to nearest even
#if defined(__FLT16_MAX__)
  const _Float16 v = _Float16(f);
  __half h;
  std::memcpy(&h.bits, &v, 2);
  return h;
#else
  static_assert(sizeof(float) == 4, "float2half fallback not implemented");
  return __half{0};
#endif
}

// ---- the runtime's state --------------------------------------------------------

typedef enum cudaError {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInitializationError = 3,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorInvalidDevicePointer = 17,
  cudaErrorInsufficientDriver = 35,
  cudaErrorInvalidDeviceFunction = 98,
  cudaErrorNoDevice = 100,
  cudaErrorInvalidDevice = 101,
  cudaErrorNoKernelImageForDevice = 209,
  cudaErrorLaunchOutOfResources = 701,
  cudaErrorLaunchFailure = 719,
} cudaError_t;

struct CUstream_st;
typedef CUstream_st* cudaStream_t;

enum cudaDeviceAttr {
  cudaDevAttrMaxThreadsPerBlock = 1,
  cudaDevAttrMaxSharedMemoryPerBlock = 8,
  cudaDevAttrWarpSize = 10,
  cudaDevAttrMultiProcessorCount = 16,
  cudaDevAttrComputeCapabilityMajor = 75,
  cudaDevAttrComputeCapabilityMinor = 76,
  cudaDevAttrMaxSharedMemoryPerBlockOptin = 97,
};

enum cudaFuncAttribute {
  cudaFuncAttributeMaxDynamicSharedMemorySize = 8,
  cudaFuncAttributePreferredSharedMemoryCarveout = 9,
};

enum cudaMemcpyKind {
  cudaMemcpyHostToHost = 0,
  cudaMemcpyHostToDevice = 1,
  cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3,
  cudaMemcpyDefault = 4,
};

struct cudaFuncAttributes {
  size_t sharedSizeBytes;
  size_t constSizeBytes;
  size_t localSizeBytes;
  int maxThreadsPerBlock;
  int numRegs;
  int ptxVersion;
  int binaryVersion;
  int cacheModeCA;
  int maxDynamicSharedSizeBytes;
  int preferredShmemCarveout;
};

inline const char* cudaGetErrorNameSim(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInitializationError: return "cudaErrorInitializationError";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDevicePointer: return "cudaErrorInvalidDevicePointer";
    case cudaErrorInsufficientDriver: return "cudaErrorInsufficientDriver";
    case cudaErrorNoDevice: return "cudaErrorNoDevice";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorInvalidDeviceFunction: return "cudaErrorInvalidDeviceFunction";
    case cudaErrorNoKernelImageForDevice: return "cudaErrorNoKernelImageForDevice";
    case cudaErrorLaunchOutOfResources: return "cudaErrorLaunchOutOfResources";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
  }
  return "cudaErrorUnknown";
}

namespace featprune_sim {

constexpr size_t kDefaultDynamicSmem = 48 * 1024;

struct Config {
  int workers = 2;         // OS threads running blocks
  int schedule = 0;        // 0: thread order, 1: reverse, 2: seeded shuffle per phase
  uint64_t seed = 1;       // for schedule 2
  int driver_version = CUDART_VERSION;  // what cudaDriverGetVersion reports (0 = no driver)
  int max_optin_smem = 232448;          // H100/H200: 227 KiB per block
  int sm_count = 132;
  int device_cc = 90;                   // compute capability, 10 * major + minor
  int static_smem = 0;                  // what cudaFuncGetAttributes reports as sharedSizeBytes
  std::string images;                   // the build's archs ("75-real,90-virtual"); "" = runs anywhere
};

// Whether a build carrying `images` (CMake's list: "80-real", "90-virtual", "90" = both, ","
// or ";" separated) can run on a device of capability `cc`, by the driver's rules: SASS of
// sm_XY runs on X.Z for Z >= Y (an "a" variant only on X.Y itself); PTX of compute_XY is
// JIT-compiled for any capability >= XY.
inline bool image_runs_on(const std::string& images, int cc) {
  if (images.empty()) return true;
  size_t start = 0;
  while (start <= images.size()) {
    size_t end = images.find_first_of(",;", start);
    if (end == std::string::npos) end = images.size();
    const std::string entry = images.substr(start, end - start);
    start = end + 1;
    if (entry.empty()) continue;
    const int arch = std::atoi(entry.c_str());
    const std::string arch_name = entry.substr(0, entry.find('-'));  // "90a" of "90a-real"
    const bool specific = !arch_name.empty() && !std::isdigit(static_cast<unsigned char>(arch_name.back()));
    const bool real = entry.find("-virtual") == std::string::npos;
    const bool virt = entry.find("-real") == std::string::npos;
    if (real && (specific ? arch == cc : (arch / 10 == cc / 10 && arch % 10 <= cc % 10))) return true;
    if (virt && !specific && arch <= cc) return true;
  }
  return false;
}

struct LaunchRecord {
  std::string name;
  dim3 grid, block;
  size_t smem;
};

struct Runtime {
  std::mutex mu;
  Config cfg;
  std::map<const void*, int> max_dyn_smem;    // per kernel, from cudaFuncSetAttribute
  std::map<void*, size_t> allocations;        // live cudaMalloc(Async) blocks
  std::vector<LaunchRecord> launches;         // every launch since the last clear
  static Runtime& get() {
    static Runtime* rt = [] {
      auto* r = new Runtime;
      if (const char* v = std::getenv("FEATPRUNE_SIM_WORKERS")) r->cfg.workers = std::max(1, std::atoi(v));
      if (const char* v = std::getenv("FEATPRUNE_SIM_SCHEDULE")) r->cfg.schedule = std::atoi(v);
      return r;
    }();
    return *rt;
  }
  Config config() {
    std::lock_guard<std::mutex> g(mu);
    return cfg;
  }
};

inline thread_local cudaError_t tls_last_error = cudaSuccess;  // what cudaGetLastError returns
inline thread_local cudaError_t tls_text_error = cudaSuccess;  // the code tls_error_text explains
inline thread_local std::string tls_error_text;

inline cudaError_t fail(cudaError_t err, const std::string& text) {
  tls_last_error = err;
  tls_text_error = err;
  tls_error_text = std::string(cudaGetErrorNameSim(err)) + ": [cuda_sim] " + text;
  return err;
}

// ---- fibers -----------------------------------------------------------------

enum class Wait : uint8_t { kNone, kBlock, kWarp, kDone };

struct Fiber {
  ucontext_t ctx;
  Wait wait = Wait::kNone;
  const char* file = nullptr;
  int line = 0;
  unsigned mask = 0;
  uint3 tid{0, 0, 0};
};

// Runs the blocks handed to it, one at a time, each as a set of fibers.
class BlockRunner {
 public:
  static constexpr size_t kStack = 64 * 1024;

  explicit BlockRunner(const Config& cfg) : cfg_(cfg) {}
  BlockRunner(const BlockRunner&) = delete;
  BlockRunner& operator=(const BlockRunner&) = delete;
  ~BlockRunner() {
    if (stacks_ != nullptr) munmap(stacks_, stacks_bytes_);
    std::free(dyn_);
  }

  // Runs block `b` (linear index) of the launch; returns "" or an error.
  std::string run(uint64_t b, dim3 grid, dim3 block, size_t smem, void (*entry)(const void*),
                  const void* arg) {
    const int n = int(block.x * block.y * block.z);
    prepare(n, smem);
    entry_ = entry;
    arg_ = arg;
    error_.clear();
    blockIdx = uint3{unsigned(b % grid.x), unsigned((b / grid.x) % grid.y), unsigned(b / (uint64_t(grid.x) * grid.y))};
    blockDim = block;
    gridDim = grid;
    fill_noise(b);
    for (int i = 0; i < n; ++i) {
      Fiber& f = fibers_[size_t(i)];
      f.wait = Wait::kNone;
      f.tid = uint3{unsigned(i % int(block.x)), unsigned((i / int(block.x)) % int(block.y)),
                    unsigned(i / int(block.x * block.y))};
      getcontext(&f.ctx);
      f.ctx.uc_stack.ss_sp = stack_of(i);
      f.ctx.uc_stack.ss_size = kStack;
      f.ctx.uc_link = &sched_;
      makecontext(&f.ctx, &BlockRunner::fiber_main, 0);
    }
    const int warps = (n + 31) / 32;
    std::vector<int> warp_order(static_cast<size_t>(warps)), lane_order(32);
    uint64_t rounds = 0;
    for (;;) {
      // Each warp runs as far as it can (its warp operations release as soon as
      // its lanes arrive) before the next warp starts: maximal skew between warps.
      shuffle(warp_order, b, rounds++);
      for (int w : warp_order) {
        for (;;) {
          shuffle(lane_order, b, rounds++);
          for (int lane : lane_order) {
            const int i = w * 32 + lane;
            if (i >= n || fibers_[size_t(i)].wait != Wait::kNone) continue;
            current_ = i;
            threadIdx = fibers_[size_t(i)].tid;
            tls_runner() = this;
            swapcontext(&sched_, &fibers_[size_t(i)].ctx);
            if (!error_.empty()) return where(i) + error_;
          }
          bool released = false;
          const std::string status = release_warp(w, n, &released);
          if (!status.empty()) return "block " + block_name() + ": " + status;
          if (!released) break;
        }
      }
      const std::string status = release_block(n);
      if (status == "done") return "";
      if (!status.empty()) return "block " + block_name() + ": " + status;
    }
  }

  // ---- called from fibers ----
  static BlockRunner*& tls_runner() {
    static thread_local BlockRunner* r = nullptr;
    return r;
  }
  int current() const { return current_; }
  int threads() const { return int(fibers_.size()); }
  unsigned char* dynamic_smem() { return dyn_; }
  uint64_t* warp_slots() { return slots_.data(); }

  void wait(Wait kind, const char* file, int line, unsigned mask) {
    Fiber& f = fibers_[size_t(current_)];
    f.wait = kind;
    f.file = file;
    f.line = line;
    f.mask = mask;
    swapcontext(&f.ctx, &sched_);
  }

  // Records an error and leaves the fiber for good (its frames are trivial).
  [[noreturn]] void abort(const std::string& what) {
    error_ = what;
    Fiber& f = fibers_[size_t(current_)];
    f.wait = Wait::kDone;
    swapcontext(&f.ctx, &sched_);
    std::abort();  // never resumed
  }

 private:
  static void fiber_main() {
    BlockRunner* r = tls_runner();
    r->entry_(r->arg_);
    r->fibers_[size_t(r->current_)].wait = Wait::kDone;
    // returning resumes uc_link (the scheduler)
  }

  void prepare(int n, size_t smem) {
    if (n > capacity_) {
      if (stacks_ != nullptr) munmap(stacks_, stacks_bytes_);
      const size_t page = size_t(sysconf(_SC_PAGESIZE));
      stride_ = kStack + page;  // a guard page below each stack
      stacks_bytes_ = stride_ * size_t(n);
      void* mem = mmap(nullptr, stacks_bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (mem == MAP_FAILED) throw std::bad_alloc();
      stacks_ = static_cast<unsigned char*>(mem);
      for (int i = 0; i < n; ++i) mprotect(stacks_ + stride_ * size_t(i), page, PROT_NONE);
      capacity_ = n;
    }
    fibers_.resize(size_t(n));
    slots_.assign(size_t((n + 31) / 32 * 32), 0);
    if (smem > dyn_bytes_ || dyn_ == nullptr) {
      std::free(dyn_);
      dyn_bytes_ = std::max<size_t>(smem, 16);
      dyn_ = static_cast<unsigned char*>(std::aligned_alloc(16, (dyn_bytes_ + 15) / 16 * 16));
      if (dyn_ == nullptr) throw std::bad_alloc();
    }
    smem_ = smem;
  }

  unsigned char* stack_of(int i) { return stacks_ + stride_ * size_t(i) + (stride_ - kStack); }

  void fill_noise(uint64_t b) {
    uint64_t s = (b + 1) * 0x9E3779B97F4A7C15ull;
    for (size_t i = 0; i < smem_; ++i) {
      s ^= s << 13;
      s ^= s >> 7;
      s ^= s << 17;
      dyn_[i] = uint8_t(s);
    }
  }

  // Fills `order` with 0..size-1 in the configured schedule's order.
  void shuffle(std::vector<int>& order, uint64_t b, uint64_t round) {
    const int n = int(order.size());
    for (int i = 0; i < n; ++i) order[size_t(i)] = cfg_.schedule == 1 ? n - 1 - i : i;
    if (cfg_.schedule == 2) {
      uint64_t s = cfg_.seed * 0x9E3779B97F4A7C15ull + b * 0xBF58476D1CE4E5B9ull + round + 1;
      for (int i = n - 1; i > 0; --i) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        std::swap(order[size_t(i)], order[size_t(s % uint64_t(i + 1))]);
      }
    }
  }

  std::string block_name() const {
    return "(" + std::to_string(blockIdx.x) + "," + std::to_string(blockIdx.y) + "," +
           std::to_string(blockIdx.z) + ")";
  }
  std::string where(int i) const {
    const uint3 t = fibers_[size_t(i)].tid;
    return "block " + block_name() + " thread (" + std::to_string(t.x) + "," + std::to_string(t.y) + "," +
           std::to_string(t.z) + "): ";
  }
  static std::string site(const Fiber& f) { return std::string(f.file) + ":" + std::to_string(f.line); }

  // Every lane of warp w waits or is done: releases the lanes waiting at a warp
  // operation when every lane its mask names has arrived (*released), or reports
  // misuse. Named lanes still at __syncthreads: not released (yet).
  std::string release_warp(int w, int n, bool* released) {
    const int w0 = w * 32, w1 = std::min(n, w0 + 32);
    const std::string warp = "warp " + std::to_string(w) + ": ";
    const Fiber* first = nullptr;
    unsigned waiting = 0, alive = 0;
    for (int i = w0; i < w1; ++i) {
      const Fiber& f = fibers_[size_t(i)];
      if (f.wait == Wait::kDone) continue;
      alive |= 1u << (i - w0);
      if (f.wait != Wait::kWarp) continue;
      waiting |= 1u << (i - w0);
      if (first == nullptr) {
        first = &f;
      } else if (f.mask != first->mask || f.line != first->line || std::strcmp(f.file, first->file) != 0) {
        return warp + "lanes disagree on the warp operation (" + site(*first) + " mask " +
               std::to_string(first->mask) + " vs " + site(f) + " mask " + std::to_string(f.mask) + ")";
      }
    }
    if (first == nullptr) return "";
    const unsigned lanes = (w1 - w0 == 32) ? 0xFFFFFFFFu : ((1u << (w1 - w0)) - 1u);
    const unsigned named = first->mask & lanes;
    if ((waiting & ~named) != 0) return warp + "a lane calls " + site(*first) + " with a mask that omits it";
    if ((named & ~alive) != 0) return warp + "the mask at " + site(*first) + " names lanes that have exited";
    if (named != waiting) return "";
    for (int i = w0; i < w1; ++i)
      if (fibers_[size_t(i)].wait == Wait::kWarp) fibers_[size_t(i)].wait = Wait::kNone;
    *released = true;
    return "";
  }

  // No fiber can run and no warp operation can complete: releases the
  // __syncthreads every live thread waits at ("done" when all have exited).
  std::string release_block(int n) {
    int done = 0;
    const Fiber* first = nullptr;
    for (const Fiber& f : fibers_) {
      done += f.wait == Wait::kDone;
      if (f.wait == Wait::kWarp)
        return "deadlock: lanes named by the warp operation at " + site(f) + " wait at __syncthreads instead";
      if (f.wait != Wait::kBlock) continue;
      if (first == nullptr) {
        first = &f;
      } else if (f.line != first->line || std::strcmp(f.file, first->file) != 0) {
        return "threads wait at different __syncthreads (" + site(*first) + " and " + site(f) + ")";
      }
    }
    if (done == n) return "done";
    for (Fiber& f : fibers_)
      if (f.wait == Wait::kBlock) f.wait = Wait::kNone;
    return "";
  }

  Config cfg_;
  ucontext_t sched_{};
  std::vector<Fiber> fibers_;
  std::vector<uint64_t> slots_;
  unsigned char* stacks_ = nullptr;
  size_t stacks_bytes_ = 0, stride_ = 0;
  int capacity_ = 0;
  unsigned char* dyn_ = nullptr;
  size_t dyn_bytes_ = 0, smem_ = 0;
  int current_ = -1;
  void (*entry_)(const void*) = nullptr;
  const void* arg_ = nullptr;
  std::string error_;
};

inline BlockRunner& runner() {
  BlockRunner* r = BlockRunner::tls_runner();
  if (r == nullptr) {
    std::fprintf(stderr, "[cuda_sim] device function called outside a kernel launch\n");
    std::abort();
  }
  return *r;
}

// Runs the whole grid; returns "" or the first error.
inline std::string run_grid(dim3 grid, dim3 block, size_t smem, void (*entry)(const void*), const void* arg) {
  const Config cfg = Runtime::get().config();
  const uint64_t total = uint64_t(grid.x) * grid.y * grid.z;
  const int workers = int(std::min<uint64_t>(uint64_t(std::max(1, cfg.workers)), total));
  std::atomic<uint64_t> next{0};
  std::atomic<bool> stop{false};
  std::mutex err_mu;
  std::string error;
  auto work = [&] {
    BlockRunner r(cfg);
    for (;;) {
      if (stop.load()) break;
      const uint64_t b = next.fetch_add(1);
      if (b >= total) break;
      std::string e = r.run(b, grid, block, smem, entry, arg);
      if (!e.empty()) {
        std::lock_guard<std::mutex> g(err_mu);
        if (error.empty()) error = e;
        stop.store(true);
      }
    }
    BlockRunner::tls_runner() = nullptr;
  };
  std::vector<std::thread> pool;
  for (int i = 1; i < workers; ++i) pool.emplace_back(work);
  work();
  for (std::thread& t : pool) t.join();
  return error;
}

// ---- device-side operations ----------------------------------------------------

inline void syncthreads(const char* file, int line) { runner().wait(Wait::kBlock, file, line, 0); }

inline int linear_tid() { return runner().current(); }

inline void syncwarp(const char* file, int line, unsigned mask = 0xFFFFFFFFu) {
  runner().wait(Wait::kWarp, file, line, mask);
}

// Exchanges one value per lane: lane l gets the value of lane src(l), or its
// own value when src(l) is outside the warp / not in the mask.
template <class T, class Src>
T warp_exchange(const char* file, int line, unsigned mask, T v, Src src) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value, "shuffle of a type wider than 8 bytes");
  BlockRunner& r = runner();
  const int me = r.current(), base = me & ~31, lane = me & 31;
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  r.warp_slots()[me] = bits;
  r.wait(Wait::kWarp, file, line, mask);
  const int from = src(lane);
  T out = v;
  if (from >= 0 && from < 32 && base + from < r.threads() && ((mask >> from) & 1u) != 0)
    std::memcpy(&out, &r.warp_slots()[base + from], sizeof(T));
  r.wait(Wait::kWarp, file, line, mask);  // slots may be reused after this
  return out;
}

template <class T>
T shfl(const char* file, int line, unsigned mask, T v, int src_lane, int width = 32) {
  return warp_exchange(file, line, mask, v, [&](int lane) { return (lane & ~(width - 1)) + (src_lane & (width - 1)); });
}
template <class T>
T shfl_up(const char* file, int line, unsigned mask, T v, unsigned d, int width = 32) {
  return warp_exchange(file, line, mask, v, [&](int lane) {
    const int seg = lane & ~(width - 1);
    return lane - int(d) >= seg ? lane - int(d) : lane;
  });
}
template <class T>
T shfl_down(const char* file, int line, unsigned mask, T v, unsigned d, int width = 32) {
  return warp_exchange(file, line, mask, v, [&](int lane) {
    const int seg = lane & ~(width - 1);
    return lane + int(d) < seg + width ? lane + int(d) : lane;
  });
}
template <class T>
T shfl_xor(const char* file, int line, unsigned mask, T v, int lane_mask, int width = 32) {
  return warp_exchange(file, line, mask, v, [&](int lane) {
    const int other = lane ^ lane_mask;
    return (other & ~(width - 1)) == (lane & ~(width - 1)) ? other : lane;
  });
}

inline unsigned ballot(const char* file, int line, unsigned mask, int pred) {
  BlockRunner& r = runner();
  const int me = r.current(), base = me & ~31;
  r.warp_slots()[me] = pred != 0;
  r.wait(Wait::kWarp, file, line, mask);
  unsigned out = 0;
  for (int l = 0; l < 32 && base + l < r.threads(); ++l)
    if (((mask >> l) & 1u) != 0 && r.warp_slots()[base + l] != 0) out |= 1u << l;
  r.wait(Wait::kWarp, file, line, mask);
  return out;
}

inline unsigned char* dynamic_smem() { return runner().dynamic_smem(); }

}  // namespace featprune_sim

#define __syncthreads() ::featprune_sim::syncthreads(__FILE__, __LINE__)
#define __syncwarp(...) ::featprune_sim::syncwarp(__FILE__, __LINE__, ##__VA_ARGS__)
#define __shfl_sync(...) ::featprune_sim::shfl(__FILE__, __LINE__, __VA_ARGS__)
#define __shfl_up_sync(...) ::featprune_sim::shfl_up(__FILE__, __LINE__, __VA_ARGS__)
#define __shfl_down_sync(...) ::featprune_sim::shfl_down(__FILE__, __LINE__, __VA_ARGS__)
#define __shfl_xor_sync(...) ::featprune_sim::shfl_xor(__FILE__, __LINE__, __VA_ARGS__)
#define __ballot_sync(mask, pred) ::featprune_sim::ballot(__FILE__, __LINE__, (mask), (pred))
#define __any_sync(mask, pred) (::featprune_sim::ballot(__FILE__, __LINE__, (mask), (pred)) != 0u)
#define __all_sync(mask, pred) \
  (::featprune_sim::ballot(__FILE__, __LINE__, (mask), (pred)) == ((mask) & 0xFFFFFFFFu))

// Dynamic shared memory (common.cuh uses this instead of `extern __shared__`).
#define FEATPRUNE_DYNAMIC_SMEM(T, name) T* name = reinterpret_cast<T*>(::featprune_sim::dynamic_smem())

inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline void __threadfence_block() { std::atomic_thread_fence(std::memory_order_seq_cst); }

// Integer atomics only: the kernels promise no float atomics (determinism), so
// a float atomicAdd does not compile under the emulation.
template <class T, class = std::enable_if_t<std::is_integral<T>::value>>
T atomicAdd(T* p, T v) { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }
template <class T, class = std::enable_if_t<std::is_integral<T>::value>>
T atomicSub(T* p, T v) { return __atomic_fetch_sub(p, v, __ATOMIC_RELAXED); }
template <class T, class = std::enable_if_t<std::is_integral<T>::value>>
T atomicOr(T* p, T v) { return __atomic_fetch_or(p, v, __ATOMIC_RELAXED); }
template <class T, class = std::enable_if_t<std::is_integral<T>::value>>
T atomicAnd(T* p, T v) { return __atomic_fetch_and(p, v, __ATOMIC_RELAXED); }
template <class T, class = std::enable_if_t<std::is_integral<T>::value>>
T atomicExch(T* p, T v) { return __atomic_exchange_n(p, v, __ATOMIC_RELAXED); }
template <class T, class = std::enable_if_t<std::is_integral<T>::value>>
T atomicCAS(T* p, T expected, T desired) {
  __atomic_compare_exchange_n(p, &expected, desired, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
  return expected;
}
template <class T, class = std::enable_if_t<std::is_integral<T>::value>>
T atomicMax(T* p, T v) {
  T old = __atomic_load_n(p, __ATOMIC_RELAXED);
  while (old < v && !__atomic_compare_exchange_n(p, &old, v, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
  }
  return old;
}
template <class T, class = std::enable_if_t<std::is_integral<T>::value>>
T atomicMin(T* p, T v) {
  T old = __atomic_load_n(p, __ATOMIC_RELAXED);
  while (old > v && !__atomic_compare_exchange_n(p, &old, v, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
  }
  return old;
}

// ---- runtime API -----------------------------------------------------------------

inline const char* cudaGetErrorName(cudaError_t e) { return cudaGetErrorNameSim(e); }

// The detailed text of this thread's last emulation error when `e` is its code.
inline const char* cudaGetErrorString(cudaError_t e) {
  if (e != cudaSuccess && e == featprune_sim::tls_text_error && !featprune_sim::tls_error_text.empty())
    return featprune_sim::tls_error_text.c_str();
  return cudaGetErrorName(e);
}

inline cudaError_t cudaGetLastError() {
  const cudaError_t e = featprune_sim::tls_last_error;
  featprune_sim::tls_last_error = cudaSuccess;
  return e;
}
inline cudaError_t cudaPeekAtLastError() { return featprune_sim::tls_last_error; }

inline cudaError_t cudaDriverGetVersion(int* v) {
  if (v == nullptr) return cudaErrorInvalidValue;
  *v = featprune_sim::Runtime::get().config().driver_version;
  return cudaSuccess;
}
inline cudaError_t cudaRuntimeGetVersion(int* v) {
  if (v == nullptr) return cudaErrorInvalidValue;
  *v = CUDART_VERSION;
  return cudaSuccess;
}

inline cudaError_t cudaGetDevice(int* d) {
  *d = 0;
  return cudaSuccess;
}
inline cudaError_t cudaSetDevice(int d) { return d == 0 ? cudaSuccess : cudaErrorInvalidDevice; }
inline cudaError_t cudaGetDeviceCount(int* n) {
  *n = 1;
  return cudaSuccess;
}

inline cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device) {
  if (device != 0) return cudaErrorInvalidDevice;
  const featprune_sim::Config cfg = featprune_sim::Runtime::get().config();
  switch (attr) {
    case cudaDevAttrMaxThreadsPerBlock: *value = 1024; return cudaSuccess;
    case cudaDevAttrMaxSharedMemoryPerBlock: *value = int(featprune_sim::kDefaultDynamicSmem); return cudaSuccess;
    case cudaDevAttrWarpSize: *value = 32; return cudaSuccess;
    case cudaDevAttrMultiProcessorCount: *value = cfg.sm_count; return cudaSuccess;
    case cudaDevAttrComputeCapabilityMajor: *value = cfg.device_cc / 10; return cudaSuccess;
    case cudaDevAttrComputeCapabilityMinor: *value = cfg.device_cc % 10; return cudaSuccess;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = cfg.max_optin_smem; return cudaSuccess;
  }
  return featprune_sim::fail(cudaErrorInvalidValue, "cudaDeviceGetAttribute: attribute not emulated");
}

template <class T>
cudaError_t cudaFuncGetAttributes(cudaFuncAttributes* attr, T* entry) {
  featprune_sim::Runtime& rt = featprune_sim::Runtime::get();
  std::lock_guard<std::mutex> g(rt.mu);
  *attr = cudaFuncAttributes{};
  if (rt.cfg.driver_version < CUDART_VERSION / 1000 * 1000)
    return featprune_sim::fail(cudaErrorInsufficientDriver, "the driver supports CUDA " +
                                                                std::to_string(rt.cfg.driver_version) +
                                                                ", older than this runtime (" +
                                                                std::to_string(CUDART_VERSION) + ")");
  if (!featprune_sim::image_runs_on(rt.cfg.images, rt.cfg.device_cc))
    return featprune_sim::fail(cudaErrorNoKernelImageForDevice, "no image among '" + rt.cfg.images +
                                                                    "' runs on compute capability " +
                                                                    std::to_string(rt.cfg.device_cc));
  attr->sharedSizeBytes = size_t(rt.cfg.static_smem);
  attr->maxThreadsPerBlock = 1024;
  auto it = rt.max_dyn_smem.find(reinterpret_cast<const void*>(entry));
  attr->maxDynamicSharedSizeBytes = it == rt.max_dyn_smem.end() ? int(featprune_sim::kDefaultDynamicSmem) : it->second;
  return cudaSuccess;
}

template <class T>
cudaError_t cudaFuncSetAttribute(T* entry, cudaFuncAttribute attr, int value) {
  featprune_sim::Runtime& rt = featprune_sim::Runtime::get();
  std::lock_guard<std::mutex> g(rt.mu);
  if (attr == cudaFuncAttributeMaxDynamicSharedMemorySize) {
    if (value < 0 || value + rt.cfg.static_smem > rt.cfg.max_optin_smem)
      return featprune_sim::fail(cudaErrorInvalidValue, "cudaFuncSetAttribute: " + std::to_string(value) +
                                                            " bytes of dynamic shared memory exceed the opt-in limit " +
                                                            std::to_string(rt.cfg.max_optin_smem));
    rt.max_dyn_smem[reinterpret_cast<const void*>(entry)] = value;
  }
  return cudaSuccess;
}

inline cudaError_t cudaMallocAsync(void** p, size_t bytes, cudaStream_t) {
  const size_t rounded = (std::max<size_t>(bytes, 1) + 255) / 256 * 256;
  void* mem = std::aligned_alloc(256, rounded);
  if (mem == nullptr) return featprune_sim::fail(cudaErrorMemoryAllocation, "cudaMallocAsync: out of memory");
  std::memset(mem, 0xA5, rounded);  // device memory is not zeroed
  featprune_sim::Runtime& rt = featprune_sim::Runtime::get();
  std::lock_guard<std::mutex> g(rt.mu);
  rt.allocations[mem] = bytes;
  *p = mem;
  return cudaSuccess;
}
inline cudaError_t cudaMalloc(void** p, size_t bytes) { return cudaMallocAsync(p, bytes, nullptr); }

inline cudaError_t cudaFreeAsync(void* p, cudaStream_t) {
  if (p == nullptr) return cudaSuccess;
  featprune_sim::Runtime& rt = featprune_sim::Runtime::get();
  {
    std::lock_guard<std::mutex> g(rt.mu);
    auto it = rt.allocations.find(p);
    if (it == rt.allocations.end())
      return featprune_sim::fail(cudaErrorInvalidDevicePointer, "cudaFreeAsync of a pointer that is not allocated");
    rt.allocations.erase(it);
  }
  std::free(p);
  return cudaSuccess;
}
inline cudaError_t cudaFree(void* p) { return cudaFreeAsync(p, nullptr); }

inline cudaError_t cudaMemsetAsync(void* p, int v, size_t n, cudaStream_t = nullptr) {
  std::memset(p, v, n);
  return cudaSuccess;
}
inline cudaError_t cudaMemset(void* p, int v, size_t n) { return cudaMemsetAsync(p, v, n, nullptr); }
inline cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t n, cudaMemcpyKind, cudaStream_t = nullptr) {
  std::memmove(dst, src, n);
  return cudaSuccess;
}
inline cudaError_t cudaMemcpy(void* dst, const void* src, size_t n, cudaMemcpyKind k) {
  return cudaMemcpyAsync(dst, src, n, k, nullptr);
}
inline cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
inline cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }

// The <<<grid, block, smem>>>(params) replacement. Synchronous: every block
// has run when it returns; errors are reported through cudaGetLastError.
template <class P>
void sim_launch(void (*kernel)(P), dim3 grid, dim3 block, size_t smem, const P& params, const char* name = "kernel") {
  using featprune_sim::fail;
  featprune_sim::Runtime& rt = featprune_sim::Runtime::get();
  const uint64_t threads = uint64_t(block.x) * block.y * block.z;
  featprune_sim::Config cfg;
  int allowed = 0;
  {
    std::lock_guard<std::mutex> g(rt.mu);
    cfg = rt.cfg;
    rt.launches.push_back(featprune_sim::LaunchRecord{name, grid, block, smem});
    // without the attribute, static + dynamic shared memory must fit the default 48 KiB
    allowed = int(featprune_sim::kDefaultDynamicSmem) - cfg.static_smem;
    auto it = rt.max_dyn_smem.find(reinterpret_cast<const void*>(kernel));
    if (it != rt.max_dyn_smem.end()) allowed = std::max(allowed, it->second);
  }
  const std::string who = std::string(name) + ": ";
  if (cfg.driver_version < CUDART_VERSION / 1000 * 1000) {
    fail(cudaErrorInsufficientDriver, who + "the driver is older than this runtime");
    return;
  }
  if (!featprune_sim::image_runs_on(cfg.images, cfg.device_cc)) {
    fail(cudaErrorNoKernelImageForDevice, who + "no image for compute capability " + std::to_string(cfg.device_cc));
    return;
  }
  if (threads == 0 || threads > 1024 || block.z > 64) {
    fail(cudaErrorInvalidConfiguration, who + "block of " + std::to_string(threads) + " threads");
    return;
  }
  if (grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.y > 65535 || grid.z > 65535 || grid.x > 0x7FFFFFFFu) {
    fail(cudaErrorInvalidConfiguration, who + "grid (" + std::to_string(grid.x) + "," + std::to_string(grid.y) +
                                            "," + std::to_string(grid.z) + ") out of range");
    return;
  }
  if (smem > size_t(allowed)) {
    fail(cudaErrorInvalidValue, who + std::to_string(smem) + " bytes of dynamic shared memory, " +
                                    std::to_string(allowed) + " allowed (cudaFuncSetAttribute raises the limit)");
    return;
  }
  struct Call {
    void (*kernel)(P);
    const P* params;
  } call{kernel, &params};
  auto entry = [](const void* c) {
    const Call* cc = static_cast<const Call*>(c);
    cc->kernel(*cc->params);  // each thread gets its own copy of the parameters
  };
  const std::string err = featprune_sim::run_grid(grid, block, smem, entry, &call);
  if (!err.empty()) fail(cudaErrorLaunchFailure, who + err);
}
