"""Benchmark of `featprune trim` (issue 27): size, speed, memory and quality of trimmed vocabularies.

    .venv/bin/python bench/bench_trim.py                       # the whole grid (tens of minutes)
    .venv/bin/python bench/bench_trim.py --only target         # Gemma 3 es+en: the issue's targets
    .venv/bin/python bench/bench_trim.py --only grid --models smollm2 --sets fr,en

Every trim, measurement and evaluation is cached as JSON under --work (default /tmp/featprune_bench_trim),
so a rerun only does what is missing; bench/results_trim.md is rewritten from the cache at the end.

What is measured (all on CPU, fp32, transformers):
  * trim: `featprune trim` run as its own process: wall time, and its peak RSS (featprune.json);
  * size: parameters, weight-file bytes, kept tokens;
  * speed: greedy decoding tokens/s at batch 1 and 8 (`generate`, --decode-tokens new tokens after a
    short prompt) and prefill tokens/s (one forward over --prefill-tokens tokens, last-position logits as
    `generate` computes them), the dense and the trimmed model loaded in the same process and timed
    alternately (dense, trimmed, dense, ...) for --rounds rounds; the ratio is the median of the
    per-round ratios, so the load other jobs put on this shared machine cancels out;
  * memory of generation: peak RSS of a separate process that loads the model and generates at batch 8;
  * quality on held-out text of the kept languages (the gettext corpus's evaluation split; trims only
    ever read its calibration split): translation-choice accuracy (--items items per language, the same
    items for every model; `same answers` = items whose chosen candidate equals the dense model's) and
    perplexity (--ppl-items sentences). A trimmed model's softmax runs over fewer tokens, so its
    perplexity can only be lower or equal (renormalisation); its answers are the same wherever every
    candidate's tokens are kept;
  * cost on a language not kept (Russian): tokens per character and perplexity;
  * corpus mode: the gettext corpus alone and with Debian word lists (wamerican, wspanish, wfrench,
    wngerman; fetched with `apt-get download` + `dpkg-deb -x` into --work when /usr/share/dict lacks them),
    and a --max-tokens sweep on Gemma 3 es+en drawn as a size-vs-quality plot (--plot).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORDLIST_PACKAGES = {"en": ("wamerican", "american-english"), "es": ("wspanish", "spanish"),
                     "fr": ("wfrench", "french"), "de": ("wngerman", "ngerman")}
CORPUS_LANGS = "fr,es,de,zh_CN,ja,ru"
NOT_KEPT = "ru"
DEFAULT_SETS = "fr,en;es,de,fr,en;zh_CN,ja,en"


def log(msg: str) -> None:
    print(f"[bench_trim {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def machine_line() -> str:
    load = os.getloadavg()[0]
    import torch

    return (f"{platform.node() or 'host'}: {os.cpu_count()} CPUs, torch {torch.__version__}, "
            f"{torch.get_num_threads()} torch thread(s) for speed runs, load average {load:.1f} at the start "
            "(shared machine: speed is reported as same-process interleaved ratios)")


class Cache:
    def __init__(self, work: Path, render_only: bool = False):
        self.dir = work / "results"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.render_only = render_only

    def get(self, key: str, fn, *args):
        """fn(*args), or its result from an earlier run."""
        path = self.dir / f"{key}.json"
        if path.is_file():
            return json.loads(path.read_text())
        if self.render_only:
            return None
        value = fn(*args)
        path.write_text(json.dumps(value, indent=1))
        return value


# -- inputs ---------------------------------------------------------------------------------------
def model_dirs() -> dict[str, Path]:
    from featprune_ext.data import zoo

    return {"gemma3": zoo.gemma3_270m_dir(), "smollm2": zoo.smollm2_dir()}


def gettext_corpus(work: Path) -> Path:
    out = work / "corpus"
    if not (out / "manifest.json").is_file():
        log(f"featprune data gettext --langs {CORPUS_LANGS}")
        subprocess.run([sys.executable, "-m", "featprune_ext.cli", "data", "gettext", "--langs", CORPUS_LANGS,
                        "--out", str(out)], check=True, stdout=subprocess.DEVNULL)
    return out


def word_list(work: Path, lang: str) -> Path | None:
    if lang not in WORDLIST_PACKAGES:
        return None
    package, name = WORDLIST_PACKAGES[lang]
    system = Path("/usr/share/dict") / name
    if system.is_file():
        return system
    local = work / "dict" / "usr" / "share" / "dict" / name
    if not local.is_file():
        debs = work / "debs"
        debs.mkdir(parents=True, exist_ok=True)
        subprocess.run(["apt-get", "download", package], cwd=debs, check=True, capture_output=True)
        deb = sorted(debs.glob(f"{package}_*.deb"))[-1]
        subprocess.run(["dpkg-deb", "-x", str(deb), str(work / "dict")], check=True)
    return local


# -- trims ------------------------------------------------------------------------------------------
def run_trim(model_dir: Path, out: Path, langs: str, extra: list[str]) -> dict:
    if not (out / "featprune.json").is_file():
        cmd = [sys.executable, "-m", "featprune_ext.cli", "trim", str(model_dir), "--out", str(out), "--langs", langs,
               "-q", *extra]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True)
        wall = time.perf_counter() - t0
        (out / "bench_wall_s.txt").write_text(f"{wall:.3f}\n")
    report = json.loads((out / "featprune.json").read_text())
    t, m = report["trim"], report["model"]
    return {"dir": str(out), "command": "featprune trim MODEL --out OUT --langs " + langs + " " + " ".join(
        e if not e.startswith("/") else Path(e).name for e in extra),
            "kept_tokens": t["kept_tokens"], "old_vocab": t["old_vocab_size"], "params": m["params_after"],
            "params_before": m["params_before"], "file_bytes": sum(p.stat().st_size for p in out.glob("*.safetensors")),
            "input_file_bytes": m["input_bytes"], "wall_s": float((out / "bench_wall_s.txt").read_text()),
            "peak_rss_bytes": report["peak_rss_bytes"], "reasons": t["kept_by_reason"],
            "coverage": (t.get("corpus") or {}).get("coverage")}


# -- speed ------------------------------------------------------------------------------------------
def speed_pair(dense_dir: Path, trimmed_dir: Path, texts: list[str], args) -> dict:
    """Interleaved same-process timings of the dense and the trimmed model."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    models = {}
    for name, d in (("dense", dense_dir), ("trimmed", trimmed_dir)):
        tok = AutoTokenizer.from_pretrained(d)
        tok.padding_side = "left"
        model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
        models[name] = (tok, model)

    def decode(name: str, batch: int) -> float:
        tok, model = models[name]
        enc = tok(texts[:batch], return_tensors="pt", padding=True, truncation=True, max_length=24)
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        with torch.no_grad():
            t0 = time.perf_counter()
            model.generate(**enc, max_new_tokens=args.decode_tokens, min_new_tokens=args.decode_tokens,
                           do_sample=False, pad_token_id=pad)
        return batch * args.decode_tokens / (time.perf_counter() - t0)

    def prefill(name: str) -> float:
        tok, model = models[name]
        ids = tok(" ".join(texts), return_tensors="pt")["input_ids"][:, :args.prefill_tokens]
        with torch.no_grad():
            t0 = time.perf_counter()
            model(input_ids=ids, logits_to_keep=1, use_cache=False)
        return ids.shape[1] / (time.perf_counter() - t0)

    decode("dense", 1)  # warm-up of both (first-call allocations)
    decode("trimmed", 1)
    out = {}
    for label, fn in (("decode_b1", lambda n: decode(n, 1)), ("decode_b8", lambda n: decode(n, 8)),
                      ("prefill", prefill)):
        dense, trimmed = [], []
        for _ in range(args.rounds):
            dense.append(fn("dense"))
            trimmed.append(fn("trimmed"))
        out[label] = {"dense_tps": statistics.median(dense), "trimmed_tps": statistics.median(trimmed),
                      "ratio": statistics.median(t / d for t, d in zip(trimmed, dense))}
    return out


