"""The CUDA kernels (csrc/cuda/*.cu) on the CPU, under the host emulation of tests/cuda_sim/.

The .cu files are compiled by g++ against cuda_sim.h (no nvcc, no GPU) and called
through ctypes with CPU tensors as device memory. Masks and pruned weights must
equal featprune_ext.reference bit for bit; count and absmax exactly; sumsq within
a stated rounding bound (exactly, for inputs whose sums are exact in fp32).
The emulation checks barrier use (see cuda_sim.h), and some cases rerun with the
threads of each block scheduled in reverse / shuffled order and with one or two
workers: a missing barrier would make those results differ.
Skipped only when no C++ compiler exists; a compile error is a failure.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest
import torch

from featprune_ext import reference

_SIMLIB = Path(__file__).resolve().parents[1] / "cuda_sim" / "simlib.py"


def _import_simlib():
    name = "featprune_cuda_simlib"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, _SIMLIB)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


simlib = _import_simlib()

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
DTYPE_IDS = ["fp32", "fp16", "bf16"]
INT_VIEW = {torch.float32: torch.int32, torch.float16: torch.int16, torch.bfloat16: torch.int16}
KEY_CACHE_LIMIT = 64 * 1024  # kDefaultKeyCacheBytes in prune_rows.cu: rows above 16384 columns recompute keys


@pytest.fixture(scope="module")
def sim():
    if simlib.compiler() is None:
        pytest.skip("no C++ compiler (g++ or $CXX): cannot build the CUDA emulation")
    if not simlib.sources():
        pytest.skip(f"no CUDA sources under {simlib.CUDA_DIR}")
    kernels = simlib.load()  # SimBuildError (a compile error) fails the tests
    kernels.configure()
    kernels.take_launches()
    yield kernels
    kernels.configure()


@pytest.fixture(autouse=True)
def _fresh_launch_record(sim):
    sim.take_launches()  # each test sees only its own launches


# ---- builders ---------------------------------------------------------------

def weights(rows, cols, dtype, *, kind="normal", seed=0):
    g = torch.Generator().manual_seed(seed)
    if kind == "normal":
        w = torch.randn(rows, cols, generator=g)
    elif kind == "quantized":  # 7 distinct values: heavy ties
        w = torch.randint(-3, 4, (rows, cols), generator=g).float() * 0.25
    elif kind == "constant":  # every score of a row equal
        w = torch.full((rows, cols), 0.5)
    elif kind == "nan":  # NaN, +-inf, -0.0 sprinkled over normal values
        w = torch.randn(rows, cols, generator=g)
        pick = torch.rand(rows, cols, generator=g)
        w[pick < 0.10] = float("nan")
        w[(pick >= 0.10) & (pick < 0.13)] = float("inf")
        w[(pick >= 0.13) & (pick < 0.16)] = float("-inf")
        w[(pick >= 0.16) & (pick < 0.20)] = -0.0
    else:
        raise ValueError(kind)
    return w.to(dtype)


def scales(cols, *, kind="random", seed=1):
    g = torch.Generator().manual_seed(seed)
    s = torch.rand(cols, generator=g) * 4
    if kind == "zero_cols":  # zero scores tie; inf * 0 is a NaN score
        s[::3] = 0.0
    elif kind == "ones":
        s = torch.ones(cols)
    return s


def layout(w, how):
    """A view of a fresh buffer holding w's values with the given strides; also
    returns the buffer, whose entries outside the view must stay untouched."""
    rows, cols = w.shape
    if how == "contiguous":
        buf = w.clone()
        return buf, buf
    if how == "padded":  # row stride > cols, 16-byte aligned rows: the vector path with a tail
        buf = torch.full((rows, cols + 24), 7.0, dtype=w.dtype)
        view = buf[:, :cols]
    elif how == "offset":  # starts one element in: misaligned, the scalar path
        buf = torch.full((rows, cols + 1), 7.0, dtype=w.dtype)
        view = buf[:, 1:]
    elif how == "transposed":  # column stride = rows (GPT-2 Conv1D weights)
        buf = torch.full((cols, rows), 7.0, dtype=w.dtype)
        view = buf.t()
    else:
        raise ValueError(how)
    view.copy_(w)
    return buf, view


def bits(t):
    return t.view(INT_VIEW[t.dtype]) if t.dtype in INT_VIEW else t


def check_prune(sim, w, scale, *, k=None, n=0, m=0, protect=None, how="contiguous", mask_how="bool"):
    """Runs the emulated kernel on a copy of w laid out as `how`; asserts the mask
    and the weights equal the reference's bit for bit. Returns the mask."""
    rows, cols = w.shape
    sparsity = None if m else k / cols
    if not m:
        assert reference.pruned_per_row(cols, sparsity) == k
    want_mask = reference.prune_mask(w, scale, sparsity=sparsity, n=n, m=m, protect=protect)
    want_w = w.clone().masked_fill_(want_mask, 0)
    buf, view = layout(w, how)
    before = buf.clone()
    if mask_how == "bool":
        mask = torch.zeros(rows, cols, dtype=torch.bool)
    elif mask_how == "u8_transposed":  # a strided mask, prefilled with garbage
        mask = torch.full((cols, rows), 9, dtype=torch.uint8).t()
    else:
        mask = None
    sim.prune_rows_(view, scale, k=0 if m else k, n=n, m=m, protect=protect, mask_out=mask)
    if mask is not None:
        assert torch.equal(mask.bool(), want_mask), "mask differs from the reference"
        assert int(mask.max()) <= 1
    assert torch.equal(bits(view), bits(want_w)), "pruned weights differ from the reference"
    inside = torch.zeros(buf.numel(), dtype=torch.bool)
    inside.as_strided(view.shape, view.stride(), view.storage_offset()).fill_(True)
    outside = ~inside.view(buf.shape)
    assert torch.equal(bits(buf)[outside], bits(before)[outside]), "wrote outside the view"
    return want_mask


