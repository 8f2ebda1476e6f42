"""Quality by method: held-out perplexity of real models pruned by magnitude, Wanda, SparseGPT, and the
last two with OWL's layer-wise sparsity, at 50% (and optionally 70%) unstructured and 2:4, in one run.

Per arm: `featprune prune` in a fresh process (its wall time, and its peak RSS from featprune.json,
which is that process's VmHWM), then `featprune eval --task ppl` machinery (study.runner.evaluate)
in this process on the evaluation split of a `featprune data gettext` corpus (sentences never used
for calibration). The dense model is the reference. Pruned models are deleted after evaluation.
OWL with N:M is n/a (one sparsity for every block is what N:M means).

    featprune data gettext --langs fr,de --out /tmp/corpus
    python bench/bench_quality.py --corpus /tmp/corpus [--models smollm2 gemma3] [--sparsities 0.5 0.7]
        [--nsamples 32 --seqlen 256 --limit 100 --langs en fr] [--json bench/quality.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

METHODS = [("magnitude", "magnitude", ()), ("wanda", "wanda", ()), ("sparsegpt", "sparsegpt", ()),
           ("wanda+owl", "wanda", ("--layerwise", "owl")), ("sparsegpt+owl", "sparsegpt", ("--layerwise", "owl"))]


def model_dir(name: str) -> Path:
    from featprune_ext.data import zoo

    return {"smollm2": zoo.smollm2_dir, "gemma3": zoo.gemma3_270m_dir}[name]()


def prune(src: Path, out: Path, method: str, extra, setting: str, args) -> dict:
    calibration = [] if method in ("magnitude", "random") else [  # they read no calibration data
        "--calib", args.calib, "--data", str(args.corpus), "--nsamples", str(args.nsamples),
        "--seqlen", str(args.seqlen)]
    cmd = [sys.executable, "-m", "featprune_ext.cli", "-q", "prune", str(src), "--out", str(out), *calibration,
           "--method", method, "--no-progress", *extra]
    cmd += ["--pattern", setting] if ":" in setting else ["--sparsity", setting]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
    report = json.loads((out / "featprune.json").read_text())
    lw = report.get("layerwise") or {}
    return {"wall_s": wall, "prune_s": report["timings"]["total_s"], "peak_rss_bytes": report["peak_rss_bytes"],
            "overall_sparsity": report["overall_sparsity"], "owl_pass_s": lw.get("time_s"),
            "owl_targets": lw.get("target_sparsity")}


def perplexity(path: Path, args) -> dict:
    from featprune_ext.study.runner import evaluate

    result = evaluate(path, "ppl", args.langs, data=args.corpus, limit=args.limit, seqlen=args.seqlen,
                      progress=False, n_boot=200)
    return {lang: s["ppl"] for lang, s in result["languages"].items()}


def table(rows: list[dict], langs: list[str]) -> str:
    head = (["model", "setting", "method"] + [f"ppl {lang}" for lang in langs]
            + ["sparsity", "prune wall s", "peak RSS GiB", "OWL pass s"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        if r.get("na"):
            cells = [r["model"], r["setting"], r["method"]] + ["n/a"] * (len(langs) + 4)
        else:
            cells = [r["model"], r["setting"], r["method"]] + [f"{r['ppl'][lang]:.1f}" for lang in langs]
            if r["setting"] == "dense":
                cells += ["0", "-", "-", "-"]
            else:
                cells += [f"{r['overall_sparsity']:.4f}", f"{r['wall_s']:.0f}", f"{r['peak_rss_bytes'] / 2**30:.2f}",
                          "-" if r["owl_pass_s"] is None else f"{r['owl_pass_s']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--corpus", type=Path, required=True, help="`featprune data gettext` output")
    p.add_argument("--models", nargs="+", default=["smollm2", "gemma3"], choices=["smollm2", "gemma3"])
    p.add_argument("--sparsities", nargs="+", default=["0.5"], help="unstructured settings (2:4 always runs)")
    p.add_argument("--calib", default="mt:fr-en")
    p.add_argument("--nsamples", type=int, default=32)
    p.add_argument("--seqlen", type=int, default=256)
    p.add_argument("--limit", type=int, default=100, help="evaluation sentences per language")
    p.add_argument("--langs", nargs="+", default=["en", "fr"])
    p.add_argument("--methods", nargs="+", default=[m[0] for m in METHODS], choices=[m[0] for m in METHODS])
    p.add_argument("--json", type=Path, default=None, help="write every number here")
    p.add_argument("--workdir", type=Path, default=None)
    p.add_argument("--resume", action="store_true", help="keep the rows already in --json, run the others")
    args = p.parse_args()
    done = {}
    if args.resume and args.json and args.json.exists():
        done = {(r["model"], r["setting"], r["method"]): r for r in json.loads(args.json.read_text())["rows"]}
    work = args.workdir or Path(tempfile.mkdtemp(prefix="featprune-quality-"))
    work.mkdir(parents=True, exist_ok=True)
    started = datetime.now().isoformat(timespec="minutes")
    rows = []
    for name in args.models:
        src = model_dir(name)
        print(f"[{name}] dense", flush=True)
        rows.append(done.get((name, "dense", "-")) or {"model": name, "setting": "dense", "method": "-",
                                                         "ppl": perplexity(src, args)})
        for setting in [*args.sparsities, "2:4"]:
            for label, method, extra in METHODS:
                if label not in args.methods:
                    continue
                row = {"model": name, "setting": setting, "method": label}
                if extra and ":" in setting:
                    rows.append({**row, "na": True})
                    continue
                if (name, setting, label) in done:
                    rows.append(done[(name, setting, label)])
                    continue
                out = work / f"{name}-{label}-{setting.replace(':', 'of')}"
                shutil.rmtree(out, ignore_errors=True)
                print(f"[{name}] {setting} {label}", flush=True)
                row.update(prune(src, out, method, extra, setting, args))
                row["ppl"] = perplexity(out, args)
                shutil.rmtree(out)
                rows.append(row)
                print(f"    ppl {row['ppl']}  wall {row['wall_s']:.0f} s", flush=True)
                if args.json:
                    args.json.write_text(json.dumps({"rows": rows}, indent=1))
    import torch

    info = {"started": started, "finished": datetime.now().isoformat(timespec="minutes"),
            "machine": f"{platform.node()}: {os.cpu_count()} CPUs, torch {torch.__version__}, "
                       f"{torch.get_num_threads()} threads", "command": " ".join(sys.argv), "rows": rows}
    if args.json:
        args.json.write_text(json.dumps(info, indent=1))
    print(f"\n{info['machine']}; {started} -> {info['finished']}\n")
    print(table(rows, args.langs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
