"""`featprune prune --calib/--contrast/--protect-*` end to end on a tiny model."""

from __future__ import annotations

import json

import pytest
import torch
from naive import naive_prune
from safetensors.torch import load_file
from tiny_models import build_tiny_model
from transformers import AutoTokenizer

from featprune_ext import cli
from featprune_ext.data.calibration import build_contrast_calibration
from featprune_ext.engine import prune_model
from featprune_ext.methods import Contrastive

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


# tiny Llama matrices that read the hidden state (after a norm): outlier protection applies to these
READS_HIDDEN = ("q_proj", "k_proj", "v_proj", "gate_proj", "up_proj")
CALIB = dict(nsamples=4, shots=2, seqlen=64, seed=0)


def calibration(model, corpus):
    """The calibration set `--calib mt:fr-en --contrast code` builds (base bucket first)."""
    tok = AutoTokenizer.from_pretrained(model)
    calib = build_contrast_calibration("mt:fr-en", "code", tok, data=corpus, **CALIB)
    assert calib.bucket_names == ["mt:fr-en", "code"]
    return calib


def contrastive_oracle(model, calib, base, contrast, *, protect_top=0.0, batch_size=1, protected=None):
    """Masks from the naive model: per-bucket statistics kept by hooks on the whole model, the
    paper's norm = base * (base / contrast) with contrast floored at 1e-6 * its max."""

    def scale(st, name):
        b, c = st.rms([base]), st.rms([contrast])
        floor = 1e-6 * float(c.max()) if float(c.max()) > 0 else 1e-6
        return b * (b / c.clamp_min(floor))

    def protect(st, name):
        if name.split(".")[-2] not in READS_HIDDEN or not protect_top:
            return None
        cols = torch.zeros(st.mean_sq.numel(), dtype=torch.bool)
        cols[torch.topk(st.rms([base]), int(st.mean_sq.numel() * protect_top / 100)).indices] = True
        return cols

    return naive_prune(model, calib, sparsity=0.5, batch_size=batch_size, scale=scale, protect=protect,
                       protected_out=protected)


def test_contrastive_with_protection_writes_report(tiny, tmp_path):
    model, corpus = tiny
    out = tmp_path / "out"
    assert run(model, "--out", out, "--calib", "mt:fr-en", "--data", corpus, "--nsamples", 4, "--shots", 2,
               "--seqlen", 64, "--sparsity", 0.5, "--contrast", "code", "--protect-top", 10,
               "--batch-size", 2) == 0
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
    # every mask and protected set exactly as the naive model computes them from per-bucket statistics
    protected = {}
    masks = contrastive_oracle(model, calibration(model, corpus), "mt:fr-en", "code", protect_top=10, batch_size=2,
                               protected=protected)
    assert set(masks) == {name for layer in report["layers"] for name in layer["matrices"]}
    for layer in report["layers"]:
        for name, info in layer["matrices"].items():
            assert torch.equal(weights[name] == 0, masks[name]), name
            assert info["protected"] == protected[name], name


def test_protect_absmax_end_to_end_matches_oracle(tiny, tmp_path):
    """--protect-absmax T: the columns whose max |x| over the calibration tokens reaches T stay dense
    in the matrices that read the hidden state, exactly as the naive model finds them."""
    model, corpus = tiny
    out, threshold = tmp_path / "out", 3.0
    assert run(model, "--out", out, "--calib", "mt:fr-en", "--data", corpus, "--nsamples", 4, "--shots", 2,
               "--seqlen", 64, "--sparsity", 0.5, "--protect-absmax", threshold, "--batch-size", 2) == 0
    report = json.loads((out / "featprune.json").read_text())
    assert report["method"]["protection"] == {"top_percent": 0.0, "absmax_threshold": threshold}
    tok = AutoTokenizer.from_pretrained(model)
    calib = build_contrast_calibration("mt:fr-en", None, tok, data=corpus, **CALIB)

    def protect(st, name):
        return st.max_abs() >= threshold if name.split(".")[-2] in READS_HIDDEN else None

    protected = {}
    masks = naive_prune(model, calib, sparsity=0.5, batch_size=2, protect=protect, protected_out=protected)
    weights = {}
    for shard in out.glob("*.safetensors"):
        weights.update(load_file(shard))
    counts = []
    for layer in report["layers"]:
        for name, info in layer["matrices"].items():
            assert info["protected"] == protected[name], name
            assert torch.equal(weights[name] == 0, masks[name]), name
            counts.append(info["protected_columns"])
    assert 0 < max(counts) < 16 and min(counts) == 0  # some columns protected, never all, never o/down_proj


def test_contrast_buckets_decide_the_masks(tiny, tmp_path):
    """Base and contrast play different roles: swapping them, or ignoring the contrast set, changes
    the masks, and the engine follows the oracle in each case."""
    model, corpus = tiny
    calib = calibration(model, corpus)
    results = {}
    for label, base, contrast in (("paper", "mt:fr-en", "code"), ("swapped", "code", "mt:fr-en")):
        out = tmp_path / label
        prune_model(model, out, calibration=calib, method=Contrastive(base_buckets=[base], contrast_buckets=[contrast]),
                    sparsity=0.5, batch_size=2, progress=False)
        weights = {}
        for shard in out.glob("*.safetensors"):
            weights.update(load_file(shard))
        oracle = contrastive_oracle(model, calib, base, contrast, batch_size=2)
        for name, mask in oracle.items():
            assert torch.equal(weights[name] == 0, mask), f"{label}: {name}"
        results[label] = oracle
    wanda_base = naive_prune(model, calib, sparsity=0.5, batch_size=2, scale=lambda st, name: st.rms(["mt:fr-en"]))
    for name, mask in results["paper"].items():
        assert not torch.equal(mask, results["swapped"][name]), f"swapping the buckets left {name} unchanged"
        assert not torch.equal(mask, wanda_base[name]), f"the contrast set did not change {name}"


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
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    assert "exit codes" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        cli.main(["prune", "--help"])
    assert exc.value.code == 0
    assert "featprune prune MODEL --out pruned/ --calib mt:fr-en" in capsys.readouterr().out
