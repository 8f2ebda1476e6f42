"""tokenizer.json editing on hand-made vocabularies: merge closure, merge order, renumbering, families."""

import pytest

from featprune_ext.errors import InputError
from featprune_ext.trim.tokenizer_edit import FAMILY_BYTE_FALLBACK, FAMILY_BYTE_LEVEL, TokenizerVocab, byte_alphabet


def bpe_json(vocab, merges, **model):
    return {"version": "1.0", "added_tokens": [{"id": 0, "content": "<s>", "special": True}],
            "normalizer": None, "pre_tokenizer": None, "decoder": None,
            "post_processor": {"type": "TemplateProcessing", "special_tokens": {"<s>": {"id": "<s>", "ids": [0],
                                                                                          "tokens": ["<s>"]}}},
            "model": {"type": "BPE", "vocab": {t: i for i, t in enumerate(vocab)}, "merges": merges, **model}}


def test_closure_follows_every_merge_path():
    vocab = TokenizerVocab.from_json(bpe_json(
        ["<s>", "a", "b", "c", "d", "ab", "bc", "abc", "cd", "abcd"],
        [["a", "b"], ["b", "c"], ["ab", "c"], ["a", "bc"], ["c", "d"], ["abc", "d"]]))
    ids = {t: i for i, t in enumerate(vocab.tokens)}
    # abcd <- abc + d; abc <- ab + c and a + bc (two paths, both kept); ab <- a + b; bc <- b + c
    want = {ids[t] for t in ("abcd", "abc", "d", "ab", "c", "a", "bc", "b")}
    assert vocab.closure({ids["abcd"]}) == want
    assert vocab.closure({ids["cd"]}) == {ids["cd"], ids["c"], ids["d"]}
    assert vocab.closure({ids["abcd"]}, have={ids["a"], ids["b"]}) == want - {ids["a"], ids["b"]}


def test_trimmed_json_renumbers_in_order_and_keeps_merge_order():
    vocab = TokenizerVocab.from_json(bpe_json(
        ["<s>", "a", "b", "c", "ab", "bc", "abc"], ["a b", "b c", "ab c"]))
    kept = sorted(vocab.closure({0, 6}) - {5})  # drop "bc": the merge "b c" must go, "ab c" stay
    out = vocab.trimmed_json(kept)
    assert out["model"]["vocab"] == {"<s>": 0, "a": 1, "b": 2, "c": 3, "ab": 4, "abc": 5}
    assert out["model"]["merges"] == ["a b", "ab c"]
    assert vocab.data["model"]["merges"] == ["a b", "b c", "ab c"]  # the input is left as it was
    with pytest.raises(AssertionError, match="closure"):
        vocab.trimmed_json([0, 1, 2, 3, 6])  # abc kept without ab


def test_families_and_their_base_tokens():
    table = byte_alphabet()
    alphabet = [table[b] for b in range(256)]
    assert len(set(alphabet)) == 256 and alphabet[ord("A")] == "A" and alphabet[ord(" ")] == "Ġ"
    data = bpe_json(["<s>", *alphabet, "ĠA"], [["Ġ", "A"]])
    data["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [{"type": "ByteLevel"}]}
    v = TokenizerVocab.from_json(data)
    assert v.family == FAMILY_BYTE_LEVEL and v.base_ids == set(range(1, 257))
    fb = TokenizerVocab.from_json(bpe_json(["<s>", "<0x00>", "<0xFF>", "x", "<0xG0>"], [], byte_fallback=True))
    assert fb.family == FAMILY_BYTE_FALLBACK and fb.base_ids == {1, 2}


@pytest.mark.parametrize("kind", ["WordPiece", "WordLevel"])
def test_unsupported_tokenizer_model_is_named(kind):
    with pytest.raises(InputError, match=kind):
        TokenizerVocab.from_json({"model": {"type": kind, "vocab": {}}, "added_tokens": []})
