"""Corpus readers on tiny files made here: FLORES, TSV, JSONL, gettext corpus, HF dataset, mono, code."""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import pytest

from featprune_ext.data import corpora
from featprune_ext.data.corpora import detect_layout, load_code, load_mono, load_parallel, split_sentences
from featprune_ext.data.gettext import build_gettext_corpus, split_of

EN = ["The cat sleeps on the warm mat.", "Rain is expected in the north tomorrow.", "She said \"hello\" twice."]
FR = ["Le chat dort sur le tapis chaud.", "De la pluie est attendue dans le nord demain.",
      "Elle a dit « bonjour » deux fois."]
ZH = ["猫睡在温暖的垫子上。", "预计明天北方有雨。", "她说了两次“你好”。"]


def _flores(root: Path) -> Path:
    for split, rows in (("dev", (EN, FR, ZH)), ("devtest", ([e.upper() for e in EN], FR, ZH))):
        (root / split).mkdir(parents=True)
        for code, lines in zip(("eng_Latn", "fra_Latn", "zho_Hans"), rows):
            (root / split / f"{code}.{split}").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def test_flores_layout(tmp_path):
    root = _flores(tmp_path / "flores")
    assert detect_layout(root) == "flores"
    assert load_parallel(root, "fr", "en") == list(zip(FR, EN))
    assert load_parallel(root, "fra_Latn", "zho_Hans") == list(zip(FR, ZH))
    assert load_parallel(root, "English", "zh", split="dev") == list(zip(EN, ZH))
    for split in ("eval", "devtest"):
        assert load_parallel(root, "en", "fr", split=split)[0] == (EN[0].upper(), FR[0])
    # The FLORES-200 tarball's own top-level folder works too.
    outer = tmp_path / "outer"
    _flores(outer / "flores200_dataset")
    assert load_parallel(outer, "fr", "en") == list(zip(FR, EN))


def test_flores_errors(tmp_path):
    root = _flores(tmp_path / "flores")
    with pytest.raises(FileNotFoundError, match=r"deu_Latn.dev not found.*eng_Latn, fra_Latn, zho_Hans"):
        load_parallel(root, "de", "en")
    with pytest.raises(ValueError, match="no FLORES split 'train'"):
        load_parallel(root, "fr", "en", split="train")
    (root / "dev/fra_Latn.dev").write_text("one line only\n", encoding="utf-8")
    with pytest.raises(ValueError, match="not line-aligned"):
        load_parallel(root, "fr", "en")
    with pytest.raises(ValueError, match="same language"):
        load_parallel(root, "fr", "fra_Latn")
    with pytest.raises(ValueError, match="unknown language code 'xx'"):
        load_parallel(root, "xx", "en")


def test_missing_and_unknown_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="corpus path does not exist"):
        load_parallel(tmp_path / "nope", "fr", "en")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="unrecognised corpus directory"):
        load_parallel(tmp_path / "empty", "fr", "en")
    (tmp_path / "x.dat").write_text("just words\n")
    with pytest.raises(ValueError, match="not a TSV"):
        load_parallel(tmp_path / "x.dat", "fr", "en")


def test_tsv_any_code_form_in_header(tmp_path):
    f = tmp_path / "pairs.tsv"
    rows = ["eng_Latn\tfr\tzho", *(f"{e}\t{fr}\t{z}" for e, fr, z in zip(EN, FR, ZH)), "\t\t",
            f"{EN[0]}\t{FR[0]}\t{ZH[0]}"]
    f.write_text("\n".join(rows) + "\n", encoding="utf-8")
    assert load_parallel(f, "fr", "en") == list(zip(FR, EN))  # quotes kept, blank and duplicate rows dropped
    assert load_parallel(f, "zh_CN", "French") == list(zip(ZH, FR))
    with pytest.raises(ValueError, match="no 'split' column"):
        load_parallel(f, "fr", "en", split="eval")
    with pytest.raises(ValueError, match=r"no column for German.*eng_Latn, fr, zho"):
        load_parallel(f, "de", "en")
    bad = tmp_path / "bad.tsv"
    bad.write_text("en\tfr\nonly one field\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad.tsv:2: 1 fields, header has 2"):
        load_parallel(bad, "fr", "en")


def test_tsv_split_column(tmp_path):
    f = tmp_path / "pairs.tsv"
    f.write_text("en\tfr\tsplit\n" + f"{EN[0]}\t{FR[0]}\tdev\n{EN[1]}\t{FR[1]}\tdevtest\n{EN[2]}\t{FR[2]}\tcalib\n",
                 encoding="utf-8")
    assert load_parallel(f, "fr", "en") == [(FR[0], EN[0]), (FR[2], EN[2])]
    assert load_parallel(f, "fr", "en", split="eval") == [(FR[1], EN[1])]


