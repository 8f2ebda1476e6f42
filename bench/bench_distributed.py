"""Wall time of `featprune prune` with 1 vs 2 CPU processes (torchrun, gloo) on the real Gemma 3 270M.

    python bench/bench_distributed.py [--nsamples 16] [--seqlen 128]

On a 2-core machine this shows the mechanism (statistics all-reduced, rank 0 writes,
masks identical), not a speed-up: both ranks share the same two cores. Appends a table
to bench/RESULTS.md under "Distributed".
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from safetensors.torch import load_file

from featprune_ext.data import zoo

TEXTS = ["English: Open the file.\nFrench: Ouvrez le fichier.", "The cat sat on the mat and looked at the door.",
         "English: Save your changes before closing.\nGerman: Speichern Sie Ihre Änderungen.",
         "Pruning removes half of the weights of every linear layer in the model."]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prune(model, out, calib, args, nproc):
    cmd = ["-m", "featprune_ext.cli", "prune", str(model), "--out", str(out), "--calib-texts", str(calib),
           "--nsamples", str(args.nsamples), "--seqlen", str(args.seqlen), "--sparsity", "0.5", "--no-progress"]
    if nproc > 1:
        cmd = ["-m", "torch.distributed.run", f"--nproc-per-node={nproc}", "--master-addr=127.0.0.1",
               f"--master-port={free_port()}"] + cmd
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 2) // nproc))}
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, *cmd], capture_output=True, text=True, env=env)
    if res.returncode:
        raise SystemExit(res.stderr[-2000:])
    return time.perf_counter() - t0


def same_masks(a: Path, b: Path) -> bool:
    ta, tb = {}, {}
    for d, t in ((a, ta), (b, tb)):
        for shard in d.glob("*.safetensors"):
            t.update(load_file(shard))
    return ta.keys() == tb.keys() and all(((ta[k] == 0) == (tb[k] == 0)).all() for k in ta)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nsamples", type=int, default=16)
    ap.add_argument("--seqlen", type=int, default=128)
    args = ap.parse_args()
    model = zoo.gemma3_270m_dir()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        calib = tmp / "calib.jsonl"
        calib.write_text("".join(json.dumps({"text": TEXTS[i % len(TEXTS)] + f" ({i})"}) + "\n"
                                 for i in range(args.nsamples)))
        one = prune(model, tmp / "one", calib, args, 1)
        two = prune(model, tmp / "two", calib, args, 2)
        equal = same_masks(tmp / "one", tmp / "two")
    table = ("| processes | wall s | masks equal to 1 process |\n|---|---|---|\n"
             f"| 1 | {one:.1f} | (reference) |\n| 2 (gloo) | {two:.1f} | {equal} |")
    header = (f"\n## Distributed (Gemma 3 270M, CPU, {os.cpu_count()} cores, {args.nsamples} samples x "
              f"{args.seqlen} tokens, 50%)\nRatio 2 procs / 1 proc: {two / one:.2f} (same two cores: mechanism, "
              "not speed-up).\n\n")
    print(header + table)
    with open(Path(__file__).with_name("RESULTS.md"), "a") as f:
        f.write(header + table + "\n")


if __name__ == "__main__":
    main()
