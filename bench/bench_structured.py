"""Structured pruning, measured in memory on a real model: size, decode speed and held-out perplexity.

For every arm (a --structured setting x a channel/group score x a recovery): featprune_ext.structured's
in-memory pruner cuts the model on fr-en translation demonstrations (this machine's gettext catalogs,
data/calibration.py), writes it, and the cut model is loaded back with stock AutoModelForCausalLM. Then:
parameters, bytes on disk, perplexity on held-out English and French text of another domain (the
dataset-build package's prose, not interface strings), and, once per setting, greedy decode tokens/s at
batch 1 against the dense model, timed interleaved (dense, cut, dense, cut, ...) in this one process so
the load of other processes on the machine cancels out in the ratio.

Results are appended to a JSON file one arm at a time (a long run can be read while it goes);
--plot draws ppl ratio vs removed parameters from it; --table prints the markdown table.

    python bench/bench_structured.py --model smollm2 --json bench/structured_smollm2.json \
        --arms "mlp=0.25:wanda:none" "mlp=0.25:wanda:adam" ...
    python bench/bench_structured.py --json bench/structured_smollm2.json --plot bench/structured_smollm2.png --table
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch


def model_dir(name: str) -> Path:
    from featprune_ext.data import zoo

    return {"smollm2": zoo.smollm2_dir, "gemma3": zoo.gemma3_270m_dir}.get(name, lambda: Path(name))()


def heldout_batches(tok, lang3: str, chunks: int, seqlen: int) -> torch.Tensor:
    """`chunks` windows of `seqlen` tokens of dataset-build's <lang3> text (its first line dropped)."""
    from featprune_ext.data.corpora import dataset_build_dir

    lines = (dataset_build_dir() / lang3 / f"{lang3}.txt").read_text(encoding="utf-8").splitlines()[1:]
    ids = tok("\n".join(lines), add_special_tokens=False)["input_ids"]
    need = chunks * seqlen
    if len(ids) < need:
        raise SystemExit(f"{lang3}: {len(ids)} tokens, fewer than {need}")
    return torch.tensor(ids[-need:]).reshape(chunks, seqlen)  # the end of the file: far from any calibration use


@torch.no_grad()
def perplexity(model, ids: torch.Tensor, batch: int = 4) -> float:
    nll, count = 0.0, 0
    for i in range(0, ids.shape[0], batch):
        x = ids[i:i + batch]
        logits = model(input_ids=x).logits[:, :-1].float()
        nll += float(torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1),
                                                       reduction="sum"))
        count += x[:, 1:].numel()
    return math.exp(nll / count)


@torch.no_grad()
def decode_seconds(model, prompt: torch.Tensor, new_tokens: int) -> float:
    t = time.perf_counter()
    model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new_tokens,
                   min_new_tokens=new_tokens, do_sample=False, pad_token_id=0)
    return time.perf_counter() - t


def decode_ratio(dense, cut, prompt: torch.Tensor, new_tokens: int, rounds: int) -> dict:
    """Tokens/s of each, timed interleaved; ratio = cut / dense of the summed times (after one warm-up each)."""
    decode_seconds(dense, prompt, 2)
    decode_seconds(cut, prompt, 2)
    td = tc = 0.0
    for _ in range(rounds):
        td += decode_seconds(dense, prompt, new_tokens)
        tc += decode_seconds(cut, prompt, new_tokens)
    n = prompt.shape[0] * new_tokens * rounds
    return {"batch": prompt.shape[0], "new_tokens": new_tokens, "rounds": rounds, "dense_tok_s": round(n / td, 2),
            "cut_tok_s": round(n / tc, 2), "speedup": round(td / tc, 3)}


