# Type stub for the native module. Use featprune_ext.ops instead: it validates.
def accumulate_stats(
    device: int, x: int, dtype: int, tokens: int, features: int, row_stride: int, col_stride: int,
    token_mask: int, sumsq: int, absmax: int, count: int, stream: int,
) -> None: ...
def prune_rows(
    device: int, w: int, dtype: int, rows: int, cols: int, row_stride: int, col_stride: int,
    col_scale: int, protect: int, mask_out: int, mask_row_stride: int, mask_col_stride: int,
    k: int, n: int, m: int, stream: int,
) -> None: ...
def build_info() -> dict: ...
def cuda_versions() -> tuple[int, int]: ...  # (runtime built against, driver found; 0 = none)
def cuda_kernel_problem(device: int) -> str: ...  # "" when that GPU runs the kernels, else the CUDA error

class KernelError(ValueError): ...
