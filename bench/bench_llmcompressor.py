"""featprune against llm-compressor's Wanda: same model, same calibration texts, same sparsity, on CPU.

Each arm is a whole fresh process, from start to exit (imports, model load, calibration, pruning,
writing the model), run alternately (A, B, A, B, ...) so that other jobs on the machine weigh on both:
  featprune      `python -m featprune_ext prune MODEL --calib-texts C.jsonl ...` (streams one block at a time)
  llm-compressor `oneshot(model, dataset, recipe=WandaPruningModifier(sparsity=S))` on the model loaded
                 with `from_pretrained` (fp32), then `save_pretrained` of the dense pruned model
CPU seconds (user + system) and peak RSS are each process's own (os.wait4); CPU seconds move less than
wall time when other jobs share the machine. Masks: share of the pruned matrices' entries whose
zero/non-zero state agrees between the two outputs.

llm-compressor pins its own transformers, so it runs from another environment, e.g.
    python3 -m venv /tmp/llmc && /tmp/llmc/bin/pip install llmcompressor
(with torch already there: a .pth file naming this venv's site-packages lends it torch). Then
    .venv/bin/python bench/bench_llmcompressor.py --model smollm2 --llmc-python /tmp/llmc/bin/python
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def llmc_child(model: str, out: str, calib: str, nsamples: int, seqlen: int, sparsity: float) -> int:
    """The llm-compressor arm, run by --llmc-python (llm-compressor's environment)."""
    import torch
    from datasets import Dataset
    from llmcompressor import oneshot
    from llmcompressor.modifiers.pruning import WandaPruningModifier
    from transformers import AutoModelForCausalLM, AutoTokenizer

    texts = [json.loads(line)["text"] for line in open(calib, encoding="utf-8") if line.strip()][:nsamples]
    tok = AutoTokenizer.from_pretrained(model)
    ds = Dataset.from_dict(dict(tok(texts, truncation=True, max_length=seqlen)))
    lm = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)
    oneshot(model=lm, dataset=ds, recipe=WandaPruningModifier(sparsity=sparsity, mask_structure="0:0"),
            num_calibration_samples=len(texts), max_seq_length=seqlen)
    lm.save_pretrained(out, save_compressed=False)
    tok.save_pretrained(out)
    return 0


def run(cmd: list[str]) -> dict:
    """Wall seconds, CPU seconds (user + system) and peak RSS (GiB) of one child process, start to exit."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} ... failed (rc {proc.returncode}):\n{err[-3000:]}")
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "peak_rss_gib": usage.ru_maxrss * 1024 / 2**30}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2", choices=("smollm2", "gemma3-270m"))
    p.add_argument("--llmc-python", required=True, help="python of an environment with llmcompressor")
    p.add_argument("--nsamples", type=int, default=16)
    p.add_argument("--shots", type=int, default=8)
    p.add_argument("--seqlen", type=int, default=512)
    p.add_argument("--sparsity", type=float, default=0.5)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--llmc-child", nargs=5, metavar=("MODEL", "OUT", "CALIB", "NSAMPLES", "SEQLEN"),
                   help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.llmc_child:
        m, out, calib, n, seqlen = args.llmc_child
        return llmc_child(m, out, calib, int(n), int(seqlen), args.sparsity)

    from bench_engine import demonstration_texts, machine_line, mask_agreement, model_dir

    model = model_dir(args.model)
    work = Path(tempfile.mkdtemp(prefix="fp_llmc_"))
    calib = work / "calib.jsonl"
    calib.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n"
                             for t in demonstration_texts(args.nsamples, shots=args.shots)), encoding="utf-8")
    print(machine_line(), flush=True)
    results: dict[str, list[dict]] = {"featprune": [], "llm-compressor": []}
    for r in range(args.repeats):
        order = ["featprune", "llm-compressor"] if r % 2 == 0 else ["llm-compressor", "featprune"]
        for arm in order:
            out = work / f"{arm}-{r}"
            if arm == "featprune":
                cmd = [sys.executable, "-m", "featprune_ext", "prune", str(model), "--out", str(out), "--calib-texts",
                       str(calib), "--nsamples", str(args.nsamples), "--seqlen", str(args.seqlen), "--sparsity",
                       str(args.sparsity), "--no-progress", "-q"]
            else:
                cmd = [args.llmc_python, __file__, "--llmc-python", args.llmc_python, "--sparsity",
                       str(args.sparsity), "--llmc-child", str(model), str(out), str(calib), str(args.nsamples),
                       str(args.seqlen)]
            res = run(cmd)
            results[arm].append(res)
            print(f"repeat {r} {arm}: {res['wall_s']:.1f} s wall, {res['cpu_s']:.1f} s CPU, peak RSS "
                  f"{res['peak_rss_gib']:.2f} GiB", flush=True)
    agree = mask_agreement(work / "featprune-0", work / "llm-compressor-0")
    med = {arm: {k: statistics.median(x[k] for x in rs) for k in rs[0]} for arm, rs in results.items()}
    ratio = {k: med["llm-compressor"][k] / med["featprune"][k] for k in ("wall_s", "cpu_s")}
    print(f"\n{args.model}, {args.nsamples} texts x <= {args.seqlen} tokens, {args.sparsity:.0%} Wanda, CPU, "
          f"medians of {args.repeats}:")
    print("| arm | wall s | CPU s | peak RSS GiB |\n|---|---:|---:|---:|")
    for arm, m in med.items():
        print(f"| {arm} | {m['wall_s']:.1f} | {m['cpu_s']:.1f} | {m['peak_rss_gib']:.2f} |")
    print(f"llm-compressor / featprune: {ratio['wall_s']:.2f}x wall, {ratio['cpu_s']:.2f}x CPU; masks agree on "
          f"{100 * agree:.3f}% of entries")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
