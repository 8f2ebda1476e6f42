"""`featprune prune --calib/--contrast/--protect-*` end to end on a tiny model."""

from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file

from featprune_ext import cli
from tiny_models import build_tiny_model

PAIRS = [(f"Open the file number {i} now.", f"Ouvrez le fichier numéro {i} maintenant.") for i in range(40)]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("paper")
    model = build_tiny_model("llama", root / "model")
    corpus = root / "pairs.jsonl"
    corpus.write_text("".join(json.dumps({"en": en, "fr": fr}) + "\n" for en, fr in PAIRS))
    return model, corpus


def run(*argv) -> int:
    return cli.main(["prune", *map(str, argv), "--no-progress"])


def test_contrastive_with_protection_writes_report(tiny, tmp_path):
    model, corpus = tiny
    out = tmp_path / "out"
    assert run(model, "--out", out, "--calib", "mt:fr-en", "--data", corpus, "--nsamples", 4, "--shots", 2,
               "--seqlen", 64, "--sparsity", 0.5, "--contrast", "code", "--protect-top", 10) == 0
    report = json.loads((out / "featprune.json").read_text())
    assert report["method"]["name"] == "contrastive"
    assert report["method"]["base_buckets"] == ["mt:fr-en"] and report["method"]["contrast_buckets"] == ["code"]
    weights = {}
    for shard in out.glob("*.safetensors"):
        weights.update(load_file(shard))
    checked = 0
    for layer in report["layers"]:
        for name, info in layer["matrices"].items():
            w = weights[name]
            assert all(int((row == 0).sum()) >= w.shape[1] // 2 for row in w)
            if "q_proj" in name or "up_proj" in name:
                assert info["protected_columns"] == 3  # 10% of 32 input features
                assert (w[:, info["protected"]] != 0).all(), name
                checked += 1
            elif "o_proj" in name or "down_proj" in name:
                assert info["protected_columns"] == 0
    assert checked == 6


@pytest.mark.parametrize("argv,message", [
    (["--calib", "mt:xx-en"], "unknown language"),
    (["--calib", "mt:fr"], "bad calibration spec"),
    (["--calib", "mt:fr-en", "--nsamples", "50"], "pairs"),
    (["--contrast", "code"], "--contrast needs --calib"),
    (["--method", "contrastive", "--calib", "mt:fr-en"], "needs --contrast"),
    (["--calib", "mt:fr-en", "--protect-top", "100"], "protect-top"),
])
def test_bad_paper_options_exit_2_and_write_nothing(tiny, tmp_path, capsys, argv, message):
    model, corpus = tiny
    out = tmp_path / "out"
    code = run(model, "--out", out, "--data", corpus, "--sparsity", 0.5, "--seqlen", 64, *argv)
    assert code == 2
    assert message.lower() in capsys.readouterr().err.lower()
    assert not out.exists() and not (tmp_path / "out.partial").exists()


def test_json_summary_quiet_and_next_command(tiny, tmp_path, capsys):
    model, corpus = tiny
    out, summary = tmp_path / "out", tmp_path / "summary.json"
    assert run(model, "--out", out, "--calib", "mt:fr-en", "--data", corpus, "--nsamples", 2, "--shots", 2,
               "--seqlen", 64, "--sparsity", 0.3, "--json", summary) == 0
    printed = capsys.readouterr().out
    assert f"featprune eval {out}" in printed and f"--data {corpus}" in printed
    assert json.loads(summary.read_text()) == json.loads((out / "featprune.json").read_text())
    quiet_out = tmp_path / "quiet"
    assert cli.main(["-q", "prune", str(model), "--out", str(quiet_out), "--method", "magnitude",
                     "--sparsity", "0.3"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and quiet_out.exists()


def test_help_shows_examples_and_exit_codes(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    assert "exit codes" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli.main(["prune", "--help"])
    assert "featprune prune MODEL --out pruned/ --calib mt:fr-en" in capsys.readouterr().out
