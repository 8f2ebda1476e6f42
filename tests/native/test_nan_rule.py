"""One NaN rule for accumulate_stats (csrc/include/featprune/kernels.h): NaN propagates.

If any counted x[t, f] is NaN, sumsq[f] and absmax[f] become NaN; a NaN already in
an accumulator stays NaN; padding tokens (token_mask == 0) are never read into
either, NaN or not. Checked for the reference, the CPU kernel (every inner-loop
variant: contiguous fp32/bf16 clones, the generic fp16 loop, the strided loop) and
the CUDA kernels under the host emulation (direct and split-T paths).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from featprune_ext import ops, reference

NAN = float("nan")
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
DTYPE_IDS = ["fp32", "fp16", "bf16"]


def nan_case(tokens: int, features: int, dtype, *, seed: int = 0):
    """x with NaNs in counted tokens (first token, last token, mid-block) and in padding
    tokens only; returns (x, token_mask, features expected NaN)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(tokens, features, generator=g) * 3
    mask = torch.rand(tokens, generator=g) < 0.7
    mask[0] = mask[-1] = True
    padded = int((~mask).nonzero()[0])
    mid = int(mask.nonzero()[len(mask.nonzero()) // 2])
    expect = torch.zeros(features, dtype=torch.bool)
    for t, f in ((0, 0), (tokens - 1, features - 1), (mid, features // 2), (mid, 1)):
        x[t, f] = NAN
        expect[f] = True
    x[padded, 2] = NAN  # padding only: feature 2 must stay finite
    x[mid, 3] = float("inf")  # inf is a value, not NaN: absmax inf, sumsq inf
    x[0, 4] = float("-inf")
    assert not expect[2:5].any()
    return x.to(dtype), mask, expect


def initial(features: int, buckets: int = 2):
    """Accumulators with a NaN already in absmax (feature 5) and sumsq (feature 6) of bucket 1."""
    g = torch.Generator().manual_seed(features)
    sumsq = torch.rand(buckets, features, generator=g) * 10
    absmax = torch.rand(buckets, features, generator=g)
    count = torch.tensor([5, 7])
    absmax[1, 5] = NAN
    sumsq[1, 6] = NAN
    return sumsq, count, absmax


def check_rule(got, want, x, mask, expect):
    sumsq, count, absmax = got
    features = x.shape[1]
    assert torch.equal(count, want[1])
    nan_abs = expect.clone()
    nan_abs[5] = True
    nan_sum = expect.clone()
    nan_sum[6] = True
    assert torch.equal(absmax[1].isnan(), nan_abs), "absmax must be NaN exactly where a counted x is NaN"
    assert torch.equal(sumsq[1].isnan(), nan_sum), "sumsq must be NaN exactly where a counted x is NaN"
    assert absmax[1, 3] == float("inf") and sumsq[1, 3] == float("inf")
    assert absmax[1, 4] == float("inf") and sumsq[1, 4] == float("inf")
    assert torch.equal(absmax[0], want[2][0]) and torch.equal(sumsq[0], want[0][0])  # other bucket untouched
    finite = ~(nan_abs | nan_sum)
    finite[3:5] = False
    assert torch.equal(absmax[1][finite], want[2][1][finite])
    torch.testing.assert_close(sumsq[1][finite], want[0][1][finite], rtol=1e-5, atol=0)
    # the reference follows the same rule
    assert torch.equal(want[2][1].isnan(), nan_abs) and torch.equal(want[0][1].isnan(), nan_sum)
    assert features > 6


def reference_result(x, mask):
    want = initial(x.shape[1])
    reference.accumulate_stats(x, want[0], want[1], token_mask=mask, bucket=1, absmax=want[2])
    return want


# ---- CPU kernel -------------------------------------------------------------------

def _native_cpu_or_skip():
    """(Name kept for history.) The native module must be there: skipping would let the reference
    check itself; tests/native/conftest.py also asserts every ops call reaches the native kernel."""
    info = __import__("featprune_ext").build_info()
    assert info.get("native"), f"native module missing: {info.get('error')}"


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize(("tokens", "features", "layout"), [
    (200, 37, "contiguous"),  # fewer features than one OpenMP chunk
    (150, 3000, "contiguous"),  # several chunks and 1024-feature tiles
    (130, 300, "transposed"),  # the strided loop
], ids=lambda v: str(v))
def test_cpu_kernel_propagates_nan(dtype, tokens, features, layout):
    _native_cpu_or_skip()
    x, mask, expect = nan_case(tokens, features, dtype)
    if layout == "transposed":
        x = x.t().contiguous().t()
    got = initial(features)
    ops.accumulate_stats(x, got[0], got[1], token_mask=mask, bucket=1, absmax=got[2])
    check_rule(got, reference_result(x, mask), x, mask, expect)


def test_cpu_kernel_nan_without_mask_and_all_nan_feature():
    _native_cpu_or_skip()
    x = torch.randn(70, 20)
    x[:, 7] = NAN  # every token
    x[69, 8] = NAN  # the last token of the second 64-token block
    sumsq, count, absmax = torch.zeros(1, 20), torch.zeros(1, dtype=torch.int64), torch.zeros(1, 20)
    ops.accumulate_stats(x, sumsq, count, absmax=absmax)
    assert absmax[0].isnan().nonzero().flatten().tolist() == [7, 8]
    assert sumsq[0].isnan().nonzero().flatten().tolist() == [7, 8]


# ---- CUDA kernels under the emulation -------------------------------------------

def _simlib():
    name = "featprune_cuda_simlib"
    if name not in sys.modules:
        path = Path(__file__).resolve().parents[1] / "cuda_sim" / "simlib.py"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture(scope="module")
def sim():
    simlib = _simlib()
    if simlib.compiler() is None:
        pytest.skip("no C++ compiler (g++ or $CXX): cannot build the CUDA emulation")
    if not simlib.sources():
        pytest.skip(f"no CUDA sources under {simlib.CUDA_DIR}")
    kernels = simlib.load()
    kernels.configure()
    return kernels


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize(("tokens", "features", "layout"), [
    (200, 37, "contiguous"),  # one token split: the direct kernel
    (1100, 70, "contiguous"),  # 5 splits: partials and the finalize kernel
    (600, 40, "transposed"),
], ids=lambda v: str(v))
def test_cuda_kernel_propagates_nan(sim, dtype, tokens, features, layout):
    x, mask, expect = nan_case(tokens, features, dtype, seed=1)
    if layout == "transposed":
        x = x.t().contiguous().t()
    got = initial(features)
    sim.accumulate_stats(x, got[0][1], got[1][1:2], absmax_row=got[2][1], token_mask=mask)
    check_rule(got, reference_result(x, mask), x, mask, expect)
