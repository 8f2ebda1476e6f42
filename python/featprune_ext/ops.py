"""Typed, validated wrappers over the native kernels.

Every check happens here, before any memory is touched, so a bad call raises a
ValueError/TypeError naming the argument and leaves every tensor unchanged.
When the native module (or, for CUDA tensors, a CUDA build of it that the
driver and the GPU can run) is missing, the plain-PyTorch reference runs
instead, on the tensors' own device, after a one-time warning naming why.
"""

from __future__ import annotations

import contextlib
import warnings

import torch

from . import reference
from ._native import native

__all__ = ["accumulate_hessian", "accumulate_stats", "prune_rows_", "pruned_per_row"]

pruned_per_row = reference.pruned_per_row

_FLOAT_DTYPES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}
_DEVICE_CODES = {"cpu": 0, "cuda": 1}
_warned_fallback: set[str] = set()
_cuda_verdicts: dict[int, str | None] = {}  # CUDA device index -> None (native kernels run there) or why not


def _check_tensor(name: str, t, *, dtypes=None, ndim=None, device=None, shape=None) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if dtypes is not None and t.dtype not in dtypes:
        allowed = ", ".join(str(d).replace("torch.", "") for d in dtypes)
        raise TypeError(f"{name} must have dtype {allowed}; got {str(t.dtype).replace('torch.', '')}")
    if ndim is not None and t.dim() != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {tuple(t.shape)}")
    if device is not None and t.device != device:
        raise ValueError(f"{name} is on {t.device} but the other tensors are on {device}")
    if shape is not None and tuple(t.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(t.shape)}")
    if t.device.type not in _DEVICE_CODES:
        raise ValueError(f"{name} is on {t.device}; featprune supports cpu and cuda tensors")


def _check_no_overlap(name: str, t: torch.Tensor) -> None:
    # A broadcast view (stride 0) would make one write land in several entries.
    for size, stride in zip(t.shape, t.stride()):
        if size > 1 and stride == 0:
            raise ValueError(f"{name} is an expanded (stride-0) view; pass a materialised tensor")


def cuda_version_str(version: int) -> str | None:
    """13000 -> "13.0", 12040 -> "12.4" (CUDART_VERSION encoding); None for 0 (absent)."""
    return f"{version // 1000}.{version % 1000 // 10}" if version > 0 else None


# cudaMallocAsync (the statistics kernel's workspace) needs a CUDA 11.2 driver, even under
# minor version compatibility, which lets a CUDA 11.8 build run on any CUDA 11 driver.
_MIN_DRIVER = 11020


