"""Do translation demonstrations keep different weights than monolingual text? The masks of the
paper-design cells compared entry by entry (docs/study/run_paper_design.py masks).

For each model and language: Wanda calibrated on mt:X-en and on mono:X (the study's settings), and
magnitude pruning, at one sparsity; the fraction of prunable entries on which two masks agree, over
all pruned matrices and per matrix kind. Two independent random masks at 50% agree on 50% of the
entries; identical masks on 100%.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path


def _masks(model_dir: Path) -> dict:
    """name -> bool mask (entry == 0) of every matrix the run pruned (featprune.json's layers)."""
    from safetensors import safe_open

    report = json.loads((model_dir / "featprune.json").read_text())
    pruned = {k for layer in report["layers"] for k in layer["matrices"]}
    out = {}
    for path in sorted(model_dir.glob("*.safetensors")):
        with safe_open(str(path), "pt") as f:
            for name in pruned.intersection(f.keys()):
                out[name] = f.get_tensor(name) == 0
    return out


def _kind(name: str) -> str:
    """q_proj, down_proj, ... from a parameter name."""
    m = re.search(r"\.([a-z_]+)\.weight$", name)
    return m.group(1) if m else name


def agreement(a: dict, b: dict) -> dict:
    """Agreement of two mask sets overall and per matrix kind (entries of matrices pruned in both)."""
    common = sorted(set(a) & set(b))
    total, same, by_kind = 0, 0, {}
    for name in common:
        eq = int((a[name] == b[name]).sum())
        n = a[name].numel()
        total, same = total + n, same + eq
        k = by_kind.setdefault(_kind(name), [0, 0])
        k[0], k[1] = k[0] + eq, k[1] + n
    return {"matrices": len(common), "entries": total, "agree": same / total if total else float("nan"),
            "by_kind": {k: v[0] / v[1] for k, v in sorted(by_kind.items())}}


# name -> the cell that makes it; comparisons as (a, b)
CELLS = {"mt": {"method": "mt"}, "mono": {"method": "mono"}, "magnitude": {"method": "magnitude"},
         "mt_seed1": {"method": "mt", "seed": 1}}
COMPARISONS = [("mt", "mono"), ("mt", "mt_seed1"), ("mt", "magnitude"), ("mono", "magnitude")]


def compare(work: Path, out: Path, models: list[str], langs: list[str], sparsity: float, prune_cell,
            model_src) -> dict:
    """Prune the cells a missing comparison needs (into work/masks-tmp, deleted after), compare, and
    write out/masks.json after each language (a rerun adds only what is missing)."""
    tmp = work / "masks-tmp"
    dest = out / "masks.json"
    results = json.loads(dest.read_text()) if dest.exists() else {}
    for model in models:
        src = model_src(model)
        for lang in langs:
            key = f"{model}/{lang}/s{int(round(sparsity * 100))}"
            have = results.setdefault(key, {})
            todo = [(a, b) for a, b in COMPARISONS if f"{a}_vs_{b}" not in have]
            sets = {}
            for name in sorted({n for pair in todo for n in pair}):
                cell = {"model": model, "lang": None if name == "magnitude" else lang, "sparsity": sparsity,
                        **CELLS[name]}
                d = tmp / f"{model}-{name}-{lang}"
                prune_cell(cell, src, d, work / "data")
                sets[name] = _masks(d)
                shutil.rmtree(d, ignore_errors=True)
            for a, b in todo:
                have[f"{a}_vs_{b}"] = agreement(sets[a], sets[b])
            out.mkdir(parents=True, exist_ok=True)
            dest.write_text(json.dumps(results, indent=1))
            print(key + ": " + ", ".join(f"{k} {v['agree']:.4f}" for k, v in have.items()), flush=True)
    return results