GENMEM_CODE = """
import sys, json, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from featprune_ext.engine.report import peak_rss_bytes
d, n = sys.argv[1], int(sys.argv[2])
texts = json.loads(sys.argv[3])
tok = AutoTokenizer.from_pretrained(d); tok.padding_side = "left"
model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
loaded = peak_rss_bytes()
enc = tok(texts, return_tensors="pt", padding=True, truncation=True, max_length=24)
pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
with torch.no_grad():
    model.generate(**enc, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=pad)
print(json.dumps({"after_load": loaded, "peak": peak_rss_bytes()}))
"""


def generation_memory(model_dir: Path, texts: list[str], args) -> dict:
    done = subprocess.run([sys.executable, "-c", GENMEM_CODE, str(model_dir), str(args.decode_tokens),
                           json.dumps(texts[:8])], check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- quality ----------------------------------------------------------------------------------------
def quality(cache: Cache, name: str, model_dir: Path, corpus: Path, choice_langs: list[str], ppl_langs: list[str],
            args) -> dict:
    """Translation-choice and perplexity per language, each cached on its own (the model loads only when
    something is missing)."""
    from featprune_ext.data.languages import resolve
    from featprune_ext.study.runner import evaluate
    from featprune_ext.study.scorer import Scorer
    from featprune_ext.study.tasks import ppl_items

    scorer = []

    def get_scorer():
        if not scorer:
            scorer.append(Scorer(model_dir, progress=False))
        return scorer[0]

    def choice(lang):
        r = evaluate(model_dir, "translation-choice", [lang], data=corpus, limit=args.items, scorer=get_scorer(),
                     progress=False, n_boot=200)
        s = r["languages"][next(iter(r["languages"]))]
        alt_preds = [max(range(len(it["scores_alt"])), key=lambda j: it["scores_alt"][j]) for it in s["items"]]
        return {"acc": s["acc"], "acc_per_token": s["acc_alt"], "n": s["n"],
                "preds": [it["pred"] for it in s["items"]], "preds_per_token": alt_preds}

    def ppl(lang):
        r = evaluate(model_dir, "ppl", [lang], data=corpus, limit=args.ppl_items, scorer=get_scorer(), progress=False,
                     n_boot=200)
        s = r["languages"][next(iter(r["languages"]))]
        chars = sum(len(it["text"]) for it in ppl_items(corpus, resolve(lang), args.ppl_items, 0))
        bpc = math.log(s["ppl"]) * s["tokens"] / chars / math.log(2)  # comparable across tokenizations
        return {"ppl": s["ppl"], "tokens": s["tokens"], "n": s["n"], "chars": chars, "bpc": bpc}

    out = {"choice": {lang: cache.get(f"choice-{args.items}-{name}-{lang}", choice, lang) for lang in choice_langs},
           "ppl": {lang: cache.get(f"ppl-{args.ppl_items}-{name}-{lang}", ppl, lang) for lang in ppl_langs}}
    out = {k: {lang: v for lang, v in d.items() if v is not None} for k, d in out.items()}
    return out if out["choice"] or out["ppl"] else None


def tokens_per_char(model_dir: Path, corpus: Path, lang: str, n: int) -> float:
    """Tokens per character over the same sentences the perplexity of `lang` is measured on."""
    from transformers import AutoTokenizer

    from featprune_ext.data.languages import resolve
    from featprune_ext.study.tasks import ppl_items

    texts = [it["text"] for it in ppl_items(corpus, resolve(lang), n, 0)]
    tok = AutoTokenizer.from_pretrained(model_dir)
    return sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts) / sum(len(t) for t in texts)


