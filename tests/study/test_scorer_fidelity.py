"""Fidelity of the scorer to what the model saw in training, and generation that stops at the answer."""

import types

import torch
from tiny_models import build_tiny_model

from featprune_ext.study.scorer import Scorer


class _Tok:
    """A stand-in tokenizer: `prefix` special tokens before the text, `suffix` after it."""

    def __init__(self, prefix, suffix=(), bos=0, eos=2):
        self.prefix, self.suffix, self.bos_token_id, self.eos_token_id = list(prefix), list(suffix), bos, eos

    def __call__(self, text, add_special_tokens=True):
        ids = [50 + ord(c) for c in text]
        return {"input_ids": (self.prefix + ids + self.suffix) if add_special_tokens else ids}


def _start(tok):
    fake = types.SimpleNamespace(tok=tok)
    return Scorer._start_token(fake, tok("a")["input_ids"])


def test_start_token_is_what_the_tokenizer_prepends():
    assert _start(_Tok(prefix=[2], bos=0, eos=2)) == 2  # XGLM: </s> before every text, although BOS is <s>
    assert _start(_Tok(prefix=[1], bos=1, eos=2)) == 1  # Llama: <s>
    assert _start(_Tok(prefix=[], suffix=[2], bos=None, eos=2)) == 2  # nothing before: EOS
    assert _start(_Tok(prefix=[], bos=7, eos=2)) == 7  # nothing added: BOS


def test_generation_stops_at_the_first_newline(tiny_tokenizer_dir, tmp_path):
    """A model that always predicts the newline token must take one decoding step, not max_new_tokens."""
    model_dir = build_tiny_model("llama", tmp_path / "m", tokenizer_dir=tiny_tokenizer_dir)
    scorer = Scorer(model_dir, device="cpu", progress=False)
    newline = scorer.tok("\n", add_special_tokens=False)["input_ids"]
    assert len(newline) == 1
    def newline_wins(module, args, logits):
        forced = torch.full_like(logits, -1e4)
        forced[..., newline[0]] = 0.0
        return forced

    steps = {"n": 0}
    hooks = [scorer.model.get_output_embeddings().register_forward_hook(newline_wins),
             scorer.model.register_forward_hook(lambda *_: steps.__setitem__("n", steps["n"] + 1))]
    try:
        out = scorer.generate(["English: Open the file.\nFrench:", "English: Print.\nFrench:"], max_new_tokens=32)
    finally:
        for hook in hooks:
            hook.remove()
    assert out == ["", ""]
    assert steps["n"] <= 2, f"{steps['n']} forward passes: generation did not stop at the newline"


def test_generation_batching_does_not_change_the_output(tiny_tokenizer_dir, tmp_path):
    """Generation groups prompts by its own token budget (large: decoding steps are memory-bound);
    one prompt per batch and all prompts in one batch (left padding) give the same greedy text."""
    model_dir = build_tiny_model("llama", tmp_path / "m", tokenizer_dir=tiny_tokenizer_dir)
    prompts = ["English: Open the file.\nFrench:", "English: Print.\nFrench:", "English: Save it now, please.\nFrench:"]
    together = Scorer(model_dir, device="cpu", progress=False, batch_tokens=32)
    alone = Scorer(model_dir, device="cpu", progress=False, generate_batch_tokens=1)
    lengths = [len(together._ids(p, True)) + 8 for p in prompts]
    assert len(together._batches(lengths, together.generate_batch_tokens)) == 1
    assert len(alone._batches(lengths, alone.generate_batch_tokens)) == len(prompts)
    assert len(together._batches(lengths)) > 1  # scoring keeps its own (small) budget
    calls = {"together": 0, "alone": 0}
    for name, sc in (("together", together), ("alone", alone)):
        inner = sc.model.generate
        sc.model.generate = lambda *a, _n=name, _g=inner, **k: (calls.__setitem__(_n, calls[_n] + 1), _g(*a, **k))[1]
    out = together.generate(prompts, max_new_tokens=8)
    assert out == alone.generate(prompts, max_new_tokens=8)
    assert calls == {"together": 1, "alone": len(prompts)}, calls
    assert any(out), "the tiny model generated nothing: the comparison would be vacuous"
