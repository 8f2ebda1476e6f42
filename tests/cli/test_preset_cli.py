"""`featprune prune --preset paper` end to end on a tiny model with a FLORES-layout corpus."""

from __future__ import annotations

import json

import pytest

from featprune_ext import cli


def flores(root, n=420):
    for split in ("dev", "devtest"):
        (root / split).mkdir(parents=True)
        (root / split / f"fra_Latn.{split}").write_text(
            "".join(f"Ouvrez le fichier numéro {i} maintenant.\n" for i in range(n)), encoding="utf-8")
        (root / split / f"eng_Latn.{split}").write_text(
            "".join(f"Open the file number {i} now.\n" for i in range(n)), encoding="utf-8")
    return root


def test_preset_paper_fills_unset_flags_and_is_recorded(tiny_model, tmp_path, capsys):
    data = flores(tmp_path / "flores200_dataset")
    out = tmp_path / "out"
    # tiny models have 128 positions: --seqlen overrides the preset's 512, the rest comes from the preset
    assert cli.main(["prune", str(tiny_model("llama")), "--out", str(out), "--calib", "mt:fra_Latn-eng_Latn",
                     "--data", str(data), "--preset", "paper", "--seqlen", "64", "--sparsity", "0.5",
                     "--batch-size", "20", "--no-progress", "-q"]) == 0
    report = json.loads((out / "featprune.json").read_text())
    preset = report["preset"]
    assert preset["name"] == "paper" and preset["used"] == {"nsamples": 100, "shots": 4, "seqlen": 64}
    assert preset["overridden"] == {"seqlen": 64} and preset["data_split"] == "dev" and preset["departures"] == []
    calib = report["calibration"]
    assert (calib["nsamples"], calib["shots"], calib["seqlen"]) == (100, 4, 64)
    assert calib["samples"] == 100


def test_without_preset_the_report_says_so(tiny_model, calib_jsonl, tmp_path):
    out = tmp_path / "out"
    assert cli.main(["prune", str(tiny_model("llama")), "--out", str(out), "--calib-texts", str(calib_jsonl),
                     "--nsamples", "4", "--seqlen", "16", "--sparsity", "0.5", "--no-progress", "-q"]) == 0
    assert json.loads((out / "featprune.json").read_text())["preset"] is None


def test_help_states_the_defaults(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["prune", "--help"])
    assert exc.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "default 128; 100 with --preset paper" in text
    assert "default 4" in text and "min(2048, model limit); 512 with --preset paper" in text
    assert "--preset {paper}" in text and "--targets PATTERN" in text and "--ignore PATTERN" in text
