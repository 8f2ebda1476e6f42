"""Reproduce docs/study-gemma3-270m.md: prune the real Gemma 3 270M four ways, evaluate five models.

    python docs/study/run_study.py prune   [--work DIR]
    python docs/study/run_study.py eval    [--work DIR] --task translation-choice --langs fr,zh_CN,hi --limit 200
    python docs/study/run_study.py analyze [--work DIR]

Stages are separate so the slow CPU can run them one at a time; every output lands under --work
(default /tmp/fp_study). Pruning uses featprune_ext.engine.prune_model (the `featprune prune` CLI
was not wired yet when this study ran). The corpus comes first:

    python -m featprune_ext.data_cli gettext --langs fr,es,de,ru,zh_CN,ja,hi --extra-deb --out WORK/data
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

LANGS = ["fr", "es", "zh_CN", "ru", "ja", "hi"]  # the X of X-en demonstrations
SPECS = {
    "wanda-mt": "+".join(f"mt:{lang}-en" for lang in LANGS),
    "wanda-mono": "+".join(f"mono:{lang}" for lang in LANGS),
}
SPARSITY = 0.3
MODELS = ["dense", "wanda-mt", "wanda-mono", "magnitude", "random"]


def prune(work: Path, threads: int) -> None:
    from transformers import AutoTokenizer

    from featprune_ext.data.calibration import build_calibration
    from featprune_ext.data.zoo import gemma3_270m_dir
    from featprune_ext.engine import format_report_table, prune_model
    from featprune_ext.methods import get_method

    torch.set_num_threads(threads)
    dense = gemma3_270m_dir()
    tok = AutoTokenizer.from_pretrained(dense)
    (work / "models").mkdir(parents=True, exist_ok=True)
    timings = {}
    for name in ("wanda-mt", "wanda-mono", "magnitude", "random"):
        out = work / "models" / name
        if (out / "featprune.json").is_file():
            print(f"{name}: exists", flush=True)
            continue
        t0 = time.perf_counter()
        calib = None
        if name in SPECS:  # the paper's settings: 100 samples, 4 shots, 512 tokens, seed 0
            calib = build_calibration(SPECS[name], tok, data=work / "data", nsamples=100, seqlen=512, shots=4, seed=0)
        method = get_method(name.split("-")[0], seed=0)
        report = prune_model(dense, out, calibration=calib, method=method, sparsity=SPARSITY, batch_size=4)
        timings[name] = round(time.perf_counter() - t0, 1)
        print(f"== {name} ({timings[name]} s)\n{format_report_table(report)}", flush=True)
    (work / "prune_timings.json").write_text(json.dumps(timings, indent=1))


def model_paths(work: Path) -> list[str]:
    from featprune_ext.data.zoo import gemma3_270m_dir

    return [str(gemma3_270m_dir())] + [str(work / "models" / m) for m in MODELS[1:]]


def run_eval(work: Path, task: str, langs: str, limit: int, threads: int) -> None:
    out = work / "eval" / task
    cmd = [sys.executable, "-m", "featprune_ext.cli", "compare", *model_paths(work), "--names", ",".join(MODELS),
           "--task", task, "--langs", langs, "--data", str(work / "data"), "--limit", str(limit),
           "--threads", str(threads), "--out", str(out), "--reuse"]
    print(" ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def run_analyze(work: Path, threads: int) -> None:
    from featprune_ext.data.zoo import gemma3_270m_dir

    cmd = [sys.executable, "-m", "featprune_ext.cli", "analyze", str(gemma3_270m_dir()), "--langs",
           "en,fr,es,zh_CN,ru,ja,hi", "--data", str(work / "data"), "--out", str(work / "analysis"),
           "--nsamples", "20", "--threads", str(threads)]
    print(" ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("stage", choices=("prune", "eval", "analyze"))
    p.add_argument("--work", default="/tmp/fp_study")
    p.add_argument("--task", default="translation-choice")
    p.add_argument("--langs", default="fr,zh_CN,hi")
    p.add_argument("--limit", type=int, default=200)
    p.add_argument("--threads", type=int, default=1, help="1: the machine's 2 cores were shared with other jobs")
    a = p.parse_args()
    work = Path(a.work)
    if a.stage == "prune":
        prune(work, a.threads)
    elif a.stage == "eval":
        run_eval(work, a.task, a.langs, a.limit, a.threads)
    else:
        run_analyze(work, a.threads)


if __name__ == "__main__":
    main()
