"""Every bad call raises a clear ValueError/TypeError naming the argument, and changes nothing."""

from __future__ import annotations

import pytest
import torch

from featprune_ext import ops


@pytest.fixture
def weight():
    return torch.randn(6, 8)


def assert_prune_rejected(w, scale, error, match, **kwargs):
    before = w.clone()
    with pytest.raises(error, match=match):
        ops.prune_rows_(w, scale, **kwargs)
    assert torch.equal(w, before)


def test_weight_not_a_tensor():
    with pytest.raises(TypeError, match="w must be a torch.Tensor"):
        ops.prune_rows_([[1.0]], torch.ones(1), sparsity=0.5)


def test_weight_wrong_dtype():
    assert_prune_rejected(torch.ones(2, 2, dtype=torch.float64), torch.ones(2), TypeError, "w must have dtype",
                          sparsity=0.5)


def test_weight_not_2d():
    assert_prune_rejected(torch.ones(2, 2, 2), torch.ones(2), ValueError, "w must be 2-D", sparsity=0.5)


def test_weight_expanded_view():
    assert_prune_rejected(torch.ones(1, 8).expand(4, 8), torch.ones(8), ValueError, "w is an expanded", sparsity=0.5)


def test_scale_wrong_dtype(weight):
    assert_prune_rejected(weight, torch.ones(8, dtype=torch.float16), TypeError, "col_scale must have dtype",
                          sparsity=0.5)


def test_scale_wrong_shape(weight):
    assert_prune_rejected(weight, torch.ones(7), ValueError, r"col_scale must have shape \(8,\)", sparsity=0.5)


def test_scale_nan(weight):
    scale = torch.ones(8)
    scale[2] = float("nan")
    assert_prune_rejected(weight, scale, ValueError, "col_scale contains NaN", sparsity=0.5)


def test_scale_negative(weight):
    scale = torch.ones(8)
    scale[0] = -1
    assert_prune_rejected(weight, scale, ValueError, "col_scale must be >= 0", sparsity=0.5)


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, "0.5", True])
def test_sparsity_out_of_range(weight, bad):
    assert_prune_rejected(weight, torch.ones(8), ValueError, "sparsity must be a number in", sparsity=bad)


def test_sparsity_missing(weight):
    assert_prune_rejected(weight, torch.ones(8), ValueError, "sparsity is required")


def test_sparsity_and_n_m_together(weight):
    assert_prune_rejected(weight, torch.ones(8), ValueError, "either sparsity", sparsity=0.5, n=2, m=4)


def test_cols_not_multiple_of_m():
    assert_prune_rejected(torch.randn(3, 10), torch.ones(10), ValueError, "not a multiple of m=4", n=2, m=4)


def test_m_above_64():
    # N:M groups are ranked in a small fixed-size buffer (O(m^2), m <= 64): larger m is refused up front
    for m in (65, 128):
        assert_prune_rejected(torch.randn(3, 2 * m), torch.ones(2 * m), ValueError, "m must be at most 64", n=2, m=m)
    ops.prune_rows_(torch.randn(3, 128), torch.ones(128), n=32, m=64)  # 64 itself is fine


def test_n_greater_than_m(weight):
    assert_prune_rejected(weight, torch.ones(8), ValueError, "0 <= n <= m", n=5, m=4)


def test_n_without_m(weight):
    assert_prune_rejected(weight, torch.ones(8), ValueError, "n was given without m", n=2)


def test_k_larger_than_unprotected(weight):
    protect = torch.ones(8, dtype=torch.bool)
    protect[:2] = False
    assert_prune_rejected(weight, torch.ones(8), ValueError, "only 2 of 8 columns are unprotected", sparsity=0.5,
                          protect=protect)


def test_n_m_group_fully_protected(weight):
    protect = torch.zeros(8, dtype=torch.bool)
    protect[:3] = True
    assert_prune_rejected(weight, torch.ones(8), ValueError, "fewer than m - n", n=2, m=4, protect=protect)


