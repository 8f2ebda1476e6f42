"""The streaming layer runner: prune a model one transformer block at a time.

The model is never whole in memory. From config.json we build a skeleton whose
parameters live on the meta device (buffers such as rotary frequencies are real: they
are computed, not stored). Only what precedes the first block is loaded, and of the
word embedding only the rows the calibration tokens use. One forward pass with a
recording stand-in in place of every block captures the arguments each block is called
with (masks, rotary or alibi position encodings, ...), per layer, whatever the family.
Then, for each block: its tensors are read (the next block's are prefetched on a
thread), hooks stream every prunable linear's inputs into ops.accumulate_stats, the
method prunes each matrix in place with ops.prune_rows_, the block runs again so the
next one sees pruned outputs, and a writer thread writes its shard and the progress
record. Output goes to OUT.partial/ and is renamed to OUT at the very end.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import resource
import shutil
import signal
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import __version__, ops
from .calibration_types import CalibrationSet
from .checkpoint import (
    INDEX_NAME,
    Checkpoint,
    InputError,
    RawTensor,
    atomic_save_torch,
    atomic_write_json,
    fsync_dir,
    write_index,
    write_safetensors,
)
from .families import PrunableLinear, find_blocks, max_positions, prunable_linears
from .distributed import DistContext
from .methods import LinearStats, PruneMethod

__all__ = ["Batch", "ModelSkeleton", "capture_block_calls", "format_report_table", "make_batches",
           "partial_dir", "peak_rss_bytes", "prune_model", "validate_pattern"]

PROGRESS_NAME = "progress.json"
REPORT_NAME = "featprune.json"
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".h5", ".msgpack", ".ckpt")
_DIE_ENV = "FEATPRUNE_TEST_DIE_AFTER_BLOCK"  # tests: SIGKILL ourselves once block i is on disk


# -- calibration batches ----------------------------------------------------------------------
@dataclass
class Batch:
    ids: torch.Tensor  # int64 [B, T], right-padded
    mask: torch.Tensor  # bool [B, T]: True for real tokens
    bucket: int


def make_batches(calibration: CalibrationSet, batch_size: int, pad_id: int) -> list[Batch]:
    """Samples grouped by bucket (one accumulate_stats bucket per batch), longest first, right-padded.

    Right padding keeps every real token at its natural position and, with causal attention,
    no real token attends to a pad; the pads themselves are masked out of the statistics.
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size must be a positive integer, got {batch_size!r}")
    batches = []
    for bucket in range(len(calibration.bucket_names)):
        members = [s for s, b in zip(calibration.samples, calibration.buckets) if b == bucket]
        if batch_size > 1:  # similar lengths together: less padding to compute and discard
            members.sort(key=lambda s: -s.numel())
        for start in range(0, len(members), batch_size):
            chunk = members[start:start + batch_size]
            length = max(s.numel() for s in chunk)
            ids = torch.full((len(chunk), length), pad_id, dtype=torch.int64)
            mask = torch.zeros((len(chunk), length), dtype=torch.bool)
            for row, s in enumerate(chunk):
                ids[row, :s.numel()] = s
                mask[row, :s.numel()] = True
            batches.append(Batch(ids, mask, bucket))
    return batches


def validate_pattern(sparsity, pattern) -> tuple[float | None, tuple[int, int] | None]:
    """Normalise (sparsity, pattern); InputError on anything out of range."""
    if pattern is not None:
        if isinstance(pattern, str):
            try:
                n, m = (int(v) for v in pattern.split(":"))
            except ValueError:
                raise InputError(f"pattern must look like N:M (e.g. 2:4), got {pattern!r}") from None
        else:
            n, m = pattern
        if not (0 <= n < m <= 64):
            raise InputError(f"N:M pattern needs 0 <= N < M <= 64, got {n}:{m}")
        implied = 1 - n / m
        if sparsity is not None and abs(sparsity - implied) > 1e-9:
            raise InputError(f"sparsity {sparsity} disagrees with pattern {n}:{m} (which prunes {implied:g})")
        return None, (n, m)
    if sparsity is None:
        raise InputError("give a sparsity (e.g. 0.5) or an N:M pattern (e.g. 2:4)")
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)) or not 0.0 <= sparsity < 1.0:
        raise InputError(f"sparsity must be in [0, 1), got {sparsity!r}")
    return float(sparsity), None


def partial_dir(out_dir: Path) -> Path:
    out_dir = Path(out_dir)
    return out_dir.with_name(out_dir.name + ".partial")


