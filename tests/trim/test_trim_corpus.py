"""Corpus mode: what a corpus uses, the merge closure, the size bound, coverage; and the errors."""

import json
import subprocess
import sys

import pytest
import torch
from tiny_tokenizers import LATIN_TEXTS, TEXTS
from transformers import AutoModelForCausalLM, AutoTokenizer

from featprune_ext.engine.lock import RunLock
from featprune_ext.errors import InputError
from featprune_ext.trim import trim
from featprune_ext.trim.tokenizer_edit import TokenizerVocab

SPANISH = [t for t in TEXTS if any(w in t for w in ("impresora", "Desea"))] + [LATIN_TEXTS[0], LATIN_TEXTS[2]]


def corpus_file(tmp_path, texts, name="kept.jsonl"):
    path = tmp_path / name
    path.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts), encoding="utf-8")
    return path


def many_texts(n=40):
    """Distinct Spanish-ish texts made of the corpus's words, enough for a held-out slice."""
    words = " ".join(SPANISH).split()
    return [" ".join(words[i % len(words):][:6] + words[:i % 5]) for i in range(n)]


@pytest.mark.parametrize("family", ["byte_level", "byte_fallback", "unigram"])
def test_corpus_text_keeps_its_pieces_and_logits(vocab_model, tmp_path, family):
    src = vocab_model(family, False)
    out = tmp_path / "out"
    report = trim(src, out, langs="es,en", keep="corpus", texts=[corpus_file(tmp_path, SPANISH)], progress=False)
    t = report["trim"]
    assert t["keep"] == "corpus" and t["corpus"]["texts"] == len(SPANISH) and t["corpus"]["coverage"] is None
    assert t["kept_by_reason"]["corpus"] > 0
    ta, tb = AutoTokenizer.from_pretrained(src), AutoTokenizer.from_pretrained(out)
    id_map = json.loads((out / "featprune_id_map.json").read_text())["old_to_new"]
    kept = [i for i, n in enumerate(id_map) if n >= 0]
    scripts_size = trim(src, tmp_path / "scripts", langs="es,en", progress=False)["trim"]["kept_tokens"]
    assert len(kept) < scripts_size  # smaller than the lossless trim
    ma = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32).eval()
    mb = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    for text in SPANISH:
        ia, ib = ta(text)["input_ids"], tb(text)["input_ids"]
        assert [id_map[i] for i in ia] == ib, text
        with torch.no_grad():
            assert torch.equal(ma(torch.tensor([ia])).logits[0][:, kept], mb(torch.tensor([ib])).logits[0])
    for text in TEXTS + LATIN_TEXTS:  # outside the corpus: other pieces, same text back
        ib = tb(text)["input_ids"]
        assert tb.decode(ib, skip_special_tokens=True) == ta.decode(ta(text)["input_ids"], skip_special_tokens=True)


def test_closure_keeps_every_merge_path_of_kept_tokens(vocab_model, tmp_path):
    src = vocab_model("byte_level", True)
    out = tmp_path / "out"
    report = trim(src, out, langs="es,en", keep="corpus", texts=[corpus_file(tmp_path, SPANISH)], progress=False)
    assert report["trim"]["kept_by_reason"]["closure"] > 0  # corpus tokens' parts the corpus never produced
    old = TokenizerVocab.from_json(json.loads((src / "tokenizer.json").read_text()))
    new = TokenizerVocab.from_json(json.loads((out / "tokenizer.json").read_text()))
    kept = set(new.tokens)
    for left, right, result in old.merges:  # every merge building a kept token: its parts kept, the merge too
        if result in kept:
            assert left in kept and right in kept
    assert [m for m in old.merges if m[2] in kept] == new.merges  # same merges, same order


def test_min_count_max_tokens_and_coverage(vocab_model, tmp_path):
    src = vocab_model("byte_fallback", True, "gemma3")
    texts = corpus_file(tmp_path, many_texts())
    full = trim(src, tmp_path / "full", langs="es", keep="corpus", texts=[texts], progress=False)["trim"]
    cov = full["corpus"]["coverage"]
    assert full["corpus"]["heldout_texts"] == 4 and cov["heldout_texts"] == 4
    assert 0 < cov["token_coverage"] <= 1 and 0 <= cov["texts_same_pieces"] <= cov["words_same_pieces"] <= 1
    frequent = trim(src, tmp_path / "frequent", langs="es", keep="corpus", texts=[texts], min_count=5,
                    progress=False)["trim"]
    assert frequent["kept_by_reason"]["corpus"] < full["kept_by_reason"]["corpus"]
    floor = 260  # 4 specials + 256 byte pieces
    for cap in (floor, floor + 20, full["kept_tokens"] - 1):
        capped = trim(src, tmp_path / f"cap{cap}", langs="es", keep="corpus", texts=[texts], max_tokens=cap,
                      progress=False)["trim"]
        assert capped["kept_tokens"] <= cap and capped["corpus"]["max_tokens"] == cap
        assert len(AutoTokenizer.from_pretrained(tmp_path / f"cap{cap}")) == capped["kept_tokens"]
    with pytest.raises(InputError, match="--max-tokens 100 is below the 260 tokens"):
        trim(src, tmp_path / "tiny", langs="es", keep="corpus", texts=[texts], max_tokens=100, progress=False)


