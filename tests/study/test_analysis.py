"""Feature-magnitude analysis: streamed (engine) vs whole-model vs a per-sample oracle, overlap
matrices, and the CLI end to end on a tiny random model."""

import csv
import json

import numpy as np
import pytest
import torch
from tiny_models import build_tiny_model

from featprune_ext.cli import main as cli_main
from featprune_ext.data.calibration import build_calibration
from featprune_ext.study import analysis as A

PAIRS = [("Open the file.", "Ouvrir le fichier."), ("Save your changes.", "Enregistrez vos modifications."),
         ("Close the window.", "Fermez la fenêtre."),
         ("The printer is out of paper.", "L'imprimante n'a plus de papier."),
         ("Delete this item?", "Supprimer cet élément ?"), ("Connection refused.", "Connexion refusée."),
         ("Select a folder.", "Sélectionnez un dossier."), ("Print the page.", "Imprimer la page."),
         ("Restart the computer.", "Redémarrez l'ordinateur."), ("The disk is full.", "Le disque est plein.")]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("analysis")
    corpus = root / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"en": e, "fr": f, "split": "calib"}, ensure_ascii=False) + "\n"
                              for e, f in PAIRS), encoding="utf-8")
    return {"root": root, "corpus": corpus, "gemma3": build_tiny_model("gemma3", root / "gemma3"),
            "llama": build_tiny_model("llama", root / "llama", tokenizer_dir=root / "gemma3")}


def _oracle(model_dir, calibration):
    """One sample at a time (no padding), block outputs by forward hooks."""
    from transformers import AutoModelForCausalLM

    from featprune_ext.engine.families import find_blocks

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    _, blocks = find_blocks(model)
    outs = {}
    handles = [b.register_forward_hook(lambda m, a, o, i=i: outs.__setitem__(i, o[0] if isinstance(o, tuple) else o))
               for i, b in enumerate(blocks)]
    k = len(calibration.bucket_names)
    sums = np.zeros((len(blocks), k, model.config.hidden_size))
    counts = np.zeros(k)
    with torch.no_grad():
        for ids, bucket in zip(calibration.samples, calibration.buckets):
            model(input_ids=ids[None])
            counts[bucket] += 1
            for i in range(len(blocks)):
                sums[i, bucket] += outs[i][0].double().pow(2).sum(0).sqrt().numpy()
    for h in handles:
        h.remove()
    return sums / counts[None, :, None]


