"""Your own calibration text: a .txt file is one sample per blank-line-separated paragraph, read the
same as the JSONL of those paragraphs (by `--calib-texts` and by the `texts:FILE` spec)."""

import json

import pytest
from safetensors.torch import load_file

from featprune_ext import cli
from featprune_ext.data.calibration import build_calibration
from featprune_ext.data.calibration_set import read_calibration_texts, read_text_paragraphs
from featprune_ext.errors import InputError, MissingInputError

PARAGRAPHS = ["The quick brown fox jumps over the lazy dog.\nIt lands softly.",
              "English: Open the file.\nFrench: Ouvrir le fichier.",
              "Pruning removes half of the weights of every linear layer.",
              "def add(a, b):\n    return a + b",
              "Calibration texts are tokenized and truncated to the sequence length.",
              "English: Connection refused.\nRussian: Соединение отклонено."]


def _write_txt(path, paragraphs=PARAGRAPHS, sep="\n\n"):
    path.write_text(sep.join(paragraphs) + "\n", encoding="utf-8")
    return path


def _write_jsonl(path, paragraphs=PARAGRAPHS):
    path.write_text("".join(json.dumps({"text": p}, ensure_ascii=False) + "\n" for p in paragraphs), "utf-8")
    return path


def test_paragraphs_split_on_blank_lines(tmp_path):
    # CRLF line ends, a BOM, runs of blank and whitespace-only lines, leading and trailing blank lines
    raw = "\ufeff\n\nfirst line\r\nsecond line\r\n\r\n  \t\r\n\r\nthird\n\n\n"
    (tmp_path / "a.txt").write_bytes(raw.encode("utf-8"))
    assert read_text_paragraphs(tmp_path / "a.txt") == ["first line\nsecond line", "third"]
    assert read_calibration_texts(_write_txt(tmp_path / "b.TXT")) == (PARAGRAPHS, None)
    assert read_calibration_texts(_write_jsonl(tmp_path / "b.jsonl")) == (PARAGRAPHS, None)


def test_bad_text_files(tmp_path):
    with pytest.raises(MissingInputError, match="does not exist"):
        read_calibration_texts(tmp_path / "missing.txt")
    (tmp_path / "blank.txt").write_text("\n  \n\n", encoding="utf-8")
    with pytest.raises(InputError, match="no paragraph"):
        read_calibration_texts(tmp_path / "blank.txt")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(InputError, match="UTF-8"):
        read_calibration_texts(tmp_path / "latin1.txt")
    _write_txt(tmp_path / "plain.md")  # plain text under another name: the JSONL error says how to name it
    with pytest.raises(InputError, match=r"plain.md:1: not JSON.*named \*\.txt"):
        read_calibration_texts(tmp_path / "plain.md")


def test_texts_spec_reads_txt(tiny_model, tmp_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model("llama"))
    sets = [build_calibration(f"texts:{path}", tok, nsamples=6, seqlen=64, seed=3)
            for path in (_write_txt(tmp_path / "c.txt"), _write_jsonl(tmp_path / "c.jsonl"))]
    # the sample order is seeded by the spec (which names the file): compare the samples as a set
    expected = sorted(tok(p)["input_ids"][:64] for p in PARAGRAPHS)
    assert sorted(s.tolist() for s in sets[0].samples) == sorted(s.tolist() for s in sets[1].samples) == expected


def test_prune_with_txt_equals_prune_with_its_jsonl(tiny_model, tmp_path, capsys):
    args = ["--nsamples", "6", "--seqlen", "16", "--sparsity", "0.5", "--no-progress", "-q"]
    for name, path in (("txt", _write_txt(tmp_path / "calib.txt")), ("jsonl", _write_jsonl(tmp_path / "calib.jsonl"))):
        assert cli.main(["prune", str(tiny_model("llama")), "--out", str(tmp_path / name), "--calib-texts", str(path),
                         *args]) == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "txt" / "featprune.json").read_text())
    assert report["calibration"]["samples"] == 6 and report["calibration"]["source"] == str(tmp_path / "calib.txt")
    a, b = ({k: v for f in sorted((tmp_path / name).glob("*.safetensors")) for k, v in load_file(f).items()}
            for name in ("txt", "jsonl"))
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)
