"""accumulate_stats against the plain-PyTorch reference."""

from __future__ import annotations

import pytest
import torch
from kernel_cases import DTYPE_IDS, DTYPES, devices

from featprune_ext import ops, reference

RTOL = 1e-5  # fp32 sums of the same values in different orders


def fresh(buckets: int, features: int, device: str):
    return (torch.zeros(buckets, features, device=device), torch.zeros(buckets, dtype=torch.int64, device=device),
            torch.zeros(buckets, features, device=device))


def check_against_reference(x, *, token_mask=None, bucket=0, buckets=3):
    features = x.shape[-1]
    got = fresh(buckets, features, x.device)
    want = fresh(buckets, features, x.device)
    ops.accumulate_stats(x, got[0], got[1], token_mask=token_mask, bucket=bucket, absmax=got[2])
    reference.accumulate_stats(x, want[0], want[1], token_mask=token_mask, bucket=bucket, absmax=want[2])
    torch.testing.assert_close(got[0], want[0], rtol=RTOL, atol=1e-6)
    assert torch.equal(got[1], want[1])
    assert torch.equal(got[2], want[2])  # a max is exact
    return got


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("shape", [(1, 1), (5, 7), (3, 100, 769), (2, 513, 130), (4096, 33)],
                         ids=lambda s: "x".join(map(str, s)))
def test_matches_reference(device, dtype, shape):
    x = (torch.randn(shape) * 3).to(dtype).to(device)
    check_against_reference(x, bucket=1)


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_padding_is_skipped(device, dtype):
    x = torch.randn(4, 50, 64).to(dtype).to(device)
    lengths = torch.tensor([50, 31, 1, 0])
    mask = (torch.arange(50)[None, :] < lengths[:, None]).to(device)
    x[~mask] = 1e4  # padding values large enough to show if they leak in
    sumsq, count, absmax = check_against_reference(x, token_mask=mask, bucket=2)
    assert int(count[2]) == 82 and int(count.sum()) == 82
    assert float(absmax.max()) < 1e3


@pytest.mark.parametrize("device", devices())
def test_uint8_mask_equals_bool_mask(device):
    x = torch.randn(6, 40, device=device)
    mask = torch.rand(6, device=device) > 0.5
    a, b = fresh(1, 40, device), fresh(1, 40, device)
    ops.accumulate_stats(x, a[0], a[1], token_mask=mask, absmax=a[2])
    ops.accumulate_stats(x, b[0], b[1], token_mask=mask.to(torch.uint8), absmax=b[2])
    assert all(torch.equal(p, q) for p, q in zip(a, b))


@pytest.mark.parametrize("device", devices())
def test_buckets_accumulate_separately_across_calls(device):
    sumsq, count, absmax = fresh(2, 16, device)
    batches = [torch.randn(10, 16, device=device) for _ in range(4)]
    for i, xb in enumerate(batches):
        ops.accumulate_stats(xb, sumsq, count, bucket=i % 2, absmax=absmax)
    for b in range(2):
        rows = torch.cat(batches[b::2]).float()
        torch.testing.assert_close(sumsq[b], rows.pow(2).sum(0), rtol=RTOL, atol=1e-6)
        assert int(count[b]) == 20
        assert torch.equal(absmax[b], rows.abs().amax(0))


@pytest.mark.parametrize("device", devices())
def test_strided_input(device):
    base = torch.randn(64, 200, device=device)
    check_against_reference(base[::2, 10:170])  # row stride 400
    check_against_reference(base.t()[:100, :50])  # column stride 200


@pytest.mark.parametrize("device", devices())
def test_deterministic(device):
    x = torch.randn(3000, 257, device=device)
    runs = [fresh(1, 257, device) for _ in range(3)]
    for sumsq, count, absmax in runs:
        ops.accumulate_stats(x, sumsq, count, absmax=absmax)
    assert all(torch.equal(runs[0][0], r[0]) for r in runs[1:])


def test_absmax_optional_and_empty_input():
    sumsq, count, _ = fresh(1, 8, "cpu")
    ops.accumulate_stats(torch.zeros(0, 8), sumsq, count)
    assert int(count[0]) == 0 and not sumsq.any()
    ops.accumulate_stats(torch.ones(3, 8), sumsq, count)
    assert torch.equal(sumsq[0], torch.full((8,), 3.0))
