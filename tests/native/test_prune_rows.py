"""prune_rows_ against the plain-PyTorch reference: exact mask equality."""

from __future__ import annotations

import pytest
import torch
from kernel_cases import DTYPE_IDS, DTYPES, devices, make_scale, make_weight

from featprune_ext import ops, reference
from featprune_ext._native import native

# The CPU kernel's paths (FEATPRUNE_CPU_SIMD): AVX-512 and AVX2 where the CPU has them, and the portable one.
CPU_PATHS = pytest.mark.parametrize("simd", ["avx512", "avx2", "0"], ids=["avx512", "avx2", "portable"])


def use_cpu_path(monkeypatch, simd: str) -> None:
    """Select one CPU path for this test; skip when this CPU lacks it (the dispatch would fall back)."""
    monkeypatch.setenv("FEATPRUNE_CPU_SIMD", simd)
    want = {"0": "portable"}.get(simd, simd)
    if native is None or native.build_info()["cpu_prune_path"] != want:
        pytest.skip(f"this CPU (or build) has no {want} path")

SHAPES = [(1, 1), (7, 13), (33, 64), (769, 257), (5, 5125)]
SPARSITIES = [0.0, 0.3, 0.5, 0.9]


def run_and_check(w, scale, **pattern):
    """Prune a copy with the kernel; compare mask, kept values and the count with the reference."""
    expected_mask = reference.prune_mask(w, scale, **{k: v for k, v in pattern.items()})
    out = w.clone()
    mask = torch.zeros(w.shape, dtype=torch.bool, device=w.device)
    zeroed = ops.prune_rows_(out, scale, mask_out=mask, **pattern)
    assert torch.equal(mask, expected_mask)
    assert zeroed == int(expected_mask.sum())
    # kept entries bit-identical, pruned entries exactly +0.0
    assert torch.equal(bits(out), bits(w.masked_fill(expected_mask, 0)))
    return mask


def bits(t: torch.Tensor) -> torch.Tensor:
    """The raw bit patterns, so that -0.0 vs +0.0 and NaN payloads count as differences."""
    return t.contiguous().view({4: torch.int32, 2: torch.int16}[t.element_size()])


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("sparsity", SPARSITIES, ids=lambda s: f"sp{s}")
def test_unstructured_matches_reference(device, dtype, shape, sparsity):
    w = make_weight(*shape, dtype, device)
    scale = make_scale(shape[1], device)
    mask = run_and_check(w, scale, sparsity=sparsity)
    k = ops.pruned_per_row(shape[1], sparsity)
    assert torch.all(mask.sum(dim=1) == k)


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("weights,scales", [("quantized", "random"), ("normal", "zero_cols"),
                                            ("constant", "ones"), ("quantized", "ones")])
@CPU_PATHS
def test_heavy_ties_follow_stable_order(monkeypatch, device, dtype, weights, scales, simd):
    use_cpu_path(monkeypatch, simd)
    w = make_weight(37, 200, dtype, device, kind=weights)
    scale = make_scale(200, device, kind=scales)
    run_and_check(w, scale, sparsity=0.5)


