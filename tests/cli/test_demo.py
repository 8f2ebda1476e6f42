"""`featprune demo` end to end, with a tiny Gemma 3 in place of the real one and a small corpus in
place of this machine's gettext catalogs (the real run is `make demo`: minutes and a 1 GB model)."""

from __future__ import annotations

import json

import pytest
from tiny_models import build_tiny_model

from featprune_ext import cli
from featprune_ext.cli import demo
from featprune_ext.data import gettext, zoo

EN = [f"Open the file number {i} before you close the window." for i in range(24)]


def fake_corpus(langs, out_dir, *args, **kwargs):
    """A featprune gettext corpus (manifest.json + pairs/<locale>.jsonl) of EN for fr and zh_CN:
    16 calibration and 8 evaluation sentences, the same English in both languages."""
    fake_corpus.langs = list(langs)
    pairs = out_dir / "pairs"
    pairs.mkdir(parents=True)
    languages = {}
    for locale, word in (("fr", "Ouvrez le fichier"), ("zh_CN", "打开文件")):
        with open(pairs / f"{locale}.jsonl", "w", encoding="utf-8") as fh:
            for i, en in enumerate(EN):
                fh.write(json.dumps({"en": en, locale: f"{word} {i}.", "split": "eval" if i % 3 == 0 else "calib",
                                     "domain": "test", "package": "test", "source": "test"},
                                    ensure_ascii=False) + "\n")
        languages[locale] = {"file": f"pairs/{locale}.jsonl"}
    (out_dir / "manifest.json").write_text(json.dumps({"format": gettext.FORMAT, "languages": languages}))


@pytest.fixture
def demo_env(tmp_path, tiny_tokenizer_dir, monkeypatch):
    model = build_tiny_model("gemma3", tmp_path / "gemma3", tokenizer_dir=tiny_tokenizer_dir)
    monkeypatch.setattr(zoo, "gemma3_270m_dir", lambda: model)
    monkeypatch.setattr(gettext, "build_gettext_corpus", fake_corpus)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # the demo keeps its corpus under ~/.cache
    return model


def test_demo_prunes_evaluates_and_reuses_its_model(demo_env, tmp_path, capsys, monkeypatch):
    out = tmp_path / "demo"
    argv = ["demo", "--out", str(out), "--device", "cpu", "--nsamples", "4", "--seqlen", "64", "--langs", "fr,zh_CN",
            "--limit", "6", "--sparsity", "0.3"]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert fake_corpus.langs == demo.CORPUS_LANGS
    assert (tmp_path / "home" / ".cache" / "featprune" / "data" / "gettext" / "manifest.json").exists()
    pruned = out / "gemma3-270m-wanda-mt_fr-en-0.3"
    report = json.loads((pruned / "featprune.json").read_text())
    assert report["sparsity"] == 0.3 and report["method"]["base_buckets"] == ["mt:fr-en"]
    assert report["model"]["source"] == str(demo_env.resolve())
    assert report["calibration"]["samples"] == 4
    for name in ("dense", "pruned"):
        res = json.loads((out / f"{name}.translation-choice.json").read_text())
        assert set(res["languages"]) == {"fr", "zh_CN"}
        for lang in res["languages"].values():
            assert lang["n"] == 6 and lang["acc"] == lang["correct"] / lang["n"]
    table = (out / "demo.md").read_text()
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in table.strip().splitlines()]
    assert rows[0] == ["model", "fr acc % [95% CI]", "zh_CN acc % [95% CI]"]
    assert [r[0] for r in rows[2:]] == ["dense", "wanda mt:fr-en 30%"]
    assert all(cell.endswith("(n=6)") for r in rows[2:] for cell in r[1:])
    assert table.strip() in printed and f"next: featprune eval {pruned}" in printed
    assert (out / "demo.png").stat().st_size > 1000

    # a second run reuses the pruned model (no pruning) and evaluates again
    from featprune_ext import engine

    def no_pruning(*args, **kwargs):
        raise AssertionError("the demo pruned again although the pruned model exists")

    monkeypatch.setattr(engine, "prune_model", no_pruning)
    assert cli.main(argv) == 0
    assert (out / "demo.md").read_text() == table  # deterministic
