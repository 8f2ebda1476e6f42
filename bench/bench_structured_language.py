"""Issue 28 item 7: with whole MLP channels removed, does calibration on translation demonstrations keep a
language better than monolingual calibration?

Gemma 3 270M, `featprune prune --structured mlp=0.25`, calibrated on mt:fr-en, mono:fr or mono:en (32 samples,
4 shots, <= 256 tokens, seed 0: the same settings for all three, so an mt sample, which holds both sides of each
demonstration, has about twice the tokens of a mono sample; the token counts are recorded), with
`--recovery none` (only the channel score sees the calibration) and with the CLI's default Adam recovery
(no recovery option given). Every model and the dense one are evaluated with the
CLI on the corpus and split of docs/study-gemma3-270m.md: translation-choice in fr and zh_CN (200 items),
perplexity of held-out sentences in en, fr and zh_CN (50 each), and perplexity of held-out prose of another
domain (dataset-build's eng/fra/zho text, the last 8 x 256 tokens of each file, as bench_structured.py does).

    featprune data gettext --langs fr,es,de,ru,zh_CN,ja,hi --extra-deb --out /tmp/fp_structured_language/data
    python bench/bench_structured_language.py prune --recovery none      # the three calibrations
    python bench/bench_structured_language.py eval --arms dense mt-fr-en.none mono-fr.none mono-en.none
    python bench/bench_structured_language.py prune --recovery default   # the CLI's default (Adam)
    python bench/bench_structured_language.py eval --arms mt-fr-en.default mono-fr.default mono-en.default
    python bench/bench_structured_language.py report                     # tests, tables, plot

Every step skips what already exists, so the steps can run as separate processes side by side (one --calibs
or --arms each). Results land next to this file in bench/structured_language/: ARM.prune.json (command,
calibration tokens, parameters, time, RSS), ARM.translation-choice.json and ARM.ppl.json (the CLI's per-item
results), ARM.prose.json, compare/*.md|json (`featprune eval --compare`), summary.json and tables.md.
Pruned models are written to --work (about 1 GB each) and are not kept in the repository.

Tests (stated before any result was seen, following the study's pre-registration): translation-choice is
scored primarily by the per-token mean log-probability (`correct_alt`; the candidates differ in length) with
the exact McNemar test; the summed score (`correct`) and the CLI's paired bootstrap are reported too.
Perplexity: paired bootstrap on nats per token (10,000 resamples). Holm's correction within each family:
(task, comparison kind: mt vs mono, or vs dense) over the recoveries whose arms exist and every language.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "structured_language"
CALIBS = {"mt-fr-en": "mt:fr-en", "mono-fr": "mono:fr", "mono-en": "mono:en"}
# The token-matched control: an mt sample holds both sides of its demonstrations, so 32 mt samples have about
# twice the tokens of 32 mono samples; mono:fr with 64 samples has about as many tokens as mt:fr-en with 32.
# The seed-1 arms draw other demonstrations of the same kind: how much a calibration changes the removed
# channels and the scores when only the draw changes (the noise floor of the mt vs mono differences).
CONTROLS = {"mono-fr-x2": ("mono:fr", {"nsamples": 64}), "mt-fr-en-seed1": ("mt:fr-en", {"seed": 1}),
            "mono-fr-seed1": ("mono:fr", {"seed": 1})}
RECOVERIES = {"none": ["--recovery", "none"], "default": []}  # default: the CLI's own (Adam), no options
SPEC = "mlp=0.25"
CALIB_OPTIONS = {"nsamples": 32, "seqlen": 256, "shots": 4}
TC_LANGS, PPL_LANGS = "fr,zh_CN", "en,fr,zh_CN"
PROSE = {"en": "eng", "fr": "fra", "zh_CN": "zho"}
PROSE_CHUNKS, PROSE_SEQLEN = 8, 256
N_BOOT = 10_000
# (name, A, B): A - B is reported; the question first, then each arm against dense.
QUESTION = [("mt vs mono:fr", "mt-fr-en", "mono-fr"), ("mt vs mono:en", "mt-fr-en", "mono-en")]


def featprune() -> list[str]:
    return [sys.executable, "-m", "featprune_ext.cli"]


def gemma_dir() -> Path:
    from featprune_ext.data import zoo

    return zoo.gemma3_270m_dir()


def model_path(arm: str, work: Path) -> Path:
    return gemma_dir() if arm == "dense" else work / "models" / arm


def run_logged(cmd: list[str]) -> float:
    """Run a CLI command (printed first, so the log shows exactly what ran); its wall seconds."""
    print("$ " + shlex.join(cmd), flush=True)
    t = time.perf_counter()
    subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
    return time.perf_counter() - t


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    tmp.replace(path)


def count_params(model_dir: Path) -> int:
    from safetensors import safe_open

    total = 0
    for f in sorted(model_dir.glob("*.safetensors")):
        with safe_open(str(f), "pt") as st:
            total += sum(math.prod(st.get_slice(k).get_shape()) for k in st.keys())
    return total


# ------------------------------------------------------------------------------------------------ prune
def prune(args) -> None:
    work, data = Path(args.work), Path(args.work) / "data"
    for slug in args.calibs:
        arm = f"{slug}.{args.recovery}"
        record = OUT / f"{arm}.prune.json"
        if record.exists():
            continue
        out = work / "models" / arm
        report = work / "models" / f"{arm}.report.json"
        spec, override = CONTROLS.get(slug, (CALIBS.get(slug), {}))
        options = [x for k, v in {**CALIB_OPTIONS, **override}.items() for x in (f"--{k}", str(v))]
        cmd = featprune() + ["prune", str(gemma_dir()), "--out", str(out), "--structured", SPEC,
                             "--calib", spec, "--data", str(data), *options,
                             *RECOVERIES[args.recovery], "--no-progress", "--json", str(report)]
        if not out.exists():
            run_logged(cmd)
        rep = json.loads(report.read_text())
        cal = rep["calibration"]
        write_json(record, {
            "arm": arm, "command": shlex.join(["featprune"] + cmd[3:]),
            "calibration": {"spec": cal["spec"], "samples": cal["samples"], "tokens": cal["tokens"],
                            "truncated": sum(c["truncated"] for c in cal["components"]),
                            "preview": cal["components"][0]["preview"]},
            "structured": {k: v for k, v in rep["structured"].items() if not isinstance(v, (list, dict))},
            "structured_options": rep["structured"].get("options"),
            "removed_channels": [blk["structured"]["removed_channels"] for blk in rep["layers"]],
            "params": count_params(out), "dense_params": count_params(gemma_dir()),
            "wall_s": rep["timings"]["total_s"], "peak_rss_bytes": rep["peak_rss_bytes"],
            "versions": rep["versions"]})
        print(f"{arm}: {cal['tokens']} calibration tokens, {rep['timings']['total_s']:.0f} s", flush=True)


# ------------------------------------------------------------------------------------------------- eval
def evaluate(args) -> None:
    work, data = Path(args.work), Path(args.work) / "data"
    for arm in args.arms:
        path = model_path(arm, work)
        if not path.exists():
            raise SystemExit(f"{arm}: no model at {path} (run the prune step first)")
        for task, langs, limit in (("translation-choice", TC_LANGS, args.limit), ("ppl", PPL_LANGS, args.ppl_limit)):
            dest = OUT / f"{arm}.{task}.json"
            if not dest.exists():
                run_logged(featprune() + ["eval", str(path), "--task", task, "--langs", langs, "--data", str(data),
                                          "--limit", str(limit), "--threads", "1", "--no-progress",
                                          "--json", str(dest)])
        dest = OUT / f"{arm}.prose.json"
        if not dest.exists():
            write_json(dest, prose_perplexity(path))


def prose_windows(tok) -> dict:
    """Per language, PROSE_CHUNKS windows of PROSE_SEQLEN tokens from the end of dataset-build's text (its
    first line dropped): prose of another domain than the interface strings the calibration comes from."""
    from featprune_ext.data.corpora import dataset_build_dir

    out = {}
    for lang, code in PROSE.items():
        lines = (dataset_build_dir() / code / f"{code}.txt").read_text(encoding="utf-8").splitlines()[1:]
        ids = tok("\n".join(lines), add_special_tokens=False)["input_ids"]
        need = PROSE_CHUNKS * PROSE_SEQLEN
        if len(ids) < need:
            raise SystemExit(f"{code}: {len(ids)} tokens, fewer than {need}")
        out[lang] = [ids[len(ids) - need + i * PROSE_SEQLEN:len(ids) - need + (i + 1) * PROSE_SEQLEN]
                     for i in range(PROSE_CHUNKS)]
    return out


def prose_perplexity(path: Path) -> dict:
    """Summed NLL and predicted-token count of every window (one at a time: Gemma's 262k-way logits)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(1)
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    t = time.perf_counter()
    langs = {}
    with torch.no_grad():
        for lang, windows in prose_windows(tok).items():
            items = []
            for i, ids in enumerate(windows):
                x = torch.tensor([ids])
                logits = model(input_ids=x).logits[0, :-1].float()
                nll = float(torch.nn.functional.cross_entropy(logits, x[0, 1:], reduction="sum"))
                items.append({"id": i, "nll": nll, "tokens": len(ids) - 1})
            nll, n = sum(it["nll"] for it in items), sum(it["tokens"] for it in items)
            langs[lang] = {"items": items, "nll_per_token": nll / n, "ppl": math.exp(nll / n)}
    return {"task": "prose-ppl", "model": str(path), "source": f"dataset-build {','.join(PROSE.values())}, last "
            f"{PROSE_CHUNKS} x {PROSE_SEQLEN} tokens", "languages": langs, "seconds": time.perf_counter() - t}


# ----------------------------------------------------------------------------------------------- report
def load(arm: str, task: str):
    p = OUT / f"{arm}.{task}.json"
    return json.loads(p.read_text()) if p.exists() else None


def cli_compare(a: str, b: str, task: str) -> None:
    """`featprune eval --compare` of two saved results: its table (stdout) and JSON, kept under compare/."""
    stem = OUT / "compare" / f"{a}_vs_{b}.{task}"
    as_json, as_md = Path(f"{stem}.json"), Path(f"{stem}.md")
    if as_json.exists():
        return
    stem.parent.mkdir(parents=True, exist_ok=True)
    cmd = featprune() + ["eval", "--compare", str(OUT / f"{a}.{task}.json"), str(OUT / f"{b}.{task}.json"),
                         "--bootstrap", str(N_BOOT), "--json", str(as_json)]
    text = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    as_md.write_text(f"$ featprune {shlex.join(cmd[3:])}\n\n{text}")


def paired_choice(ra: dict, rb: dict, lang: str) -> dict:
    """Both scoring conventions of translation-choice, item by item: exact McNemar, and the paired
    bootstrap of the per-token convention (the CLI's --compare bootstraps the summed one)."""
    import numpy as np

    from featprune_ext.study import metrics

    ib = {it["id"]: it for it in rb["languages"][lang]["items"]}
    pairs = [(it, ib[it["id"]]) for it in ra["languages"][lang]["items"] if it["id"] in ib]
    out = {"n": len(pairs)}
    for key in ("correct_alt", "correct"):
        a = np.array([p[0][key] for p in pairs], dtype=float)
        b = np.array([p[1][key] for p in pairs], dtype=float)
        out[key] = {"a": a.mean(), "b": b.mean(), "delta": a.mean() - b.mean(),
                    "mcnemar": metrics.mcnemar_exact(a > 0.5, b > 0.5),
                    "bootstrap": metrics.paired_bootstrap(a, b, "mean", n_boot=N_BOOT, seed=0)}
    return out


def paired_nll(ra: dict, rb: dict, lang: str) -> dict:
    import numpy as np

    from featprune_ext.study import metrics

    ib = {it["id"]: it for it in rb["languages"][lang]["items"]}
    pairs = [(it, ib[it["id"]]) for it in ra["languages"][lang]["items"] if it["id"] in ib]
    a = np.array([[p[0]["nll"], p[0]["tokens"]] for p in pairs], dtype=float)
    b = np.array([[p[1]["nll"], p[1]["tokens"]] for p in pairs], dtype=float)
    res = metrics.paired_bootstrap(a, b, "nll", n_boot=N_BOOT, seed=0)
    return {"n": len(pairs), **res}


def comparisons(arms: list[str]) -> list[tuple[str, str, str, str]]:
    """(family, name, A, B) for every comparison whose arms exist."""
    out = []
    for rec in RECOVERIES:
        for name, a, b in QUESTION:
            out.append(("mt vs mono", f"{name} ({rec})", f"{a}.{rec}", f"{b}.{rec}"))
        for slug in CALIBS:
            out.append(("vs dense", f"{CALIBS[slug]} vs dense ({rec})", f"{slug}.{rec}", "dense"))
        # the token-matched control, its own family (it was added to the design for the token question)
        out.append(("token-matched", f"mt vs mono:fr x 64 samples ({rec})", f"mt-fr-en.{rec}", f"mono-fr-x2.{rec}"))
        out.append(("token-matched", f"mono:fr x 64 vs x 32 samples ({rec})", f"mono-fr-x2.{rec}", f"mono-fr.{rec}"))
        out.append(("another draw", f"mt:fr-en seed 1 vs seed 0 ({rec})", f"mt-fr-en-seed1.{rec}", f"mt-fr-en.{rec}"))
        out.append(("another draw", f"mono:fr seed 1 vs seed 0 ({rec})", f"mono-fr-seed1.{rec}", f"mono-fr.{rec}"))
        out.append(("another draw", f"mt vs mono:fr, both seed 1 ({rec})", f"mt-fr-en-seed1.{rec}",
                    f"mono-fr-seed1.{rec}"))
    return [c for c in out if c[2] in arms and c[3] in arms]


def report(args) -> None:
    from featprune_ext.study import metrics

    arms = ["dense"] + [f"{s}.{r}" for r in RECOVERIES for s in [*CALIBS, *CONTROLS]]
    arms = [a for a in arms if load(a, "translation-choice") and load(a, "ppl") and load(a, "prose")]
    tests = []  # every test, with its family for Holm
    for family, name, a, b in comparisons(arms):
        for task in ("translation-choice", "ppl"):
            cli_compare(a, b, task)
        ta, tb = load(a, "translation-choice"), load(b, "translation-choice")
        for lang in TC_LANGS.split(","):
            r = paired_choice(ta, tb, lang)
            tests.append({"family": f"translation-choice, {family}", "name": name, "a": a, "b": b, "lang": lang,
                          "metric": "acc (per-token score)", **r,
                          "p": r["correct_alt"]["mcnemar"]["p_value"]})
        for task, langs in (("ppl", PPL_LANGS.split(",")), ("prose", list(PROSE))):
            pa, pb = load(a, task), load(b, task)
            for lang in langs:
                r = paired_nll(pa, pb, lang)
                tests.append({"family": f"{task}, {family}", "name": name, "a": a, "b": b, "lang": lang,
                              "metric": "nats per token", **r, "p": r["p_value"]})
    for fam in sorted({t["family"] for t in tests}):
        members = [t for t in tests if t["family"] == fam]
        for t, adj in zip(members, metrics.holm([t["p"] for t in members])):
            t["p_holm"] = adj
        if fam.startswith("translation-choice"):  # the secondary (summed) score, corrected the same way
            summed = metrics.holm([t["correct"]["mcnemar"]["p_value"] for t in members])
            for t, adj in zip(members, summed):
                t["correct"]["p_holm"] = adj
    summary = {"arms": {a: arm_summary(a) for a in arms}, "tests": tests, "channel_overlap": channel_overlap(),
               "settings": {"spec": SPEC, "calib_options": CALIB_OPTIONS, "tc_limit": items_of(arms),
                            "n_boot": N_BOOT}}
    write_json(OUT / "summary.json", summary)
    (OUT / "tables.md").write_text(tables(summary))
    plot(summary, OUT / "accuracy.png")
    plot_differences(summary, OUT / "differences.png")
    print((OUT / "tables.md").read_text())


def channel_overlap() -> dict:
    """Share of the removed MLP channels two pruned arms agree on (mean over blocks; each removes 512 of 2048
    per block, so two random choices would share 25% of them)."""
    removed = {}
    for rec in sorted(OUT.glob("*.prune.json")):
        blocks = json.loads(rec.read_text())["removed_channels"]
        removed[rec.name.removesuffix(".prune.json")] = [set(b) for b in blocks]
    out = {}
    names = list(removed)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            shares = [len(x & y) / len(x) for x, y in zip(removed[a], removed[b])]
            out[f"{a} vs {b}"] = {"mean": sum(shares) / len(shares), "per_block": shares}
    return out


def items_of(arms: list[str]) -> dict:
    r = load(arms[0], "translation-choice")
    return {lang: s["n"] for lang, s in r["languages"].items()}


def arm_summary(arm: str) -> dict:
    tc, ppl, prose = load(arm, "translation-choice"), load(arm, "ppl"), load(arm, "prose")
    rec = OUT / f"{arm}.prune.json"
    out = {"prune": json.loads(rec.read_text()) if rec.exists() else None, "translation-choice": {}, "ppl": {},
           "prose": {}}
    for lang, s in tc["languages"].items():
        s = s.get("summary", s)
        out["translation-choice"][lang] = {k: s[k] for k in ("n", "acc", "acc_ci", "acc_alt", "acc_alt_ci")}
    out["rankc"] = {lang: {"n": c["n"], "rankc": c["rankc"]}
                    for lang, c in ((tc.get("consistency") or {}).get("languages") or {}).items()}
    for lang, s in ppl["languages"].items():
        items = s["items"]
        nll, n = sum(it["nll"] for it in items), sum(it["tokens"] for it in items)
        out["ppl"][lang] = {"n": len(items), "ppl": math.exp(nll / n), "nll_per_token": nll / n}
    for lang, s in prose["languages"].items():
        out["prose"][lang] = {"ppl": s["ppl"], "nll_per_token": s["nll_per_token"]}
    return out


def _label(arm: str) -> str:
    if arm == "dense":
        return "dense"
    slug, rec = arm.split(".")
    calib = CALIBS[slug] if slug in CALIBS else f"{CONTROLS[slug][0]} " + ", ".join(
        f"{k} {v}" for k, v in CONTROLS[slug][1].items())
    return f"{calib}, recovery {'none' if rec == 'none' else 'default (adam)'}"


def _pct_ci(v: float, ci: list) -> str:
    return f"{100 * v:.1f} [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"


def _p(p: float) -> str:
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def tables(summary: dict) -> str:
    arms = summary["arms"]
    langs = TC_LANGS.split(",")
    lines = ["## Calibration and size", "",
             "| arm | calibration tokens (samples) | parameters (x dense) | prune wall s | peak RSS MB |",
             "|---|---|---|---|---|"]
    for arm, s in arms.items():
        p = s["prune"]
        if p:
            lines.append(f"| {_label(arm)} | {p['calibration']['tokens']} ({p['calibration']['samples']}) | "
                         f"{p['params']:,} ({p['params'] / p['dense_params']:.3f}) | {p['wall_s']:.0f} | "
                         f"{p['peak_rss_bytes'] / 1e6:.0f} |")
    lines += ["", "## Removed channels shared by two calibrations (mean over the 18 blocks; chance 25%)", "",
              "| arms | shared |", "|---|---|"]
    lines += [f"| {pair} | {100 * v['mean']:.1f}% |" for pair, v in summary["channel_overlap"].items()]
    lines += ["", "## Translation-choice accuracy % [95% bootstrap CI]", "",
              "| arm | " + " | ".join(f"{lang} per-token (primary) | {lang} summed" for lang in langs)
              + " | RankC fr-zh_CN |", "|---|" + "---|---|" * len(langs) + "---|"]
    for arm, s in arms.items():
        cells = []
        for lang in langs:
            c = s["translation-choice"][lang]
            cells += [_pct_ci(c["acc_alt"], c["acc_alt_ci"]), _pct_ci(c["acc"], c["acc_ci"])]
        cells += [", ".join(f"{v['rankc']:.3f} (n={v['n']})" for v in s["rankc"].values())]
        lines.append(f"| {_label(arm)} | " + " | ".join(cells) + " |")
    lines += ["", "## Perplexity", "", "| arm | " + " | ".join(f"sentences {lang}" for lang in PPL_LANGS.split(","))
              + " | " + " | ".join(f"prose {lang}" for lang in PROSE) + " |",
              "|---|" + "---|" * (len(PPL_LANGS.split(",")) + len(PROSE))]
    for arm, s in arms.items():
        cells = [f"{s['ppl'][lang]['ppl']:.1f}" for lang in PPL_LANGS.split(",")]
        cells += [f"{s['prose'][lang]['ppl']:.1f}" for lang in PROSE]
        lines.append(f"| {_label(arm)} | " + " | ".join(cells) + " |")
    lines += ["", "## Paired tests: translation-choice (A - B, points)", "",
              "| comparison | lang | n | per-token: A - B [95% CI] | McNemar p (A only / B only) | Holm p | "
              "summed: A - B | McNemar p | Holm p |", "|---|---|---|---|---|---|---|---|---|"]
    for t in summary["tests"]:
        if not t["family"].startswith("translation-choice"):
            continue
        alt, sm = t["correct_alt"], t["correct"]
        ci = alt["bootstrap"]["ci"]
        lines.append(f"| {t['name']} | {t['lang']} | {t['n']} | {100 * alt['delta']:+.1f} [{100 * ci[0]:+.1f}, "
                     f"{100 * ci[1]:+.1f}] | {_p(alt['mcnemar']['p_value'])} ({alt['mcnemar']['a_only']} / "
                     f"{alt['mcnemar']['b_only']}) | {_p(t['p_holm'])} | {100 * sm['delta']:+.1f} | "
                     f"{_p(sm['mcnemar']['p_value'])} | {_p(sm['p_holm'])} |")
    lines += ["", "## Paired tests: nats per token (A - B; negative favours A)", "",
              "| comparison | text | lang | n | A - B [95% CI] | bootstrap p | Holm p |",
              "|---|---|---|---|---|---|---|"]
    for t in summary["tests"]:
        if t["family"].startswith("translation-choice"):
            continue
        text = "sentences" if t["family"].startswith("ppl") else "prose windows"
        lines.append(f"| {t['name']} | {text} | {t['lang']} | {t['n']} | {t['delta']:+.3f} [{t['ci'][0]:+.3f}, "
                     f"{t['ci'][1]:+.3f}] | {_p(t['p_value'])} | {_p(t['p_holm'])} |")
    return "\n".join(lines) + "\n"


def plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    langs = TC_LANGS.split(",")
    arms = list(summary["arms"])
    fig, axes = plt.subplots(1, len(langs), figsize=(5 * len(langs), 4), sharey=True)
    for ax, lang in zip(axes, langs):
        for i, arm in enumerate(arms):
            c = summary["arms"][arm]["translation-choice"][lang]
            lo, hi = c["acc_alt_ci"]
            colors = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:cyan", "tab:olive")
            color = "black" if arm == "dense" else colors[[*CALIBS, *CONTROLS].index(arm.split(".")[0])]
            ax.errorbar(i, 100 * c["acc_alt"], yerr=[[100 * (c["acc_alt"] - lo)], [100 * (hi - c["acc_alt"])]],
                        fmt="o" if arm.endswith("none") or arm == "dense" else "s", color=color, capsize=3)
        ns = [summary["arms"][a]["translation-choice"][lang]["n"] for a in arms]
        ax.set_xticks(range(len(arms)), [_label(a).replace(", recovery ", "\n") + f"\nn={n}" for a, n in zip(arms, ns)],
                      rotation=45, ha="right", fontsize=7)
        ax.set_title(f"{lang}: translation-choice (per-token score)")
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("accuracy % [95% CI]")
    fig.suptitle("Gemma 3 270M, --structured mlp=0.25: calibration text vs kept language")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def plot_differences(summary: dict, path: Path) -> None:
    """Forest plot of the mt vs mono and token-matched tests: each difference with its 95% interval, red where
    the Holm-adjusted p < 0.05. Left: translation-choice (per-token score, points); right: nats per token."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # recovery none only: one scale for the channel score's differences (any recovery arms are in the tables)
    tests = [t for t in summary["tests"] if not t["family"].endswith("vs dense") and t["name"].endswith("(none)")]
    choice = [t for t in tests if t["family"].startswith("translation-choice")]
    nll = [t for t in tests if not t["family"].startswith("translation-choice")]
    fig, axes = plt.subplots(1, 2, figsize=(13, 0.32 * max(len(choice), len(nll)) + 1.5))
    for ax, rows, unit in ((axes[0], choice, "points of accuracy"), (axes[1], nll, "nats per token")):
        for y, t in enumerate(rows):
            r = t["correct_alt"]["bootstrap"] if "correct_alt" in t else t
            scale = 100 if "correct_alt" in t else 1
            d, (lo, hi) = scale * r["delta"], (scale * r["ci"][0], scale * r["ci"][1])
            ax.errorbar(d, y, xerr=[[d - lo], [hi - d]], fmt="o", capsize=2,
                        color="tab:red" if t["p_holm"] < 0.05 else "tab:gray")
        text = [f"{t['name']}, {t['lang']}" + ("" if "correct_alt" in t else
                                                (", sentences" if t["family"].startswith("ppl") else ", prose"))
                for t in rows]
        ax.set_yticks(range(len(rows)), text, fontsize=7)
        ax.axvline(0, color="black", lw=0.8)
        ax.invert_yaxis()
        ax.set_xlabel(f"A - B, {unit} [95% CI]")
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_title("translation-choice (per-token score): A - B > 0 favours A", fontsize=9)
    axes[1].set_title("perplexity: A - B < 0 favours A", fontsize=9)
    fig.suptitle("Gemma 3 270M, --structured mlp=0.25, recovery none: paired differences (red: Holm p < 0.05)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", default="/tmp/fp_structured_language", help="data/ (the corpus) and models/")
    sub = p.add_subparsers(dest="step", required=True)
    pr = sub.add_parser("prune")
    pr.add_argument("--recovery", choices=list(RECOVERIES), required=True)
    pr.add_argument("--calibs", nargs="+", choices=list(CALIBS) + list(CONTROLS), default=list(CALIBS))
    ev = sub.add_parser("eval")
    ev.add_argument("--arms", nargs="+", required=True)
    ev.add_argument("--limit", type=int, default=200, help="translation-choice items per language")
    ev.add_argument("--ppl-limit", type=int, default=50, help="held-out sentences per language")
    sub.add_parser("report")
    args = p.parse_args()
    {"prune": prune, "eval": evaluate, "report": report}[args.step](args)


if __name__ == "__main__":
    main()