def test_data_reads_corpora_and_word_lists(vocab_model, tmp_path):
    src = vocab_model("byte_level", False)
    tsv = tmp_path / "pairs.tsv"
    tsv.write_text("en\tes\nThe printer is out of paper.\tLa impresora no tiene papel.\n"
                   "Open the file.\tAbra el archivo.\n", encoding="utf-8")
    words = tmp_path / "words.txt"
    words.write_text("pingüino\nacción\nÑandú\n", encoding="utf-8")
    report = trim(src, tmp_path / "out", langs="es,en", keep="corpus", data=[tsv, words], progress=False)
    sources = report["trim"]["corpus"]["sources"]
    assert [(s["kind"], s["texts"]) for s in sources] == [("tsv", 4), ("text lines", 3)]
    tb = AutoTokenizer.from_pretrained(tmp_path / "out")
    ta = AutoTokenizer.from_pretrained(src)
    id_map = json.loads((tmp_path / "out" / "featprune_id_map.json").read_text())["old_to_new"]
    for text in ("Abra el archivo.", "pingüino"):
        assert [id_map[i] for i in ta(text)["input_ids"]] == tb(text)["input_ids"]


# -- errors --------------------------------------------------------------------------------------
def test_errors_are_input_errors(vocab_model, tmp_path):
    src = vocab_model("byte_level", True)
    with pytest.raises(InputError, match="needs kept text"):
        trim(src, tmp_path / "a", langs="es", keep="corpus", progress=False)
    blank = tmp_path / "blank.txt"
    blank.write_text("\n  \n", encoding="utf-8")
    with pytest.raises(InputError, match="no kept text"):
        trim(src, tmp_path / "a", langs="es", keep="corpus", texts=[blank], progress=False)
    with pytest.raises(InputError, match="xx"):
        trim(src, tmp_path / "a", langs="es,xx", progress=False)
    tsv = tmp_path / "fr.tsv"
    tsv.write_text("en\tfr\nOpen the file.\tOuvrir le fichier.\n", encoding="utf-8")
    with pytest.raises(InputError, match="no Spanish text"):
        trim(src, tmp_path / "a", langs="es,en", keep="corpus", data=[tsv], progress=False)
    with pytest.raises(InputError, match="--keep scripts needs no corpus"):
        trim(src, tmp_path / "a", langs="es", data=[tsv], progress=False)
    with pytest.raises(InputError, match="--keep must be one of"):
        trim(src, tmp_path / "a", langs="es", keep="words", progress=False)
    (tmp_path / "exists").mkdir()
    with pytest.raises(InputError, match="already exists"):
        trim(src, tmp_path / "exists", langs="es", progress=False)
    with RunLock(tmp_path / "locked"):
        with pytest.raises(InputError, match="another featprune run"):
            trim(src, tmp_path / "locked", langs="es", progress=False)
    assert not (tmp_path / "a").exists() and not (tmp_path / "a.partial").exists()


def test_unsupported_tokenizer_and_short_embedding(vocab_model, tmp_path):
    import shutil

    src = tmp_path / "src"
    shutil.copytree(vocab_model("byte_level", True), src)
    tok = json.loads((src / "tokenizer.json").read_text())
    bad = dict(tok, model={"type": "WordPiece", "vocab": tok["model"]["vocab"], "unk_token": "<pad>"})
    (src / "tokenizer.json").write_text(json.dumps(bad))
    with pytest.raises(InputError, match="unsupported tokenizer model 'WordPiece'"):
        trim(src, tmp_path / "a", langs="es", progress=False)
    rows = json.loads((src / "config.json").read_text())["vocab_size"]
    tok["added_tokens"].append({"id": rows + 3, "content": "<extra>", "single_word": False, "lstrip": False,
                                "rstrip": False, "normalized": False, "special": True})
    (src / "tokenizer.json").write_text(json.dumps(tok))
    with pytest.raises(InputError, match=f"has {rows} rows but the tokenizer has ids up to {rows + 3}"):
        trim(src, tmp_path / "a", langs="es", progress=False)


def test_cli_trims_and_reports_errors_in_one_line(vocab_model, tmp_path):
    src = vocab_model("byte_fallback", True, "gemma3")
    cmd = [sys.executable, "-m", "featprune_ext.cli", "trim", str(src), "--out", str(tmp_path / "out"),
           "--langs", "es,en"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "tokens" in done.stdout and json.loads((tmp_path / "out" / "featprune.json").read_text())["kind"] == "trim"
    bad = subprocess.run(cmd[:-1] + ["es,klingon"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0 and bad.stderr.startswith("featprune: error:")
    assert "klingon" in bad.stderr
    usage = subprocess.run(cmd + ["--max-tokens", "0"], capture_output=True, text=True, timeout=120)
    assert usage.returncode == 2 and "--max-tokens" in usage.stderr


def test_a_killed_runs_partial_is_replaced_and_parents_are_created(vocab_model, tmp_path):
    src = vocab_model("unigram", True)
    out = tmp_path / "new" / "dir" / "out"
    out.parent.mkdir(parents=True)
    stale = out.with_name("out.partial")
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"half a file")
    trim(src, out, langs="es", progress=False)
    assert not stale.exists() and not out.with_name("out.lock").exists()
    assert AutoModelForCausalLM.from_pretrained(out).config.vocab_size == len(AutoTokenizer.from_pretrained(out))
    trim(src, tmp_path / "a" / "b" / "c", langs="es", progress=False)
    assert (tmp_path / "a" / "b" / "c" / "featprune.json").is_file()