def test_protect_wrong_shape(weight):
    assert_prune_rejected(weight, torch.ones(8), ValueError, "protect must have shape", sparsity=0.5,
                          protect=torch.zeros(9, dtype=torch.bool))


def test_protect_wrong_dtype(weight):
    assert_prune_rejected(weight, torch.ones(8), TypeError, "protect must have dtype", sparsity=0.5,
                          protect=torch.zeros(8))


def test_mask_out_wrong_shape(weight):
    assert_prune_rejected(weight, torch.ones(8), ValueError, "mask_out must have shape", sparsity=0.5,
                          mask_out=torch.zeros(6, 9, dtype=torch.bool))


def test_mask_out_wrong_dtype(weight):
    assert_prune_rejected(weight, torch.ones(8), TypeError, "mask_out must have dtype", sparsity=0.5,
                          mask_out=torch.zeros(6, 8))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.cuda
def test_device_mismatch(weight):
    assert_prune_rejected(weight, torch.ones(8, device="cuda"), ValueError, "col_scale is on cuda", sparsity=0.5)


def test_unsupported_device(weight):
    with pytest.raises(ValueError, match="supports cpu and cuda"):  # meta tensors hold no data to compare
        ops.prune_rows_(weight.to("meta"), torch.ones(8, device="meta"), sparsity=0.5)


# accumulate_stats

def stats(features=8, buckets=2):
    return torch.zeros(buckets, features), torch.zeros(buckets, dtype=torch.int64)


def assert_stats_rejected(x, sumsq, count, error, match, **kwargs):
    before = (sumsq.clone(), count.clone())
    with pytest.raises(error, match=match):
        ops.accumulate_stats(x, sumsq, count, **kwargs)
    assert torch.equal(sumsq, before[0]) and torch.equal(count, before[1])


def test_stats_x_wrong_dtype():
    assert_stats_rejected(torch.ones(3, 8, dtype=torch.int32), *stats(), TypeError, "x must have dtype")


def test_stats_feature_mismatch():
    assert_stats_rejected(torch.ones(3, 7), *stats(), ValueError, r"sumsq must have shape \(K, 7\)")


def test_stats_sumsq_wrong_dtype():
    assert_stats_rejected(torch.ones(3, 8), torch.zeros(2, 8, dtype=torch.float16), stats()[1], TypeError,
                          "sumsq must have dtype")


def test_stats_count_wrong_shape():
    assert_stats_rejected(torch.ones(3, 8), stats()[0], torch.zeros(3, dtype=torch.int64), ValueError,
                          r"count must have shape \(2,\)")


def test_stats_count_wrong_dtype():
    assert_stats_rejected(torch.ones(3, 8), stats()[0], torch.zeros(2), TypeError, "count must have dtype")


@pytest.mark.parametrize("bucket", [-1, 2, 1.0, True])
def test_stats_bucket_out_of_range(bucket):
    assert_stats_rejected(torch.ones(3, 8), *stats(), ValueError, "bucket must be an int", bucket=bucket)


def test_stats_mask_wrong_shape():
    assert_stats_rejected(torch.ones(2, 3, 8), *stats(), ValueError, r"token_mask must have shape \(2, 3\)",
                          token_mask=torch.ones(6, dtype=torch.bool))


def test_stats_mask_wrong_dtype():
    assert_stats_rejected(torch.ones(3, 8), *stats(), TypeError, "token_mask must have dtype",
                          token_mask=torch.ones(3))


def test_stats_absmax_wrong_shape():
    assert_stats_rejected(torch.ones(3, 8), *stats(), ValueError, "absmax must have shape",
                          absmax=torch.zeros(1, 8))


def test_stats_non_contiguous_accumulator():
    sumsq = torch.zeros(8, 2).t()
    assert_stats_rejected(torch.ones(3, 8), sumsq, torch.zeros(2, dtype=torch.int64), ValueError,
                          "sumsq must be contiguous")


def test_stats_scalar_x():
    assert_stats_rejected(torch.tensor(1.0), *stats(), ValueError, "at least one dimension")
