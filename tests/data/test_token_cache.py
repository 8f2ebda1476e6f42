"""The token cache returns what the tokenizer returns, loads the tokenizer only on a miss, and
misses whenever anything the tokenizer depends on changed."""

from __future__ import annotations

import json
import shutil

import pytest
from transformers import AutoTokenizer

from featprune_ext.data import token_cache
from featprune_ext.data.token_cache import CachedTokenizer, token_cache_dir, tokenizer_fingerprint

TEXTS = ["French: Bonjour le monde\nEnglish: Hello world", "日本語のテキスト、そして emoji 🙂", " leading space",
         "x" * 3000]


def never_loaded():
    raise AssertionError("the tokenizer was loaded on a cache hit")


def counting_loader(model_dir, calls):
    def load():
        calls.append(1)
        return AutoTokenizer.from_pretrained(model_dir)
    return load


@pytest.fixture
def tok_dir(tiny_tokenizer_dir, tmp_path):
    """A private copy (tests below edit it)."""
    return shutil.copytree(tiny_tokenizer_dir, tmp_path / "tok")


def encode_all(tok):
    return [tok(t)["input_ids"] for t in TEXTS] + [tok(t, add_special_tokens=True)["input_ids"] for t in TEXTS]


def test_hit_returns_the_tokenizers_ids_without_loading_it(tok_dir, tmp_path):
    real = AutoTokenizer.from_pretrained(tok_dir)
    expected = encode_all(real)
    calls = []
    first = CachedTokenizer(tok_dir, counting_loader(tok_dir, calls), tmp_path / "cache")
    assert encode_all(first) == expected and first.eos_token == real.eos_token == "</s>"
    assert first.status == "miss" and calls == [1]  # loaded once for all texts
    first.save()
    again = CachedTokenizer(tok_dir, never_loaded, tmp_path / "cache")
    assert encode_all(again) == expected and again.eos_token == "</s>"
    assert again.status == "hit"
    again.save()  # nothing new: the file is left as it is
    assert len(list((tmp_path / "cache").iterdir())) == 1


def test_new_texts_are_added_to_what_is_cached(tok_dir, tmp_path):
    cache = tmp_path / "cache"
    a = CachedTokenizer(tok_dir, counting_loader(tok_dir, []), cache)
    a(TEXTS[0])
    a.save()
    calls = []
    b = CachedTokenizer(tok_dir, counting_loader(tok_dir, calls), cache)
    b(TEXTS[0])
    assert calls == [] and b.status == "hit"
    b(TEXTS[1])  # a miss: encoded by the verified tokenizer.json, transformers' tokenizer not loaded
    assert calls == [] and b.status == "direct"
    assert b(TEXTS[1])["input_ids"] == AutoTokenizer.from_pretrained(tok_dir)(TEXTS[1])["input_ids"]
    b.save()
    c = CachedTokenizer(tok_dir, never_loaded, cache)
    assert c(TEXTS[0]) and c(TEXTS[1]) and c.status == "hit" and c.eos_token == "</s>"
    c(TEXTS[2])  # the record that allows the direct path survived a save by the direct path
    assert c.status == "direct"


def _cache_file(cache):
    (path,) = cache.iterdir()
    return path


def test_direct_path_needs_the_recorded_pipeline(tok_dir, tmp_path):
    """A recorded pipeline hash that tokenizer.json does not give (or no record) means transformers'
    tokenizer is loaded, whatever the ids would be."""
    cache = tmp_path / "cache"
    first = CachedTokenizer(tok_dir, counting_loader(tok_dir, []), cache)
    first(TEXTS[0])
    first.save()
    data = json.loads(_cache_file(cache).read_text())
    assert len(data["pipeline_sha256"]) == 64 and data["split_special_tokens"] is False
    for edit in (lambda d: d.update(pipeline_sha256="0" * 64), lambda d: d.pop("pipeline_sha256"),
                 lambda d: d.update(split_special_tokens="no")):
        changed = dict(data)
        edit(changed)
        _cache_file(cache).write_text(json.dumps(changed))
        calls = []
        again = CachedTokenizer(tok_dir, counting_loader(tok_dir, calls), cache)
        assert again(TEXTS[1])["input_ids"] == AutoTokenizer.from_pretrained(tok_dir)(TEXTS[1])["input_ids"]
        assert calls == [1] and again.status == "miss"