def test_jsonl_keys_and_translation_dicts(tmp_path):
    f = tmp_path / "pairs.jsonl"
    lines = [json.dumps({"English": EN[0], "fra_Latn": FR[0]}, ensure_ascii=False),
             "",
             json.dumps({"translation": {"en": EN[1], "fr": FR[1]}}, ensure_ascii=False),
             json.dumps({"English": EN[2], "fra_Latn": FR[2], "id": 7}, ensure_ascii=False)]
    f.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert detect_layout(f) == "jsonl"
    assert load_parallel(f, "en", "fr") == list(zip(EN, FR))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"en": "a", "fr": "b"}\n{not json\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad.jsonl:2: not JSON"):
        load_parallel(bad, "en", "fr")
    sniffed = tmp_path / "pairs.txt"  # no telling suffix: the content decides
    sniffed.write_text(lines[0] + "\n", encoding="utf-8")
    assert load_parallel(sniffed, "en", "fr") == [(EN[0], FR[0])]


def _write_mo(path: Path, messages: dict) -> None:
    header = {b"": b"Content-Type: text/plain; charset=UTF-8\n"}
    entries = {**header, **{k.encode(): v.encode() for k, v in messages.items()}}
    keys = sorted(entries)
    n, blob, tables = len(keys), b"", []
    data_at = 28 + 16 * n
    for items in (keys, [entries[k] for k in keys]):
        for s in items:
            tables.append(struct.pack("<2I", len(s), data_at + len(blob)))
            blob += s + b"\x00"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<7I", 0x950412DE, 0, n, 28, 28 + 8 * n, 0, data_at) + b"".join(tables) + blob)


def _gettext_corpus(tmp_path: Path) -> tuple[Path, list[str]]:
    english = [f"Message number {i} was sent to the server." for i in range(40)]
    _write_mo(tmp_path / "loc/fr/LC_MESSAGES/a.mo",
              {e: f"Le message numéro {i} a été envoyé." for i, e in enumerate(english)})
    _write_mo(tmp_path / "loc/de/LC_MESSAGES/a.mo",
              {e: f"Nachricht Nummer {i} wurde gesendet." for i, e in enumerate(english[:30])})
    out = tmp_path / "corpus"
    build_gettext_corpus(["fr", "de"], out, eval_fraction=0.3, locale_root=tmp_path / "loc")
    return out, english


def test_gettext_corpus_dir_with_english_pivot(tmp_path):
    out, english = _gettext_corpus(tmp_path)
    assert detect_layout(out) == "gettext"
    calib, evals = load_parallel(out, "fr", "en"), load_parallel(out, "fr", "en", split="eval")
    assert len(calib) + len(evals) == 40
    assert all(split_of(en, 0.3) == "calib" for _, en in calib) and all(split_of(en, 0.3) == "eval" for _, en in evals)
    assert {en for _, en in calib}.isdisjoint(en for _, en in evals)
    assert load_parallel(out, "en", "fr") == [(e, f) for f, e in calib]
    fr_de = load_parallel(out, "fr", "de", split="dev")  # joined through the shared English msgid
    assert fr_de and all(f.split()[3] == d.split()[2] for f, d in fr_de)
    assert len(fr_de) == sum(1 for e in english[:30] if split_of(e, 0.3) == "calib")
    with pytest.raises(ValueError, match=r"has no Japanese \(ja\); it has: fr, de"):
        load_parallel(out, "ja", "en")
    with pytest.raises(ValueError, match="splits 'calib' and 'eval'"):
        load_parallel(out, "fr", "en", split="train")


def test_hf_dataset_missing_package_is_clear(tmp_path, monkeypatch):
    d = tmp_path / "hf"
    d.mkdir()
    (d / "dataset_info.json").write_text("{}")
    assert detect_layout(d) == "hf"
    monkeypatch.setitem(sys.modules, "datasets", None)  # import fails as if not installed
    with pytest.raises(ImportError, match=r"needs the `datasets` package.*pip install datasets"):
        load_parallel(d, "fr", "en")


def test_hf_dataset_saved_to_disk(tmp_path):
    datasets = pytest.importorskip("datasets")
    pa = pytest.importorskip("pyarrow")
    from datasets.table import InMemoryTable

    def dataset(columns: dict, name: str):
        # An explicit fingerprint skips datasets' dill hashing, which breaks on some dill/pyarrow pairs.
        return datasets.Dataset(InMemoryTable(pa.table(columns)), fingerprint=name)

    datasets.DatasetDict({"dev": dataset({"sentence_eng_Latn": EN, "sentence_fra_Latn": FR}, "dev"),
                          "devtest": dataset({"sentence_eng_Latn": EN[:1], "sentence_fra_Latn": FR[:1]}, "devtest")}
                         ).save_to_disk(str(tmp_path / "flores_hf"))
    assert detect_layout(tmp_path / "flores_hf") == "hf"  # its dev/ folder holds Arrow files, not FLORES text
    assert load_parallel(tmp_path / "flores_hf", "fr", "en") == list(zip(FR, EN))
    assert load_parallel(tmp_path / "flores_hf", "fr", "en", split="eval") == [(FR[0], EN[0])]
    dataset({"translation": [{"en": e, "fr": f} for e, f in zip(EN, FR)]}, "wmt").save_to_disk(str(tmp_path / "wmt"))
    assert load_parallel(tmp_path / "wmt", "en", "fr") == list(zip(EN, FR))
    with pytest.raises(ValueError, match="no 'eval' split"):
        load_parallel(tmp_path / "wmt", "en", "fr", split="eval")


def test_split_sentences():
    text = ("### **Section 1 : Titre**\n\n**Un sous-titre**\n\n---\n"
            "Première phrase du paragraphe. Deuxième phrase ici ! Et une question ?\n"
            "* Un élément de liste avec une phrase complète.\n"
            "Titre sans ponctuation\n"
            "第一句话在这里。第二句话也在这里！")
    assert split_sentences(text) == ["Première phrase du paragraphe.", "Deuxième phrase ici !", "Et une question ?",
                                     "Un élément de liste avec une phrase complète.",
                                     "第一句话在这里。", "第二句话也在这里！"]


def test_mono_readers(tmp_path):
    d = tmp_path / "db" / "fra"
    d.mkdir(parents=True)
    (d / "fra.txt").write_text("Voici le texte demandé, une introduction.\n\nLa première phrase est ici. "
                               "La seconde phrase suit la première.\n", encoding="utf-8")
    assert load_mono(tmp_path / "db", "fr") == ["La première phrase est ici.", "La seconde phrase suit la première."]
    with pytest.raises(FileNotFoundError, match=r"no German text \(deu/deu.txt\).*fra"):
        load_mono(tmp_path / "db", "de")
    txt = tmp_path / "plain.txt"
    txt.write_text("Une phrase simple ici. Une autre phrase simple.\n", encoding="utf-8")
    assert load_mono(txt, "fr") == ["Une phrase simple ici.", "Une autre phrase simple."]
    root = _flores(tmp_path / "flores")
    assert load_mono(root, "zh") == ZH  # the side of a parallel corpus
    out, english = _gettext_corpus(tmp_path)
    assert set(load_mono(out, "en")) == {e for e in english if split_of(e, 0.3) == "calib"}
    assert len(load_mono(out, "de", split="eval")) == sum(split_of(e, 0.3) == "eval" for e in english[:30])
    with pytest.raises(FileNotFoundError, match="monolingual text path does not exist"):
        load_mono(tmp_path / "nope", "fr")
    empty = tmp_path / "empty.txt"
    empty.write_text("Titre\n")
    with pytest.raises(ValueError, match="no sentences"):
        load_mono(empty, "fr")


def test_mono_dataset_build_package():
    try:
        folder = corpora.dataset_build_dir()
    except FileNotFoundError:
        pytest.skip("dataset-build not installed")
    first_line = (folder / "fra/fra.txt").read_text(encoding="utf-8").splitlines()[0]
    sents = load_mono(None, "fr")
    assert len(sents) > 500 and first_line not in sents and not any(s.startswith(("#", "**")) for s in sents)
    assert load_mono("dataset-build", "fra_Latn") == sents
    assert len(load_mono(None, "zh")) > 300


def test_mono_dataset_build_not_installed(monkeypatch):
    monkeypatch.setattr(corpora.importlib_util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install dataset-build"):
        load_mono(None, "fr")


def test_code_readers(tmp_path):
    root = tmp_path / "code"
    for rel, text in [("b.py", "x = 1\n"), ("a/z.py", "def f():\n    return 2\n"), ("a/empty.py", "  \n"),
                      ("site-packages/third.py", "y = 3\n"), ("__pycache__/c.py", "z = 4\n"), ("notes.txt", "no")]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    (root / "latin1.py").write_bytes(b"s = '\xe9'\n")
    listed = [p.relative_to(root).as_posix() for p in corpora.code_files(root)]
    assert listed == ["a/empty.py", "a/z.py", "b.py", "latin1.py"]
    assert load_code(root) == [("a/z.py", "def f():\n    return 2\n"), ("b.py", "x = 1\n")]
    assert load_code(root / "b.py") == [("b.py", "x = 1\n")]
    (tmp_path / "nopy").mkdir()
    with pytest.raises(ValueError, match="code set is empty"):
        load_code(tmp_path / "nopy")
    with pytest.raises(FileNotFoundError, match="code path does not exist"):
        load_code(tmp_path / "missing")


def test_stdlib_code_is_listed_deterministically():
    files = corpora.code_files()
    names = [f.name for f in files]
    assert "os.py" in names and len(files) > 200
    assert not any("site-packages" in f.parts for f in files)
    assert files == corpora.code_files()
