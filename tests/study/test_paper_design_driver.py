"""The paper-design study driver (docs/study/run_paper_design.py): its grid and run order, the
pre-registered decision rule, the mask comparison and the figure of the paper's question."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

STUDY = Path(__file__).resolve().parents[2] / "docs" / "study"
sys.path.insert(0, str(STUDY))

import paper_design_masks as masks  # noqa: E402
import run_paper_design as design  # noqa: E402


def test_grid_is_complete_and_the_primary_comparison_runs_first():
    cells = design.cells(["gemma3"])
    names = {(design.cell_name(c), c["eval"][0]) for c in cells}
    for lang in design.LANGS:
        for sp in (30, 50):
            for method in design.METHODS:
                assert (f"{method}-{lang}-s{sp}", lang) in names
            assert (f"magnitude-s{sp}", lang) in names
        assert ("dense", lang) in names
    phases = [design.phase(c) for c in cells]
    assert phases == sorted(phases)  # mt/mono at 50% (and dense) in every language before anything else
    first = [c for c in cells if design.phase(c) == 0]
    assert {c["method"] for c in first} == {"dense", "mt", "mono"} and all(c["sparsity"] in (0.0, 0.5) for c in first)
    assert cells[-1]["method"] == "contrastive"


def test_a_cell_is_claimed_by_one_worker_at_a_time(tmp_path):
    cell = tmp_path / "mt-fr-s50"
    held = design.claim(cell)
    assert held is not None and (tmp_path / "mt-fr-s50.lock").exists()
    assert design.claim(cell) is None  # held: another worker skips the cell
    held.release()
    again = design.claim(cell)  # released (or its worker died): the cell can be taken
    assert again is not None
    again.release()


def test_cross_lingual_cells_skip_generation():
    mt_fr = next(c for c in design.cells(["gemma3"]) if design.cell_name(c) == "mt-fr-s50")
    pairs = design.evaluations(mt_fr)
    assert ("translate", "fr") in pairs
    assert all(("translate", lang) not in pairs for lang in design.CROSS)
    assert all(("ppl", lang) in pairs for lang in design.CROSS)


@pytest.mark.parametrize("task,diff,winner", [("ppl", -0.1, "mt"), ("ppl", 0.1, "mono"),
                                               ("translate", 2.0, "mt"), ("translation-choice", -5.0, "mono")])
def test_decision_rule_reads_the_direction_of_each_metric(task, diff, winner):
    t = {"task": task, "diff": diff, "a": "mt", "b": "mono", "p_holm": 0.01}
    assert design.decision(t) == f"{winner} better"
    assert design.decision({**t, "p_holm": 0.05}) == "no difference detected"


def test_mask_agreement_counts_entries_per_matrix_kind():
    a = {"model.layers.0.mlp.down_proj.weight": torch.tensor([[True, False], [False, True]]),
         "model.layers.0.self_attn.q_proj.weight": torch.tensor([[True, False]]),
         "model.layers.1.mlp.down_proj.weight": torch.tensor([[True]])}
    b = {"model.layers.0.mlp.down_proj.weight": torch.tensor([[True, True], [False, True]]),
         "model.layers.0.self_attn.q_proj.weight": torch.tensor([[False, True]])}  # layer 1 pruned in a only
    r = masks.agreement(a, b)
    assert r["matrices"] == 2 and r["entries"] == 6
    assert r["agree"] == pytest.approx(3 / 6)
    assert r["by_kind"] == {"down_proj": pytest.approx(0.75), "q_proj": 0.0}


def test_figure_of_the_paper_question(tmp_path):
    tests = [{"model": "gemma3", "task": task, "a": a, "b": b, "lang": lang, "sparsity": sp, "cross": a == "mt-fr",
              "diff": 0.5, "ci": [-1.0, 2.0], "p_holm": p}
             for task in ("translate", "ppl") for (a, b, lang, sp, p) in
             [("mt", "mono", "fr", 0.5, 0.01), ("mt", "mono", "hi", 0.3, 0.5), ("mt-fr", "mono-fr", "de", 0.5, 0.2),
              ("mt", "dense", "fr", 0.5, 0.01)]]
    import paper_design_plots as plots

    assert len(design.paper_question(tests)) == 6  # the mt - dense tests are not the paper's question
    plots.plot_paper_question(design.paper_question(tests), tmp_path, design.LANGS)
    png = tmp_path / "gemma3-mt-minus-mono.png"
    assert png.exists() and png.read_bytes()[:4] == b"\x89PNG"


def test_items_archive_reruns_the_analysis_input(tmp_path):
    import json
    import tarfile

    work = tmp_path / "work"
    (work / "eval" / "gemma3").mkdir(parents=True)
    for lang in ("fr", "hi"):
        (work / "eval" / "gemma3" / f"mt-fr-s50.ppl.{lang}.json").write_text(
            json.dumps({"languages": {lang: {"items": [{"nll": 1.0, "tokens": 3}]}}}))
    dest = tmp_path / "eval-items.tar.xz"
    design.archive_items(work, dest)
    first = dest.read_bytes()
    design.archive_items(work, dest)
    assert dest.read_bytes() == first  # the same results give the same bytes (no timestamps)
    again = tmp_path / "again"
    with tarfile.open(dest) as tar:
        tar.extractall(again, filter="data")
    assert design.load(again) == design.load(work)


def test_a_method_keeps_its_colour_in_every_panel(tmp_path, monkeypatch):
    """The legend is drawn in the first panel only: magnitude must not take contrastive's colour in a
    language where contrastive is missing (matplotlib's colour cycle would shift it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import paper_design_plots as plots

    def row(method, lang, sp, calib=True):
        return {"model": "gemma3", "task": "ppl", "method": method, "lang": lang, "sparsity": sp,
                "calib_lang": lang if calib and method not in ("dense", "magnitude") else None,
                "value": 5.0 + sp, "ci": [4.5, 6.5]}

    rows = [row("dense", lang, 0.0) for lang in ("fr", "ru")]
    rows += [row(m, "fr", sp) for m in ("mt", "mono", "contrastive", "magnitude") for sp in (0.3, 0.5)]
    rows += [row(m, "ru", sp) for m in ("mt", "mono", "magnitude") for sp in (0.3, 0.5)]
    figures = []
    monkeypatch.setattr(plt, "close", figures.append)
    plots.plot(rows, tmp_path, ["ppl"], ["fr", "ru"], [])
    (fig,) = figures
    colours = [{label: h.lines[0].get_color() for h, label in zip(*ax.get_legend_handles_labels())}
               for ax in fig.axes]
    assert set(colours[1]) == {"mt", "mono", "magnitude"}
    for method, colour in colours[1].items():
        assert colour == colours[0][method], method
