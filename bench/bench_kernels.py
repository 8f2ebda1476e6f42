"""Times the native kernels against the PyTorch reference and a plain copy, in one run.

    python bench/bench_kernels.py [--device cpu|cuda] [--repeats N] [--quick] [--markdown]

prune_rows_ bytes = one read + one write of w (the floor); accumulate_stats
bytes = one read of x. Ratios are against numbers measured in the same run.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import featprune_ext
from featprune_ext import ops, reference

SHAPES = [(4096, 4096), (11008, 4096), (4096, 11008)]
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def timed(fn, device: str, repeats: int, setup=None) -> float:
    """Median milliseconds of fn(); setup() runs before each call and is not timed."""
    samples = []
    for i in range(repeats + 1):
        if setup is not None:
            setup()
        if device == "cuda":
            torch.cuda.synchronize()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            ms = start.elapsed_time(end)
        else:
            t0 = time.perf_counter()
            fn()
            ms = (time.perf_counter() - t0) * 1e3
        if i:  # the first call warms caches and allocators
            samples.append(ms)
    return statistics.median(samples)


def bench_prune(rows, cols, dtype, device, repeats, with_reference, pattern):
    torch.manual_seed(0)
    original = torch.randn(rows, cols, dtype=dtype, device=device)
    scale = torch.rand(cols, device=device)
    w = original.clone()
    dst = torch.empty_like(original)
    kwargs = {"sparsity": 0.5} if pattern == "50%" else {"n": 2, "m": 4}
    restore = lambda: w.copy_(original)  # noqa: E731 - pruning must start from the dense matrix each time
    native_ms = timed(lambda: ops.prune_rows_(w, scale, **kwargs), device, repeats, restore)
    copy_ms = timed(lambda: dst.copy_(original), device, repeats)
    ref_ms = timed(lambda: reference.prune_rows_(w, scale, **kwargs), device, max(1, repeats // 3), restore) \
        if with_reference else float("nan")
    nbytes = 2 * original.numel() * original.element_size()
    return native_ms, ref_ms, copy_ms, nbytes


def bench_stats(tokens, features, dtype, device, repeats, with_reference):
    torch.manual_seed(0)
    x = torch.randn(tokens, features, dtype=dtype, device=device)
    sumsq = torch.zeros(1, features, device=device)
    absmax = torch.zeros(1, features, device=device)
    count = torch.zeros(1, dtype=torch.int64, device=device)
    native_ms = timed(lambda: ops.accumulate_stats(x, sumsq, count, absmax=absmax), device, repeats)
    read_ms = timed(lambda: torch.amax(x), device, repeats)
    ref_ms = timed(lambda: reference.accumulate_stats(x, sumsq, count, absmax=absmax), device, repeats) \
        if with_reference else float("nan")
    return native_ms, ref_ms, read_ms, x.numel() * x.element_size()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="first shape only")
    parser.add_argument("--no-reference", action="store_true", help="skip the (slow) reference timings")
    args = parser.parse_args()
    device = args.device
    info = featprune_ext.build_info()
    where = torch.cuda.get_device_name() if device == "cuda" else f"CPU x{torch.get_num_threads()} threads"
    print(f"# featprune {info['version']} kernels on {where}; torch {torch.__version__}; "
          f"openmp={info['openmp']} cuda={info['cuda']}")
    shapes = SHAPES[:1] if args.quick else SHAPES
    header = "| kernel | shape | dtype | native ms | GB/s | reference ms | speed-up vs ref | floor ms | x floor |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    rows_out = []
    for name, dtype in DTYPES.items():
        for rows, cols in shapes:
            for pattern in (["50%", "2:4"] if (rows, cols) == SHAPES[0] else ["50%"]):
                nat, ref, floor, nbytes = bench_prune(rows, cols, dtype, device, args.repeats,
                                                      not args.no_reference, pattern)
                rows_out.append((f"prune_rows_ {pattern}", f"{rows}x{cols}", name, nat, nbytes, ref, floor))
            nat, ref, floor, nbytes = bench_stats(rows, cols, dtype, device, args.repeats, not args.no_reference)
            rows_out.append(("accumulate_stats", f"{rows}x{cols}", name, nat, nbytes, ref, floor))
            for kernel, shape, dt, nat, nbytes, ref, floor in rows_out[-(2 if (rows, cols) != SHAPES[0] else 3):]:
                floor_name = "copy" if kernel.startswith("prune") else "read"
                print(f"| {kernel} | {shape} | {dt} | {nat:.2f} | {nbytes / nat / 1e6:.1f} | {ref:.1f} | "
                      f"{ref / nat:.1f}x | {floor:.2f} ({floor_name}) | {nat / floor:.2f} |", flush=True)


if __name__ == "__main__":
    main()