def heldout_texts(corpus: Path, lang: str, n: int) -> list[str]:
    from featprune_ext.data import corpora

    return corpora.load_mono(corpus, lang, split="eval")[:n]


# -- the grid ---------------------------------------------------------------------------------------
def variant_rows(cache: Cache, work: Path, corpus: Path, model: str, model_dir: Path, langs: str, args,
                 with_wordlists: bool = True, max_tokens: int | None = None) -> list[dict]:
    """Trims of `model` to `langs` (scripts, corpus, corpus + word lists), each measured."""
    codes = langs.split(",")
    key = f"{model}-{langs.replace(',', '+')}"
    variants = [("scripts", [])]
    corpus_args = ["--keep", "corpus", "--data", str(corpus)]
    if max_tokens is None:
        variants.append(("corpus", corpus_args))
        lists = [word_list(work, c) for c in codes]
        if with_wordlists and all(lists):
            variants.append(("corpus + word lists", corpus_args + [a for p in lists for a in ("--data", str(p))]))
    else:
        variants = [(f"corpus, max {max_tokens}", corpus_args + ["--max-tokens", str(max_tokens)])]
    rows = []
    target = [c for c in codes if c != "en"]
    texts = heldout_texts(corpus, target[0], 16)
    for mode, extra in variants:
        name = f"{key}-{mode.replace(' ', '').replace(',', '-').replace('+', '-')}"
        log(f"{name}: trim")
        trimmed = cache.get(f"trim-{name}", run_trim, model_dir, work / "models" / name, langs, extra)
        if trimmed is None:  # --render-only and never run
            continue
        row = {"model": model, "langs": langs, "mode": mode, **trimmed}
        out_dir = Path(trimmed["dir"])
        if "speed" not in args.skip and (args.speed_modes is None or mode in args.speed_modes.split(",")):
            log(f"{name}: speed (interleaved with dense)")
            row["speed"] = cache.get(f"speed-{name}", speed_pair, model_dir, out_dir, texts, args)
            row["genmem"] = cache.get(f"genmem-{name}", generation_memory, out_dir, texts, args)
        if "quality" not in args.skip:
            log(f"{name}: quality")
            row["quality"] = quality(cache, name, out_dir, corpus, target, codes + [NOT_KEPT], args)
            tpc = cache.get(f"tpc-{name}", tokens_per_char, out_dir, corpus, NOT_KEPT, args.ppl_items)
            if tpc is not None:
                row["not_kept_tpc"] = tpc
        rows.append(row)
    return rows