@CPU_PATHS
@pytest.mark.parametrize("cols", [10, 1000])  # 1000: the SIMD paths' sampled bracket
def test_all_equal_scores_prune_the_lowest_columns(monkeypatch, simd, cols):
    # With every score equal, a stable sort keeps the column order: the first k go.
    use_cpu_path(monkeypatch, simd)
    k = cols * 4 // 10
    w = torch.ones(3, cols)
    mask = torch.zeros(3, cols, dtype=torch.bool)
    ops.prune_rows_(w, torch.ones(cols), sparsity=0.4, mask_out=mask)
    assert mask[:, :k].all() and not mask[:, k:].any()
    # a partial tie at the cut: 0.5 everywhere but three smaller entries; the ties go lowest column first
    w = torch.full((2, cols), 0.5)
    w[:, [cols - 1, cols // 2, 3]] = 0.25
    mask.zero_()
    ops.prune_rows_(w, torch.ones(cols), sparsity=0.4, mask_out=mask[:2])
    want = torch.zeros(cols, dtype=torch.bool)
    want[[3, cols // 2, cols - 1]] = True
    want[[c for c in range(cols) if c not in (3, cols // 2, cols - 1)][:k - 3]] = True
    assert torch.equal(mask[:2], want.expand(2, cols))


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("n,m", [(2, 4), (4, 8), (1, 4), (0, 2)], ids=lambda v: str(v))
@pytest.mark.parametrize("weights", ["normal", "quantized"])
def test_n_m_matches_reference(device, dtype, n, m, weights):
    w = make_weight(19, 96, dtype, device, kind=weights)
    scale = make_scale(96, device)
    mask = run_and_check(w, scale, n=n, m=m)
    assert torch.all(mask.view(19, -1, m).sum(dim=2) == m - n)


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_protected_columns_stay_dense_and_k_holds(device, dtype):
    rows, cols = 41, 150
    w = make_weight(rows, cols, dtype, device)
    scale = make_scale(cols, device)
    protect = torch.zeros(cols, dtype=torch.bool, device=device)
    protect[[0, 5, 17, 149]] = True
    protect[60:90] = True
    mask = run_and_check(w, scale, sparsity=0.5, protect=protect)
    assert not mask[:, protect].any()
    assert torch.all(mask.sum(dim=1) == 75)


@pytest.mark.parametrize("device", devices())
def test_protect_with_n_m(device):
    w = make_weight(8, 32, torch.float32, device)
    protect = torch.zeros(32, dtype=torch.bool, device=device)
    protect[::4] = True
    mask = run_and_check(w, make_scale(32, device), n=2, m=4, protect=protect)
    assert not mask[:, protect].any()


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_transposed_view_like_conv1d(device, dtype):
    # GPT-2 Conv1D stores [in, out]; the kernel gets the [out, in] transposed view.
    stored = make_weight(96, 40, dtype, device)  # [in, out]
    original = stored.clone()
    scale = make_scale(96, device)  # one per input feature
    expected = reference.prune_mask(original.t(), scale, sparsity=0.5)
    ops.prune_rows_(stored.t(), scale, sparsity=0.5)
    assert torch.equal(bits(stored), bits(original.masked_fill(expected.t(), 0)))


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_strided_slice_leaves_neighbours_untouched(device, dtype):
    base = make_weight(30, 64, dtype, device)
    original = base.clone()
    view = base[::3, 8:40]  # row stride 192, column stride 1
    scale = make_scale(32, device)
    expected = reference.prune_mask(original[::3, 8:40], scale, sparsity=0.3)
    mask = torch.zeros(64, 30, dtype=torch.uint8, device=device).t()[:10, :32]  # strided mask_out too
    ops.prune_rows_(view, scale, sparsity=0.3, mask_out=mask)
    assert torch.equal(mask.bool(), expected)
    untouched = torch.ones_like(base, dtype=torch.bool)
    untouched[::3, 8:40] = False
    assert torch.equal(base[untouched], original[untouched])


@pytest.mark.parametrize("device", devices())
def test_nan_weights_sort_last(device):
    w = make_weight(4, 20, torch.float32, device)
    w[:, 3] = float("nan")
    run_and_check(w, make_scale(20, device), sparsity=0.9)


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_nan_and_inf_order_known_answer(device, dtype):
    """The documented key order, written out rather than inherited from the reference:
    finite scores ascending, then +inf, then NaN (as torch.sort), then protected columns;
    equal keys (two NaNs) go to the lower column index."""
    nan, inf = float("nan"), float("inf")
    row = [1.0, nan, inf, 0.5, -2.0, nan, -inf, 0.25]  # scores |w|: 1, nan, inf, .5, 2, nan, inf, .25
    w = torch.tensor([row, row], dtype=dtype, device=device)
    ones = torch.ones(8, device=device)
    expected = {  # k -> pruned columns
        3: [0, 3, 7],
        4: [0, 3, 4, 7],
        5: [0, 3, 4, 2, 7],  # +inf before -inf's |.| = +inf: equal keys, lower column first
        6: [0, 2, 3, 4, 6, 7],
        7: [0, 1, 2, 3, 4, 6, 7],  # the first NaN
    }
    for k, cols in expected.items():
        for impl in (ops.prune_rows_, reference.prune_rows_):
            mask = torch.zeros(2, 8, dtype=torch.bool, device=device)
            impl(w.clone(), ones, sparsity=k / 8, mask_out=mask)
            want = torch.zeros(8, dtype=torch.bool, device=device)
            want[sorted(cols)] = True
            assert torch.equal(mask, want.expand(2, 8)), (impl.__module__, k, mask[0].nonzero().flatten().tolist())
    # protected columns come after NaN: protecting the 0.25 and 0.5 columns moves the cut up the order
    protect = torch.zeros(8, dtype=torch.bool, device=device)
    protect[[3, 7]] = True
    for impl in (ops.prune_rows_, reference.prune_rows_):
        mask = torch.zeros(2, 8, dtype=torch.bool, device=device)
        impl(w.clone(), ones, sparsity=6 / 8, protect=protect, mask_out=mask)
        assert mask[0].nonzero().flatten().tolist() == [0, 1, 2, 4, 5, 6], impl.__module__


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("shape", [(4096, 4096), (512, 11008), (1024, 5125)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_llm_shapes(device, shape):
    w = make_weight(*shape, torch.bfloat16, device)
    run_and_check(w, make_scale(shape[1], device), sparsity=0.5)


@pytest.mark.parametrize("device", devices())
def test_wide_rows_beyond_shared_memory(device):
    # 65536 fp32 keys do not fit in one CUDA block's shared memory: the fallback path.
    w = make_weight(3, 65536, torch.float16, device, kind="quantized")
    run_and_check(w, make_scale(65536, device), sparsity=0.7)


def test_mask_out_uint8_and_bool_agree():
    w = make_weight(9, 31, torch.float32, "cpu")
    s = make_scale(31, "cpu")
    m_bool = torch.zeros(9, 31, dtype=torch.bool)
    m_u8 = torch.full((9, 31), 7, dtype=torch.uint8)  # stale values must be overwritten
    ops.prune_rows_(w.clone(), s, sparsity=0.5, mask_out=m_bool)
    ops.prune_rows_(w.clone(), s, sparsity=0.5, mask_out=m_u8)
    assert torch.equal(m_u8, m_bool.to(torch.uint8))


def test_returns_number_zeroed():
    w = make_weight(10, 100, torch.float32, "cpu")
    assert ops.prune_rows_(w, torch.ones(100), sparsity=0.25) == 250
    assert ops.prune_rows_(make_weight(10, 100, torch.float32, "cpu"), torch.ones(100), n=2, m=4) == 500


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("weights", ["normal", "quantized", "constant"])
def test_cuda_recompute_path_without_key_cache(monkeypatch, dtype, weights):
    # Rows normally fit the shared-memory key cache; 0 bytes forces the recompute-from-L2 path.
    monkeypatch.setenv("FEATPRUNE_CUDA_KEY_CACHE_BYTES", "0")
    w = make_weight(33, 769, dtype, "cuda", kind=weights)
    protect = torch.zeros(769, dtype=torch.bool, device="cuda")
    protect[::7] = True
    run_and_check(w, make_scale(769, "cuda"), sparsity=0.5, protect=protect)


# The CPU kernel has AVX-512 and AVX2 paths (N:M with m in {1, 2, 4, 8} on contiguous rows;
# predicted or sampled bracket + radix select for unstructured rows; AVX-512 takes contiguous rows,
# strided ones go to AVX2) and the portable path (FEATPRUNE_CPU_SIMD=0). All must match the reference
# bit for bit; these cases reach each branch of the SIMD paths: vector tails (16- and 8-lane), the
# sampled bracket (>= 512 columns), open-ended brackets, all-equal candidates, tie cuts, NaN/inf,
# protected columns, -0.0 scales, strided views, and every rank cut of groups of 2 and 4.
CPU_PATH_CASES = {
    "50%-sampled": dict(shape=(33, 1000), kind="normal", pattern=dict(sparsity=0.5)),
    "odd-rows-cols": dict(shape=(13, 5125), kind="normal", pattern=dict(sparsity=0.3)),
    "ties-90%": dict(shape=(17, 4100), kind="quantized", pattern=dict(sparsity=0.9)),
    "ties-constant": dict(shape=(5, 1024), kind="constant", pattern=dict(sparsity=0.5)),
    "edge-0.001": dict(shape=(9, 2048), kind="normal", pattern=dict(sparsity=0.001)),
    "edge-0.999": dict(shape=(9, 2048), kind="normal", pattern=dict(sparsity=0.999)),
    "zero-cols": dict(shape=(11, 1536), kind="normal", pattern=dict(sparsity=0.5), scale="zero_cols"),
    "nan-inf-protect": dict(shape=(7, 777), kind="nan", pattern=dict(sparsity=0.5), protect=True),
    "transposed": dict(shape=(21, 600), kind="normal", pattern=dict(sparsity=0.5), transposed=True),
    "2:4-tail": dict(shape=(9, 2052), kind="normal", pattern=dict(n=2, m=4)),
    "2:4-ties-protect": dict(shape=(7, 268), kind="quantized", pattern=dict(n=2, m=4), protect=True),
    "1:4-ties-protect": dict(shape=(5, 264), kind="quantized", pattern=dict(n=1, m=4), protect=True),
    "3:4-ties": dict(shape=(5, 260), kind="quantized", pattern=dict(n=3, m=4)),
    "0:4": dict(shape=(3, 72), kind="quantized", pattern=dict(n=0, m=4)),
    "4:4-protect": dict(shape=(3, 72), kind="normal", pattern=dict(n=4, m=4), protect=True),
    "1:2-ties-protect": dict(shape=(5, 130), kind="quantized", pattern=dict(n=1, m=2), protect=True),
    "2:4-ties": dict(shape=(9, 260), kind="quantized", pattern=dict(n=2, m=4)),
    "4:8": dict(shape=(7, 2048), kind="normal", pattern=dict(n=4, m=8)),
    "4:8-ties-protect": dict(shape=(7, 264), kind="quantized", pattern=dict(n=4, m=8), protect=True),
    "1:2": dict(shape=(5, 98), kind="normal", pattern=dict(n=1, m=2)),
    "0:1": dict(shape=(3, 40), kind="normal", pattern=dict(n=0, m=1)),
    "5:16-portable": dict(shape=(5, 64), kind="normal", pattern=dict(n=5, m=16)),
    "2:4-nan": dict(shape=(6, 100), kind="nan", pattern=dict(n=2, m=4)),
    "2:4-transposed": dict(shape=(10, 64), kind="normal", pattern=dict(n=2, m=4), transposed=True),
}


@CPU_PATHS
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("case", list(CPU_PATH_CASES), ids=str)
def test_cpu_paths_match_reference(monkeypatch, simd, dtype, case):
    use_cpu_path(monkeypatch, simd)
    spec = CPU_PATH_CASES[case]
    rows, cols = spec["shape"]
    g = torch.Generator().manual_seed(rows * cols)
    if spec["kind"] == "nan":
        w = torch.randn(rows, cols, generator=g)
        w[torch.rand(rows, cols, generator=g) < 0.15] = float("nan")
        w[torch.rand(rows, cols, generator=g) < 0.05] = float("inf")
        w = w.to(dtype)
    else:
        w = make_weight(rows, cols, dtype, "cpu", kind=spec["kind"])
    if spec.get("transposed"):
        w = w.t().contiguous().t()  # same values, column stride = rows
    scale = make_scale(cols, "cpu", kind=spec.get("scale", "random"))
    scale[1::5] = -0.0  # |w| * -0.0 = -0.0 must key like +0.0
    pattern = dict(spec["pattern"])
    if spec.get("protect"):
        protect = torch.zeros(cols, dtype=torch.bool)
        protect[::8] = True  # one per group of 8 at most
        pattern["protect"] = protect
    run_and_check(w, scale, **pattern)


def _rows_that_break_the_prediction(rows: int, cols: int, g: torch.Generator) -> torch.Tensor:
    """Steady rows (the AVX2 path then predicts each threshold from the previous rows' threshold /
    mean-score ratio), interrupted by rows unlike them, each of which makes the predicted bracket miss:
    heavy tails, most weights exactly zero (threshold 0, ratio 0), a constant row, a row of huge
    values (mean score overflows to inf), and steady rows again after each."""
    w = torch.randn(rows, cols, generator=g)
    w[10] = w[10] ** 5  # heavy tails: the threshold sits far below ratio x mean
    w[14, : cols * 3 // 4] = 0.0  # the k-th key is 0
    w[20] = 0.25  # every key equal
    w[26] = w[26] * 3e38  # mean score inf (fp32) or inf weights (16-bit)
    w[31] = w[31].abs() + 5.0  # a narrow distribution: the threshold sits above ratio x mean
    return w


@CPU_PATHS
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("sparsity", [0.5, 0.3, 0.9])
def test_predicted_bracket_hits_and_misses(monkeypatch, simd, dtype, sparsity):
    use_cpu_path(monkeypatch, simd)
    g = torch.Generator().manual_seed(7)
    w = _rows_that_break_the_prediction(48, 1537, g).to(dtype)
    scale = make_scale(1537, "cpu", kind="random")
    run_and_check(w, scale, sparsity=sparsity)  # rows 10-20 follow steady rows whatever the thread count


def test_cpu_path_follows_the_environment(monkeypatch):
    if native is None:
        pytest.skip("no native module")
    monkeypatch.setenv("FEATPRUNE_CPU_SIMD", "0")
    assert native.build_info()["cpu_prune_path"] == "portable"
    monkeypatch.setenv("FEATPRUNE_CPU_SIMD", "avx2")
    assert native.build_info()["cpu_prune_path"] in ("avx2", "portable")  # portable: a CPU without AVX2
    monkeypatch.delenv("FEATPRUNE_CPU_SIMD")
    best = native.build_info()["cpu_prune_path"]
    assert best in ("avx512", "avx2", "portable")
    monkeypatch.setenv("FEATPRUNE_CPU_SIMD", "avx512")  # asks for the best, like unset
    assert native.build_info()["cpu_prune_path"] == best
