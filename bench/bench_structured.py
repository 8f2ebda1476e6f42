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
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import structured_measure as measure  # bench/, next to this file
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


def decode_ratio(dense, cut, prompt: torch.Tensor, new_tokens: int, rounds: int) -> dict:
    """Tokens/s of each, timed interleaved; ratio = cut / dense of the summed times (after one warm-up each)."""
    measure.decode_seconds(dense, prompt, 2)
    measure.decode_seconds(cut, prompt, 2)
    td = tc = 0.0
    for _ in range(rounds):
        td += measure.decode_seconds(dense, prompt, new_tokens)
        tc += measure.decode_seconds(cut, prompt, new_tokens)
    n = prompt.shape[0] * new_tokens * rounds
    return {"batch": prompt.shape[0], "new_tokens": new_tokens, "rounds": rounds, "dense_tok_s": round(n / td, 2),
            "cut_tok_s": round(n / tc, 2), "speedup": round(td / tc, 3)}


def speed_only(args) -> None:
    """Speed per setting only: the cut's shapes decide it, not the score or recovery, so each setting is cut by
    magnitude without recovery (blocks by influence on 2 calibration samples), then its parameters and bytes
    are recorded and its decode and/or prefill work per token timed against dense (structured_measure)."""
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
    results = json.loads(out_path.read_text()) if out_path.exists() else {}
    results.setdefault("speed_setup", {}).update({
        "model": args.model, "cut": "score magnitude, recovery none (blocks: influence on 2 calibration samples)",
        "decode": f"greedy, {args.decode_tokens} new tokens after a {prompt_ids.shape[1]}-token prompt, batches "
                  f"{args.decode_batches}, {args.decode_rounds} rounds", "prefill": f"one forward, last-position "
                  f"logits only, shapes {args.prefill_shapes}, {args.prefill_rounds} rounds", "threads": 1,
        "cpu": platform.processor() or platform.machine(), "torch": torch.__version__})
    results.setdefault("size", {})["dense"] = {"params": params_of(dense), "bytes": weight_bytes(src)}
    for spec_text in args.speed_only:
        plan = validate(parse_spec(spec_text), hf_config)
        cut, new_config, report = prune_in_memory(load(src), ckpt, config_dict, plan, batches, cal.bucket_names,
                                                  Options(score="magnitude", recovery="none"))
        with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
            out = write_model(src, Path(tmp) / "cut", cut, new_config, report)
            cut_model, nbytes = load(out), weight_bytes(out)
        results["size"][spec_text] = {"params": params_of(cut_model), "bytes": nbytes,
                                      "dropped_blocks": report.get("dropped_blocks")}
        if "decode" in args.measure:
            results.setdefault("decode_cpu", {})[spec_text] = [
                measure.decode_cpu_ratio(dense, cut_model, prompt_ids.repeat(b, 1), args.decode_tokens,
                                         args.decode_rounds) for b in args.decode_batches]
        if "prefill" in args.measure:
            results.setdefault("prefill_cpu", {})[spec_text] = [
                measure.prefill_cpu_ratio(dense, cut_model, b, n, hf_config.vocab_size, args.prefill_rounds)
                for b, n in measure.parse_shapes(args.prefill_shapes)]
        out_path.write_text(json.dumps(results, indent=1) + "\n")
        print(spec_text, json.dumps({k: results[k].get(spec_text) for k in ("size", "decode_cpu", "prefill_cpu")
                                     if k in results}), flush=True)
        del cut_model, cut


def params_of(model) -> int:
    return sum(p.numel() for p in model.parameters())


def weight_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in Path(folder).glob("*.safetensors"))


def unstructured_cut(src: Path, out: Path, spec_text: str, score: str, args) -> tuple[Path, dict]:
    """`sparsity=S`: the streaming engine's unstructured run (`featprune prune`, one thread) on the same
    calibration: zeros in a dense file, the "no size gain" comparison."""
    cmd = [sys.executable, "-m", "featprune_ext.cli", "prune", str(src), "--out", str(out), "-q",
           "--sparsity", spec_text.split("=")[1], "--method", score, "--calib", "mt:fr-en",
           "--nsamples", str(args.nsamples), "--seqlen", str(args.seqlen), "--shots", "4"]
    subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
    report = json.loads((out / "featprune.json").read_text())
    return out, {"command": "featprune " + " ".join(cmd[3:]), "overall_sparsity": report.get("overall_sparsity")}