def test_direct_path_refused_when_transformers_changes_the_pipeline(tok_dir, tmp_path):
    """transformers may build a pipeline other than tokenizer.json's (here: a post-processor adding BOS,
    as tokenizer_config settings do for some families): the recorded hash is then not tokenizer.json's,
    and every miss loads transformers' tokenizer."""
    from tokenizers.processors import TemplateProcessing

    def load(calls=None):
        if calls is not None:
            calls.append(1)
        real = AutoTokenizer.from_pretrained(tok_dir)
        real.backend_tokenizer.post_processor = TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
        return real

    cache = tmp_path / "cache"
    first = CachedTokenizer(tok_dir, load, cache)
    assert first(TEXTS[0])["input_ids"][0] == 1
    first.save()
    calls = []
    again = CachedTokenizer(tok_dir, lambda: load(calls), cache)
    assert again(TEXTS[1])["input_ids"] == load()(TEXTS[1])["input_ids"] and again(TEXTS[1])["input_ids"][0] == 1
    assert calls == [1] and again.status == "miss"


@pytest.mark.parametrize("change", ["edit tokenizer_config.json", "add a file", "library version"])
def test_anything_the_tokenizer_reads_changes_the_fingerprint(tok_dir, monkeypatch, change):
    before = tokenizer_fingerprint(tok_dir)
    if change == "edit tokenizer_config.json":
        cfg = json.loads((tok_dir / "tokenizer_config.json").read_text())
        cfg["model_max_length"] = 7
        (tok_dir / "tokenizer_config.json").write_text(json.dumps(cfg))
    elif change == "add a file":
        (tok_dir / "special_tokens_map.json").write_text('{"eos_token": "<s>"}')
    else:
        real = token_cache._version
        monkeypatch.setattr(token_cache, "_version", lambda n: "0.0.1" if n == "tokenizers" else real(n))
    assert tokenizer_fingerprint(tok_dir) != before


def test_weights_do_not_change_the_fingerprint(tok_dir):
    before = tokenizer_fingerprint(tok_dir)
    (tok_dir / "model.safetensors").write_bytes(b"weights")
    (tok_dir / "featprune.json").write_text("{}")
    assert tokenizer_fingerprint(tok_dir) == before


def test_an_edited_tokenizer_misses_and_gives_its_own_ids(tok_dir, tmp_path):
    cache = tmp_path / "cache"
    first = CachedTokenizer(tok_dir, counting_loader(tok_dir, []), cache)
    first(TEXTS[0])
    first.save()
    cfg = json.loads((tok_dir / "tokenizer_config.json").read_text())
    cfg["add_bos_token"], cfg["bos_token"] = True, "<s>"  # now the same text has other ids (a BOS first)
    (tok_dir / "tokenizer_config.json").write_text(json.dumps(cfg))
    calls = []
    second = CachedTokenizer(tok_dir, counting_loader(tok_dir, calls), cache)
    assert second(TEXTS[0])["input_ids"] == AutoTokenizer.from_pretrained(tok_dir)(TEXTS[0])["input_ids"]
    assert calls == [1]


@pytest.mark.parametrize("content", [b"{not json", b'{"format": 99, "ids": {}}', b"[]", b""])
def test_an_unreadable_cache_file_is_ignored_and_rewritten(tok_dir, tmp_path, content):
    cache = tmp_path / "cache"
    cache.mkdir()
    path = cache / f"{tokenizer_fingerprint(tok_dir)[:32]}.json"
    path.write_bytes(content)
    tok = CachedTokenizer(tok_dir, counting_loader(tok_dir, []), cache)
    assert tok(TEXTS[0])["input_ids"] == AutoTokenizer.from_pretrained(tok_dir)(TEXTS[0])["input_ids"]
    tok.save()
    assert json.loads(path.read_text())["format"] == 1
    assert CachedTokenizer(tok_dir, never_loaded, cache)(TEXTS[0])


