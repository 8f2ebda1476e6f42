"""The model skeleton: config.json -> a causal LM whose parameters live on the meta device.

The model code is featprune's own (models/) for the families it covers, else transformers'.

Only what runs before the first block is loaded (of the word embedding, only the rows the
calibration tokens use); blocks are attached one at a time from the checkpoint and released.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from ..errors import InputError, NonFiniteError
from ..models import BuiltinConfig, build_causal_lm, builtin_config, transformers_config
from .checkpoint import Checkpoint
from .families import PrunableLinear, find_blocks, max_positions, prunable_linears
from .moe import check_no_fused_experts, unfuse_experts

__all__ = ["ModelSkeleton", "check_finite"]

_CHECK_CHUNK = 1 << 22  # elements per exact isfinite pass: bounded temporary memory on huge tensors


def check_finite(key: str, t: torch.Tensor) -> None:
    """NonFiniteError if a floating-point tensor read from the checkpoint holds NaN or inf.
    Runs on the reader thread right after the read, so it hides behind the previous block's compute;
    it shares the two cores with that compute, so it is one fp32 sum, not isfinite's bool tensor
    and reduction: a finite sum proves every element finite (a NaN or inf term never sums to a
    finite value). A non-finite sum (a bad value, or finite values overflowing) gets the exact check."""
    if not t.is_floating_point() or t.numel() == 0:
        return
    flat = t.reshape(-1)
    if bool(torch.isfinite(flat.sum(dtype=torch.float32))):
        return
    chunks = [flat[s:s + _CHECK_CHUNK] for s in range(0, flat.numel(), _CHECK_CHUNK)]  # bounded temporaries
    bad = sum(int((~torch.isfinite(c)).sum()) for c in chunks)
    if bad:
        kind = "NaN" if any(bool(torch.isnan(c).any()) for c in chunks) else "inf"
        raise NonFiniteError(f"checkpoint tensor {key!r} holds {bad} non-finite value(s) ({kind} among them): "
                             "the input model is corrupt (or was saved from a diverged run) and cannot be pruned")


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


_INIT_FUNCTIONS = ("uniform_", "normal_", "kaiming_uniform_", "zeros_", "ones_")  # what nn.Linear/Embedding call


@contextlib.contextmanager
def _no_random_init():
    """Skip torch.nn.init while the built-in model is built: its parameters are meta placeholders,
    and running the init functions on meta tensors imports torch._dynamo (about a second). Not used
    for transformers' classes, whose init may also fill real buffers."""
    saved = {name: getattr(nn.init, name) for name in _INIT_FUNCTIONS}
    for name in saved:
        setattr(nn.init, name, lambda tensor, *args, **kwargs: tensor)
    try:
        yield
    finally:
        for name, fn in saved.items():
            setattr(nn.init, name, fn)


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

    def __init__(self, ckpt: Checkpoint, compute_dtype: torch.dtype | None = None, *, model_code: str = "auto"):
        """compute_dtype: the dtype of the forward passes (default: the checkpoint's storage dtype).
        model_code: "auto" (featprune's built-in code where it covers the model, else transformers'),
        "builtin" (InputError where it does not) or "transformers"."""
        self.ckpt = ckpt
        self.storage_dtype = self._storage_dtype()
        self.dtype = compute_dtype or self.storage_dtype
        builtin = builtin_config(ckpt.config_dict, model_code)
        if isinstance(builtin, BuiltinConfig):
            with _params_on_meta(), _no_random_init():
                model = build_causal_lm(builtin, self.dtype)
            if set(ckpt.tensors) <= set(model.state_dict()):
                self.config, self.model_code = builtin, "builtin"
            else:
                builtin = "the checkpoint's tensor names are not transformers' module names"
                if model_code == "builtin":
                    raise InputError(f"--model-code builtin: {builtin}; use --model-code auto or transformers")
        if not isinstance(builtin, BuiltinConfig):
            self.config, model = self._transformers_model()
            self.model_code = f"transformers ({builtin})"
        self.model = model.eval()
        self.architecture = (ckpt.config_dict.get("architectures") or [type(model).__name__])[0]
        self.blocks_path, self.blocks = find_blocks(model)
        self.num_blocks = len(self.blocks)
        self.max_positions = max_positions(self.config)
        self._names = self._checkpoint_names()
        self._check_tensors()

    def _transformers_model(self):
        """(config, model with meta parameters) from transformers' own classes."""
        from transformers import AutoModelForCausalLM

        ckpt = self.ckpt
        config = transformers_config(ckpt.dir, ckpt.config_dict.get("model_type"))
        try:
            with _params_on_meta():
                model = AutoModelForCausalLM.from_config(config, dtype=self.dtype)
        except ValueError as exc:
            raise InputError(f"unknown architecture {ckpt.config_dict.get('architectures')}: "
                             f"{str(exc).splitlines()[0]}") from None
        return config, model

    def _storage_dtype(self) -> torch.dtype:
        floats = [i.dtype for i in self.ckpt.tensors.values() if i.dtype.is_floating_point and len(i.shape) == 2]
        if not floats:
            raise InputError(f"{self.ckpt.dir} holds no floating-point matrices")
        return max(set(floats), key=floats.count)

    def _checkpoint_names(self) -> dict[str, str]:
        """model parameter name -> checkpoint key. A checkpoint saved under the module tree's own
        names (most are) needs no renaming, which skips building transformers' conversion table
        (0.14 s for Gemma 3 on a 2-core CPU, 40% of the skeleton); others go through _renamed_names."""
        meta = self.model.state_dict()
        if all(ckey in meta for ckey in self.ckpt.tensors):
            names = {ckey: ckey for ckey in self.ckpt.tensors}
            check_no_fused_experts(self.model, names.get)
            return names
        return self._renamed_names()

    def _renamed_names(self) -> dict[str, str]:
        """transformers 5 renames some keys on load (GPT-NeoX's embed_out is lm_head in the module
        tree, MoE experts stored one by one are fused); reuse its own renaming rules."""
        prefix = getattr(self.model, "base_model_prefix", "") or ""
        try:
            from transformers.conversion_mapping import get_model_conversion_mapping
            from transformers.core_model_loading import WeightConverter, WeightRenaming, rename_source_key

            transforms = get_model_conversion_mapping(self.model)
            renamings = [t for t in transforms if isinstance(t, WeightRenaming)]
            converters = [t for t in transforms if isinstance(t, WeightConverter)]
        except (ImportError, AttributeError, TypeError):  # older transformers: names are used as saved
            rename_source_key = None
        unfused = {}
        if rename_source_key is not None and converters:  # MoE experts stored per expert: unfuse (moe.py)
            unfused = unfuse_experts(self.model, list(self.ckpt.tensors), renamings, converters, rename_source_key,
                                     prefix or None)
        names = {name: ckey for ckey, name in unfused.items()}
        meta = dict(self.model.state_dict())
        for ckey in self.ckpt.tensors:
            if ckey in unfused:
                continue
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
        check_no_fused_experts(self.model, names.get)
        return names

    def key(self, param_name: str) -> str | None:
        """The checkpoint key holding a module parameter (or persistent buffer), or None."""
        return self._names.get(param_name)

    def block_key(self, i: int, local_name: str) -> str:
        """The checkpoint key of block i's parameter `local_name` (e.g. "mlp.experts.3.w1.weight" ->
        "model.layers.0.block_sparse_moe.experts.3.w1.weight"; usually block_prefix[i] + local_name)."""
        return self._names.get(f"{self.blocks_path}.{i}.{local_name}") or self.block_prefix[i] + local_name

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
            check_finite(self.key(name), t)
            _set_tensor(model, name, t.to(device=device, dtype=dtype if t.is_floating_point() else t.dtype),
                        param=True)
        ids = torch.unique(calibration_ids)
        emb_path = self.module_path(emb)
        rows = self.ckpt.read_rows(self.embedding_key, ids)
        check_finite(self.embedding_key, rows)
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
        """Block i's tensors as stored; NonFiniteError names the first tensor holding NaN or inf."""
        tensors = {k: self.ckpt.read(k, pin_memory=pin_memory) for k in self.block_keys[i]}
        for k, t in tensors.items():
            check_finite(k, t)
        return tensors

    def attach_block(self, i: int, tensors: dict[str, torch.Tensor], device, dtype) -> nn.Module:
        block = self.blocks[i]
        for name, _ in list(block.named_parameters()):
            t = tensors[self.block_key(i, name)]
            _set_tensor(block, name, t.to(device=device, dtype=dtype if t.is_floating_point() else t.dtype), param=True)
        for name, b in list(block.named_buffers()):
            t = tensors.get(self.block_key(i, name))
            _set_tensor(block, name, (t if t is not None else b).to(device), param=False)
        return block

    def release_block(self, i: int) -> None:
        block = self.blocks[i]
        for name, p in list(block.named_parameters()):
            _set_tensor(block, name, torch.empty(p.shape, dtype=p.dtype, device="meta"), param=True)