def prune_launch(sim):
    launches = [launch for launch in sim.take_launches() if launch.name != "zero_mask_kernel"]
    assert len(launches) == 1, launches
    return launches[0]


# ---- prune_rows: unstructured -----------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize(("rows", "cols", "k"), [(7, 769, 384), (3, 5125, 1896), (1, 64, 57), (5, 33, 9),
                                                 (6, 1000, 500), (2, 9000, 5400)],
                         ids=lambda v: str(v))
def test_unstructured_matches_reference(sim, dtype, rows, cols, k):
    check_prune(sim, weights(rows, cols, dtype), scales(cols), k=k)
    launch = prune_launch(sim)
    assert launch.block[0] == (512 if cols > 8192 else 256)
    assert launch.smem == cols * 4  # keys cached in shared memory
    assert launch.grid == (rows, 1, 1)


@pytest.mark.parametrize("how", ["padded", "offset", "transposed"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_unstructured_strided_views(sim, dtype, how):
    check_prune(sim, weights(5, 1001, dtype, seed=3), scales(1001), k=700, how=how, mask_how="u8_transposed")


@pytest.mark.parametrize("path", ["cached", "recompute"])
@pytest.mark.parametrize(("kind", "scale_kind", "dtype", "rows", "cols", "k", "how"), [
    ("normal", "random", torch.bfloat16, 7, 769, 500, "contiguous"),
    ("quantized", "random", torch.float16, 4, 2051, 1000, "contiguous"),
    ("quantized", "ones", torch.float32, 3, 1536, 700, "padded"),
    ("constant", "ones", torch.float16, 3, 1300, 611, "offset"),  # one tie class: the ordered pass over 6 chunks
    ("constant", "zero_cols", torch.float32, 2, 777, 300, "transposed"),
    ("nan", "zero_cols", torch.float32, 4, 1024, 950, "contiguous"),
    ("nan", "random", torch.bfloat16, 3, 3001, 2900, "transposed"),
], ids=lambda v: str(v).replace("torch.", ""))
def test_key_cache_and_recompute_paths(sim, monkeypatch, path, kind, scale_kind, dtype, rows, cols, k, how):
    if path == "recompute":  # the launcher's own switch (also used by the GPU tests)
        monkeypatch.setenv("FEATPRUNE_CUDA_KEY_CACHE_BYTES", "0")
    check_prune(sim, weights(rows, cols, dtype, kind=kind), scales(cols, kind=scale_kind), k=k, how=how)
    assert prune_launch(sim).smem == (cols * 4 if path == "cached" else 0)


@pytest.mark.parametrize(("cols", "cached"), [(16384, True), (16385, False)])
def test_key_cache_threshold(sim, cols, cached):
    """At the default 64 KiB the cache holds 16384 keys (65536 bytes, above the 48 KiB
    default: the launcher must raise the kernel's limit first); one more column recomputes."""
    check_prune(sim, weights(2, cols, torch.bfloat16, kind="quantized"), scales(cols), k=cols // 3, mask_how=None)
    launch = prune_launch(sim)
    assert launch.block == (512, 1, 1)
    assert launch.smem == (cols * 4 if cached else 0)
    assert cols * 4 <= KEY_CACHE_LIMIT if cached else cols * 4 > KEY_CACHE_LIMIT


# The architecture-specific path of the kernels: how much shared memory a block may opt into
# (CUDA C++ Programming Guide, technical specifications per compute capability) decides whether
# a row's keys are cached. The prune kernels' own static shared memory is 8272 bytes (256
# threads) and 8336 (512 threads) by ptxas -v for sm_75; the emulation reports the larger for
# every kernel. Everything else (bf16 and fp16 widened to fp32 by bit operations, integer
# atomics, warp shuffles) is the same code on every architecture, sm_75 included.
GPUS = {"T4-sm75": (75, 65536), "A100-sm80": (80, 166912), "A10-sm86": (86, 101376), "L4-sm89": (89, 101376),
        "H100-sm90": (90, 232448), "B200-sm100": (100, 232448), "RTX5090-sm120": (120, 101376)}
PRUNE_STATIC_SMEM = 8336


def _prune_on(sim, gpu, cols, dtype):
    cc, optin = GPUS[gpu]
    sim.configure_device(cc=cc, max_optin_smem=optin, static_smem=PRUNE_STATIC_SMEM)
    try:
        check_prune(sim, weights(2, cols, dtype, kind="quantized"), scales(cols), k=cols // 3, mask_how=None)
    finally:
        sim.configure_device()
    cached = cols * 4 <= KEY_CACHE_LIMIT and cols * 4 + PRUNE_STATIC_SMEM <= optin
    assert prune_launch(sim).smem == (cols * 4 if cached else 0)
    return cached


@pytest.mark.parametrize("cols", [12288, 14336, 16384])
@pytest.mark.parametrize("gpu", GPUS)
def test_key_cache_on_each_architecture(sim, gpu, cols):
    """bf16 rows whose cached keys need more than 48 KiB: every GPU caches them (after raising
    the kernel's limit) except a T4 above about 14,300 columns, which recomputes them."""
    cached = _prune_on(sim, gpu, cols, torch.bfloat16)
    assert cached == (not gpu.startswith("T4") or cols == 12288)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
def test_t4_recompute_path_other_dtypes(sim, dtype):
    assert not _prune_on(sim, "T4-sm75", 14336, dtype)
    assert _prune_on(sim, "T4-sm75", 12288, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("k_kind", ["some", "all_unprotected"])
def test_unstructured_protect(sim, dtype, k_kind):
    cols = 1030
    protect = torch.rand(cols, generator=torch.Generator().manual_seed(5)) < 0.3
    free = int((~protect).sum())
    k = free if k_kind == "all_unprotected" else free // 2
    check_prune(sim, weights(4, cols, dtype, kind="quantized"), scales(cols), k=k, protect=protect)
    # uint8 protect flags (nonzero = protected) behave the same
    check_prune(sim, weights(4, cols, dtype, kind="quantized"), scales(cols), k=k, protect=protect.to(torch.uint8) * 3)


@pytest.mark.parametrize("k", [1, 2, 768, 769])
def test_unstructured_extreme_k(sim, k):
    check_prune(sim, weights(3, 769, torch.float32, kind="quantized"), scales(769), k=k)


def test_prunes_nothing_writes_only_the_mask(sim):
    w = weights(4, 300, torch.float16)
    for kw in ({"k": 0}, {"n": 4, "m": 4}):
        view = w.clone()
        mask = torch.ones(4, 300, dtype=torch.bool)
        sim.prune_rows_(view, scales(300), mask_out=mask, **kw)
        assert not mask.any() and torch.equal(bits(view), bits(w))
        assert [launch.name for launch in sim.take_launches()] == ["zero_mask_kernel"]
    sim.prune_rows_(w.clone(), scales(300), k=0)
    assert sim.take_launches() == []


def test_empty_shapes_launch_nothing(sim):
    sim.prune_rows_(torch.zeros(0, 5), scales(5), k=2)
    sim.prune_rows_(torch.zeros(3, 0), torch.zeros(0), k=0)
    sim.accumulate_stats(torch.zeros(0, 4), torch.zeros(4), torch.zeros(1, dtype=torch.int64))
    assert sim.take_launches() == []


# ---- prune_rows: N:M ----------------------------------------------------------

@pytest.mark.parametrize(("n", "m", "rows", "cols", "dtype"), [
    (2, 4, 7, 768, torch.float32), (2, 4, 7, 768, torch.float16), (2, 4, 7, 768, torch.bfloat16),
    (4, 8, 3, 1000, torch.float16), (1, 4, 5, 36, torch.bfloat16), (16, 64, 3, 320, torch.float32),
    (1, 3, 4, 303, torch.float16), (0, 5, 2, 55, torch.float32), (3, 4, 3, 400, torch.bfloat16),
], ids=lambda v: str(v).replace("torch.", ""))
def test_n_m_matches_reference(sim, n, m, rows, cols, dtype):
    check_prune(sim, weights(rows, cols, dtype), scales(cols), n=n, m=m)
    launch = prune_launch(sim)
    tile = (256 // m) * m
    assert launch.name == "prune_nm_kernel" and launch.smem == tile * 4
    assert launch.grid[0] == rows * math.ceil(cols / tile)


@pytest.mark.parametrize(("kind", "how"), [("quantized", "transposed"), ("constant", "offset"), ("nan", "padded")])
def test_n_m_ties_nan_strides(sim, kind, how):
    cols = 512
    check_prune(sim, weights(5, cols, torch.float16, kind=kind), scales(cols, kind="zero_cols"), n=2, m=4, how=how,
                mask_how="u8_transposed")


def test_n_m_protect(sim):
    cols = 384
    protect = torch.zeros(cols, dtype=torch.bool)
    protect[::4] = True  # one protected column per group of 4; 2:4 still has 3 free
    protect[5::8] = True  # and a second in every other group: exactly m - n free
    check_prune(sim, weights(6, cols, torch.bfloat16, kind="quantized"), scales(cols), n=2, m=4, protect=protect)


# ---- schedule independence: a missing barrier would show here --------------

def _prune_cases():
    yield dict(w=weights(3, 1300, torch.float16, kind="constant"), scale=scales(1300), k=611)
    yield dict(w=weights(3, 2051, torch.bfloat16, kind="quantized"), scale=scales(2051), k=1000)
    yield dict(w=weights(4, 768, torch.float32, kind="nan"), scale=scales(768), n=2, m=4)


@pytest.mark.parametrize(("workers", "schedule"), [(1, "reverse"), (2, "shuffle"), (1, "shuffle")])
@pytest.mark.parametrize("path", ["cached", "recompute"])
def test_prune_independent_of_thread_schedule(sim, monkeypatch, workers, schedule, path):
    if path == "recompute":
        monkeypatch.setenv("FEATPRUNE_CUDA_KEY_CACHE_BYTES", "0")
    sim.configure(workers=workers, schedule=schedule, seed=workers * 7 + 3)
    try:
        for case in _prune_cases():
            check_prune(sim, case["w"], case["scale"], k=case.get("k"), n=case.get("n", 0), m=case.get("m", 0))
    finally:
        sim.configure()


# ---- accumulate_stats ---------------------------------------------------------

U = 2.0 ** -24  # unit roundoff of fp32


def run_stats(sim, x, *, token_mask=None, buckets=3, bucket=1, with_absmax=True, init=None):
    """Emulated kernel into row `bucket` of fresh (or `init`) accumulators."""
    features = x.shape[1]
    if init is None:
        sumsq = torch.zeros(buckets, features)
        absmax = torch.zeros(buckets, features)
        count = torch.zeros(buckets, dtype=torch.int64)
    else:
        sumsq, count, absmax = (t.clone() for t in init)
    sim.accumulate_stats(x, sumsq[bucket], count[bucket:bucket + 1],
                         absmax_row=absmax[bucket] if with_absmax else None, token_mask=token_mask)
    return sumsq, count, absmax


def check_stats(sim, x, *, token_mask=None, with_absmax=True, exact=False, init=None, bucket=1):
    """Compares with the reference: count and absmax exactly; sumsq within the bound on
    fp32 rounding of a sum of non-negative terms (or exactly, when `exact`)."""
    tokens, features = x.shape
    got = run_stats(sim, x, token_mask=token_mask, with_absmax=with_absmax, init=init, bucket=bucket)
    want = run_stats_reference(x, token_mask=token_mask, with_absmax=with_absmax, init=init, bucket=bucket)
    assert torch.equal(got[1], want[1])
    assert torch.equal(got[2], want[2]) if with_absmax else not got[2].any()
    others = [b for b in range(got[0].shape[0]) if b != bucket]
    assert torch.equal(got[0][others], want[0][others])
    if exact:
        assert torch.equal(got[0], want[0])
    else:
        rows = x.double() if token_mask is None else x.double()[token_mask.bool()]
        start = torch.zeros(features, dtype=torch.float64) if init is None else init[0][bucket].double()
        exact_sum = start + rows.pow(2).sum(0)
        # rounding steps on any path: a token lane (<= T/8 fmaf), 8 lanes, <= T/256 splits, the accumulator
        steps = math.ceil(tokens / 8) + 8 + math.ceil(tokens / 256) + 2
        err = (got[0][bucket].double() - exact_sum).abs()
        assert bool((err <= steps * U * exact_sum + 1e-30).all()), float((err / exact_sum.clamp_min(1e-30)).max())
    return got


def run_stats_reference(x, *, token_mask=None, buckets=3, bucket=1, with_absmax=True, init=None):
    features = x.shape[1]
    if init is None:
        sumsq, count, absmax = torch.zeros(buckets, features), torch.zeros(buckets, dtype=torch.int64), \
            torch.zeros(buckets, features)
    else:
        sumsq, count, absmax = (t.clone() for t in init)
    reference.accumulate_stats(x, sumsq, count, token_mask=token_mask, bucket=bucket,
                               absmax=absmax if with_absmax else None)
    return sumsq, count, absmax


def stats_launches(sim):
    return {launch.name: launch for launch in sim.take_launches()}


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize(("tokens", "features"), [(1, 1), (5, 7), (37, 769), (1000, 33), (600, 70)],
                         ids=lambda v: str(v))
def test_stats_match_reference(sim, dtype, tokens, features):
    x = (torch.randn(tokens, features, generator=torch.Generator().manual_seed(tokens)) * 3).to(dtype)
    check_stats(sim, x)
    launches = stats_launches(sim)
    split = "stats_finalize_kernel" in launches
    assert launches["stats_kernel"].block == (32, 8, 1)
    assert split == (launches["stats_kernel"].grid[1] > 1) == (tokens > 256)
    assert sim.live_allocations() == 0  # the split workspace is freed


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize(("tokens", "features"), [(37, 769), (1000, 33), (3000, 65)], ids=lambda v: str(v))
def test_stats_exact_when_sums_are_exact(sim, dtype, tokens, features):
    """Multiples of 1/4 up to 3/4: every partial sum is exact in fp32, so any order agrees."""
    g = torch.Generator().manual_seed(2)
    x = (torch.randint(-3, 4, (tokens, features), generator=g).float() * 0.25).to(dtype)
    mask = torch.rand(tokens, generator=g) < 0.7
    check_stats(sim, x, exact=True)
    check_stats(sim, x, token_mask=mask, exact=True)


@pytest.mark.parametrize("mask_kind", ["random_bool", "random_u8", "none_counted", "first_600_padding"])
def test_stats_token_mask(sim, mask_kind):
    tokens, features = 1000, 45  # 4 token splits
    x = torch.randn(tokens, features, generator=torch.Generator().manual_seed(9)) * 2
    g = torch.Generator().manual_seed(4)
    if mask_kind == "random_bool":
        mask = torch.rand(tokens, generator=g) < 0.6
    elif mask_kind == "random_u8":
        mask = (torch.rand(tokens, generator=g) < 0.6).to(torch.uint8) * 5
    elif mask_kind == "none_counted":
        mask = torch.zeros(tokens, dtype=torch.bool)
    else:  # whole splits masked out
        mask = torch.arange(tokens) >= 600
    init = (torch.rand(3, features) * 10, torch.tensor([1, 2, 3]), torch.rand(3, features))
    got = check_stats(sim, x, token_mask=mask, init=init)
    launches = stats_launches(sim)
    assert launches["count_tokens_kernel"].grid[0] == 1  # ceil(1000 / 1024) blocks
    if mask_kind == "none_counted":
        assert torch.equal(got[0], init[0]) and torch.equal(got[2], init[2]) and torch.equal(got[1], init[1])


@pytest.mark.parametrize("how", ["transposed", "padded", "offset"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_stats_strided_x(sim, dtype, how):
    x = (torch.randn(700, 97, generator=torch.Generator().manual_seed(1)) * 4).to(dtype)
    _, view = layout(x, how)
    check_stats(sim, view)


def test_stats_buckets_accumulate_and_absmax_optional(sim):
    x1 = torch.randn(300, 50, generator=torch.Generator().manual_seed(1))
    x2 = torch.randn(40, 50, generator=torch.Generator().manual_seed(2)) * 5
    state = run_stats(sim, x1, bucket=2)
    state = run_stats(sim, x2, bucket=2, init=state)
    state = run_stats(sim, x1, bucket=0, init=state, with_absmax=False)
    assert state[1].tolist() == [300, 0, 340]
    assert torch.equal(state[2][2], torch.maximum(x1.abs().amax(0), x2.abs().amax(0)))
    assert not state[2][0].any() and not state[0][1].any()
    want = x1.double().pow(2).sum(0) + x2.double().pow(2).sum(0)
    assert bool(((state[0][2].double() - want).abs() <= 1e-5 * want).all())


@pytest.mark.parametrize(("workers", "schedule"), [(1, "reverse"), (2, "shuffle")])
def test_stats_deterministic_across_schedules(sim, workers, schedule):
    x = torch.randn(2000, 77, generator=torch.Generator().manual_seed(3)).to(torch.float16)
    mask = torch.rand(2000, generator=torch.Generator().manual_seed(8)) < 0.9
    base = run_stats(sim, x, token_mask=mask)
    sim.configure(workers=workers, schedule=schedule, seed=11)
    try:
        other = run_stats(sim, x, token_mask=mask)
    finally:
        sim.configure()
    for a, b in zip(base, other):
        assert torch.equal(a, b)


# ---- the emulation itself -------------------------------------------------------

def test_emulated_warp_operations_follow_cuda(sim):
    out = torch.full((64, 6), -1, dtype=torch.int32)
    assert sim.selftest(0, out) == ""
    i = torch.arange(64, dtype=torch.int32)
    lane, base = i % 32, i - i % 32
    assert torch.equal(out[:, 0], torch.where(lane >= 1, i - 1, i))  # shfl_up keeps lane 0's own value
    assert torch.equal(out[:, 1], torch.where(lane < 30, i + 2, i))  # shfl_down keeps the top lanes' values
    assert torch.equal(out[:, 2], base + (lane ^ 5))
    assert torch.equal(out[:, 3], base + 7)
    ballots = [sum(1 << lane for lane in range(32) if (w * 32 + lane) % 3 == 0) for w in range(2)]
    as_int32 = [b - (1 << 32) if b >= 1 << 31 else b for b in ballots]
    assert out[:, 4].tolist() == [as_int32[0]] * 32 + [as_int32[1]] * 32
    assert torch.equal(out[:, 5], torch.full((64,), 64 * 63 // 2, dtype=torch.int32))


@pytest.mark.parametrize(("case", "message"), [
    (1, "different __syncthreads"),
    (2, "names lanes that have exited"),
    (3, "deadlock"),
    (5, "65536 bytes of dynamic shared memory, 49152 allowed"),
    (7, "block of 2048 threads"),
])
def test_emulation_reports_misuse(sim, case, message):
    err = sim.selftest(case, torch.zeros(2048, dtype=torch.int32))
    assert message in err, err


def test_emulation_allows_raised_dynamic_smem(sim):
    out = torch.zeros(32, dtype=torch.int32)
    assert sim.selftest(6, out) == "" and bool((out == 1).all())
    assert "allowed" in sim.selftest(5, out)  # the raise was undone


def test_emulation_schedules_expose_a_missing_barrier(sim):
    """A read of another warp's shared write without a barrier sees the old value in
    thread order and the new one in reverse order: the schedule tests catch such races."""
    seen = {}
    for schedule in ("forward", "reverse"):
        sim.configure(schedule=schedule)
        out = torch.full((1,), -1, dtype=torch.int32)
        try:
            assert sim.selftest(4, out) == ""
        finally:
            sim.configure()
        seen[schedule] = int(out[0])
    assert seen == {"forward": 0, "reverse": 1}