@pytest.mark.parametrize("family", ["gemma3", "llama"])
def test_streamed_and_whole_match_per_sample_oracle(env, family):
    from transformers import AutoTokenizer

    model = env[family]
    tok = AutoTokenizer.from_pretrained(model)
    calib = build_calibration("mono:fr+mt:fr-en", tok, data=env["corpus"], nsamples=4, seqlen=64, shots=2, seed=0)
    want = _oracle(model, calib)
    # batch_size 2 pads the shorter sample: padding must not change anything
    streamed = A.feature_magnitudes(model, calib, batch_size=2, stream=True, progress=False)
    whole = A.feature_magnitudes(model, calib, batch_size=2, stream=False, progress=False)
    assert streamed.shape == want.shape == (len(want), 2, want.shape[2])
    np.testing.assert_allclose(streamed, want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(whole, want, rtol=1e-4, atol=1e-5)


def test_overlap_matrix_known_sets():
    mags = np.array([[10, 9, 8, 1, 2, 3], [1, 2, 3, 10, 9, 8], [10, 9, 8, 1, 2, 3]], dtype=float)
    tb = A.overlap_matrix(mags, 0.5, "top-bottom")
    np.testing.assert_array_equal(tb, [[0, 1, 0], [1, 0, 1], [0, 1, 0]])
    tt = A.overlap_matrix(mags, 0.5, "top-top")
    np.testing.assert_array_equal(tt, [[1, 0, 1], [0, 1, 0], [1, 0, 1]])
    with pytest.raises(ValueError, match="unknown overlap kind"):
        A.overlap_matrix(mags, 0.5, "sideways")


def test_overlap_matrix_hand_computed_shares():
    """Fractional shares worked out by hand (k = round(10 * 0.3) = 3):
    A = 0..9 -> top {7, 8, 9}, bottom {0, 1, 2}; B -> top {5, 6, 7}, bottom {0, 8, 9};
    C = 9..0 -> top {0, 1, 2}, bottom {7, 8, 9}."""
    a = np.arange(10.0)
    b = np.array([0.0, 5, 6, 7, 8, 9, 10, 11, 2, 1])
    c = a[::-1].copy()
    mags = np.stack([a, b, c])
    tb = A.overlap_matrix(mags, 0.3, "top-bottom")
    np.testing.assert_allclose(tb, [[0, 2 / 3, 1], [0, 0, 1 / 3], [1, 1 / 3, 0]])
    tt = A.overlap_matrix(mags, 0.3, "top-top")
    np.testing.assert_allclose(tt, [[1, 1 / 3, 0], [1 / 3, 1, 0], [0, 0, 1]])
    # ties go to the lower feature index: all-equal magnitudes give top = bottom = {0, 1, 2}
    flat = np.stack([np.ones(10), a])
    np.testing.assert_allclose(A.overlap_matrix(flat, 0.3, "top-bottom"), [[1, 1], [0, 0]])


def _independent_sets(values: list, k: int):
    """(top-k, bottom-k, whether both cuts are clear of ties) by plain sorting."""
    idx = range(len(values))
    top = set(sorted(idx, key=lambda i: (-values[i], i))[:k])
    bottom = set(sorted(idx, key=lambda i: (values[i], i))[:k])
    ordered = sorted(values)
    clear = ordered[k - 1] != ordered[k] and ordered[-k] != ordered[-k - 1]
    return top, bottom, clear


def test_default_spec_and_labels():
    assert A.default_spec(["en", "fr", "zh"]) == "mono:en+mono:fr+mono:zh_CN+mt:fr-en+mt:zh_CN-en"
    assert A.condition_label("mono:zh_CN") == "zh" and A.condition_label("mt:zh_CN-en") == "zh-en"
    assert A.condition_label("mt:pt_BR-en") == "pt_BR-en" and A.condition_label("code") == "code"
    with pytest.raises(A.AnalysisError, match="unknown language code 'qq'"):
        A.default_spec(["qq"])


def test_mt_mono_pairs_finds_languages_with_both_conditions():
    from featprune_ext.study.plots import mt_mono_pairs

    names = ["mono:en", "mono:fr", "mono:zh_CN", "mt:fr-en", "mt:hi-en", "mt:zh_CN-en", "code"]
    assert mt_mono_pairs(names) == [("fr", 1, 3), ("zh_CN", 2, 5)]  # hi has no mono, en no mt
    assert mt_mono_pairs(["mono:fr", "code"]) == []


def test_analyze_cli_end_to_end(env, tmp_path, capsys):
    out = tmp_path / "out"
    rc = cli_main(["analyze", str(env["gemma3"]), "--langs", "en,fr", "--data", str(env["corpus"]), "--out", str(out),
                   "--nsamples", "2", "--shots", "2", "--seqlen", "64", "--ratio", "0.3,0.1",
                   "--no-progress", "--threads", "1"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "| condition |" in printed and "fr-en" in printed
    with open(out / "magnitudes.csv", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    assert rows[0][:3] == ["condition", "layer", "dim0"] and len(rows[0]) == 2 + 32
    assert len(rows) == 1 + 3 * 4  # 3 conditions (en, fr, fr-en) x 4 layers
    summary = json.loads((out / "analysis.json").read_text())
    assert summary["labels"] == ["en", "fr", "fr-en"] and summary["layers"] == 4
    assert summary["calibration"]["buckets"]["mono:fr"]["samples"] == 2
    for name in ("overlap_top-bottom_r30_mean.png", "overlap_top-top_r10_layers.png", "top_features/fr-en.png",
                 "mt_vs_mono_features.png"):
        assert (out / name).stat().st_size > 1000
    with open(out / "overlap_r30.csv", encoding="utf-8") as fh:
        ov = list(csv.DictReader(fh))
    assert len(ov) == 2 * 4 * 3 * 3
    same = [r for r in ov if r["kind"] == "top-bottom" and r["top_of"] == r["compared_with"]]
    assert all(float(r["share"]) == 0.0 for r in same)  # a condition's top and bottom 30% never overlap
    # every share recomputed from magnitudes.csv by plain sorting (k = round(32 * 0.3) = 10), where the
    # 6-digit CSV values leave no tie at the cut
    label = {"mono:en": "en", "mono:fr": "fr", "mt:fr-en": "fr-en"}
    sets = {(label[r[0]], int(r[1])): _independent_sets([float(v) for v in r[2:]], 10) for r in rows[1:]}
    checked = 0
    for r in ov:
        top_of, cmp_with = sets[(r["top_of"], int(r["layer"]))], sets[(r["compared_with"], int(r["layer"]))]
        if not (top_of[2] and cmp_with[2]):
            continue
        other = cmp_with[1] if r["kind"] == "top-bottom" else cmp_with[0]
        assert float(r["share"]) == pytest.approx(len(top_of[0] & other) / 10, abs=1e-6), r
        checked += 1
    assert checked >= len(ov) * 3 // 4
    assert any(0 < float(r["share"]) < 1 for r in ov if r["top_of"] != r["compared_with"])  # not all 0/1


def test_analyze_one_condition_skips_overlap(env, tmp_path, capsys):
    out = tmp_path / "out"
    rc = cli_main(["analyze", str(env["llama"]), "--calib", "mono:fr", "--data", str(env["corpus"]), "--out", str(out),
                   "--nsamples", "2", "--shots", "2", "--seqlen", "64", "--no-progress", "--threads", "1"])
    assert rc == 0
    printed = capsys.readouterr().out
    note = [line for line in printed.splitlines() if "overlap" in line]
    assert note == ["overlap needs two or more conditions (only mono:fr given): no overlap table or heatmap; "
                    "magnitudes and their plots written"]
    assert not list(out.glob("overlap*"))
    assert (out / "top_features" / "fr.png").stat().st_size > 1000
    summary = json.loads((out / "analysis.json").read_text())
    assert summary["overlap"] == {} and summary["overlap_note"] == note[0]
    with open(out / "magnitudes.csv", encoding="utf-8") as fh:
        assert len(list(csv.reader(fh))) == 1 + summary["layers"]  # one condition


def test_analyze_errors(env, tmp_path, capsys):
    with pytest.raises(A.AnalysisError, match="either a calibration spec"):
        A.analyze(env["gemma3"], tmp_path, spec="mono:fr", langs=["fr"], data=env["corpus"])
    with pytest.raises(A.AnalysisError, match="not a model directory"):
        A.analyze(tmp_path / "nothing", tmp_path, langs=["fr"], data=env["corpus"])
    with pytest.raises(A.AnalysisError, match="ratio must be in"):
        A.analyze(env["gemma3"], tmp_path, langs=["fr"], data=env["corpus"], ratios=[0.7])
    assert cli_main(["analyze", str(env["gemma3"]), "--langs", "fr", "--data", str(tmp_path / "none"),
                     "--out", str(tmp_path / "o")]) == 2
    assert "data path does not exist" in capsys.readouterr().err
