"""SparseGPT pieces: the Hessian accumulation op, the OBS pruning of one matrix (against the
plain-PyTorch version in tests/helpers/naive_sparsegpt.py), the method's options and lifecycle."""

import pytest
import torch
from naive_sparsegpt import obs_prune

from featprune_ext import ops, reference
from featprune_ext.errors import InputError
from featprune_ext.methods import HessianStats, OutlierProtection, SparseGPT, get_method
from featprune_ext.methods.sparsegpt import live_hessian_tensors, sparsegpt_prune_


# -- ops.accumulate_hessian ---------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("h_dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("masked", [False, True])
def test_accumulate_hessian_matches_reference(dtype, h_dtype, masked):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(3, 7, 24, generator=gen).to(dtype)
    mask = torch.rand(3, 7, generator=gen) > 0.3 if masked else None
    h, count = torch.zeros(24, 24, dtype=h_dtype), torch.zeros(1, dtype=torch.int64)
    h_ref, count_ref = torch.zeros(24, 24, dtype=h_dtype), torch.zeros(1, dtype=torch.int64)
    for _ in range(2):  # accumulates
        ops.accumulate_hessian(x, h, count, token_mask=mask)
        reference.accumulate_hessian(x, h_ref, count_ref, token_mask=mask)
    assert int(count) == int(count_ref) == 2 * (int(mask.sum()) if masked else 21)
    # fp32 products summed in another order than the float64 outer products: fp32 rounding
    torch.testing.assert_close(h, h_ref, rtol=1e-5, atol=1e-4)
    assert torch.equal(h, h.t())


@pytest.mark.parametrize("features", [16, 2100])  # 2100: two row chunks of the CPU float64 path
def test_accumulate_hessian_batch_split(features):
    """float64 sums of fp32 batch products: the same bits whichever way the batches are grouped
    (what makes torchrun ranks agree with one process)."""
    xs = [torch.randn(6, features) * (1 + 10 * i) for i in range(4)]
    one, split_a, split_b = (torch.zeros(features, features, dtype=torch.float64) for _ in range(3))
    count = torch.zeros(1, dtype=torch.int64)
    for x in xs:
        ops.accumulate_hessian(x, one, count)
    for x in xs[::2]:
        ops.accumulate_hessian(x, split_a, count)
    for x in xs[1::2]:
        ops.accumulate_hessian(x, split_b, count)
    assert torch.equal(one, split_a + split_b)
    exact = sum(x.double().t() @ x.double() for x in xs)
    torch.testing.assert_close(one, exact, rtol=1e-6, atol=1e-3)


