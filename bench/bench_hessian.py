"""How SparseGPT's Hessian sum H = sum_t x_t x_t^T should be accumulated: time, error and memory.

Variants (all through ops.accumulate_hessian except the last):
  fp32 H     the product of each batch added into an fp32 H by one GEMM (addmm, no temporary)
  fp64 H     each batch's fp32 product added to a float64 H (what the engine does; on CPU in row
             chunks: fp32 product, cast to a float64 buffer, same-dtype add)
  fp64 GEMM  the float64 alternative: inputs upcast to float64, dgemm into a float64 H
Error: max |H - exact| / max |exact|, exact = float64 GEMM over all tokens at once (the same
values as reference.accumulate_hessian's outer products, which are too slow at these sizes).

    python bench/bench_hessian.py [--features 576 1536 4096] [--batches 32] [--tokens 256]
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from featprune_ext import ops


def run(features: int, batches: int, tokens: int, outliers: bool) -> list[dict]:
    gen = torch.Generator().manual_seed(0)
    xs = [torch.randn(tokens, features, generator=gen) for _ in range(batches)]
    if outliers:  # a few LLM-like outlier features, 100x the others
        for x in xs:
            x[:, :4] *= 100.0
    exact = torch.zeros(features, features, dtype=torch.float64)
    for x in xs:
        exact += x.double().t() @ x.double()
    scale = float(exact.abs().max())
    rows = []
    for name, dtype in (("fp32 H", torch.float32), ("fp64 H", torch.float64), ("fp64 GEMM", None)):
        h = torch.zeros(features, features, dtype=dtype or torch.float64)
        count = torch.zeros(1, dtype=torch.int64)
        t0 = time.perf_counter()
        for x in xs:
            if dtype is None:
                xd = x.double()
                h.addmm_(xd.t(), xd)
            else:
                ops.accumulate_hessian(x, h, count)
        dt = time.perf_counter() - t0
        err = float((h.double() - exact).abs().max()) / scale
        mem = features * features * (4 if dtype == torch.float32 else 8)
        if dtype == torch.float64:  # the chunk buffers (fp32 + float64) of at most 4M entries each
            mem += min(features, max(256, (1 << 22) // features)) * features * 12
        gflops = 2.0 * features * features * tokens * batches / dt / 1e9
        rows.append({"variant": name, "features": features, "ms": dt * 1e3, "gflops": gflops, "rel_err": err,
                     "bytes": mem})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--features", type=int, nargs="+", default=[576, 1536, 4096])
    p.add_argument("--batches", type=int, default=32)
    p.add_argument("--tokens", type=int, default=256)
    p.add_argument("--outliers", action="store_true", help="scale 4 features by 100 (LLM-like)")
    args = p.parse_args()
    print(f"{platform.node()}: torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{args.batches} batches x {args.tokens} tokens, outliers={args.outliers}")
    print("| features | variant | ms | GFLOP/s | max rel. error vs exact | H memory MiB |")
    print("|---:|---|---:|---:|---:|---:|")
    for f in args.features:
        for r in run(f, args.batches, args.tokens, args.outliers):
            print(f"| {r['features']} | {r['variant']} | {r['ms']:.1f} | {r['gflops']:.1f} | {r['rel_err']:.2e} | "
                  f"{r['bytes'] / 2**20:.1f} |")


if __name__ == "__main__":
    main()