def cuda_driver_problem(runtime: int, driver: int) -> str | None:
    """Why the installed driver cannot run this build's CUDA kernels, in one line; None if it can.

    runtime: the CUDA runtime version the extension was compiled against and links
    statically (0: no CUDA kernels); driver: what the installed driver supports (0: none
    found). Since CUDA 11 a driver runs code built by any toolkit of its own major version
    (minor version compatibility), so the driver needs at least runtime's major.0 (and 11.2
    for cudaMallocAsync).
    """
    if runtime <= 0:
        return None
    needed = max(runtime // 1000 * 1000, _MIN_DRIVER)
    if driver >= needed:
        return None
    found = f"supports CUDA {cuda_version_str(driver)}" if driver > 0 else "was not found"
    return (f"the NVIDIA driver {found}, but these CUDA kernels were built with CUDA "
            f"{cuda_version_str(runtime)} and need a driver for CUDA {cuda_version_str(needed)} or newer "
            "(update the driver, or rebuild featprune against the system CUDA with its nvcc on PATH: "
            "pip install --no-build-isolation .)")


def cuda_image_problem(error: str, *, archs: str, capability: tuple[int, int], name: str) -> str:
    """The one-line reason for a GPU that cannot load this build's kernels (`error`: the CUDA
    error the native probe got), naming the GPU, its architecture and what the build carries."""
    major, minor = capability
    return (f"these CUDA kernels cannot run on {name} (sm_{major}{minor}): {error}; the build carries "
            f"{archs or 'no architecture list'} (rebuild with FEATPRUNE_CUDA_ARCHS={major}{minor}-real: "
            "pip install --no-build-isolation .)")


def _find_cuda_problem(index: int) -> str | None:
    """None when CUDA device `index` runs this build's kernels, else why not (one line)."""
    info = native.build_info()
    if not info["cuda"]:
        return "this build has no CUDA kernels (no nvcc at install time)"
    problem = cuda_driver_problem(*native.cuda_versions())
    if problem is not None:
        return problem
    error = native.cuda_kernel_problem(index)
    if not error:
        return None
    return cuda_image_problem(error, archs=info["cuda_archs"], capability=torch.cuda.get_device_capability(index),
                              name=torch.cuda.get_device_name(index))


def _cuda_problem(device: torch.device) -> str | None:
    """_find_cuda_problem, asked once per device (at its first CUDA call)."""
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _cuda_verdicts:
        _cuda_verdicts[index] = _find_cuda_problem(index)
    return _cuda_verdicts[index]


def _use_native(device: torch.device) -> bool:
    """True when the native kernels run for tensors on `device`. Otherwise the PyTorch
    reference runs (on that same device), after one RuntimeWarning per distinct reason:
    no native module; or, for CUDA, a build without CUDA kernels, a driver too old for
    them, or a GPU they have no image for (checked at the first CUDA call)."""
    if native is None:
        reason = "the native module featprune_ext._C could not be imported"
    elif device.type != "cuda":
        return True
    else:
        reason = _cuda_problem(device)
        if reason is None:
            return True
    if reason not in _warned_fallback:
        _warned_fallback.add(reason)
        where = " on the GPU" if device.type == "cuda" else ""
        warnings.warn(f"featprune: {reason}; using the slower PyTorch reference kernels{where}", RuntimeWarning,
                      stacklevel=3)
    return False


def _stream(device: torch.device) -> int:
    return torch.cuda.current_stream(device).cuda_stream if device.type == "cuda" else 0


def _byte_ptr(t: torch.Tensor | None) -> int:
    return 0 if t is None else t.data_ptr()


def accumulate_stats(
    x: torch.Tensor,
    sumsq: torch.Tensor,
    count: torch.Tensor,
    *,
    token_mask: torch.Tensor | None = None,
    bucket: int = 0,
    absmax: torch.Tensor | None = None,
) -> None:
    """Add per-feature statistics of the counted tokens of x into row `bucket`.

    x: [..., F] float32/float16/bfloat16. sumsq: float32 [K, F] (sum of x^2),
    count: int64 [K] (tokens counted), absmax: optional float32 [K, F] (running
    max |x|). token_mask: bool/uint8 of shape x.shape[:-1]; 0 marks padding,
    which is skipped. Accumulation is fp32 or wider and deterministic.
    """
    _check_tensor("x", x, dtypes=_FLOAT_DTYPES)
    if x.dim() < 1:
        raise ValueError("x must have at least one dimension (features last)")
    device = x.device
    features = x.shape[-1]
    _check_tensor("sumsq", sumsq, dtypes=(torch.float32,), ndim=2, device=device)
    buckets = sumsq.shape[0]
    if sumsq.shape[1] != features:
        raise ValueError(f"sumsq must have shape (K, {features}) to match x's last dim, got {tuple(sumsq.shape)}")
    _check_tensor("count", count, dtypes=(torch.int64,), device=device, shape=(buckets,))
    if absmax is not None:
        _check_tensor("absmax", absmax, dtypes=(torch.float32,), device=device, shape=(buckets, features))
    if token_mask is not None:
        _check_tensor("token_mask", token_mask, dtypes=(torch.bool, torch.uint8), device=device, shape=x.shape[:-1])
    if isinstance(bucket, bool) or not isinstance(bucket, int) or not 0 <= bucket < buckets:
        raise ValueError(f"bucket must be an int in [0, {buckets}), got {bucket!r}")
    for name, t in (("sumsq", sumsq), ("count", count), ("absmax", absmax)):
        if t is not None and not t.is_contiguous():
            raise ValueError(f"{name} must be contiguous (it is an accumulator written in place)")

    if not _use_native(device):
        reference.accumulate_stats(x, sumsq, count, token_mask=token_mask, bucket=bucket, absmax=absmax)
        return
    x2 = x.reshape(-1, features)  # a view when possible; a read-only copy otherwise
    mask = None
    if token_mask is not None:
        mask = token_mask.reshape(-1).contiguous()
        mask = mask.view(torch.uint8) if mask.dtype == torch.bool else mask
    with torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext():
        native.accumulate_stats(
            device=_DEVICE_CODES[device.type],
            x=x2.data_ptr(),
            dtype=_FLOAT_DTYPES[x.dtype],
            tokens=x2.shape[0],
            features=features,
            row_stride=x2.stride(0),
            col_stride=x2.stride(1),
            token_mask=_byte_ptr(mask),
            sumsq=sumsq[bucket].data_ptr(),
            absmax=0 if absmax is None else absmax[bucket].data_ptr(),
            count=count[bucket].data_ptr(),
            stream=_stream(device),
        )


def accumulate_hessian(
    x: torch.Tensor,
    hessian: torch.Tensor,
    count: torch.Tensor,
    *,
    token_mask: torch.Tensor | None = None,
) -> None:
    """hessian += X^T X over the counted tokens of x (rows = tokens); count += their number.

    x: [..., F] float32/float16/bfloat16. hessian: float32 or float64 [F, F], contiguous;
    count: int64 [1]. token_mask: bool/uint8 of shape x.shape[:-1]; 0 marks padding, which
    is skipped. This is SparseGPT's (unscaled) Hessian sum: H = 2 * hessian / count.

    A documented torch matmul, not a native kernel: the product is one GEMM (BLAS sgemm on
    CPU, cuBLAS on CUDA) that already runs near the machine's peak, which a hand-written
    kernel would only approach (bench/RESULTS.md, "Hessian accumulation"). The product is
    always formed in fp32 (inputs upcast): added into a float32 `hessian` by the GEMM itself
    (addmm), or formed and added to a float64 `hessian`: each batch's fp32 sum is then added
    exactly in practice, so the total does not depend on the batch order or on how batches were
    split among ranks (what the engine uses). On CPU the float64 case runs in row chunks of at
    most 4M entries (fp32 product, cast into a float64 buffer, same-dtype add: torch's
    mixed-dtype add is a scalar loop), so it needs no [F, F] temporary.
    """
    _check_tensor("x", x, dtypes=_FLOAT_DTYPES)
    if x.dim() < 1:
        raise ValueError("x must have at least one dimension (features last)")
    device = x.device
    features = x.shape[-1]
    _check_tensor("hessian", hessian, dtypes=(torch.float32, torch.float64), ndim=2, device=device,
                  shape=(features, features))
    _check_tensor("count", count, dtypes=(torch.int64,), device=device, shape=(1,))
    if token_mask is not None:
        _check_tensor("token_mask", token_mask, dtypes=(torch.bool, torch.uint8), device=device, shape=x.shape[:-1])
    for name, t in (("hessian", hessian), ("count", count)):
        if not t.is_contiguous():
            raise ValueError(f"{name} must be contiguous (it is an accumulator written in place)")
    rows = x.reshape(-1, features)
    if token_mask is not None:
        keep = token_mask.reshape(-1).bool()
        if not bool(keep.all()):
            rows = rows[keep]
    rows = rows.float()  # no copy for fp32 input
    if hessian.dtype == torch.float32:
        hessian.addmm_(rows.t(), rows)
    elif device.type != "cpu":
        hessian.add_(torch.mm(rows.t(), rows))
    else:
        step = max(256, (1 << 22) // max(features, 1))
        part = torch.empty(min(step, features), features, dtype=torch.float32)
        wide = torch.empty(min(step, features), features, dtype=torch.float64)
        for r0 in range(0, features, step):
            r1 = min(r0 + step, features)
            torch.mm(rows[:, r0:r1].t(), rows, out=part[:r1 - r0])
            wide[:r1 - r0].copy_(part[:r1 - r0])
            hessian[r0:r1].add_(wide[:r1 - r0])
    count += rows.shape[0]


def _validate_pattern(cols: int, sparsity, n: int, m: int) -> None:
    if m:
        if sparsity is not None:
            raise ValueError("give either sparsity (unstructured) or n and m (N:M), not both")
        if not (isinstance(n, int) and isinstance(m, int)) or m < 1 or not 0 <= n <= m:
            raise ValueError(f"N:M needs integers 0 <= n <= m and m >= 1, got n={n!r}, m={m!r}")
        if m > 64:
            raise ValueError(f"m must be at most 64 for N:M, got {m}")
        if cols % m:
            raise ValueError(f"w has {cols} columns, not a multiple of m={m} (N:M groups are m consecutive columns)")
        return
    if n:
        raise ValueError("n was given without m; for N:M pass both (e.g. n=2, m=4)")
    if sparsity is None:
        raise ValueError("sparsity is required for unstructured pruning (or pass n and m for N:M)")
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)) or not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be a number in [0, 1), got {sparsity!r}")


