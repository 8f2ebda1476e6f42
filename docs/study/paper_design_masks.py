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
    """name -> bool mask (entry == 0) of every 2-D weight with at least 10% zeros (the pruned ones)."""
    from safetensors import safe_open

    out = {}
    for path in sorted(model_dir.glob("*.safetensors")):
        with safe_open(str(path), "pt") as f:
            for name in f.keys():
                t = f.get_tensor(name)
                if t.ndim == 2 and name.endswith(".weight"):
                    zero = t == 0
                    if zero.float().mean() >= 0.1:
                        out[name] = zero
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


def compare(work: Path, out: Path, models: list[str], langs: list[str], sparsity: float, prune_cell,
            model_src) -> dict:
    """Prune the cells needed (into work/masks-tmp, deleted after), compare, write out/masks.json."""
    tmp = work / "masks-tmp"
    dest = out / "masks.json"
    results = json.loads(dest.read_text()) if dest.exists() else {}
    for model in models:
        src = model_src(model)
        mag_dir = tmp / f"{model}-magnitude"
        for lang in langs:
            key = f"{model}/{lang}/s{int(round(sparsity * 100))}"
            if key in results:
                continue
            sets = {}
            for method in ("mt", "mono", "magnitude"):
                d = mag_dir if method == "magnitude" else tmp / f"{model}-{method}-{lang}"
                if not d.exists():
                    prune_cell({"model": model, "method": method, "lang": None if method == "magnitude" else lang,
                                "sparsity": sparsity}, src, d, work / "data")
                sets[method] = _masks(d)
                if method != "magnitude":
                    shutil.rmtree(d, ignore_errors=True)
            results[key] = {"mt_vs_mono": agreement(sets["mt"], sets["mono"]),
                            "mt_vs_magnitude": agreement(sets["mt"], sets["magnitude"]),
                            "mono_vs_magnitude": agreement(sets["mono"], sets["magnitude"])}
            out.mkdir(parents=True, exist_ok=True)
            dest.write_text(json.dumps(results, indent=1))
            r = results[key]
            print(f"{key}: mt vs mono {r['mt_vs_mono']['agree']:.4f}, mt vs magnitude "
                  f"{r['mt_vs_magnitude']['agree']:.4f}, mono vs magnitude {r['mono_vs_magnitude']['agree']:.4f}",
                  flush=True)
        shutil.rmtree(mag_dir, ignore_errors=True)
    return results