def test_accumulate_hessian_masked_tokens_never_count():
    x = torch.randn(2, 5, 8)
    mask = torch.tensor([[1, 1, 0, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)
    poisoned = x.clone()
    poisoned[~mask] = float("nan")  # padding may hold anything
    h, count = torch.zeros(8, 8), torch.zeros(1, dtype=torch.int64)
    ops.accumulate_hessian(poisoned, h, count, token_mask=mask)
    kept = x[mask]
    torch.testing.assert_close(h, kept.t() @ kept)
    assert int(count) == 3


@pytest.mark.parametrize("kwargs, error", [
    (dict(x=torch.zeros(4, 8, dtype=torch.int32)), TypeError),
    (dict(hessian=torch.zeros(8, 7)), ValueError),
    (dict(hessian=torch.zeros(8, 8, dtype=torch.float16)), TypeError),
    (dict(hessian=torch.zeros(8, 16)[:, ::2]), ValueError),  # not contiguous
    (dict(count=torch.zeros(2, dtype=torch.int64)), ValueError),
    (dict(count=torch.zeros(1, dtype=torch.int32)), TypeError),
    (dict(token_mask=torch.ones(3, dtype=torch.bool)), ValueError),
])
def test_accumulate_hessian_validation(kwargs, error):
    args = dict(x=torch.randn(4, 8), hessian=torch.zeros(8, 8), count=torch.zeros(1, dtype=torch.int64))
    args.update(kwargs)
    before = args["hessian"].clone()
    with pytest.raises(error):
        ops.accumulate_hessian(args["x"], args["hessian"], args["count"], token_mask=args.get("token_mask"))
    assert torch.equal(args["hessian"], before)  # nothing touched


# -- one matrix ------------------------------------------------------------------------------------
def _inputs(tokens=200, features=64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    mix = torch.randn(features, features, generator=gen) / features ** 0.5 + torch.eye(features)
    x = torch.randn(tokens, features, generator=gen) @ mix  # correlated features, like real activations
    x[:, 3] *= 20.0  # an outlier feature
    return x


def _engine_prune(w, x, *, damp=0.01, **kwargs):
    hs = HessianStats(x.shape[1], "cpu", ["m"])
    ops.accumulate_hessian(x, hs.hessian, hs.count)
    factor, dead = hs.inverse_factor(damp)
    pruned = sparsegpt_prune_(w, factor, dead, **kwargs)
    hs.done()
    return pruned


@pytest.mark.parametrize("kwargs", [dict(sparsity=0.5), dict(sparsity=0.3, blocksize=16),
                                    dict(sparsity=0.7, blocksize=24), dict(n=2, m=4), dict(n=2, m=4, blocksize=16),
                                    dict(n=1, m=8, blocksize=32)])
def test_matrix_matches_naive_obs(kwargs):
    x = _inputs()
    w = torch.randn(48, 64, generator=torch.Generator().manual_seed(3))
    expected, mask = obs_prune(w, 2 * x.t() @ x / x.shape[0], **kwargs)
    got = w.clone()
    count = _engine_prune(got, x, **kwargs)
    assert count == int(mask.sum())
    assert torch.equal(got == 0, mask)  # the same entries
    torch.testing.assert_close(got, expected, rtol=0, atol=2e-5)  # fp32, different H rounding
    if kwargs.get("m"):
        groups = (got == 0).reshape(48, -1, kwargs["m"]).sum(dim=-1)
        assert (groups == kwargs["m"] - kwargs["n"]).all()
    else:
        blocksize = kwargs.get("blocksize", 128)
        for c in range(0, 64, blocksize):
            block = mask[:, c:c + blocksize]
            assert int(block.sum()) == reference.pruned_per_row(block.numel(), kwargs["sparsity"])


def test_updates_reduce_the_reconstruction_error():
    """OBS updates of the kept weights: a lower ||X W^T - X W_p^T|| than zeroing the same mask, and
    than Wanda's mask at the same sparsity."""
    x = _inputs(tokens=400)
    w = torch.randn(48, 64, generator=torch.Generator().manual_seed(4))
    got = w.clone()
    _engine_prune(got, x, sparsity=0.5)
    only_mask = w.masked_fill(got == 0, 0)
    wanda = w.clone()
    ops.prune_rows_(wanda, (x.pow(2).mean(dim=0)).sqrt(), sparsity=0.5)

    def err(p):
        return float((x @ (w - p).t()).pow(2).sum())

    assert err(got) < 0.8 * err(only_mask)
    assert err(got) < err(wanda)


def test_transposed_view_and_stored_dtype():
    """A Conv1D weight is pruned through its transposed view; a bf16 weight stays bf16 with exact zeros."""
    x = _inputs()
    w = torch.randn(48, 64)
    stored = w.t().contiguous().to(torch.bfloat16)  # [in, out], as GPT-2 stores it
    expected = w.to(torch.bfloat16).float()
    _engine_prune(expected, x, sparsity=0.5)
    _engine_prune(stored.t(), x, sparsity=0.5)
    assert stored.dtype == torch.bfloat16
    assert torch.equal(stored.t().float(), expected.to(torch.bfloat16).float())


def test_dead_inputs_are_zeroed():
    x = _inputs()
    x[:, 5] = 0  # an input that never fires: H_55 = 0
    w = torch.randn(16, 64)
    _engine_prune(w, x, sparsity=0.25)
    assert (w[:, 5] == 0).all()


def test_not_positive_definite_names_the_option():
    hs = HessianStats(4, "cpu", ["m"])
    hs.hessian.copy_(-torch.eye(4))
    hs.count += 10
    with pytest.raises(RuntimeError, match="--sparsegpt-damp"):
        hs.inverse_factor(0.01, "layer.q_proj")


def test_hessians_are_freed_by_the_last_user():
    before = live_hessian_tensors()
    hs = HessianStats(8, "cpu", ["q", "k"])
    ops.accumulate_hessian(torch.randn(10, 8), hs.hessian, hs.count)
    assert live_hessian_tensors() == before + 1
    hs.inverse_factor(0.01)  # the sum is replaced by the factor
    assert live_hessian_tensors() == before + 1
    hs.done()
    assert live_hessian_tensors() == before + 1  # k still needs it
    hs.done()
    assert live_hessian_tensors() == before


@pytest.mark.parametrize("kwargs", [dict(sparsegpt_damp=0), dict(sparsegpt_damp=-0.1),
                                    dict(sparsegpt_damp=float("nan")), dict(sparsegpt_blocksize=0),
                                    dict(sparsegpt_blocksize=1.5),
                                    dict(protection=OutlierProtection(top_percent=1.0))])
def test_bad_options(kwargs):
    with pytest.raises(InputError):
        get_method("sparsegpt", **kwargs)


def test_blocksize_must_hold_whole_groups():
    with pytest.raises(InputError, match="multiple of M=4"):
        SparseGPT(blocksize=126).check_pattern(2, 4)
    SparseGPT(blocksize=128).check_pattern(2, 4)
    SparseGPT(blocksize=126).check_pattern(0, 0)


def test_describe_holds_the_settings():
    info = get_method("sparsegpt", sparsegpt_damp=0.05, sparsegpt_blocksize=64, base_buckets=["a"]).describe()
    assert info["name"] == "sparsegpt" and info["damp"] == 0.05 and info["blocksize"] == 64
    assert info["base_buckets"] == ["a"]