def prune_rows_(
    w: torch.Tensor,
    col_scale: torch.Tensor,
    *,
    sparsity: float | None = None,
    n: int = 0,
    m: int = 0,
    protect: torch.Tensor | None = None,
    mask_out: torch.Tensor | None = None,
) -> int:
    """Zero, in place, the lowest-scoring weights of every row; returns how many.

    score_ij = |w_ij| * col_scale_j in fp32. Unstructured: floor(C * sparsity)
    entries per row, ties to the lower column index. N:M (n, m): m - n per group
    of m consecutive columns. protect: bool [C] columns never pruned (the
    per-row count still holds). mask_out: bool/uint8 [R, C] receives the mask.
    w may be any 2-D strided view (e.g. GPT-2 Conv1D weights transposed).
    """
    _check_tensor("w", w, dtypes=_FLOAT_DTYPES, ndim=2)
    device = w.device
    rows, cols = w.shape
    _check_no_overlap("w", w)
    _check_tensor("col_scale", col_scale, dtypes=(torch.float32,), ndim=1, device=device, shape=(cols,))
    _validate_pattern(cols, sparsity, n, m)
    if protect is not None:
        _check_tensor("protect", protect, dtypes=(torch.bool, torch.uint8), ndim=1, device=device, shape=(cols,))
    if mask_out is not None:
        _check_tensor("mask_out", mask_out, dtypes=(torch.bool, torch.uint8), ndim=2, device=device, shape=(rows, cols))
        _check_no_overlap("mask_out", mask_out)
    if cols and not bool(torch.isfinite(col_scale).all()):
        raise ValueError("col_scale contains NaN or inf")
    if cols and bool((col_scale < 0).any()):
        raise ValueError("col_scale must be >= 0 (it is a per-feature norm)")

    protected = None if protect is None else protect.bool()
    if m:
        per_row = (cols // m) * (m - n)
        if protected is not None and cols:
            free = (~protected).reshape(-1, m).sum(dim=1)
            if bool((free < m - n).any()):
                raise ValueError(f"protect leaves fewer than m - n = {m - n} unprotected columns in some group of {m}")
    else:
        per_row = pruned_per_row(cols, sparsity)
        if protected is not None:
            free = cols - int(protected.sum())
            if per_row > free:
                raise ValueError(
                    f"sparsity {sparsity} needs {per_row} pruned entries per row but only {free} of {cols} "
                    "columns are unprotected; protect fewer columns or lower the sparsity"
                )

    if not _use_native(device):
        return reference.prune_rows_(w, col_scale, sparsity=sparsity, n=n, m=m, protect=protect, mask_out=mask_out)
    scale = col_scale.contiguous()
    protect_u8 = None if protected is None else protected.contiguous().view(torch.uint8)
    mask_u8 = None if mask_out is None else (mask_out.view(torch.uint8) if mask_out.dtype == torch.bool else mask_out)
    with torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext():
        native.prune_rows(
            device=_DEVICE_CODES[device.type],
            w=w.data_ptr(),
            dtype=_FLOAT_DTYPES[w.dtype],
            rows=rows,
            cols=cols,
            row_stride=w.stride(0),
            col_stride=w.stride(1),
            col_scale=scale.data_ptr(),
            protect=_byte_ptr(protect_u8),
            mask_out=_byte_ptr(mask_u8),
            mask_row_stride=0 if mask_u8 is None else mask_u8.stride(0),
            mask_col_stride=0 if mask_u8 is None else mask_u8.stride(1),
            k=0 if m else per_row,
            n=n,
            m=m,
            stream=_stream(device),
        )
    return rows * per_row