def dense_row(cache: Cache, corpus: Path, model: str, model_dir: Path, langs: list[str], args) -> dict:
    from featprune_ext.engine.checkpoint import Checkpoint
    from featprune_ext.engine.report import numel

    ckpt = Checkpoint(model_dir)
    params = sum(numel(i.shape) for i in ckpt.tensors.values())
    row = {"model": model, "langs": "(all)", "mode": "dense", "kept_tokens": ckpt.config_dict.get("vocab_size"),
           "params": params, "file_bytes": ckpt.file_bytes, "dir": str(model_dir)}
    texts = heldout_texts(corpus, "fr", 16)
    if "speed" not in args.skip:
        row["genmem"] = cache.get(f"genmem-{model}-dense", generation_memory, model_dir, texts, args)
    if "quality" not in args.skip:
        others = [c for c in langs if c != "en"]
        row["quality"] = quality(cache, f"{model}-dense", model_dir, corpus, others, [*others, "en", NOT_KEPT], args)
        tpc = cache.get(f"tpc-{model}-dense", tokens_per_char, model_dir, corpus, NOT_KEPT, args.ppl_items)
        if tpc is not None:
            row["not_kept_tpc"] = tpc
    return row


# -- report -----------------------------------------------------------------------------------------
def same_answers(row: dict, dense: dict) -> str:
    q, d = row.get("quality"), dense.get("quality")
    if not q or not d:
        return "-"
    same = total = 0
    for lang, c in q["choice"].items():
        ref = d["choice"].get(lang)
        if ref:
            same += sum(a == b for a, b in zip(c["preds"], ref["preds"]))
            total += len(c["preds"])
    return f"{same}/{total}"


def fmt_acc(row: dict, langs=None) -> str:
    q = row.get("quality")
    if not q:
        return "-"
    return " ".join(f"{lang} {c['acc']:.2f} ({c['acc_per_token']:.2f})" for lang, c in q["choice"].items()
                    if langs is None or lang in langs)


def fmt_ppl(row: dict, langs: list[str]) -> str:
    """Perplexity per token and, comparable across tokenizations, bits per character."""
    q = row.get("quality")
    if not q:
        return "-"
    return " ".join(f"{lang} {q['ppl'][lang]['ppl']:.1f} / {q['ppl'][lang]['bpc']:.3f}" for lang in langs
                    if lang in q["ppl"])