def run(args) -> None:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from featprune_ext.data.calibration import build_calibration
    from featprune_ext.engine import make_batches, pad_id_for
    from featprune_ext.structured import Options, parse_spec, prune_in_memory, read_checkpoint, validate, write_model

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    src = model_dir(args.model)
    tok = AutoTokenizer.from_pretrained(src)
    config_dict = json.loads((src / "config.json").read_text())
    hf_config = AutoConfig.from_pretrained(src)
    cal = build_calibration("mt:fr-en", tok, nsamples=args.nsamples, seqlen=args.seqlen, shots=4, seed=0)
    batches = make_batches(cal, args.batch_size, pad_id_for(hf_config, hf_config.vocab_size))
    held = {lang: heldout_batches(tok, code, args.heldout_chunks, args.seqlen) for lang, code in
            (("en", "eng"), ("fr", "fra"))}
    prompt_ids = tok("English: The file could not be opened.\nFrench:", return_tensors="pt")["input_ids"]
    tc_langs = args.tc_langs.split(",") if args.tc_items else []

    out_path = Path(args.json)
    results = json.loads(out_path.read_text()) if out_path.exists() else {"arms": []}
    load = lambda d: AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
    dense = load(src)
    if "dense" not in results:
        results["dense"] = {"params": params_of(dense), "bytes": weight_bytes(src),
                            "ppl": {k: round(perplexity(dense, v), 4) for k, v in held.items()}}
        results["setup"] = {"model": args.model, "calibration": f"mt:fr-en gettext demonstrations, {args.nsamples} "
                            f"samples x {args.seqlen} tokens ({cal.num_tokens} tokens), 4 shots, seed 0",
                            "heldout": f"dataset-build eng/fra prose, last {args.heldout_chunks} x {args.seqlen} "
                            "tokens of each file", "threads": torch.get_num_threads(), "cpu": platform.processor() or
                            platform.machine(), "torch": torch.__version__}
    if tc_langs and "tc" not in results["dense"]:
        results["setup"].update(tc_langs=tc_langs, tc=f"{measure.TC_TASK}, the study's evaluator, this machine's "
                                f"gettext evaluation split, {args.tc_items} items per language, seed 0")
        results["dense"]["tc"] = measure.translation_choice(src, tc_langs, args.tc_items)
    out_path.write_text(json.dumps(results, indent=1) + "\n")
    ckpt = read_checkpoint(src)
    timed_settings = {a["spec"] for a in results["arms"] if "decode" in a}
    for arm in args.arms:
        spec_text, score, recovery = arm.split(":")[:3]
        extra = dict(kv.split("=") for kv in arm.split(":")[3:])  # e.g. damp=1.0, steps=100, target=block
        # what is not given here or on the command line is Options()' default (the library's)
        given = {"damp": (float, args.damp), "steps": (int, args.adam_steps), "lr": (float, args.adam_lr),
                 "tokens": (int, args.adam_tokens), "target": (str, None)}
        fields = {"damp": "damp", "steps": "adam_steps", "lr": "adam_lr", "tokens": "adam_tokens", "target": "target"}
        overrides = {fields[k]: cast(extra.get(k, default)) for k, (cast, default) in given.items()
                     if extra.get(k, default) is not None}
        opts = Options(score=score, recovery=recovery, seed=0, **overrides)
        if any(a["arm"] == arm for a in results["arms"]):
            print(f"skip {arm}: done", flush=True)
            continue
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
            if spec_text.startswith("sparsity="):
                out, info = unstructured_cut(src, Path(tmp) / "cut", spec_text, score, args)
                report = {"options": None, **info}
                prune_s = time.perf_counter() - t0
            else:
                plan = validate(parse_spec(spec_text), hf_config)
                cut, new_config, report = prune_in_memory(load(src), ckpt, config_dict, plan, batches,
                                                          cal.bucket_names, opts)
                prune_s = time.perf_counter() - t0
                out = write_model(src, Path(tmp) / "cut", cut, new_config, report)
                del cut
            cut_model = load(out)  # stock transformers, no custom code
            entry = {"arm": arm, "spec": spec_text, "score": score, "recovery": recovery,
                     "options": report["options"], "prune_s": round(prune_s, 1), "params": params_of(cut_model),
                     "bytes": weight_bytes(out),
                     "ppl": {k: round(perplexity(cut_model, v), 4) for k, v in held.items()},
                     "dropped_blocks": report.get("dropped_blocks")}
            entry.update({k: report[k] for k in ("command", "overall_sparsity") if k in report})
            if tc_langs:
                entry["tc"] = measure.translation_choice(out, tc_langs, args.tc_items)
        if spec_text not in timed_settings and args.decode_rounds:
            entry["decode"] = [decode_ratio(dense, cut_model, prompt_ids.repeat(b, 1), args.decode_tokens,
                                            args.decode_rounds) for b in args.decode_batches]
            timed_settings.add(spec_text)
        results["arms"].append(entry)
        out_path.write_text(json.dumps(results, indent=1) + "\n")
        print(json.dumps({k: v for k, v in entry.items() if k != "tc"}), {lang: entry["tc"][lang]["acc"]
              for lang in tc_langs}, flush=True)
        del cut_model