def decode_cpu_ratio(dense, cut, prompt: torch.Tensor, new_tokens: int, rounds: int) -> dict:
    """Like decode_ratio, but CPU seconds of this process with one intra-op thread: the work per token,
    which the other processes' load on a shared machine does not inflate as it does wall time."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        decode_seconds(dense, prompt, 2)
        decode_seconds(cut, prompt, 2)
        td = tc = 0.0
        for _ in range(rounds):
            t = time.process_time()
            decode_seconds(dense, prompt, new_tokens)
            td += time.process_time() - t
            t = time.process_time()
            decode_seconds(cut, prompt, new_tokens)
            tc += time.process_time() - t
    finally:
        torch.set_num_threads(threads)
    n = prompt.shape[0] * new_tokens * rounds
    return {"batch": prompt.shape[0], "new_tokens": new_tokens, "rounds": rounds, "threads": 1,
            "dense_tok_per_cpu_s": round(n / td, 2), "cut_tok_per_cpu_s": round(n / tc, 2),
            "speedup": round(td / tc, 3)}


def decode_only(args) -> None:
    """Decode speed per setting only: the cut's shapes decide it, not the score or recovery, so each setting
    is cut by magnitude without recovery (blocks by influence on 2 calibration samples) and timed."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from featprune_ext.data.calibration import build_calibration
    from featprune_ext.engine import make_batches, pad_id_for
    from featprune_ext.structured import Options, parse_spec, prune_in_memory, read_checkpoint, validate, write_model

    src = model_dir(args.model)
    tok = AutoTokenizer.from_pretrained(src)
    hf_config = AutoConfig.from_pretrained(src)
    config_dict = json.loads((src / "config.json").read_text())
    cal = build_calibration("mt:fr-en", tok, nsamples=2, seqlen=args.seqlen, shots=4, seed=0)
    batches = make_batches(cal, 2, pad_id_for(hf_config, hf_config.vocab_size))
    prompt_ids = tok("English: The file could not be opened.\nFrench:", return_tensors="pt")["input_ids"]
    out_path = Path(args.decode_json or args.json)
    load = lambda d: AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
    dense, ckpt = load(src), read_checkpoint(src)
    for spec_text in args.decode_only:
        plan = validate(parse_spec(spec_text), hf_config)
        cut, new_config, report = prune_in_memory(load(src), ckpt, config_dict, plan, batches, cal.bucket_names,
                                                  Options(score="magnitude", recovery="none"))
        with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
            cut_model = load(write_model(src, Path(tmp) / "cut", cut, new_config, report))
        entry = [decode_cpu_ratio(dense, cut_model, prompt_ids.repeat(b, 1), args.decode_tokens, args.decode_rounds)
                 for b in args.decode_batches]
        results = json.loads(out_path.read_text()) if out_path.exists() else {}
        results.setdefault("decode_cpu", {})[spec_text] = entry
        out_path.write_text(json.dumps(results, indent=1) + "\n")
        print(spec_text, json.dumps(entry), flush=True)


def params_of(model) -> int:
    return sum(p.numel() for p in model.parameters())