def targets(rows: list[dict], dense: dict[str, dict]) -> list[str]:
    """The issue's targets for Gemma 3 270M es+en, checked against the rows."""
    by_mode = {r["mode"]: r for r in rows if r["model"] == "gemma3" and r["langs"] == "es,en"}
    d = dense.get("gemma3")
    if not by_mode or not d:
        return []

    def ok(flag):
        return "met" if flag else "**not met**"

    out = ["", "Targets (issue 27, Gemma 3 270M es+en):", ""]
    s = by_mode.get("scripts")
    if s:
        sp = s.get("speed") or {}
        b1 = sp.get("decode_b1", {}).get("ratio")
        out.append(f"* scripts: {s['params'] / d['params']:.2f}x parameters (<= 0.8x: "
                   f"{ok(s['params'] <= 0.8 * d['params'])}); "
                   f"greedy decode {b1:.2f}x at batch 1 and {sp['decode_b8']['ratio']:.2f}x at batch 8 (>= 1.2x: "
                   f"{ok(b1 >= 1.2)} at batch 1, {ok(sp['decode_b8']['ratio'] >= 1.2)} at batch 8); same "
                   f"translation-choice answers {same_answers(s, d)}; trim {s['wall_s']:.0f} s and "
                   f"{s['peak_rss_bytes'] / 1024 ** 3:.2f} GiB (<= 60 s, <= 1 GiB: "
                   f"{ok(s['wall_s'] <= 60 and s['peak_rss_bytes'] <= 1024 ** 3)})" if b1 else
                   f"* scripts: {s['params'] / d['params']:.2f}x parameters")
    c = by_mode.get("corpus")
    if c and c.get("speed"):
        sp = c["speed"]
        langs = list((c.get("quality") or {}).get("choice", {}))
        out.append(f"* corpus (gettext): {c['params'] / d['params']:.2f}x parameters (<= 0.6x: "
                   f"{ok(c['params'] <= 0.6 * d['params'])}); decode {sp['decode_b1']['ratio']:.2f}x at batch 1, "
                   f"{sp['decode_b8']['ratio']:.2f}x at batch 8 (>= 1.5x: {ok(sp['decode_b1']['ratio'] >= 1.5)}); "
                   f"quality cost: {fmt_acc(c)} vs dense {fmt_acc(d, langs)}, "
                   f"same answers {same_answers(c, d)}; trim "
                   f"{c['wall_s']:.0f} s and {c['peak_rss_bytes'] / 1024 ** 3:.2f} GiB")
    return out