# -- the model skeleton -------------------------------------------------------------------------
@contextlib.contextmanager
def _params_on_meta():
    """Create every nn.Parameter on the meta device (no memory); buffers stay real, since
    rotary frequencies and embedding scales are computed at init, not stored."""
    original = nn.Module.register_parameter

    def register(module, name, param):
        if param is not None and param.device.type != "meta":
            param = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        original(module, name, param)

    nn.Module.register_parameter = register
    try:
        yield
    finally:
        nn.Module.register_parameter = original


def _set_tensor(root: nn.Module, name: str, value: torch.Tensor, *, param: bool) -> None:
    path, _, attr = name.rpartition(".")
    module = root.get_submodule(path) if path else root
    if param:
        module._parameters[attr] = nn.Parameter(value, requires_grad=False)
    else:
        module._buffers[attr] = value


class _GatheredEmbedding(nn.Module):
    """The model's own embedding module holding only the rows of `ids` (sorted, unique);
    token ids are mapped to those rows on the way in, so scaled embeddings (Gemma) and
    anything the model does with the original ids keep working."""

    def __init__(self, inner: nn.Module, ids: torch.Tensor):
        super().__init__()
        self.inner = inner
        self.register_buffer("ids", ids, persistent=False)

    @property
    def weight(self):
        return self.inner.weight

    def forward(self, input_ids):
        return self.inner(torch.searchsorted(self.ids, input_ids))