def run(args) -> None:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from featprune_ext.data.calibration import build_calibration
    from featprune_ext.engine import make_batches, pad_id_for
    from featprune_ext.structured import Options, parse_spec, prune_in_memory, read_checkpoint, validate, write_model

    torch.manual_seed(0)
    src = model_dir(args.model)
    tok = AutoTokenizer.from_pretrained(src)
    config_dict = json.loads((src / "config.json").read_text())
    hf_config = AutoConfig.from_pretrained(src)
    cal = build_calibration("mt:fr-en", tok, nsamples=args.nsamples, seqlen=args.seqlen, shots=4, seed=0)
    batches = make_batches(cal, args.batch_size, pad_id_for(hf_config, hf_config.vocab_size))
    held = {lang: heldout_batches(tok, code, args.heldout_chunks, args.seqlen) for lang, code in
            (("en", "eng"), ("fr", "fra"))}
    prompt_ids = tok("English: The file could not be opened.\nFrench:", return_tensors="pt")["input_ids"]

    out_path = Path(args.json)
    results = json.loads(out_path.read_text()) if out_path.exists() else {"arms": []}
    load = lambda d: AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
    dense = load(src)
    if "dense" not in results:
        nbytes = sum(f.stat().st_size for f in src.glob("*.safetensors"))
        results["dense"] = {"params": params_of(dense), "bytes": nbytes,
                            "ppl": {k: round(perplexity(dense, v), 4) for k, v in held.items()}}
        results["setup"] = {"model": args.model, "calibration": f"mt:fr-en gettext demonstrations, {args.nsamples} "
                            f"samples x {args.seqlen} tokens ({cal.num_tokens} tokens), 4 shots, seed 0",
                            "heldout": f"dataset-build eng/fra prose, last {args.heldout_chunks} x {args.seqlen} "
                            "tokens of each file", "threads": torch.get_num_threads(), "cpu": platform.processor() or
                            platform.machine(), "torch": torch.__version__}
        out_path.write_text(json.dumps(results, indent=1) + "\n")
    ckpt = read_checkpoint(src)
    timed_settings = {a["spec"] for a in results["arms"] if "decode" in a}
    for arm in args.arms:
        spec_text, score, recovery = arm.split(":")[:3]
        extra = dict(kv.split("=") for kv in arm.split(":")[3:])  # e.g. damp=1.0, steps=100
        opts = Options(score=score, recovery=recovery, damp=float(extra.get("damp", args.damp)),
                       adam_steps=int(extra.get("steps", args.adam_steps)),
                       adam_lr=float(extra.get("lr", args.adam_lr)),
                       adam_tokens=int(extra.get("tokens", args.adam_tokens)), seed=0)
        if any(a["arm"] == arm for a in results["arms"]):
            print(f"skip {arm}: done", flush=True)
            continue
        plan = validate(parse_spec(spec_text), hf_config)
        model = load(src)
        t0 = time.perf_counter()
        cut, new_config, report = prune_in_memory(model, ckpt, config_dict, plan, batches, cal.bucket_names, opts)
        prune_s = time.perf_counter() - t0
        del model
        with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
            out = write_model(src, Path(tmp) / "cut", cut, new_config, report)
            nbytes = sum(f.stat().st_size for f in out.glob("*.safetensors"))
            cut_model = load(out)  # stock transformers, no custom code
        entry = {"arm": arm, "spec": spec_text, "score": score, "recovery": recovery, "options": report["options"],
                 "prune_s": round(prune_s, 1), "params": params_of(cut_model), "bytes": nbytes,
                 "ppl": {k: round(perplexity(cut_model, v), 4) for k, v in held.items()},
                 "dropped_blocks": report.get("dropped_blocks")}
        if spec_text not in timed_settings and args.decode_rounds:
            entry["decode"] = [decode_ratio(dense, cut_model, prompt_ids.repeat(b, 1), args.decode_tokens,
                                            args.decode_rounds) for b in args.decode_batches]
            timed_settings.add(spec_text)
        results["arms"].append(entry)
        out_path.write_text(json.dumps(results, indent=1) + "\n")
        print(json.dumps(entry), flush=True)
        del cut_model, cut


def table(results: dict) -> str:
    d = results["dense"]
    rows = ["| setting | score | recovery | params (x dense) | bytes | ppl en (x dense) | ppl fr (x dense) | "
            "decode speedup, wall | decode speedup, CPU time | prune s |", "|---|---|---|---|---|---|---|---|---|---|",
            f"| dense | - | - | {d['params'] / 1e6:.1f}M (1.00) | {d['bytes'] / 2**20:.0f} MiB | "
            f"{d['ppl']['en']:.2f} | {d['ppl']['fr']:.2f} | - | - | - |"]
    for a in results["arms"]:
        opt = a["options"]
        rec = a["recovery"] + (f" (damp {opt['damp']})" if a["recovery"] == "ls" else "") + \
            (f" ({opt['adam_steps']} steps, lr {opt['adam_lr']}, {opt['adam_tokens']} tok)" if a["recovery"] == "adam"
             else "")
        dec = "; ".join(f"b{x['batch']} {x['speedup']:.2f}x" for x in a.get("decode", [])) or "-"
        cpu = "; ".join(f"b{x['batch']} {x['speedup']:.2f}x" for x in results.get("decode_cpu", {}).get(a["spec"], []))
        score = a["score"] if any(k in a["spec"] for k in ("mlp", "heads")) else "block influence"
        rows.append(f"| {a['spec']} | {score} | {rec} | {a['params'] / 1e6:.1f}M ({a['params'] / d['params']:.3f}) | "
                    f"{a['bytes'] / 2**20:.0f} MiB | {a['ppl']['en']:.2f} ({a['ppl']['en'] / d['ppl']['en']:.2f}) | "
                    f"{a['ppl']['fr']:.2f} ({a['ppl']['fr'] / d['ppl']['fr']:.2f}) | {dec} | {cpu or '-'} | "
                    f"{a['prune_s']:.0f} |")
    return "\n".join(rows)