def _speed_cell(results: dict, key: str, spec: str) -> str:
    entries = results.get(key, {}).get(spec, [])  # prefill entries name their prompt length: b8x128
    return "; ".join(f"b{x['batch']}{'x' + str(x['tokens']) if 'tokens' in x else ''} {x['speedup']:.2f}x"
                     for x in entries) or "-"


def table(results: dict) -> str:
    d = results["dense"]
    langs = results["setup"].get("tc_langs", []) if "tc" in d else []
    wall = any("decode" in a for a in results["arms"])  # the first SmolLM2 run's wall-time decode ratios
    head = ["setting", "score", "recovery", "params (x dense)", "bytes", "ppl en (x dense)", "ppl fr (x dense)"]
    head += [f"TC {lang} % ±se, p vs dense; per-token %" for lang in langs]
    head += ["decode speedup, wall"] * wall + ["decode speedup, CPU time", "prefill speedup, CPU time", "prune s"]
    dense = ["dense", "-", "-", f"{d['params'] / 1e6:.1f}M (1.00)", f"{d['bytes'] / 2**20:.0f} MiB",
             f"{d['ppl']['en']:.2f}", f"{d['ppl']['fr']:.2f}"]
    dense += [measure.tc_cell(d["tc"], lang, None) for lang in langs] + ["-"] * (3 + wall)
    rows = [head, ["---"] * len(head), dense]
    for a in results["arms"]:
        opt = a["options"] or {}
        rec = a["recovery"] + (f" (damp {opt['damp']})" if a["recovery"] == "ls" else "") + \
            (f" ({opt['adam_steps'] or 'auto'} steps, lr {opt['adam_lr']}, {opt['adam_tokens']} tok"
             + (f", target {opt['target']})" if "target" in opt else ")") if a["recovery"] == "adam" else "")
        score = a["score"] if any(k in a["spec"] for k in ("mlp", "heads", "sparsity")) else "block influence"
        spec = a["spec"] + (" (unstructured)" if a["spec"].startswith("sparsity") else "")
        row = [spec, score, rec, f"{a['params'] / 1e6:.1f}M ({a['params'] / d['params']:.3f})",
               f"{a['bytes'] / 2**20:.0f} MiB", f"{a['ppl']['en']:.2f} ({a['ppl']['en'] / d['ppl']['en']:.2f})",
               f"{a['ppl']['fr']:.2f} ({a['ppl']['fr'] / d['ppl']['fr']:.2f})"]
        row += [measure.tc_cell(a["tc"], lang, d["tc"]) for lang in langs]
        row += ["; ".join(f"b{x['batch']} {x['speedup']:.2f}x" for x in a.get("decode", [])) or "-"] * wall
        row += [_speed_cell(results, "decode_cpu", a["spec"]), _speed_cell(results, "prefill_cpu", a["spec"]),
                f"{a['prune_s']:.0f}"]
        rows.append(row)
    return "\n".join("| " + " | ".join(r) + " |" for r in rows)