class ModelSkeleton:
    """config.json -> a causal LM with meta parameters, plus the map from its parameters to
    checkpoint tensors. Validates, before any work, that every tensor is there and has the
    shape config.json implies."""

    def __init__(self, ckpt: Checkpoint):
        from transformers import AutoConfig, AutoModelForCausalLM

        self.ckpt = ckpt
        try:
            config = AutoConfig.from_pretrained(ckpt.dir)
        except (ValueError, KeyError, OSError) as exc:
            mt = ckpt.config_dict.get("model_type")
            raise InputError(f"unknown architecture (model_type {mt!r}) in {ckpt.dir}/config.json: "
                             f"{str(exc).splitlines()[0]}") from None
        self.config = config
        self.dtype = self._storage_dtype()
        try:
            with _params_on_meta():
                model = AutoModelForCausalLM.from_config(config, dtype=self.dtype)
        except ValueError as exc:
            raise InputError(f"unknown architecture {ckpt.config_dict.get('architectures')}: "
                             f"{str(exc).splitlines()[0]}") from None
        self.model = model.eval()
        self.blocks_path, self.blocks = find_blocks(model)
        self.num_blocks = len(self.blocks)
        self.max_positions = max_positions(config)
        self._names = self._checkpoint_names()
        self._check_tensors()

    def _storage_dtype(self) -> torch.dtype:
        floats = [i.dtype for i in self.ckpt.tensors.values() if i.dtype.is_floating_point and len(i.shape) == 2]
        if not floats:
            raise InputError(f"{self.ckpt.dir} holds no floating-point matrices")
        return max(set(floats), key=floats.count)

    def _checkpoint_names(self) -> dict[str, str]:
        """model parameter name -> checkpoint key. transformers 5 renames some keys on load
        (GPT-NeoX's embed_out is lm_head in the module tree); reuse its own renaming rules."""
        prefix = getattr(self.model, "base_model_prefix", "") or ""
        meta = dict(self.model.state_dict())
        try:
            from transformers.conversion_mapping import get_model_conversion_mapping
            from transformers.core_model_loading import WeightConverter, WeightRenaming, rename_source_key

            transforms = get_model_conversion_mapping(self.model)
            renamings = [t for t in transforms if isinstance(t, WeightRenaming)]
            converters = [t for t in transforms if isinstance(t, WeightConverter)]
        except (ImportError, AttributeError, TypeError):  # older transformers: names are used as saved
            rename_source_key = None
        names = {}
        for ckey in self.ckpt.tensors:
            if rename_source_key is not None:
                name, converter = rename_source_key(ckey, renamings, converters, prefix or None, meta)
                if converter is not None:
                    raise InputError(f"checkpoint tensor {ckey!r} needs a weight conversion ({converter}) on load, "
                                     "which featprune does not support")
            elif ckey in meta or not prefix:
                name = ckey
            else:
                name = ckey[len(prefix) + 1:] if ckey.startswith(prefix + ".") else f"{prefix}.{ckey}"
            names[name] = ckey
        return names

    def key(self, param_name: str) -> str | None:
        """The checkpoint key holding a module parameter (or persistent buffer), or None."""
        return self._names.get(param_name)

    def _check_tensors(self) -> None:
        model = self.model
        out_emb = model.get_output_embeddings()
        tie = bool(getattr(self.config.get_text_config(), "tie_word_embeddings", False))
        out_name = f"{self.module_path(out_emb)}.weight" if out_emb is not None else None
        self.tied_embeddings = tie and out_name is not None and self.key(out_name) is None
        self.block_keys: list[list[str]] = []
        self.block_prefix: list[str] = []
        for name, p in model.named_parameters():
            key = self.key(name)
            if key is None:
                if self.tied_embeddings and name == out_name:  # tied lm_head (Gemma 3): saved once, as the embedding
                    continue
                raise InputError(f"tensor {name!r} is missing from the checkpoint in {self.ckpt.dir}")
            found = tuple(self.ckpt.info(key).shape)
            if found != tuple(p.shape):
                raise InputError(f"tensor {key!r} has shape {list(found)} in the checkpoint but config.json implies "
                                 f"{list(p.shape)}: the weights do not match config.json")
        for i, block in enumerate(self.blocks):
            local, _ = next(iter(block.named_parameters()))
            full = self.key(f"{self.blocks_path}.{i}.{local}")
            prefix = full[: len(full) - len(local)]
            self.block_prefix.append(prefix)
            self.block_keys.append(sorted(k for k in self.ckpt.tensors if k.startswith(prefix)))
        owned = {k for keys in self.block_keys for k in keys}
        self.other_keys = sorted(k for k in self.ckpt.tensors if k not in owned)
        self.embedding_key = self.key(f"{self.module_path(model.get_input_embeddings())}.weight")

    def module_path(self, module: nn.Module) -> str:
        for name, m in self.model.named_modules(remove_duplicate=False):
            if m is module:
                return name
        raise KeyError(f"{type(module).__name__} is not part of the model")

    def prunable(self, i: int) -> list[PrunableLinear]:
        return prunable_linears(self.blocks[i])

    # -- materialising parts of the model --
    def load_pre_block(self, calibration_ids: torch.Tensor, device: torch.device, dtype: torch.dtype) -> None:
        """Load what runs before the first block; of the word embedding, only the rows in
        `calibration_ids`. Output embeddings are never run, so never loaded."""
        model = self.model
        emb = model.get_input_embeddings()
        out_emb = model.get_output_embeddings()
        skip = {id(emb.weight)} | ({id(out_emb.weight)} if out_emb is not None else set())
        block_ids = {id(p) for p in self.blocks.parameters()}
        for name, p in model.named_parameters():
            if id(p) in skip or id(p) in block_ids:
                continue
            t = self.ckpt.read(self.key(name))
            _set_tensor(model, name, t.to(device=device, dtype=dtype if t.is_floating_point() else t.dtype),
                        param=True)
        ids = torch.unique(calibration_ids)
        emb_path = self.module_path(emb)
        rows = self.ckpt.read_rows(self.embedding_key, ids)
        emb.weight = nn.Parameter(rows.to(device=device, dtype=dtype), requires_grad=False)
        if isinstance(emb, nn.Embedding):
            emb.padding_idx = None  # only matters for gradients, and may lie outside the gathered rows
            emb.num_embeddings = rows.shape[0]
        parent, _, attr = emb_path.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, attr, _GatheredEmbedding(emb, ids.to(device)))
        for name, b in model.named_buffers():
            if b.device != device and not name.startswith(f"{self.blocks_path}."):
                _set_tensor(model, name, b.to(device), param=False)

    def read_block(self, i: int, pin_memory: bool = False) -> dict[str, torch.Tensor]:
        return {k: self.ckpt.read(k, pin_memory=pin_memory) for k in self.block_keys[i]}

    def attach_block(self, i: int, tensors: dict[str, torch.Tensor], device, dtype) -> nn.Module:
        block = self.blocks[i]
        prefix = self.block_prefix[i]
        for name, _ in list(block.named_parameters()):
            t = tensors[prefix + name]
            _set_tensor(block, name, t.to(device=device, dtype=dtype if t.is_floating_point() else t.dtype), param=True)
        for name, b in list(block.named_buffers()):
            t = tensors.get(prefix + name)
            _set_tensor(block, name, (t if t is not None else b).to(device), param=False)
        return block

    def release_block(self, i: int) -> None:
        block = self.blocks[i]
        for name, p in list(block.named_parameters()):
            _set_tensor(block, name, torch.empty(p.shape, dtype=p.dtype, device="meta"), param=True)


# -- capturing what every block is called with -----------------------------------------------
class _Stop(Exception):
    pass


