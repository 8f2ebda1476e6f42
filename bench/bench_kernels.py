"""Times the native kernels against the PyTorch reference and a plain copy, in one run.

    python bench/bench_kernels.py [--device cpu|cuda] [--repeats N] [--quick] [--only prune|stats]
                                  [--no-reference] [--clock wall|thread] [--cold] [--shape RxC]

prune_rows_ bytes = one read + one write of w; its floor is `dst.copy_(w)` into a
preallocated tensor of the same dtype and shape. accumulate_stats bytes = one read
of x; its floor is `torch.amax(x)`. Kernel and floor calls alternate in one loop
(medians of each), so both see the same machine load; "x floor" = kernel / floor.
2:4 on a column count that is not a multiple of 4 uses the next lower multiple.
--clock thread times with the calling thread's CPU time (time.thread_time), which a
busy shared machine does not inflate; it needs one thread for both the kernel and
torch: run it as `OMP_NUM_THREADS=1 python bench/bench_kernels.py --clock thread`.
--cold writes a buffer larger than the last-level cache before every timed call, kernel and
floor alike, so both read their bytes from memory. Without it, a matrix that fits in the cache
(769x5125 bf16 is 7.9 MB) is timed in whatever state the previous call left: the kernel's w was
just restored (cached, dirty) while the copy's destination may not be, and the copy floor of that
shape moved between 0.66 and 0.95 ms from run to run (bench/RESULTS.md).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import featprune_ext
from featprune_ext import ops, reference

SHAPES = [(4096, 4096), (11008, 4096), (4096, 11008), (769, 5125)]
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
PATTERNS = ["50%", "2:4"]


CLOCK = time.perf_counter


def once(fn, device: str) -> float:
    """Milliseconds of one call of fn()."""
    if device == "cuda":
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end)
    t0 = CLOCK()
    fn()
    return (CLOCK() - t0) * 1e3


def timed(fn, device: str, repeats: int, setup=None) -> float:
    """Median milliseconds of fn(); setup() runs before each call and is not timed."""
    samples = []
    for i in range(repeats + 1):
        if setup is not None:
            setup()
        ms = once(fn, device)
        if i:  # the first call warms caches and allocators
            samples.append(ms)
    return statistics.median(samples)


COLD = None  # --cold: a buffer larger than the last-level cache, written before every timed call


def evict_caches() -> None:
    if COLD is not None:
        COLD.add_(1)


def timed_pair(fn, floor_fn, device: str, repeats: int, setup=None) -> tuple[float, float]:
    """Medians (ms) of fn() and floor_fn(), calls alternating so both see the same load.

    setup() runs before each fn() and is not timed; the first round only warms up.
    """
    a, b = [], []
    for i in range(repeats + 1):
        if setup is not None:
            setup()
        evict_caches()
        ms_fn = once(fn, device)
        evict_caches()
        ms_floor = once(floor_fn, device)
        if i:
            a.append(ms_fn)
            b.append(ms_floor)
    return statistics.median(a), statistics.median(b)


def bench_prune(rows, cols, dtype, device, repeats, with_reference, pattern):
    torch.manual_seed(0)
    original = torch.randn(rows, cols, dtype=dtype, device=device)
    scale = torch.rand(cols, device=device)
    w = original.clone()
    dst = torch.empty_like(original)
    kwargs = {"sparsity": 0.5} if pattern == "50%" else {"n": 2, "m": 4}
    restore = lambda: w.copy_(original)  # noqa: E731 - pruning must start from the dense matrix each time
    native_ms, copy_ms = timed_pair(lambda: ops.prune_rows_(w, scale, **kwargs), lambda: dst.copy_(original),
                                    device, repeats, restore)
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
    native_ms, read_ms = timed_pair(lambda: ops.accumulate_stats(x, sumsq, count, absmax=absmax),
                                    lambda: torch.amax(x), device, repeats)
    ref_ms = timed(lambda: reference.accumulate_stats(x, sumsq, count, absmax=absmax), device, repeats) \
        if with_reference else float("nan")
    return native_ms, ref_ms, read_ms, x.numel() * x.element_size()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="first shape only")
    parser.add_argument("--only", choices=["prune", "stats"], help="one kernel only")
    parser.add_argument("--no-reference", action="store_true", help="skip the (slow) reference timings")
    parser.add_argument("--clock", choices=["wall", "thread"], default="wall",
                        help="thread: CPU time of the calling thread (CPU, one thread only)")
    parser.add_argument("--cold", action="store_true",
                        help="evict the caches before every timed call (kernel and floor alike)")
    parser.add_argument("--shape", help="one shape only, ROWSxCOLS (e.g. 769x5125)")
    args = parser.parse_args()
    device = args.device
    if args.cold:  # 256 MiB: above any CPU's L3 and any GPU's L2 (H200: 60 MB)
        global COLD
        COLD = torch.zeros(64 << 20, dtype=torch.int32, device=device)
    info = featprune_ext.build_info()
    if args.clock == "thread":
        if device != "cpu" or info.get("openmp_max_threads", 1) != 1:
            parser.error("--clock thread needs --device cpu and OMP_NUM_THREADS=1")
        torch.set_num_threads(1)
        global CLOCK
        CLOCK = time.thread_time
    where = torch.cuda.get_device_name() if device == "cuda" else \
        f"CPU x{torch.get_num_threads()} threads, {info.get('cpu_prune_path')} path"
    print(f"# featprune {info['version']} kernels on {where}; torch {torch.__version__}; "
          f"openmp={info['openmp']} cuda={info['cuda']}; medians of {args.repeats}; clock={args.clock}; "
          f"caches {'evicted before each call' if args.cold else 'as left by the previous call'}")
    shapes = SHAPES[:1] if args.quick else SHAPES
    if args.shape:
        shapes = [tuple(int(x) for x in args.shape.lower().split("x"))]
    header = "| kernel | shape | dtype | native ms | GB/s | reference ms | speed-up vs ref | floor ms | x floor |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))

    def report(kernel, shape, dt, nat, nbytes, ref, floor, floor_name):
        print(f"| {kernel} | {shape} | {dt} | {nat:.2f} | {nbytes / nat / 1e6:.1f} | {ref:.1f} | "
              f"{ref / nat:.1f}x | {floor:.2f} ({floor_name}) | {nat / floor:.2f} |", flush=True)

    for name, dtype in DTYPES.items():
        for rows, cols in shapes:
            if args.only != "stats":
                for pattern in PATTERNS:
                    c = cols - cols % 4 if pattern == "2:4" else cols
                    nat, ref, floor, nbytes = bench_prune(rows, c, dtype, device, args.repeats,
                                                          not args.no_reference, pattern)
                    report(f"prune_rows_ {pattern}", f"{rows}x{c}", name, nat, nbytes, ref, floor, "copy")
            if args.only != "prune":
                nat, ref, floor, nbytes = bench_stats(rows, cols, dtype, device, args.repeats, not args.no_reference)
                report("accumulate_stats", f"{rows}x{cols}", name, nat, nbytes, ref, floor, "read")

if __name__ == "__main__":
    main()
