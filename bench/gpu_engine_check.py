"""GPU engine check (needs CUDA): prune a 7B-shaped model with less device memory than its size.

1. Consistency: a tiny random Llama pruned on CUDA and on CPU must give the same masks
   (>= 99.5% of entries; the kernels' fp32 sums may round differently).
2. Scale: a random 7B-shaped Llama (hidden 4096, MLP 11008, 32 blocks, untied 32k vocab,
   bf16, ~13.5 GB), written to disk shard by shard, is pruned on CUDA with
   torch.cuda.set_per_process_memory_fraction capping the device at --cap x the model's size
   (default 0.5). Prints wall time, peak device memory (torch.cuda.max_memory_allocated),
   peak host RSS and the cap; exits non-zero on failure.

    python bench/gpu_engine_check.py [--dir /tmp/featprune_gpu] [--layers 32] [--cap 0.5]

Called by bench/gpu_check.sh. Needs ~30 GB of free disk for the input and output models.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests" / "helpers"))

SHAPE_7B = dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                num_key_value_heads=32, vocab_size=32000, max_position_embeddings=4096, tie_word_embeddings=False)


def calibration_for(model_dir: Path, nsamples: int, seqlen: int):
    from transformers import AutoTokenizer

    from featprune_ext.data.calibration_set import CalibrationSet
    from tiny_models import TEXTS

    texts = [" ".join(TEXTS[(i + j) % len(TEXTS)] for j in range(40)) for i in range(nsamples)]
    return CalibrationSet.from_texts(texts, AutoTokenizer.from_pretrained(model_dir), nsamples, seqlen, 0)


def masks_of(out_dir: Path) -> dict:
    from safetensors.torch import load_file

    masks = {}
    for f in out_dir.glob("*.safetensors"):
        masks.update({k: v == 0 for k, v in load_file(str(f)).items() if ".layers." in k and v.dim() == 2})
    return masks


def consistency_check(tmp: Path) -> float:
    from featprune_ext.engine import prune_model
    from featprune_ext.methods import Wanda
    from tiny_models import build_tiny_model

    src = build_tiny_model("llama", tmp / "tiny")
    calib = calibration_for(src, 8, 64)
    for dev in ("cpu", "cuda"):
        prune_model(src, tmp / f"tiny_{dev}", calibration=calib, method=Wanda(), sparsity=0.5, device=dev,
                    batch_size=3, progress=False)
    a, b = masks_of(tmp / "tiny_cpu"), masks_of(tmp / "tiny_cuda")
    same = sum(int((a[k] == b[k]).sum()) for k in a)
    return same / sum(m.numel() for m in a.values())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dir", default="/tmp/featprune_gpu", help="where the random model is built (cached)")
    p.add_argument("--layers", type=int, default=32, help="blocks of the 7B shape (fewer for a quick run)")
    p.add_argument("--cap", type=float, default=0.5, help="device cap as a fraction of the model's size")
    p.add_argument("--nsamples", type=int, default=16)
    p.add_argument("--seqlen", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--keep", action="store_true", help="keep the pruned output")
    args = p.parse_args(argv)

    import torch

    if not torch.cuda.is_available():
        print("gpu_engine_check: no CUDA device visible to torch", file=sys.stderr)
        return 2
    import featprune_ext
    from bench_memory_cap import build_model
    from featprune_ext.engine import prune_model
    from featprune_ext.methods import Wanda

    info = featprune_ext.build_info()
    print(f"device: {torch.cuda.get_device_name(0)}; featprune build: {info}")
    if not info.get("cuda"):
        print("warning: featprune was built without CUDA kernels; the PyTorch reference runs instead",
              file=sys.stderr)

    with tempfile.TemporaryDirectory(prefix="featprune_gpu_tiny_") as tmp:
        agree = consistency_check(Path(tmp))
    print(f"[1] tiny Llama, CUDA vs CPU masks: {agree * 100:.3f}% of entries agree")
    ok = agree >= 0.995

    work = Path(args.dir)
    work.mkdir(parents=True, exist_ok=True)
    shape = dict(SHAPE_7B, num_hidden_layers=args.layers)
    t0 = time.perf_counter()
    model = build_model(work / f"llama7b-shape-{args.layers}L-bf16", shape, "bfloat16", device="cuda")
    build_s = time.perf_counter() - t0
    torch.cuda.empty_cache()
    model_bytes = sum(f.stat().st_size for f in model.glob("*.safetensors"))
    total = torch.cuda.get_device_properties(0).total_memory
    cap = int(model_bytes * args.cap)
    torch.cuda.set_per_process_memory_fraction(cap / total, 0)
    calib = calibration_for(model, args.nsamples, args.seqlen)
    out = work / "pruned"
    for d in (out, out.with_name("pruned.partial")):
        shutil.rmtree(d, ignore_errors=True)
    t0 = time.perf_counter()
    try:
        report = prune_model(model, out, calibration=calib, method=Wanda(), sparsity=0.5, device="cuda",
                             batch_size=args.batch_size, progress=True)
    except Exception as exc:  # report, then fail
        print(f"[2] FAILED after {time.perf_counter() - t0:.0f} s: {type(exc).__name__}: {exc}")
        return 1
    wall = time.perf_counter() - t0
    gib = 2**30
    peak = report["peak_cuda_bytes"]
    print(json.dumps({"layers": args.layers, "model_gib": model_bytes / gib, "cap_gib": cap / gib,
                      "peak_cuda_gib": peak / gib, "peak_rss_gib": report["peak_rss_bytes"] / gib,
                      "wall_s": wall, "build_s": build_s, "tokens": calib.num_tokens,
                      "sparsity": report["overall_sparsity"]}, indent=2))
    print(f"[2] 7B-shaped bf16 ({model_bytes / gib:.1f} GiB, {args.layers} blocks) pruned on CUDA in {wall:.0f} s; "
          f"peak device memory {peak / gib:.2f} GiB under a cap of {cap / gib:.2f} GiB; "
          f"peak host RSS {report['peak_rss_bytes'] / gib:.2f} GiB")
    ok = ok and peak <= cap and abs(report["overall_sparsity"] - 0.5) < 1e-6
    if not args.keep:
        shutil.rmtree(out, ignore_errors=True)
    print("gpu_engine_check:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