def test_an_unwritable_cache_does_not_fail(tok_dir, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder would be")
    tok = CachedTokenizer(tok_dir, counting_loader(tok_dir, []), blocker / "cache")
    assert tok(TEXTS[0])
    tok.save()  # mkdir fails under a file: skipped


def test_cache_folder_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("FEATPRUNE_TOKEN_CACHE", "0")
    assert token_cache_dir() is None
    monkeypatch.setenv("FEATPRUNE_TOKEN_CACHE", str(tmp_path))
    assert token_cache_dir() == tmp_path
    monkeypatch.delenv("FEATPRUNE_TOKEN_CACHE")
    assert token_cache_dir().parts[-3:] == (".cache", "featprune", "tokens")


def test_off_loads_the_tokenizer_and_writes_nothing(tok_dir, tmp_path):
    calls = []
    tok = CachedTokenizer(tok_dir, counting_loader(tok_dir, calls), None)
    assert encode_all(tok) == encode_all(AutoTokenizer.from_pretrained(tok_dir))
    tok.save()
    assert tok.status == "off" and calls == [1]


def test_real_gemma_tokenizer_ids_from_the_cache(gemma3_dir, tmp_path):
    """Gemma 3's 262k-token tokenizer (the one the cache is for): byte-identical ids on a hit."""
    texts = TEXTS + ["Русский текст\nहिन्दी पाठ\n中文文本<eos>", "<start_of_turn>user\nhi<end_of_turn>"]
    real = AutoTokenizer.from_pretrained(gemma3_dir)
    first = CachedTokenizer(gemma3_dir, lambda: real, tmp_path / "cache")
    ids = [first(t)["input_ids"] for t in texts]
    assert ids == [real(t)["input_ids"] for t in texts]
    first.save()
    again = CachedTokenizer(gemma3_dir, never_loaded, tmp_path / "cache")
    assert [again(t)["input_ids"] for t in texts] == ids and again.eos_token == real.eos_token
    more = ["Deutsch: Grüße aus Köln\nEnglish: Greetings", "<bos>twice<bos>", "\t tabs\u00a0and nbsp  ", "٣ أرقام"]
    direct = CachedTokenizer(gemma3_dir, never_loaded, tmp_path / "cache")  # new texts: tokenizer.json directly
    assert [direct(t)["input_ids"] for t in more] == [real(t)["input_ids"] for t in more]
    assert direct.status == "direct"


def test_prune_twice_second_run_hits_with_the_same_output(tiny_model, calib_jsonl, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    import featprune_ext

    monkeypatch.setenv("FEATPRUNE_TOKEN_CACHE", str(tmp_path / "cache"))
    model = tiny_model("llama")
    reports = [featprune_ext.prune(model, tmp_path / f"out{i}", calib_texts=calib_jsonl, nsamples=6, seqlen=32,
                                   sparsity=0.5, progress=False) for i in range(2)]
    assert [r["calibration"]["token_cache"] for r in reports] == ["miss", "hit"]
    assert reports[0]["calibration"]["tokens"] == reports[1]["calibration"]["tokens"]
    names = sorted(p.name for p in (tmp_path / "out0").glob("*.safetensors"))
    for name in names:
        a, b = load_file(tmp_path / "out0" / name), load_file(tmp_path / "out1" / name)
        assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a), name
    monkeypatch.setenv("FEATPRUNE_TOKEN_CACHE", "0")
    off = featprune_ext.prune(model, tmp_path / "out2", calib_texts=calib_jsonl, nsamples=6, seqlen=32,
                              sparsity=0.5, progress=False)
    assert off["calibration"]["token_cache"] == "off"


def test_an_entry_that_is_not_ids_is_not_trusted(tok_dir, tmp_path):
    cache = tmp_path / "cache"
    first = CachedTokenizer(tok_dir, counting_loader(tok_dir, []), cache)
    first(TEXTS[0])
    first.save()
    path = next(cache.iterdir())
    data = json.loads(path.read_text())
    (key,) = data["ids"]
    data["ids"][key] = ["1", 2.0]
    path.write_text(json.dumps(data))
    calls = []
    again = CachedTokenizer(tok_dir, counting_loader(tok_dir, calls), cache)
    assert again(TEXTS[0])["input_ids"] == AutoTokenizer.from_pretrained(tok_dir)(TEXTS[0])["input_ids"]
    assert again.status == "direct"  # encoded again (by the verified tokenizer.json), not read from the entry
