"""The streaming engine: prune a model one transformer block at a time.

skeleton (meta model) -> capture (block arguments) -> run (the block loop) with stats (the
statistics pass; hessian: SparseGPT's; layerwise: OWL's dense first pass), state (the run's
request, config and progress), resume (OUT.partial/, writer, resume points) and report;
checkpoint (safetensors in/out), families (where the blocks and linears are), distributed
(torchrun), tuning (speed levers for benchmarks), test_hooks (the tests' kill points).
docs/ARCHITECTURE.md lists every module.
"""

from .batches import Batch, make_batches, pad_id_for, validate_pattern
from .capture import BlockCall, capture_block_calls
from .report import format_report_table, peak_rss_bytes
from .resume import PROGRESS_NAME, REPORT_NAME, partial_dir
from .run import prune_model
from .select import Selection
from .skeleton import ModelSkeleton

__all__ = ["PROGRESS_NAME", "REPORT_NAME", "Batch", "BlockCall", "ModelSkeleton", "Selection", "capture_block_calls",
           "format_report_table", "make_batches", "pad_id_for", "partial_dir", "peak_rss_bytes", "prune_model",
           "validate_pattern"]
