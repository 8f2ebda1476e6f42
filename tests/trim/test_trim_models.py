"""`trim` end to end on tiny models of the three tokenizer families, tied and untied.

Oracles: the original model and tokenizer, loaded with stock transformers. A trimmed model must give
the original's pieces on kept-script text, the original's logits (bit for bit, fp32, CPU) at the kept
ids, round-trip every string, and hold every other tensor byte for byte.
"""

import hashlib
import json
import random
import shutil

import pytest
import torch
from safetensors import safe_open
from tiny_tokenizers import LATIN_TEXTS, TEXTS
from transformers import AutoModelForCausalLM, AutoTokenizer

from featprune_ext.trim import trim
from featprune_ext.trim.tokenizer_edit import TokenizerVocab

CASES = [("byte_level", True, "llama"), ("byte_level", False, "llama"), ("byte_fallback", True, "gemma3"),
         ("byte_fallback", False, "llama"), ("unigram", True, "llama"), ("unigram", False, "gemma3")]


def random_strings(n=40, seed=0):
    """Strings mixing many scripts, emoji, combining marks, digits, punctuation and odd spaces."""
    pools = ["abcxyzÑñáéíóúü", "打印机纸文件中国", "プリンターのファイル", "Соединение", "الطابعة", "😀🚀👍🏽",
             "e\u0301\u0308", "0123456789", ".,;:!?¿¡—“”…%€$", "  \t\n", "ελληνικά", "한국어"]
    rng = random.Random(seed)
    return ["".join(rng.choice(rng.choice(pools)) for _ in range(rng.randint(1, 30))) for _ in range(n)]


def tensors_of(model_dir):
    with safe_open(str(model_dir / "model.safetensors"), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def dir_digest(path):
    h = hashlib.sha256()
    for f in sorted(path.iterdir()):
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()


@pytest.mark.parametrize("family,tied,arch", CASES, ids=[f"{f}-{'tied' if t else 'untied'}-{a}" for f, t, a in CASES])
def test_scripts_trim_is_lossless(vocab_model, tmp_path, family, tied, arch):
    src = vocab_model(family, tied, arch)
    digest = dir_digest(src)
    out = tmp_path / "out"
    report = trim(src, out, langs="es,en", progress=False)
    assert dir_digest(src) == digest  # the input is never modified
    assert not (tmp_path / "out.partial").exists() and not (tmp_path / "out.lock").exists()

    ta, tb = AutoTokenizer.from_pretrained(src), AutoTokenizer.from_pretrained(out)
    id_map = json.loads((out / "featprune_id_map.json").read_text())["old_to_new"]
    kept = [i for i, n in enumerate(id_map) if n >= 0]
    assert [id_map[i] for i in kept] == list(range(len(kept)))  # renumbered in the original order
    assert len(tb) == len(kept) == report["trim"]["kept_tokens"] < len(ta)
    map_bytes = (out / "featprune_id_map.json").read_bytes()
    assert report["trim"]["id_map"]["sha256"] == hashlib.sha256(map_bytes).hexdigest()
    assert report["trim"]["kept_by_reason"]["closure"] == 0  # parts of script tokens are substrings of them

    # the same pieces, and the same logits at the kept ids, on text in the kept scripts
    ma = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32).eval()
    mb = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    assert mb.config.vocab_size == len(kept) and mb.get_input_embeddings().weight.shape[0] == len(kept)
    for text in LATIN_TEXTS:
        ia, ib = ta(text)["input_ids"], tb(text)["input_ids"]
        assert [id_map[i] for i in ia] == ib, text
        assert ta.convert_ids_to_tokens(ia) == tb.convert_ids_to_tokens(ib)
        with torch.no_grad():
            la = ma(torch.tensor([ia])).logits[0]
            lb = mb(torch.tensor([ib])).logits[0]
        assert torch.equal(la[:, kept], lb)

    # every string round-trips, kept languages or not, with no unknown token the original did not have
    for text in TEXTS + random_strings():
        ia, ib = ta(text)["input_ids"], tb(text)["input_ids"]
        da, db = ta.decode(ia, skip_special_tokens=True), tb.decode(ib, skip_special_tokens=True)
        assert db == da, text
        if family != "unigram":  # a unigram model maps characters it never saw to <unk>
            assert db == text
        if ta.unk_token_id is None or ta.unk_token_id not in ia:
            assert tb.unk_token_id is None or tb.unk_token_id not in ib, text

    # every other tensor byte for byte; the vocabulary tensors are the kept rows
    before, after = tensors_of(src), tensors_of(out)
    assert before.keys() == after.keys()
    vocab_names = set(report["model"]["vocab_tensors"])
    assert ("lm_head.weight" in vocab_names) == (not tied)
    for name, t in before.items():
        if name in vocab_names:
            assert torch.equal(after[name], t[kept]), name
        else:
            assert after[name].dtype == t.dtype and torch.equal(after[name].view(torch.uint8), t.view(torch.uint8))


