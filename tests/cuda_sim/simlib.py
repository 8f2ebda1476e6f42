"""Builds and loads the CUDA kernels compiled for the host emulation (cuda_sim.h).

csrc/cuda/*.cu are compiled as C++ with g++ (no nvcc, no GPU) together with
sim_driver.cpp into one shared library, cached under build/cuda_sim/ keyed on
the hash of every input and flag. `SimKernels` calls its C ABI with torch CPU
tensors standing in for device memory.

Usable from tests (tests/native/test_cuda_sim.py, test_nan_rule.py) and by hand:
    python tests/cuda_sim/simlib.py      # builds and prints the library path
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SIM_DIR = Path(__file__).resolve().parent
CUDA_DIR = ROOT / "csrc" / "cuda"
INCLUDE_DIR = ROOT / "csrc" / "include"
CACHE_DIR = ROOT / "build" / "cuda_sim"

# No fast-math and no contraction: the kernels' float ops must round as on the GPU
# (the kernels spell their FMAs out with fmaf). -fno-strict-aliasing: the kernels
# read fp16/fp32 rows through uint4/float4 vectors, as CUDA code does.
CXXFLAGS = ["-std=c++17", "-O2", "-g", "-fPIC", "-pthread", "-fno-strict-aliasing", "-ffp-contract=off",
            "-Wall", "-Wextra", "-Wno-unknown-pragmas"]

DTYPE_CODES = {"float32": 0, "float16": 1, "bfloat16": 2}


class SimBuildError(RuntimeError):
    """The emulated kernels failed to compile: a real failure, not an environment problem."""


def compiler() -> str | None:
    """The C++ compiler to use ($CXX, else g++), or None when there is none."""
    cxx = os.environ.get("CXX")
    if cxx:
        return shutil.which(cxx) or (cxx if Path(cxx).is_file() else None)
    return shutil.which("g++")


def sources() -> list[Path]:
    return sorted(CUDA_DIR.glob("*.cu"))


def _inputs() -> list[Path]:
    files = sources() + sorted(CUDA_DIR.glob("*.cuh")) + sorted(INCLUDE_DIR.rglob("*.h"))
    return files + [SIM_DIR / "cuda_sim.h", *_sim_units()]


def _sim_units() -> list[Path]:
    return [SIM_DIR / "sim_driver.cpp", SIM_DIR / "sim_selftest.cpp"]


def _cache_key(cxx: str) -> str:
    h = hashlib.sha256()
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True).stdout
    h.update(version.encode())
    h.update(" ".join(CXXFLAGS).encode())
    for path in _inputs():
        h.update(str(path.relative_to(ROOT)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:20]


def build(cache_dir: Path = CACHE_DIR) -> Path:
    """Compiles (or reuses) the emulation library; returns its path.

    Raises FileNotFoundError when no compiler or no CUDA sources exist, and
    SimBuildError (with the compiler output) when compilation fails.
    """
    cxx = compiler()
    if cxx is None:
        raise FileNotFoundError("no C++ compiler (g++ or $CXX) found")
    if not sources():
        raise FileNotFoundError(f"no CUDA sources under {CUDA_DIR}")
    out = cache_dir / f"libfeatprune_cuda_sim-{_cache_key(cxx)}.so"
    if out.exists():
        return out
    cache_dir.mkdir(parents=True, exist_ok=True)
    common = [cxx, *CXXFLAGS, f"-I{INCLUDE_DIR}", f"-I{SIM_DIR}", "-DFEATPRUNE_CUDA_SIM=<cuda_sim.h>"]
    with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
        units = [(src, Path(tmp) / f"{src.name}.o") for src in sources() + _sim_units()]

        def compile_one(unit):
            src, obj = unit
            return subprocess.run([*common, "-x", "c++", "-c", str(src), "-o", str(obj)],
                                  capture_output=True, text=True)

        with ThreadPoolExecutor(max_workers=max(1, min(len(units), os.cpu_count() or 1))) as pool:
            results = list(pool.map(compile_one, units))
        failed = [(u[0], r) for u, r in zip(units, results) if r.returncode != 0]
        if failed:
            text = "\n".join(f"--- {src.relative_to(ROOT)}\n{r.stderr}" for src, r in failed)
            raise SimBuildError(f"compiling the CUDA kernels for the emulation failed:\n{text}")
        tmp_lib = Path(tmp) / out.name
        link = subprocess.run([cxx, "-shared", "-pthread", "-o", str(tmp_lib), *(str(o) for _, o in units)],
                              capture_output=True, text=True)
        if link.returncode != 0:
            raise SimBuildError(f"linking the emulation library failed:\n{link.stderr}")
        os.replace(tmp_lib, out)  # atomic: concurrent builders agree on the result
    for stale in cache_dir.glob("libfeatprune_cuda_sim-*.so"):  # builds of older sources
        if stale != out:
            stale.unlink(missing_ok=True)
    return out


@dataclass
class Launch:
    name: str
    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    smem: int


class SimError(RuntimeError):
    """A launcher reported an error (featprune::Error or an emulation failure)."""


class SimKernels:
    """The two CUDA launchers, run by the emulation on CPU tensors."""

    def __init__(self, path: Path):
        self.path = path
        self.lib = lib = ctypes.CDLL(str(path))
        i64, i32, ptr = ctypes.c_int64, ctypes.c_int, ctypes.c_void_p
        lib.fp_sim_prune_rows.argtypes = [ptr, i32, i64, i64, i64, i64, ptr, ptr, ptr, i64, i64, i64, i32, i32,
                                          ctypes.c_char_p, i32]
        lib.fp_sim_prune_rows.restype = i32
        lib.fp_sim_accumulate_stats.argtypes = [ptr, i32, i64, i64, i64, i64, ptr, ptr, ptr, ptr,
                                                ctypes.c_char_p, i32]
        lib.fp_sim_accumulate_stats.restype = i32
        lib.fp_sim_configure.argtypes = [i32, i32, ctypes.c_uint64, i32]
        lib.fp_sim_configure.restype = None
        lib.fp_sim_live_allocations.argtypes = []
        lib.fp_sim_live_allocations.restype = i64
        lib.fp_sim_take_launches.argtypes = [ctypes.c_char_p, i32]
        lib.fp_sim_take_launches.restype = i32
        lib.fp_sim_cuda_versions.argtypes = [ctypes.POINTER(i32), ctypes.POINTER(i32)]
        lib.fp_sim_cuda_versions.restype = None
        lib.fp_sim_configure_device.argtypes = [i32, i32, i32, ctypes.c_char_p]
        lib.fp_sim_configure_device.restype = None
        lib.fp_sim_kernel_problem.argtypes = [i32, ctypes.c_char_p, i32]
        lib.fp_sim_kernel_problem.restype = None
        lib.fp_sim_selftest.argtypes = [i32, ptr, ctypes.c_char_p, i32]
        lib.fp_sim_selftest.restype = i32
        self.configure()

    def configure(self, *, workers: int = 2, schedule: str = "forward", seed: int = 1,
                  driver_version: int = 13000) -> None:
        """workers: OS threads running blocks; schedule: order of a block's threads
        within each barrier phase (forward, reverse, shuffle)."""
        code = {"forward": 0, "reverse": 1, "shuffle": 2}[schedule]
        self.lib.fp_sim_configure(workers, code, seed, driver_version)

    def configure_device(self, *, cc: int = 90, max_optin_smem: int = 232448, static_smem: int = 0,
                         images: str = "") -> None:
        """The emulated GPU (default: an H100 that runs any build). cc: 10 * major + minor;
        max_optin_smem: shared memory a block may opt into; static_smem: what every kernel
        reports as its static shared memory; images: the build's archs as build_info() lists
        them ("75-real,90-virtual"), "" for a build every device runs."""
        self.lib.fp_sim_configure_device(cc, max_optin_smem, static_smem, images.encode())

    def kernel_problem(self, device: int = 0) -> str:
        """featprune::cuda_kernel_problem(device) under the emulation ("" = the kernels load)."""
        out = ctypes.create_string_buffer(4096)
        self.lib.fp_sim_kernel_problem(device, out, len(out))
        return out.value.decode()

    def cuda_versions(self) -> tuple[int, int]:
        """(featprune::cuda_runtime_version(), cuda_driver_version()) under the emulation."""
        runtime, driver = ctypes.c_int(), ctypes.c_int()
        self.lib.fp_sim_cuda_versions(ctypes.byref(runtime), ctypes.byref(driver))
        return runtime.value, driver.value

    def live_allocations(self) -> int:
        return int(self.lib.fp_sim_live_allocations())

    def take_launches(self) -> list[Launch]:
        buf = ctypes.create_string_buffer(1 << 20)
        self.lib.fp_sim_take_launches(buf, len(buf))
        out = []
        for line in buf.value.decode().splitlines():
            name, *nums = line.split()
            n = list(map(int, nums))
            out.append(Launch(name, tuple(n[0:3]), tuple(n[3:6]), n[6]))
        return out

    def selftest(self, case: int, out) -> str:
        """Runs case `case` of sim_selftest.cpp writing into int32 tensor `out`;
        returns "" or the launch error the emulation reported."""
        err = ctypes.create_string_buffer(4096)
        rc = self.lib.fp_sim_selftest(case, out.data_ptr(), err, len(err))
        assert rc in (0, 1), f"unknown self-test case {case}"
        return err.value.decode() if rc else ""

    @staticmethod
    def _ptr(t) -> int:
        return 0 if t is None else t.data_ptr()

    @staticmethod
    def _u8(t):
        import torch

        if t is None:
            return None
        return t.view(torch.uint8) if t.dtype == torch.bool else t

    def prune_rows_(self, w, col_scale, *, k: int = 0, n: int = 0, m: int = 0, protect=None, mask_out=None) -> None:
        """prune_rows_cuda on w (any strides) in place; protect: bool/uint8 [C] contiguous."""
        import torch

        assert w.device.type == "cpu" and w.dim() == 2
        assert col_scale.dtype == torch.float32 and col_scale.is_contiguous()
        protect_u8 = self._u8(protect.contiguous()) if protect is not None else None
        mask_u8 = self._u8(mask_out)
        err = ctypes.create_string_buffer(4096)
        rc = self.lib.fp_sim_prune_rows(
            self._ptr(w), DTYPE_CODES[str(w.dtype).replace("torch.", "")], w.shape[0], w.shape[1], w.stride(0),
            w.stride(1), self._ptr(col_scale), self._ptr(protect_u8), self._ptr(mask_u8),
            0 if mask_u8 is None else mask_u8.stride(0), 1 if mask_u8 is None else mask_u8.stride(1),
            k, n, m, err, len(err))
        if rc:
            raise SimError(err.value.decode())

    def accumulate_stats(self, x, sumsq_row, count_slot, *, absmax_row=None, token_mask=None) -> None:
        """accumulate_stats_cuda over x [T, F] (any strides) into one bucket's rows."""
        import torch

        assert x.device.type == "cpu" and x.dim() == 2
        assert sumsq_row.is_contiguous() and count_slot.dtype == torch.int64
        mask = self._u8(token_mask.contiguous()) if token_mask is not None else None
        err = ctypes.create_string_buffer(4096)
        rc = self.lib.fp_sim_accumulate_stats(
            self._ptr(x), DTYPE_CODES[str(x.dtype).replace("torch.", "")], x.shape[0], x.shape[1], x.stride(0),
            x.stride(1), self._ptr(mask), self._ptr(sumsq_row), self._ptr(absmax_row), self._ptr(count_slot),
            err, len(err))
        if rc:
            raise SimError(err.value.decode())


_loaded: dict[Path, SimKernels] = {}


def load() -> SimKernels:
    """Builds if needed and loads the library once per process."""
    path = build()
    if path not in _loaded:
        _loaded[path] = SimKernels(path)
    return _loaded[path]


if __name__ == "__main__":
    print(build())
