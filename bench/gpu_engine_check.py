"""GPU engine check: prune a 7B-shaped model with less device memory than its size, against the floor.

1. Consistency: a tiny random Llama pruned on the device and on CPU must give the same masks
   (>= 99.5% of entries; the kernels' fp32 sums may round differently).
2. Model: a random 7B-shaped Llama (hidden 4096, MLP 11008, 32 blocks, untied 32k vocab, bf16, 13.5 GB)
   written to local disk shard by shard (bench/synth_model.py; random numbers drawn on the device).
3. Calibration: --nsamples x --seqlen random token ids (default 128 x 2048), saved once, used by both arms.
4. featprune: a child process caps the device with torch.cuda.set_per_process_memory_fraction at --cap-gib
   (default 10 GiB, below the model's size) and runs prune_model (50% Wanda, --batch-size auto).
5. Floor: a child process loads the whole model on the same device and runs every block twice over the
   same batches, nothing else (no cap: the model alone is above it).
Prints a short table (wall times, ratio, peak device memory, phases); exits non-zero on failure.

    python bench/gpu_engine_check.py                       # on a GPU machine (called by gpu_check.sh)
    python bench/gpu_engine_check.py --device cpu --tiny   # dry run of every step on CPU at a tiny shape

Needs about 2.3x the model's size free on the disk of --dir (input, output, saved activations).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests" / "helpers"))
GIB = 2**30


def calibration(path: Path):
    import torch

    from featprune_ext.data.calibration_set import CalibrationSet

    ids = torch.load(path, weights_only=True)
    return CalibrationSet(list(ids), [0] * len(ids), ["calibration"], {"source": "random token ids"})


def device_of(name: str):
    import torch

    return torch.device(name)


def peak_device_bytes(device) -> int | None:
    import torch

    return torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None


# -- child: featprune under the cap -----------------------------------------------------------------------------
def prune_child(args) -> int:
    import torch

    from featprune_ext.engine import prune_model
    from featprune_ext.engine.transfers import with_index
    from featprune_ext.methods import Wanda

    device = device_of(args.device)
    cap = None
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
        cap = int(args.cap_gib * GIB)
        # torch 2.11 wants an index here ("cuda" alone is refused)
        torch.cuda.set_per_process_memory_fraction(min(cap / total, 1.0), with_index(device))
    calib = calibration(Path(args.calib))
    out = Path(args.out)
    t0 = time.perf_counter()
    try:
        report = prune_model(args.model_dir, out, calibration=calib, method=Wanda(), sparsity=0.5, device=device,
                             batch_size=args.batch_size, progress=False)
    except Exception as exc:  # report, then fail
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}", "after_s": time.perf_counter() - t0}))
        return 1
    print(json.dumps({"inner_s": time.perf_counter() - t0, "batch_size": report["batch_size"],
                      "sparsity": report["overall_sparsity"], "peak_device_bytes": report["peak_cuda_bytes"],
                      "peak_rss_bytes": report["peak_rss_bytes"], "cap_bytes": cap,
                      "phases": report["timings"].get("phases", {})}))
    return 0


# -- child: the floor --------------------------------------------------------------------------------------------
def floor_child(args) -> int:
    import torch
    from transformers import AutoModelForCausalLM

    from featprune_ext.engine.batches import make_batches, pad_id_for
    from featprune_ext.engine.capture import capture_block_calls
    from featprune_ext.engine.families import find_blocks

    device = device_of(args.device)
    calib = calibration(Path(args.calib))
    t0 = time.perf_counter()
    if device.type == "cuda":  # straight to the device: no 13.5 GB stop in host memory
        model = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=torch.bfloat16, device_map=str(device))
    else:
        model = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=torch.bfloat16)
    model = model.eval()
    load_s = time.perf_counter() - t0
    _, blocks = find_blocks(model)
    batches = make_batches(calib, int(args.batch_size), pad_id_for(model.config, model.config.vocab_size))

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    with torch.no_grad():
        calls, hidden = capture_block_calls(model, blocks, batches, device)
        sync()
        passes = [0.0, 0.0]
        for i, block in enumerate(blocks):
            for p in range(2):
                t = time.perf_counter()
                out = [c.run(block, h) for c, h in zip(calls[i], hidden)]
                sync()
                passes[p] += time.perf_counter() - t
            hidden = out
    print(json.dumps({"floor_s": sum(passes), "pass_s": passes, "load_s": load_s,
                      "peak_device_bytes": peak_device_bytes(device)}))
    return 0


# -- parent ------------------------------------------------------------------------------------------------------
def child(args, mode: str, extra: list[str], timeout: float) -> tuple[float, dict]:
    cmd = [sys.executable, str(Path(__file__).resolve()), f"--{mode}-child", "--device", args.device, *extra]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return time.perf_counter() - t0, {"error": f"timed out after {timeout:.0f} s"}
    wall = time.perf_counter() - t0
    lines = [ln for ln in proc.stdout.strip().splitlines() if ln.startswith("{")]
    if not lines:
        return wall, {"error": f"exit {proc.returncode}: {proc.stderr.strip()[-2000:]}"}
    return wall, json.loads(lines[-1])


def masks_of(out_dir: Path) -> dict:
    from safetensors.torch import load_file

    masks = {}
    for f in out_dir.glob("*.safetensors"):
        masks.update({k: v == 0 for k, v in load_file(str(f)).items() if ".layers." in k and v.dim() == 2})
    return masks


def consistency_check(tmp: Path, device: str) -> float:
    from tiny_models import TEXTS, build_tiny_model
    from transformers import AutoTokenizer

    from featprune_ext.data.calibration_set import CalibrationSet
    from featprune_ext.engine import prune_model
    from featprune_ext.methods import Wanda

    src = build_tiny_model("llama", tmp / "tiny")
    texts = [" ".join(TEXTS[(i + j) % len(TEXTS)] for j in range(8)) for i in range(8)]
    calib = CalibrationSet.from_texts(texts, AutoTokenizer.from_pretrained(src), 8, 64, 0)
    for dev in ("cpu", device):
        out = tmp / f"tiny_{dev}"
        if not out.exists():
            prune_model(src, out, calibration=calib, method=Wanda(), sparsity=0.5, device=dev, batch_size=3,
                        progress=False)
    a, b = masks_of(tmp / "tiny_cpu"), masks_of(tmp / f"tiny_{device}")
    same = sum(int((a[k] == b[k]).sum()) for k in a)
    return same / sum(m.numel() for m in a.values())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--tiny", action="store_true", help="a 4-block 7B-family model and 8 x 64 tokens (dry run)")
    p.add_argument("--dir", default=os.environ.get("FEATPRUNE_GPU_WORK", "/tmp/featprune_gpu"),
                   help="where the random model is built (cached) and pruned")
    p.add_argument("--layers", type=int, default=None, help="blocks of the 7B shape (default 32)")
    p.add_argument("--nsamples", type=int, default=None, help="default 128 (8 with --tiny)")
    p.add_argument("--seqlen", type=int, default=None, help="default 2048 (64 with --tiny)")
    p.add_argument("--cap-gib", type=float, default=None, help="device memory cap (default 10 GiB; 0.5x the "
                                                                "model with --tiny)")
    p.add_argument("--batch-size", default="auto")
    p.add_argument("--timeout", type=float, default=420, help="seconds for the two timed arms together")
    p.add_argument("--keep", action="store_true", help="keep the pruned output")
    p.add_argument("--prune-child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--floor-child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--model-dir", help=argparse.SUPPRESS)
    p.add_argument("--calib", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.prune_child:
        return prune_child(args)
    if args.floor_child:
        return floor_child(args)

    import torch
    from synth_model import build_random_model

    import featprune_ext

    deadline = time.perf_counter() + args.timeout
    dev = torch.device(args.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        print("gpu_engine_check: no CUDA device visible to torch", file=sys.stderr)
        return 2
    info = featprune_ext.build_info()
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu (dry run)"
    print(f"device: {name}; torch {torch.__version__}; featprune build: {info}", flush=True)
    if dev.type == "cuda" and not info.get("cuda"):
        print("warning: featprune was built without CUDA kernels; the PyTorch reference runs instead",
              file=sys.stderr)
    nsamples = args.nsamples or (8 if args.tiny else 128)
    seqlen = args.seqlen or (64 if args.tiny else 2048)
    ok = True

    with tempfile.TemporaryDirectory(prefix="featprune_gpu_tiny_") as tmp:
        agree = consistency_check(Path(tmp), args.device)
    print(f"[1] tiny Llama, {args.device} vs cpu masks: {agree * 100:.3f}% of entries agree", flush=True)
    ok = ok and agree >= 0.995

    work = Path(args.dir)
    work.mkdir(parents=True, exist_ok=True)
    shape = "llama-7b-tiny" if args.tiny else "llama-7b"
    layers_tag = f"-{args.layers}L" if args.layers else ""
    t0 = time.perf_counter()
    model = build_random_model(work / f"{shape}{layers_tag}-bf16", shape, "bfloat16", device=args.device,
                               layers=args.layers, quiet=True)
    build_s = time.perf_counter() - t0
    model_bytes = sum(f.stat().st_size for f in model.glob("*.safetensors"))
    free_disk = shutil.disk_usage(work).free
    print(f"[2] model {model.name}: {model_bytes / GIB:.2f} GiB, built/found in {build_s:.0f} s; "
          f"{free_disk / GIB:.0f} GiB free on {work}", flush=True)

    gen = torch.Generator().manual_seed(0)
    vocab = json.loads((model / "config.json").read_text())["vocab_size"]
    calib_path = work / f"calib-{nsamples}x{seqlen}.pt"
    torch.save([torch.randint(3, vocab, (seqlen,), generator=gen) for _ in range(nsamples)], calib_path)
    cap_gib = args.cap_gib if args.cap_gib is not None else (0.5 * model_bytes / GIB if args.tiny else 10.0)

    out = work / "pruned"
    for d in (out, out.with_name("pruned.partial")):
        shutil.rmtree(d, ignore_errors=True)
    common = ["--model-dir", str(model), "--calib", str(calib_path)]
    wall, fp = child(args, "prune", [*common, "--out", str(out), "--cap-gib", str(cap_gib), "--batch-size",
                                     str(args.batch_size)], max(deadline - time.perf_counter(), 30))
    if "error" in fp:
        print(f"[3] featprune FAILED after {wall:.0f} s: {fp['error']}")
        return 1
    if not args.keep:
        shutil.rmtree(out, ignore_errors=True)
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    fwall, fl = child(args, "floor", [*common, "--batch-size", str(fp["batch_size"])],
                      max(deadline - time.perf_counter(), 30))
    if "error" in fl:
        print(f"[4] floor FAILED after {fwall:.0f} s: {fl['error']}")
        ok = False
        fl = {"floor_s": float("nan"), "pass_s": [float("nan")] * 2, "load_s": float("nan"),
              "peak_device_bytes": None}

    def gib(b):
        return "-" if b is None else f"{b / GIB:.2f}"

    ratio = wall / fl["floor_s"]
    rows = [
        ("model", f"{model.name}, {model_bytes / GIB:.2f} GiB bf16"),
        ("calibration", f"{nsamples} x {seqlen} = {nsamples * seqlen} tokens, batch size {fp['batch_size']}"),
        ("floor: 2 plain forward passes (s)", f"{fl['floor_s']:.1f} (pass 1 {fl['pass_s'][0]:.1f}, pass 2 "
                                              f"{fl['pass_s'][1]:.1f}; model load {fl['load_s']:.1f} untimed)"),
        ("featprune wall (process, s)", f"{wall:.1f} (prune_model {fp['inner_s']:.1f})"),
        ("ratio featprune / floor", f"{ratio:.2f}"),
        ("peak device memory featprune (GiB)", f"{gib(fp['peak_device_bytes'])} under a cap of {gib(fp['cap_bytes'])}"),
        ("peak device memory floor (GiB)", gib(fl["peak_device_bytes"])),
        ("peak host RSS featprune (GiB)", gib(fp["peak_rss_bytes"])),
        ("featprune phases (s)", ", ".join(f"{k[:-2]} {v:.1f}" for k, v in fp["phases"].items() if v >= 0.05)),
    ]
    print("\n| what | value |\n|---|---|")
    for k, v in rows:
        print(f"| {k} | {v} |")
    print()
    sparsity_ok = abs(fp["sparsity"] - 0.5) < 1e-6
    cap_ok = fp["cap_bytes"] is None or (fp["peak_device_bytes"] or 0) <= fp["cap_bytes"]
    ok = ok and sparsity_ok and cap_ok
    print(json.dumps({"featprune": fp, "floor": fl, "wall_s": wall, "floor_wall_s": fwall, "ratio": ratio,
                      "model_bytes": model_bytes, "build_s": build_s}))
    print("gpu_engine_check:", "PASS" if ok else "FAIL", f"(sparsity ok: {sparsity_ok}, under the cap: {cap_ok})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