def speed_table(results: dict) -> str:
    """Size and speed per setting from a --speed-only JSON (the Qwen2-shaped random model has no quality)."""
    d = results["size"]["dense"]
    rows = ["| setting | params (x dense) | bytes | decode work per token vs dense | prefill work per token vs dense |",
            "|---|---|---|---|---|",
            f"| dense | {d['params'] / 1e6:.1f}M (1.00) | {d['bytes'] / 2**20:.0f} MiB | - | - |"]
    for spec, s in results["size"].items():
        if spec != "dense":
            rows.append(f"| {spec} | {s['params'] / 1e6:.1f}M ({s['params'] / d['params']:.3f}) | "
                        f"{s['bytes'] / 2**20:.0f} MiB | {_speed_cell(results, 'decode_cpu', spec)} | "
                        f"{_speed_cell(results, 'prefill_cpu', spec)} |")
    return "\n".join(rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2", help="smollm2, gemma3 or a model directory")
    p.add_argument("--json", required=True)
    p.add_argument("--arms", nargs="*", default=[],
                   help="SPEC:SCORE:RECOVERY[:damp=X][:steps=N][:lr=X][:tokens=N][:target=T]; SPEC sparsity=S is the "
                        "engine's unstructured run with method SCORE")
    p.add_argument("--nsamples", type=int, default=32)
    p.add_argument("--seqlen", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--heldout-chunks", type=int, default=8)
    p.add_argument("--threads", type=int, default=torch.get_num_threads(), help="intra-op threads of the arms")
    p.add_argument("--damp", type=float, help="default: structured.Options()'")
    p.add_argument("--adam-steps", type=int, help="default: structured.Options()'")
    p.add_argument("--adam-lr", type=float, help="default: structured.Options()'")
    p.add_argument("--adam-tokens", type=int, help="default: structured.Options()'")
    p.add_argument("--tc-items", type=int, default=0, help="translation-choice items per language (0: none)")
    p.add_argument("--tc-langs", default="fr,es,zh_CN")
    p.add_argument("--decode-tokens", type=int, default=16)
    p.add_argument("--decode-rounds", type=int, default=3)
    p.add_argument("--decode-batches", type=int, nargs="*", default=[1])
    p.add_argument("--tmp", default=os.environ.get("TMPDIR", tempfile.gettempdir()))
    p.add_argument("--speed-only", "--decode-only", dest="speed_only", nargs="*", default=[], metavar="SPEC",
                   help="only time these settings against dense (CPU time, one thread), and record their size")
    p.add_argument("--measure", nargs="*", choices=["decode", "prefill"], default=["decode", "prefill"],
                   help="what --speed-only times")
    p.add_argument("--prefill-shapes", nargs="*", default=["1x512", "8x128"], metavar="BATCHxTOKENS")
    p.add_argument("--prefill-rounds", type=int, default=2)
    p.add_argument("--decode-json", help="where --speed-only writes (default --json); the table reads it too")
    p.add_argument("--plot")
    p.add_argument("--table", action="store_true")
    p.add_argument("--speed-table", action="store_true", help="the --speed-only JSON's size and speed table")
    args = p.parse_args()
    if args.arms:
        run(args)
    if args.speed_only:
        speed_only(args)
    results = json.loads(Path(args.json).read_text())
    if args.decode_json and Path(args.decode_json).exists():
        speed = json.loads(Path(args.decode_json).read_text())
        results.update({k: speed[k] for k in ("decode_cpu", "prefill_cpu") if k in speed})
    if args.plot:
        measure.plot(results, args.plot)
    if args.table:
        print(table(results))
    if args.speed_table:
        print(speed_table(results))


if __name__ == "__main__":
    sys.exit(main())