@dataclass
class BlockCall:
    """How one block is called on one batch: block(hidden, *args, **kwargs) or with
    hidden_states=... as a keyword when the model passes it that way."""

    args: tuple
    kwargs: dict
    hidden_as_kwarg: bool

    def run(self, block: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
        if self.hidden_as_kwarg:
            out = block(*self.args, hidden_states=hidden, **self.kwargs)
        else:
            out = block(hidden, *self.args, **self.kwargs)
        return out[0] if isinstance(out, (tuple, list)) else out


class _Recorder(nn.Module):
    """Stands in for block `idx`: records its call, passes the hidden states through unchanged
    in the container the model expects (a tensor, or a tuple for e.g. BLOOM), and checks that
    the next stand-in received exactly what this one returned."""

    def __init__(self, idx: int, state: dict):
        super().__init__()
        self.idx = idx
        self.state = state

    def forward(self, *args, **kwargs):
        st = self.state
        if args:
            hidden, rest, as_kw = args[0], args[1:], False
        else:
            hidden, rest, as_kw = kwargs.pop("hidden_states"), (), True
        prev = st["returned"]
        if prev is not None and not (isinstance(hidden, torch.Tensor) and hidden.shape == prev.shape
                                     and (hidden is prev or torch.equal(hidden, prev))):
            st["mismatch"] = True
            raise _Stop
        st["calls"][self.idx] = BlockCall(rest, kwargs, as_kw)
        if self.idx == 0:
            st["first_hidden"] = hidden
        if self.idx == st["last"]:
            raise _Stop
        st["returned"] = hidden
        return (hidden,) if st["tuple"] else hidden


def capture_block_calls(model: nn.Module, blocks: nn.ModuleList, batches: list[Batch], device) \
        -> tuple[list[list[BlockCall]], list[torch.Tensor]]:
    """Run the model with recorders in place of its blocks: per layer, per batch, the call each
    block gets; plus the first block's input hidden states per batch."""
    real = list(blocks)
    state: dict[str, Any] = {"tuple": False, "last": len(real) - 1}
    calls: list[list[BlockCall]] = [[] for _ in real]
    firsts: list[torch.Tensor] = []
    try:
        for i in range(len(real)):
            blocks[i] = _Recorder(i, state)
        for b, batch in enumerate(batches):
            for attempt in range(2):
                state.update(returned=None, mismatch=False, calls=[None] * len(real), first_hidden=None)
                try:
                    model(input_ids=batch.ids.to(device), attention_mask=batch.mask.to(device=device, dtype=torch.long),
                          use_cache=False)
                except _Stop:
                    pass
                if not state["mismatch"]:
                    break
                if b > 0 or attempt > 0:
                    raise RuntimeError(f"could not pass hidden states through the blocks of {type(model).__name__}: "
                                       "they are neither a tensor nor a tuple starting with one")
                state["tuple"] = True  # the model unpacks block outputs (outputs[0]): retry with tuples
            if any(c is None for c in state["calls"]):
                missing = [i for i, c in enumerate(state["calls"]) if c is None]
                raise RuntimeError(f"blocks {missing} of {type(model).__name__} were never called during capture")
            for i, c in enumerate(state["calls"]):
                calls[i].append(c)
            firsts.append(state["first_hidden"])
    finally:
        for i, block in enumerate(real):
            blocks[i] = block
    return calls, firsts


# -- the engine -------------------------------------------------------------------------------
def peak_rss_bytes() -> int:
    """This process's peak resident set. /proc's VmHWM first: ru_maxrss also counts the parent's
    memory at fork time when a large process (e.g. pytest) launched us with fork + exec."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _versions() -> dict:
    import safetensors
    import transformers

    return {"featprune": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "safetensors": safetensors.__version__, "python": platform.python_version()}


def _fingerprint(skel: ModelSkeleton, calibration: CalibrationSet, method: PruneMethod, sparsity, pattern,
                 batch_size: int, device: torch.device) -> str:
    ckpt = skel.ckpt
    blob = {
        "config": ckpt.config_dict,
        "tensors": [(n, list(i.shape), str(i.dtype), i.path.name) for n, i in sorted(ckpt.tensors.items())],
        "calibration": calibration.fingerprint() if method.needs_calibration else None,
        "method": method.describe(), "sparsity": sparsity, "pattern": pattern, "batch_size": batch_size,
        "device": device.type, "featprune": __version__,
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()


def _copy_side_files(src: Path, dst: Path) -> list[str]:
    """config, tokenizer, generation config and any other non-weight file, byte for byte."""
    copied = []
    for f in sorted(src.iterdir()):
        if not f.is_file() or f.name in (INDEX_NAME, REPORT_NAME) or f.name.endswith(_WEIGHT_SUFFIXES):
            continue
        shutil.copyfile(f, dst / f.name)
        copied.append(f.name)
    return copied


class _Writer:
    """One background thread writes shards and progress; at most one job is in flight, so
    host memory holds at most one block waiting to be written."""

    def __init__(self):
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="featprune-writer")
        self.pending: Future | None = None

    def submit(self, fn, *args) -> None:
        self.wait()
        self.pending = self.pool.submit(fn, *args)

    def wait(self) -> None:
        if self.pending is not None:
            fut, self.pending = self.pending, None
            fut.result()  # re-raises the writer's error (e.g. DiskFullError) in the main thread

    def close(self) -> None:
        try:
            self.wait()
        finally:
            self.pool.shutdown(wait=True)


@torch.no_grad()
def prune_model(model_dir, out_dir, *, calibration: CalibrationSet | None, method: PruneMethod,
                sparsity: float | None = None, pattern=None, device="cpu", batch_size: int = 1,
                resume: bool = False, progress: bool = True, dist: DistContext | None = None) -> dict:
    """Prune every linear of every block of the model in `model_dir`; write it to `out_dir`.

    pattern: (n, m) or "n:m" for N:M sparsity instead of `sparsity`. Returns the report also
    written to out_dir/featprune.json. Raises InputError for bad input (nothing complete-looking
    is left behind), DiskFullError when the disk fills up (rerun with resume=True).
    dist: data-parallel calibration under torchrun (see distributed.py); every rank calls this,
    rank 0 alone writes, and the other ranks return {"rank": r} once the output is complete.
    """
    dist = dist or DistContext()
    t_start = time.perf_counter()
    sparsity, pattern = validate_pattern(sparsity, pattern)
    device = torch.device(device)
    if device.type not in ("cpu", "cuda"):
        raise InputError(f"device must be cpu or cuda, got {device}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError("device cuda was asked for, but torch sees no CUDA device")
    model_dir, out_dir = Path(model_dir).resolve(), Path(out_dir).resolve()
    part = partial_dir(out_dir)
    if out_dir.exists():
        raise InputError(f"{out_dir} already exists; refusing to overwrite it (choose another --out or delete it)")
    if out_dir == model_dir or model_dir in out_dir.parents:
        raise InputError(f"the output {out_dir} must not be inside the input model directory {model_dir}")
    if part.exists() and not resume:
        raise InputError(f"an unfinished run is in {part}: rerun with --resume to continue it, or delete it")

    ckpt = Checkpoint(model_dir)
    try:
        skel = ModelSkeleton(ckpt)
        run = _Run(skel, part, calibration, method, sparsity, pattern, device, batch_size, progress, dist)
        fresh = dist.broadcast_object(not part.exists())  # every rank checked before rank 0 creates it
        if fresh:
            if dist.is_writer:
                part.mkdir(parents=True)
                run.save_progress(0, None)
            dist.barrier()
            try:
                run.execute()
            except BaseException:
                if dist.is_writer and not run.layers:  # nothing worth resuming: leave no directory behind
                    shutil.rmtree(part, ignore_errors=True)
                raise
        else:
            run.load_progress()
            run.execute()
        if not dist.is_writer:
            dist.barrier()  # returns once rank 0 has renamed the finished output into place
            return {"rank": dist.rank, "world_size": dist.world_size, "out": str(out_dir)}
        report = run.finish(model_dir, out_dir, t_start)
        dist.barrier()
        return report
    finally:
        ckpt.close()


class _Run:
    """One pruning run: the block loop, its writer and its progress record."""

    def __init__(self, skel: ModelSkeleton, part: Path, calibration, method: PruneMethod, sparsity, pattern,
                 device: torch.device, batch_size: int, progress: bool, dist: DistContext):
        self.skel, self.ckpt, self.part, self.dist = skel, skel.ckpt, part, dist
        self.calibration, self.method, self.device = calibration, method, device
        self.sparsity, self.pattern, self.batch_size, self.progress = sparsity, pattern, batch_size, progress
        self.n, self.m = pattern or (0, 0)
        if method.needs_calibration:
            if calibration is None:
                raise InputError(f"method {method.name} needs calibration samples")
            if skel.max_positions is not None and calibration.max_len > skel.max_positions:
                raise InputError(f"calibration samples have {calibration.max_len} tokens, above the model's limit "
                                 f"of {skel.max_positions} positions: lower --seqlen")
            method.prepare(list(calibration.bucket_names))
        for i in range(skel.num_blocks):
            for pl in skel.prunable(i):
                if self.m and pl.in_features % self.m:
                    raise InputError(f"{skel.block_prefix[i]}{pl.param_name} has {pl.in_features} input features, "
                                     f"not a multiple of M={self.m}: the {self.n}:{self.m} pattern cannot apply")
        self.fingerprint = _fingerprint(skel, calibration, method, sparsity, pattern, batch_size, device)
        if dist.enabled:  # a resumed run must split the batches the same way
            self.fingerprint += f"-world{dist.world_size}"
        self.prog_path = part / PROGRESS_NAME
        self.start_block, self.layers, self.shard0_done, self.act_file = 0, [], False, None
        self.finalized = False
        total = skel.num_blocks + 1
        self.shard_name = [f"model-{j + 1:05d}-of-{total:05d}.safetensors" for j in range(total)]
        self.t_capture = 0.0

    # -- progress record --
    def save_progress(self, blocks_done: int, act_file: str | None) -> None:
        atomic_write_json(self.prog_path, {"fingerprint": self.fingerprint, "blocks_done": blocks_done,
                                           "shard0_done": self.shard0_done, "layers": self.layers,
                                           "activations": act_file})

    def load_progress(self) -> None:
        if not self.prog_path.exists() and (self.part / REPORT_NAME).exists():
            self.finalized = True  # killed between the report and the rename: only the rename is left
            return
        try:
            prog = json.loads(self.prog_path.read_text())
        except (OSError, json.JSONDecodeError):
            raise InputError(f"{self.part} has no readable {PROGRESS_NAME}; delete it and start again") from None
        if prog.get("fingerprint") != self.fingerprint:
            raise InputError(f"{self.part} was made with a different model, calibration set or settings; "
                             "delete it or rerun with the original arguments")
        self.start_block, self.layers = prog["blocks_done"], prog["layers"]
        self.shard0_done, self.act_file = prog["shard0_done"], prog.get("activations")
        self.resumed_from = self.start_block

    # -- writer jobs (run on the writer thread, one at a time) --
    def _write_shard0(self) -> None:
        write_safetensors(self.part / self.shard_name[0], [(k, RawTensor(self.ckpt, k)) for k in self.skel.other_keys])
        self.shard0_done = True
        self.save_progress(len(self.layers), self.act_file)

    def _write_block(self, i: int, entries, next_hidden, layer_report) -> None:
        write_safetensors(self.part / self.shard_name[i + 1], entries)
        new_act = None
        if next_hidden is not None:
            new_act = self._act_name(i + 1)
            atomic_save_torch(self.part / new_act, next_hidden)
        self.layers.append(layer_report)
        self.act_file = new_act
        self.save_progress(i + 1, new_act)
        for old in self.part.glob("activations-*.pt"):  # the previous block's inputs are no longer needed
            if not old.name.startswith(f"activations-{i + 1:05d}"):
                old.unlink()

    def _act_name(self, block: int) -> str:
        """This rank's saved inputs of `block` (one file per rank under torchrun)."""
        if not self.dist.enabled:
            return f"activations-{block:05d}.pt"
        return f"activations-{block:05d}.rank{self.dist.rank}.pt"

    # -- the block loop --
    def _prepare_inputs(self):
        skel, device = self.skel, self.device
        t0 = time.perf_counter()
        pad_id = skel.config.get_text_config().pad_token_id
        vocab = self.ckpt.info(skel.embedding_key).shape[0]
        pad_id = pad_id if isinstance(pad_id, int) and 0 <= pad_id < vocab else 0
        batches = make_batches(self.calibration, self.batch_size, pad_id)
        if self.dist.enabled:  # this rank's share; statistics are all-reduced per block
            if len(batches) < self.dist.world_size:
                raise InputError(f"{len(batches)} calibration batches cannot feed {self.dist.world_size} ranks: "
                                 "use more samples or a smaller --batch-size")
            batches = [batches[j] for j in self.dist.batch_indices(len(batches))]
        skel.load_pre_block(torch.cat([b.ids.reshape(-1) for b in batches]), device, skel.dtype)
        calls, hidden = capture_block_calls(skel.model, skel.blocks, batches, device)
        if self.start_block > 0:  # resume: the saved outputs of the last finished block
            act = self.part / self._act_name(self.start_block)
            hidden = [h.to(device) for h in torch.load(act, weights_only=True)]
        self.t_capture = time.perf_counter() - t0
        return batches, calls, hidden

    def _load(self, i: int):
        cuda = self.device.type == "cuda"
        tensors = self.skel.read_block(i, pin_memory=cuda)
        if not cuda:
            return tensors, None
        with torch.cuda.stream(self.copy_stream):  # the host->device copy overlaps the current block's compute
            tensors = {k: t.to(self.device, non_blocking=True) for k, t in tensors.items()}
            event = torch.cuda.Event()
            event.record(self.copy_stream)
        return tensors, event

    def execute(self) -> None:
        if self.finalized:
            return
        skel, method, device = self.skel, self.method, self.device
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        self.copy_stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        batches, calls, hidden = [], [], []
        if method.needs_calibration and self.start_block < skel.num_blocks:
            batches, calls, hidden = self._prepare_inputs()
        writer = _Writer()
        loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="featprune-prefetch")
        die_after = os.environ.get(_DIE_ENV)
        bar = None
        try:
            if not self.shard0_done and self.dist.is_writer:
                writer.submit(self._write_shard0)
            if self.start_block < skel.num_blocks:
                from tqdm.auto import tqdm

                bar = tqdm(total=skel.num_blocks, initial=self.start_block, desc="pruning", unit="block",
                           file=sys.stderr, disable=not self.progress or not self.dist.is_writer,
                           dynamic_ncols=True)
                nxt = loader.submit(self._load, self.start_block)
            for i in range(self.start_block, skel.num_blocks):
                t_block = time.perf_counter()
                tensors, event = nxt.result()
                if i + 1 < skel.num_blocks:
                    nxt = loader.submit(self._load, i + 1)  # prefetch while this block computes
                if event is not None:
                    stream = torch.cuda.current_stream(device)
                    stream.wait_event(event)
                    for t in tensors.values():  # allocated on the copy stream, used and freed on this one
                        t.record_stream(stream)
                block = skel.attach_block(i, tensors, device, skel.dtype)
                del tensors
                linears = skel.prunable(i)
                stats = {}
                if method.needs_calibration:
                    stats = _collect_stats(block, linears, calls[i], hidden, batches,
                                           self.calibration.bucket_names, device)
                    self.dist.all_reduce_([t for st in stats.values() for t in (st.sumsq, st.count)],
                                          [st.absmax for st in stats.values()])
                entries, matrices = self._prune_block(i, linears, stats)
                next_hidden = None
                if method.needs_calibration and i + 1 < skel.num_blocks:
                    hidden = [c.run(block, h) for c, h in zip(calls[i], hidden)]  # pruned outputs feed block i+1
                    next_hidden = [h.to("cpu") for h in hidden] if device.type == "cuda" else hidden
                skel.release_block(i)
                del block
                params = sum(_numel(v["shape"]) for v in matrices.values())
                zeros = sum(v["sparsity"] * _numel(v["shape"]) for v in matrices.values())
                report = {"index": i, "time_s": round(time.perf_counter() - t_block, 4),
                          "sparsity": zeros / max(params, 1), "params": params, "matrices": matrices,
                          "peak_rss_bytes": peak_rss_bytes()}
                if device.type == "cuda":
                    report["peak_cuda_bytes"] = torch.cuda.max_memory_allocated(device)
                if self.dist.enabled:
                    # every rank's activations are on disk before rank 0 records the block as done
                    if not self.dist.is_writer and next_hidden is not None:
                        atomic_save_torch(self.part / self._act_name(i + 1), next_hidden)
                    self.dist.barrier()
                if self.dist.is_writer:
                    writer.submit(self._write_block, i, entries, next_hidden, report)
                if bar is not None:
                    bar.set_postfix(peak_rss=f"{peak_rss_bytes() / 2**30:.2f}G", refresh=False)
                    bar.update(1)
                if die_after is not None and int(die_after) == i:
                    writer.wait()
                    os.kill(os.getpid(), signal.SIGKILL)
            writer.wait()
        finally:
            if bar is not None:
                bar.close()
            loader.shutdown(wait=True, cancel_futures=True)
            writer.close()

    def _prune_block(self, i: int, linears, stats):
        skel = self.skel
        matrices, entries, pruned_keys = {}, [], set()
        for pl in linears:
            key = skel.block_prefix[i] + pl.param_name
            w = pl.weight_rows()
            count = self.method.prune_(w, stats.get(pl.name), sparsity=self.sparsity, n=self.n, m=self.m, name=key)
            zeros = w.numel() - int(torch.count_nonzero(w))
            matrices[key] = {"shape": list(pl.module.weight.shape), "pruned": count,
                             "sparsity": zeros / max(w.numel(), 1)}
            matrices[key].update(self.method.matrix_notes.pop(key, {}))  # e.g. protected columns
            stored = self.ckpt.info(key).dtype  # written back in the input's dtype
            entries.append((key, pl.module.weight.data.to(device="cpu", dtype=stored)))
            pruned_keys.add(key)
        # everything else in the block (norms, biases, ...) is copied byte for byte
        entries += [(k, RawTensor(self.ckpt, k)) for k in skel.block_keys[i] if k not in pruned_keys]
        return entries, matrices

    def finish(self, model_dir: Path, out_dir: Path, t_start: float) -> dict:
        part, skel = self.part, self.skel
        if self.finalized:
            report = json.loads((part / REPORT_NAME).read_text())
        else:
            t_final = time.perf_counter()
            layers = sorted(self.layers, key=lambda r: r["index"])
            copied = _copy_side_files(model_dir, part)
            weight_map = {k: self.shard_name[0] for k in skel.other_keys}
            for i, keys in enumerate(skel.block_keys):
                weight_map.update({k: self.shard_name[i + 1] for k in keys})
            write_index(part, weight_map, sum(i.nbytes for i in self.ckpt.tensors.values()))
            params = sum(r["params"] for r in layers)
            calib = self.calibration.describe() if self.method.needs_calibration else None
            report = {
                "format": 1,
                "method": self.method.describe(),
                "sparsity": self.sparsity if self.pattern is None else 1 - self.n / self.m,
                "pattern": None if self.pattern is None else f"{self.n}:{self.m}",
                "calibration": calib,
                "model": {"source": str(model_dir), "architecture": type(skel.model).__name__,
                          "model_type": skel.config.model_type, "blocks": skel.num_blocks,
                          "blocks_path": skel.blocks_path, "dtype": str(skel.dtype).replace("torch.", ""),
                          "tied_embeddings": skel.tied_embeddings, "unpruned_tensors": skel.other_keys,
                          "input_bytes": self.ckpt.file_bytes},
                "overall_sparsity": sum(r["sparsity"] * r["params"] for r in layers) / max(params, 1),
                "prunable_params": params,
                "layers": layers,
                "device": str(self.device),
                "batch_size": self.batch_size,
                "resumed_from_block": getattr(self, "resumed_from", None),
                "timings": {"capture_s": round(self.t_capture, 4),
                            "blocks_s": round(sum(r["time_s"] for r in layers), 4),
                            "finalize_s": round(time.perf_counter() - t_final, 4),
                            "total_s": round(time.perf_counter() - t_start, 4)},
                "peak_rss_bytes": peak_rss_bytes(),
                "peak_cuda_bytes": (torch.cuda.max_memory_allocated(self.device)
                                    if self.device.type == "cuda" else None),
                "copied_files": copied,
                "versions": _versions(),
            }
            atomic_write_json(part / REPORT_NAME, report)
            self.prog_path.unlink()
            for f in [*part.glob("activations-*.pt"), *part.glob("*.tmp")]:  # incl. leftovers of a kill
                f.unlink()
            fsync_dir(part)
        if out_dir.exists():
            raise InputError(f"{out_dir} appeared while pruning; the result is left in {part}")
        os.rename(part, out_dir)
        fsync_dir(out_dir.parent)
        return report


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def _collect_stats(block, linears, calls, hidden, batches, bucket_names, device) -> dict[str, LinearStats]:
    """Run the block over every batch with hooks streaming each linear's input into its stats."""
    stats = {pl.name: LinearStats.zeros(pl.in_features, list(bucket_names), device) for pl in linears}
    current: dict[str, Any] = {}

    def hook_for(name):
        st = stats[name]
        partial = torch.zeros(1, st.sumsq.shape[1], dtype=torch.float32, device=st.sumsq.device)  # reused per batch

        def hook(module, args, kwargs):
            x = args[0] if args else next(iter(kwargs.values()))
            mask = current["mask"]
            if x.shape[:-1] != mask.shape:
                if x.numel() // x.shape[-1] != mask.numel():
                    raise RuntimeError(f"{name} got input {tuple(x.shape)} that does not line up with the "
                                       f"{tuple(mask.shape)} token mask")
                mask = mask.reshape(x.shape[:-1])
            # The kernel sums this batch into a zeroed fp32 row; adding it to a float64 total is
            # exact in practice, so the result does not depend on batch order or on how the
            # batches were split among ranks (distributed.py).
            b = current["bucket"]
            partial.zero_()
            ops.accumulate_stats(x.detach(), partial, st.count[b:b + 1], token_mask=mask, absmax=st.absmax[b:b + 1])
            st.sumsq[b] += partial[0].double()

        return hook

    handles = [pl.module.register_forward_pre_hook(hook_for(pl.name), with_kwargs=True) for pl in linears]
    try:
        for call, h, batch in zip(calls, hidden, batches):
            current["mask"] = batch.mask.to(device)
            current["bucket"] = batch.bucket
            call.run(block, h)
    finally:
        for handle in handles:
            handle.remove()
    return stats


def format_report_table(report: dict) -> str:
    """The per-layer summary printed at the end of `featprune prune`."""
    lines = [f"{'block':>5}  {'sparsity':>8}  {'time s':>7}  {'peak RSS GiB':>12}"]
    for r in report["layers"]:
        lines.append(f"{r['index']:>5}  {r['sparsity']:>8.4f}  {r['time_s']:>7.2f}  "
                     f"{r['peak_rss_bytes'] / 2**30:>12.2f}")
    t = report["timings"]
    lines.append(f"total: {report['overall_sparsity']:.4f} sparsity over {report['prunable_params']:,} weights, "
                 f"{t['total_s']:.1f} s, peak RSS {report['peak_rss_bytes'] / 2**30:.2f} GiB")
    if report.get("peak_cuda_bytes") is not None:
        lines.append(f"peak CUDA memory {report['peak_cuda_bytes'] / 2**30:.2f} GiB")
    return "\n".join(lines)