def test_every_config_field_naming_a_token_is_remapped(vocab_model, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(vocab_model("byte_fallback", False, "llama"), src)
    vocab = TokenizerVocab.from_json(json.loads((src / "tokenizer.json").read_text()))
    han = [i for i, t in enumerate(vocab.tokens) if t and any("\u4e00" <= c <= "\u9fff" for c in t)]
    cfg = json.loads((src / "config.json").read_text())
    cfg.update(sep_token_id=han[0], eos_token_id=[cfg["eos_token_id"], han[1]], decoder_start_token_id=None)
    (src / "config.json").write_text(json.dumps(cfg))
    gen = json.loads((src / "generation_config.json").read_text())
    gen.update(suppress_tokens=[han[2]], eos_token_id=[gen["eos_token_id"], han[1]])
    (src / "generation_config.json").write_text(json.dumps(gen))
    tcfg = json.loads((src / "tokenizer_config.json").read_text())
    tcfg["added_tokens_decoder"] = {str(vocab.tokens.index(s)): {"content": s, "special": True}
                                    for s in ("<pad>", "<s>", "</s>", "<unk>")}
    (src / "tokenizer_config.json").write_text(json.dumps(tcfg))

    out = tmp_path / "out"
    report = trim(src, out, langs="es,en", progress=False)
    assert report["trim"]["kept_by_reason"]["config_ids"] == 3  # the three Han tokens stay, named by the configs
    new_vocab = TokenizerVocab.from_json(json.loads((out / "tokenizer.json").read_text()))
    old_tok, new_tok = vocab.tokens, new_vocab.tokens
    c2 = json.loads((out / "config.json").read_text())
    g2 = json.loads((out / "generation_config.json").read_text())
    t2 = json.loads((out / "tokenizer_config.json").read_text())
    assert c2["vocab_size"] == len(new_tok) == report["trim"]["kept_tokens"]
    assert new_tok[c2["sep_token_id"]] == old_tok[han[0]]
    for field in ("bos_token_id", "pad_token_id"):
        assert new_tok[c2[field]] == old_tok[cfg[field]] and new_tok[g2[field]] == old_tok[gen[field]]
    assert [new_tok[i] for i in c2["eos_token_id"]] == [old_tok[i] for i in cfg["eos_token_id"]]
    assert [new_tok[i] for i in g2["eos_token_id"]] == [old_tok[i] for i in gen["eos_token_id"]]
    assert [new_tok[i] for i in g2["suppress_tokens"]] == [old_tok[han[2]]]
    assert c2["decoder_start_token_id"] is None
    assert {new_tok[int(k)]: v["content"] for k, v in t2["added_tokens_decoder"].items()} == \
        {s: s for s in ("<pad>", "<s>", "</s>", "<unk>")}
    # the post-processor's template inserts the renumbered <s>
    tb = AutoTokenizer.from_pretrained(out)
    assert tb.convert_ids_to_tokens(tb("hola")["input_ids"])[0] == "<s>"


def test_sharded_checkpoint_keeps_its_layout(tmp_path):
    from tiny_tokenizers import build_model
    from transformers import AutoModelForCausalLM as Auto

    src = tmp_path / "src"
    build_model("byte_level", src, tied=False)
    model = Auto.from_pretrained(src, dtype=torch.float32)
    sharded = tmp_path / "sharded"
    model.save_pretrained(sharded, max_shard_size="40KB")
    for f in src.iterdir():
        if not f.name.endswith(".safetensors") and f.name != "config.json":
            shutil.copyfile(f, sharded / f.name)
    out = tmp_path / "out"
    trim(sharded, out, langs="es,en", progress=False)
    shards = sorted(p.name for p in sharded.glob("*.safetensors"))
    assert len(shards) > 1 and sorted(p.name for p in out.glob("*.safetensors")) == shards
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert index["weight_map"] == json.loads((sharded / "model.safetensors.index.json").read_text())["weight_map"]
    trimmed = Auto.from_pretrained(out, dtype=torch.float32)
    assert trimmed.lm_head.weight.shape[0] == trimmed.config.vocab_size < model.config.vocab_size
