"""GPU check of structured pruning (`featprune prune --structured` on the device), for a lent GPU.

1. Agreement: a tiny random Llama (tests/helpers/tiny_models) cut with `mlp=0.25,heads=0.5`, the default Adam
   recovery, through the CLI on the device and on CPU: the same channels and key/value groups chosen
   (featprune.json), and the largest difference of the written tensors (the refits run in fp32 on both).
2. Speed: a Qwen2-0.5B-shaped random model (bench/synth_model.py, bf16) cut with `mlp=0.25` and `mlp=0.5`
   (recovery none: random weights make recovery meaningless, and the shapes alone set the speed) on the
   device; then greedy decode tokens/s at batch 1 and 8 and prefill tokens/s of one forward (last-position
   logits, as bench/structured_measure.py), dense and cut
   loaded with stock transformers on the device, timed interleaved (dense, cut, dense, cut, ...) with CUDA
   synchronised, after a warm-up.
Prints a table and writes --json; exits non-zero when the choices differ or a step fails.

    python bench/gpu_structured_check.py --device cuda --dir /tmp/featprune_gpu/structured --json OUT.json
    python bench/gpu_structured_check.py --device cpu --tiny --dir /tmp/st_gpu_dry --json /tmp/st_gpu_dry.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests" / "helpers"))
import structured_measure as measure  # noqa: E402  (bench/, next to this file)


def cli_prune(src: Path, out: Path, calib: Path, device: str, extra: list[str], timeout: float) -> float:
    """`featprune prune` in a subprocess; its wall seconds (raises with its stderr on failure)."""
    cmd = [sys.executable, "-m", "featprune_ext.cli", "prune", str(src), "--out", str(out), "--calib-texts",
           str(calib), "--no-progress", "--quiet", "--device", device, *extra]
    t = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {done.returncode}:\n{done.stderr[-3000:]}")
    return time.perf_counter() - t


def agreement(work: Path, device: str, timeout: float) -> dict:
    import torch
    from safetensors.torch import load_file
    from tiny_models import build_tiny_model, write_calibration_jsonl

    src = work / "tiny-llama"
    if not (src / "config.json").exists():
        build_tiny_model("llama", src)
    calib = write_calibration_jsonl(work / "calib.jsonl")
    extra = ["--nsamples", "12", "--seqlen", "32", "--structured", "mlp=0.25,heads=0.5", "--recovery-steps", "20"]
    outs = {}
    for role, dev in (("cpu", "cpu"), ("device", device)):
        out = work / f"tiny-cut-{role}"
        shutil.rmtree(out, ignore_errors=True)
        cli_prune(src, out, calib, dev, extra, timeout)
        outs[role] = out
    report = {r: json.loads((o / "featprune.json").read_text())["structured"]["blocks"] for r, o in outs.items()}
    same = len(report["cpu"]) == len(report["device"]) and all(
        a.get("removed_channels") == b.get("removed_channels") and a.get("kept_kv_groups") == b.get("kept_kv_groups")
        for a, b in zip(report["cpu"], report["device"]))
    ref, got = ({k: v for f in sorted(outs[r].glob("*.safetensors")) for k, v in load_file(f).items()}
                for r in ("cpu", "device"))
    diff = max(float((ref[k].float() - got[k].float()).abs().max()) for k in ref)
    scale = max(float(t.float().abs().max()) for t in ref.values())
    return {"same_choices": same, "max_abs_diff": diff, "max_abs_weight": scale, "torch": torch.__version__}


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def speed(dense, cut, device, vocab: int, new_tokens: int, rounds: int, prefill_tokens: int) -> dict:
    """Tokens/s of dense and cut, greedy decode at batch 1 and 8 and one prefill forward, interleaved."""
    import torch

    gen = torch.Generator().manual_seed(0)
    rows = {}
    for batch in (1, 8):
        prompt = torch.randint(3, vocab, (batch, 16), generator=gen).to(device)
        for kind in ("decode", "prefill"):
            ids = prompt if kind == "decode" else \
                torch.randint(3, vocab, (batch, prefill_tokens), generator=gen).to(device)

            def run(model, ids=ids, kind=kind):  # the CPU bench's calls, timed with the device synchronised
                _sync(device)
                t = time.perf_counter()
                if kind == "decode":
                    measure.decode_seconds(model, ids, new_tokens)
                else:
                    measure.prefill(model, ids)
                _sync(device)
                return time.perf_counter() - t

            run(dense), run(cut)  # warm-up
            td = tc = 0.0
            for _ in range(rounds):
                td += run(dense)
                tc += run(cut)
            n = batch * (new_tokens if kind == "decode" else ids.shape[1]) * rounds
            rows[f"{kind} b{batch}"] = {"dense_tok_s": round(n / td, 1), "cut_tok_s": round(n / tc, 1),
                                        "speedup": round(td / tc, 3)}
    return rows


def speed_check(work: Path, device_name: str, tiny: bool, timeout: float) -> dict:
    import torch
    from synth_model import build_random_model
    from tiny_models import write_calibration_jsonl
    from transformers import AutoModelForCausalLM

    device = torch.device(device_name)
    shape = "qwen2-0.5b"
    src = build_random_model(work / f"{shape}-bf16{'-tiny' if tiny else ''}", shape, "bfloat16",
                             device=device_name, layers=2 if tiny else None, quiet=True)
    calib = write_calibration_jsonl(work / "calib.jsonl")
    load = lambda d: AutoModelForCausalLM.from_pretrained(d, dtype=torch.bfloat16).to(device).eval()
    dense = load(src)
    vocab = 384  # the synth model's tokenizer (tiny_models.VOCAB): ids far below the model's vocab
    results = {}
    for spec in ("mlp=0.25", "mlp=0.5"):
        out = work / f"{shape}-{spec.replace('=', '')}"
        shutil.rmtree(out, ignore_errors=True)
        prune_s = cli_prune(src, out, calib, device_name,
                            ["--nsamples", "8" if tiny else "64", "--seqlen", "64" if tiny else "512",
                             "--structured", spec, "--recovery", "none"], timeout)
        cut = load(out)
        results[spec] = {"prune_s": round(prune_s, 1),
                         "params_ratio": round(sum(p.numel() for p in cut.parameters())
                                               / sum(p.numel() for p in dense.parameters()), 3),
                         **speed(dense, cut, device, vocab, 8 if tiny else 64, 1 if tiny else 3,
                                 64 if tiny else 1024)}
        del cut
    return results


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--dir", required=True, help="work directory (models, outputs)")
    p.add_argument("--json", required=True)
    p.add_argument("--tiny", action="store_true", help="the speed model at 2 blocks, short runs: a CPU dry run")
    p.add_argument("--timeout", type=float, default=300, help="seconds per featprune run")
    args = p.parse_args()
    work = Path(args.dir)
    work.mkdir(parents=True, exist_ok=True)
    result = {"device": args.device}
    t0 = time.perf_counter()
    result["agreement"] = agreement(work, args.device, args.timeout)
    print("agreement", json.dumps(result["agreement"]), flush=True)
    result["speed"] = speed_check(work, args.device, args.tiny, args.timeout)
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    columns = [k for k, v in next(iter(result["speed"].values())).items() if isinstance(v, dict)]
    print("| setting | params | prune s | " + " | ".join(f"{c}: cut vs dense tok/s" for c in columns) + " |")
    for spec, row in result["speed"].items():
        cells = [f"{row[c]['cut_tok_s']} vs {row[c]['dense_tok_s']} ({row[c]['speedup']:.2f}x)" for c in columns]
        print(f"| {spec} | {row['params_ratio']}x | {row['prune_s']} | " + " | ".join(cells) + " |")
    ok = result["agreement"]["same_choices"]
    print(f"gpu_structured_check: {'ok' if ok else 'CHOICES DIFFER'}, device {args.device}, {result['wall_s']} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