def plot(results: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = results["dense"]
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    markers = {"none": "o", "ls": "s", "adam": "^"}
    colors = {"mlp": "tab:blue", "heads": "tab:orange", "blocks": "tab:green", "combo": "tab:red"}
    y_max = 60.0
    for a in results["arms"]:
        kinds = [p.split("=")[0] for p in a["spec"].split(",")]
        kind = kinds[0] if len(kinds) == 1 else "combo"
        x = 1 - a["params"] / d["params"]
        y = a["ppl"]["en"] / d["ppl"]["en"]
        label = a["spec"].replace(",", "+")
        if y > y_max:  # off the scale (the magnitude score): drawn at the top edge with its value
            label, y = f"{label}: {y:.0f}x (off scale)", y_max
        face = colors[kind] if a["score"] == "wanda" or kind == "blocks" else "none"
        ax.scatter([x], [y], marker=markers[a["recovery"]], edgecolors=colors[kind], facecolors=face, s=60)
        ax.annotate(label, (x, y), fontsize=6, xytext=(3, -9 if a["recovery"] == "adam" else 3),
                    textcoords="offset points")
    ax.set_yscale("log")
    ax.set_ylim(0.9, y_max * 1.3)
    ax.set_xlabel("fraction of parameters removed")
    ax.set_ylabel("held-out English perplexity / dense")
    ax.set_title(f"{results['setup']['model']}: structured pruning, quality per removed parameter")
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=c, marker="o", linestyle="", label=k) for k, c in colors.items()]
    handles += [Line2D([], [], color="gray", marker=m, linestyle="", label=f"recovery {k}") for k, m in markers.items()]
    handles += [Line2D([], [], color="gray", marker="o", markerfacecolor="none", linestyle="", label="magnitude score")]
    ax.legend(handles=handles, fontsize=7, loc="upper left")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2")
    p.add_argument("--json", required=True)
    p.add_argument("--arms", nargs="*", default=[], help="SPEC:SCORE:RECOVERY[:damp=X][:steps=N][:lr=X][:tokens=N]")
    p.add_argument("--nsamples", type=int, default=32)
    p.add_argument("--seqlen", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--heldout-chunks", type=int, default=8)
    p.add_argument("--damp", type=float, default=0.01)
    p.add_argument("--adam-steps", type=int, default=100)
    p.add_argument("--adam-lr", type=float, default=1e-3)
    p.add_argument("--adam-tokens", type=int, default=512)
    p.add_argument("--decode-tokens", type=int, default=16)
    p.add_argument("--decode-rounds", type=int, default=3)
    p.add_argument("--decode-batches", type=int, nargs="*", default=[1])
    p.add_argument("--tmp", default=os.environ.get("TMPDIR", tempfile.gettempdir()))
    p.add_argument("--decode-only", nargs="*", default=[], metavar="SPEC",
                   help="only time decoding (CPU time, one thread) of these settings against dense")
    p.add_argument("--decode-json", help="where --decode-only writes (default --json); the table reads it too")
    p.add_argument("--plot")
    p.add_argument("--table", action="store_true")
    args = p.parse_args()
    if args.arms:
        run(args)
    if args.decode_only:
        decode_only(args)
    results = json.loads(Path(args.json).read_text())
    if args.decode_json and Path(args.decode_json).exists():
        results["decode_cpu"] = json.loads(Path(args.decode_json).read_text())["decode_cpu"]
    if args.plot:
        plot(results, args.plot)
    if args.table:
        print(table(results))


if __name__ == "__main__":
    sys.exit(main())