def render(rows: list[dict], dense: dict[str, dict], sweep: list[dict], args, machine: str, plot: str | None) -> str:
    gib = 1024 ** 3
    lines = ["## Vocabulary trim (`featprune trim`, issue 27)", "",
             "Made by `bench/run_bench_trim.sh` (its parts run `.venv/bin/python bench/bench_trim.py` with the "
             f"settings below; this table: `bench/bench_trim.py {' '.join(sys.argv[1:])}`). Machine at the first "
             f"measurement: {machine}.",
             f"Quality: {args.items} translation-choice items per kept non-English language and {args.ppl_items} "
             "perplexity sentences per language, from the evaluation split of `featprune data gettext --langs "
             f"{CORPUS_LANGS}` (interface strings, not prose; trims read only its calibration split). The models "
             "went through 4-bit GGUF quantization before the fp32 conversion. Speed: "
             f"{args.decode_tokens} new tokens after a prompt of at most 24 tokens, prefill over "
             f"{args.prefill_tokens} tokens, {args.rounds} interleaved rounds, medians; x = trimmed / dense in the "
             "same process.", ""]
    head = ["model", "langs", "mode", "kept tokens", "params", "file", "trim s", "trim peak RSS", "decode b1 tok/s",
            "decode b8 tok/s", "prefill tok/s", "generation peak RSS", "choice acc (per-token acc)",
            "same answers as dense", "ppl / bits per char, kept langs", f"{NOT_KEPT} tok/char",
            f"{NOT_KEPT} ppl / bits per char"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for model, d in dense.items():
        for r in [d, *(r for r in rows if r["model"] == model)]:
            trimmed = r["mode"] != "dense"
            sp = r.get("speed") or {}

            def x(label, sp=sp):
                s = sp.get(label)
                return f"{s['trimmed_tps']:.1f} ({s['ratio']:.2f}x)" if s else "-"

            gm, q = r.get("genmem"), r.get("quality") or {}
            ru = (q.get("ppl") or {}).get(NOT_KEPT)
            acc = " ".join(f"{lang} {c['acc']:.2f} ({c['acc_per_token']:.2f})" for lang, c in
                           (q.get("choice") or {}).items()) if trimmed else "below"
            cells = [model, r["langs"], r["mode"], f"{r['kept_tokens']:,}",
                     f"{r['params'] / 1e6:.1f}M ({r['params'] / d['params']:.2f}x)", f"{r['file_bytes'] / 1e6:.0f} MB",
                     f"{r['wall_s']:.1f}" if trimmed else "-",
                     f"{r['peak_rss_bytes'] / gib:.2f} GiB" if trimmed else "-",
                     x("decode_b1"), x("decode_b8"), x("prefill"),
                     f"{gm['peak'] / gib:.2f} GiB" if gm else "-", acc or "-",
                     same_answers(r, d) if trimmed else "-",
                     fmt_ppl(r, r["langs"].split(",")) if trimmed else "below",
                     f"{r['not_kept_tpc']:.3f}" if "not_kept_tpc" in r else "-",
                     f"{ru['ppl']:.1f} / {ru['bpc']:.3f}" if ru else "-"]
            lines.append("| " + " | ".join(cells) + " |")
    lines += targets(rows, dense)
    lines += ["", "Speed noise: the three Gemma 3 Latin-script trims (es+en, fr+en, es+de+fr+en) are the same "
              "model (167,064 tokens), so the spread of their ratios is the measurement noise on this shared "
              "machine. Prefill computes last-position logits only (as `generate` does), so it should not "
              "change with the vocabulary; its ratios show the noise too.",
              "", "Dense reference per language (translation-choice accuracy; perplexity):", ""]
    for model, d in dense.items():
        if d.get("quality"):
            lines.append(f"* {model}: {fmt_acc(d)}; ppl {fmt_ppl(d, list(d['quality']['ppl']))}")
    cov = [r for r in rows if r.get("coverage")]
    if cov:
        lines += ["", "Corpus-mode coverage of the held-out tenth of the corpus texts (recorded in featprune.json):",
                  "", "| model | langs | mode | words with the same pieces | texts with the same pieces | "
                  "tokens kept |", "|---|---|---|---|---|---|"]
        for r in cov:
            c = r["coverage"]
            lines.append(f"| {r['model']} | {r['langs']} | {r['mode']} | {c['words_same_pieces']:.3f} | "
                         f"{c['texts_same_pieces']:.3f} | {c['token_coverage']:.3f} |")
    if sweep:
        lines += ["", "`--max-tokens` sweep, Gemma 3 es+en, corpus mode on the gettext corpus"
                  + (f" (plot: `{plot}`)" if plot else "") + ":", "",
                  "| max tokens | kept | params | choice acc es (per-token) | same answers | ppl / bpc es | "
                  "ppl / bpc en |", "|---|---|---|---|---|---|---|"]
        d = dense["gemma3"]
        for r in sweep:
            q = r.get("quality") or {"ppl": {}, "choice": {}}
            lines.append(f"| {r['mode']} | {r['kept_tokens']:,} | {r['params'] / d['params']:.2f}x | "
                         f"{fmt_acc(r)} | {same_answers(r, d)} | {fmt_ppl(r, ['es'])} | {fmt_ppl(r, ['en'])} |")
    return "\n".join(lines) + "\n"


def draw(sweep: list[dict], others: list[dict], dense: dict, path: Path) -> None:
    """Accuracy and bits per character (comparable across tokenizations) against the parameter fraction."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def point(r):
        q = r.get("quality") or {}
        if "es" not in q.get("choice", {}) or "es" not in q.get("ppl", {}):
            return None
        return r["params"] / dense["params"], q["choice"]["es"]["acc"], q["ppl"]["es"]["bpc"]

    pts = sorted(p for p in map(point, sweep) if p)
    dq = dense.get("quality") or {}
    if not pts or "es" not in dq.get("choice", {}):
        return
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax2 = ax.twinx()
    ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", color="tab:blue", label="accuracy, corpus --max-tokens")
    ax2.plot([p[0] for p in pts], [p[2] for p in pts], "s:", color="tab:red", label="bits/char, corpus --max-tokens")
    for r in others:
        p = point(r)
        if p:
            ax.plot([p[0]], [p[1]], "^", color="tab:blue")
            ax2.plot([p[0]], [p[2]], "v", color="tab:red")
            ax.annotate(r["mode"], (p[0], p[1]), textcoords="offset points", xytext=(-10, 8), fontsize=8)
    ax.plot([1.0], [dq["choice"]["es"]["acc"]], "D", color="black", label="dense")
    ax2.plot([1.0], [dq["ppl"]["es"]["bpc"]], "D", color="gray")
    ax.set_xlabel("parameters (fraction of dense)")
    ax.set_ylabel(f"translation-choice accuracy, es ({dq['choice']['es']['n']} items)", color="tab:blue")
    ax2.set_ylabel("bits per character, held-out es", color="tab:red")
    ax.set_title("Gemma 3 270M trimmed to es+en: size vs quality")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, loc="center right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="gemma3,smollm2")
    p.add_argument("--sets", default=DEFAULT_SETS, help="';'-separated language sets")
    p.add_argument("--only", choices=("target", "grid", "sweep"), action="append", default=None)
    p.add_argument("--skip", choices=("speed", "quality"), action="append", default=[])
    p.add_argument("--speed-modes", default=None,
                   help="comma-separated modes to time (scripts, corpus, corpus + word lists); default all")
    p.add_argument("--render-only", action="store_true",
                   help="measure nothing: render the markdown from what the cache holds (after runs of parts)")
    p.add_argument("--work", default="/tmp/featprune_bench_trim")
    p.add_argument("--items", type=int, default=20)
    p.add_argument("--ppl-items", type=int, default=40)
    p.add_argument("--decode-tokens", type=int, default=32)
    p.add_argument("--prefill-tokens", type=int, default=256)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--sweep", default="8000,12000,16000,20000")  # Gemma always keeps 6,640
    p.add_argument("--out", default=str(REPO / "bench" / "results_trim.md"))
    p.add_argument("--plot", default=str(REPO / "docs" / "trim_size_quality.png"))
    args = p.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    only = set(args.only or ("target", "grid", "sweep"))
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    cache = Cache(work, args.render_only)
    machine = cache.get("machine", lambda: {"line": machine_line()})
    machine = machine["line"] if machine else machine_line()
    corpus = gettext_corpus(work)
    dirs = model_dirs()
    models = args.models.split(",")
    wanted = set()
    if "target" in only or "sweep" in only:
        wanted |= {"es", "en"}
    if "grid" in only:
        wanted |= {c for langs in args.sets.split(";") for c in langs.split(",")}
    dense_langs = [c for c in CORPUS_LANGS.split(",") + ["en"] if c in wanted]
    dense = {m: dense_row(cache, corpus, m, dirs[m], dense_langs, args) for m in models}
    rows: list[dict] = []
    if "target" in only and "gemma3" in models:
        rows += variant_rows(cache, work, corpus, "gemma3", dirs["gemma3"], "es,en", args)
    if "grid" in only:
        for model in models:
            for langs in args.sets.split(";"):
                rows += variant_rows(cache, work, corpus, model, dirs[model], langs, args)
    sweep = []
    if "sweep" in only and "gemma3" in models:
        sargs = argparse.Namespace(**{**vars(args), "skip": [*args.skip, "speed"]})
        for cap in (int(c) for c in args.sweep.split(",")):
            sweep += variant_rows(cache, work, corpus, "gemma3", dirs["gemma3"], "es,en", sargs, max_tokens=cap)
        full = [r for r in rows if r["model"] == "gemma3" and r["langs"] == "es,en" and r["mode"] == "corpus"]
        sweep += [dict(r, mode="corpus, no cap") for r in full]
    plot = None
    if sweep and "quality" not in args.skip and args.plot:
        others = [r for r in rows if r["model"] == "gemma3" and r["langs"] == "es,en" and r["mode"] != "corpus"]
        draw(sweep, others, dense["gemma3"], Path(args.plot))
    if Path(args.plot).is_file():
        plot = str(Path(args.plot).relative_to(REPO)) if Path(args.plot).is_relative_to(REPO) else args.plot
    text = render(rows, dense, sweep, args, machine, plot)
    Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
