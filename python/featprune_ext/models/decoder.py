"""Built-in decoder code for Llama, Mistral, Qwen2 and Gemma 3 (text): the calibration forward only.

Importing transformers' model code costs seconds before any work (torch._dynamo through its mask
module, torch.distributed.tensor through its activations): 2.4 s of a 14 s run of Gemma 3 270M on 16
texts (bench/RESULTS.md). These modules run the same operations in the same order as transformers'
default SDPA path, so block outputs are bit-identical (tests/models compare them with the installed
transformers, per family and dtype); the module tree, parameter and class names are transformers', so
checkpoints load unchanged and --targets/--ignore patterns mean the same. No cache, no generation, no
logits: the engine only runs the embedding and the blocks.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from .config import BuiltinConfig
from .masks import sdpa_attention, sdpa_bool_mask

__all__ = ["BuiltinCausalLM", "build_causal_lm"]

_PREFIX = {"llama": "Llama", "mistral": "Mistral", "qwen2": "Qwen2", "gemma3_text": "Gemma3"}
_SUFFIX = {"RMSNorm": "RMSNorm", "GemmaRMSNorm": "RMSNorm", "ScaledEmbedding": "TextScaledWordEmbedding",
           "Attention": "Attention", "MLP": "MLP", "DecoderLayer": "DecoderLayer", "DecoderModel": "Model",
           "BuiltinCausalLM": "ForCausalLM"}


@functools.cache
def _named(base: type, model_type: str) -> type:
    """`base` under transformers' class name for the family (LlamaMLP, Gemma3DecoderLayer, ...), so
    --targets/--ignore class patterns select the same modules whichever code runs the model."""
    prefix = _PREFIX[model_type] + ("Text" if base.__name__ == "DecoderModel" and model_type == "gemma3_text" else "")
    return type(prefix + _SUFFIX[base.__name__], (base,), {"__module__": base.__module__, "__doc__": base.__doc__})


def _make(base: type, cfg: BuiltinConfig, *args):
    return _named(base, cfg.model_type)(*args)


class RMSNorm(nn.Module):
    """Llama's: normalise in fp32, cast back, then scale (weight * x)."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.to(torch.float32)
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


class GemmaRMSNorm(nn.Module):
    """Gemma's: scale by (1 + weight) in fp32, then cast back."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.float()
        y = y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + self.eps)
        return (y * (1.0 + self.weight.float())).type_as(x)


class ScaledEmbedding(nn.Embedding):
    """Gemma's word embedding, multiplied by sqrt(hidden) rounded to the weight's dtype."""

    def __init__(self, vocab: int, dim: int, padding_idx, scale: float, dtype: torch.dtype):
        super().__init__(vocab, dim, padding_idx)
        self.register_buffer("embed_scale", torch.tensor(scale, dtype=dtype), persistent=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return super().forward(ids) * self.embed_scale.to(self.weight.dtype)


def rotary_cos_sin(theta: float, head_dim: int, positions: torch.Tensor, dtype: torch.dtype):
    """Default rope: (cos, sin) of shape [1, L, head_dim], computed in fp32 and cast to `dtype`."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float) / head_dim))
    freqs = positions[..., None].float() * inv_freq.to(device=positions.device, dtype=torch.float)
    emb = torch.cat((freqs, freqs), dim=-1)
    return (emb.cos() * 1.0).to(dtype), (emb.sin() * 1.0).to(dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class Attention(nn.Module):
    def __init__(self, cfg: BuiltinConfig):
        super().__init__()
        hidden, heads, kv, hd = cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        qkv_bias = True if cfg.model_type == "qwen2" else bool(cfg.attention_bias) and cfg.model_type != "mistral"
        o_bias = bool(cfg.attention_bias) and cfg.model_type in ("llama", "gemma3_text")
        self.head_dim, self.groups, self.scaling = hd, heads // kv, cfg.scaling
        self.q_proj = nn.Linear(hidden, heads * hd, bias=qkv_bias)
        self.k_proj = nn.Linear(hidden, kv * hd, bias=qkv_bias)
        self.v_proj = nn.Linear(hidden, kv * hd, bias=qkv_bias)
        self.o_proj = nn.Linear(heads * hd, hidden, bias=o_bias)
        if cfg.gemma:
            self.q_norm = _make(GemmaRMSNorm, cfg, hd, cfg.rms_norm_eps)
            self.k_norm = _make(GemmaRMSNorm, cfg, hd, cfg.rms_norm_eps)

    def forward(self, x: torch.Tensor, position_embeddings, attention_mask) -> torch.Tensor:
        shape = x.shape[:-1]
        split = (*shape, -1, self.head_dim)
        q = self.q_proj(x).view(split).transpose(1, 2)
        k = self.k_proj(x).view(split).transpose(1, 2)
        v = self.v_proj(x).view(split).transpose(1, 2)
        if hasattr(self, "q_norm"):
            q, k = self.q_norm(q), self.k_norm(k)
        cos, sin = (t.unsqueeze(1) for t in position_embeddings)
        q, k = q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin
        out = sdpa_attention(q, k, v, attention_mask, self.scaling, self.groups)
        return self.o_proj(out.reshape(*shape, -1).contiguous())


class MLP(nn.Module):
    def __init__(self, cfg: BuiltinConfig):
        super().__init__()
        bias = bool(cfg.mlp_bias) and cfg.model_type == "llama"
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=bias)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=bias)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=bias)
        self.tanh_gelu = cfg.activation == "gelu_pytorch_tanh"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.gate_proj(x)
        act = F.gelu(gate, approximate="tanh") if self.tanh_gelu else F.silu(gate)
        return self.down_proj(act * self.up_proj(x))


class DecoderLayer(nn.Module):
    """Pre-norm block; Gemma 3 adds a norm after attention and around the MLP."""

    def __init__(self, cfg: BuiltinConfig):
        super().__init__()
        norm = _named(GemmaRMSNorm if cfg.gemma else RMSNorm, cfg.model_type)
        self.self_attn = _make(Attention, cfg, cfg)
        self.mlp = _make(MLP, cfg, cfg)
        self.input_layernorm = norm(cfg.hidden_size, cfg.rms_norm_eps)
        self.post_attention_layernorm = norm(cfg.hidden_size, cfg.rms_norm_eps)
        if cfg.gemma:
            self.pre_feedforward_layernorm = norm(cfg.hidden_size, cfg.rms_norm_eps)
            self.post_feedforward_layernorm = norm(cfg.hidden_size, cfg.rms_norm_eps)
        self.gemma = cfg.gemma

    def forward(self, hidden_states: torch.Tensor, position_embeddings, attention_mask) -> torch.Tensor:
        attn = self.self_attn(self.input_layernorm(hidden_states), position_embeddings, attention_mask)
        if self.gemma:
            h = hidden_states + self.post_attention_layernorm(attn)
            return h + self.post_feedforward_layernorm(self.mlp(self.pre_feedforward_layernorm(h)))
        h = hidden_states + attn
        return h + self.mlp(self.post_attention_layernorm(h))


class DecoderModel(nn.Module):
    def __init__(self, cfg: BuiltinConfig, dtype: torch.dtype):
        super().__init__()
        pad = cfg.pad_token_id if isinstance(cfg.pad_token_id, int) else None
        if cfg.gemma:
            self.embed_tokens = _make(ScaledEmbedding, cfg, cfg.vocab_size, cfg.hidden_size, pad,
                                      cfg.hidden_size ** 0.5, dtype)
        else:
            self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size, pad)
        self.layers = nn.ModuleList(_make(DecoderLayer, cfg, cfg) for _ in range(cfg.num_hidden_layers))
        self.norm = _make(GemmaRMSNorm if cfg.gemma else RMSNorm, cfg, cfg.hidden_size, cfg.rms_norm_eps)
        self.cfg = cfg

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **_) -> torch.Tensor:
        cfg = self.cfg
        h = self.embed_tokens(input_ids)
        if attention_mask is None:
            attention_mask = torch.ones(input_ids.shape, dtype=torch.long, device=input_ids.device)
        positions = torch.arange(h.shape[1], device=h.device).unsqueeze(0)
        masks, rope = {}, {}
        for t in set(cfg.layer_types):
            masks[t] = sdpa_bool_mask(attention_mask, cfg.sliding_window if t == "sliding_attention" else None)
            rope[t] = rotary_cos_sin(cfg.rope_thetas[t], cfg.head_dim, positions, h.dtype)
        for layer, t in zip(self.layers, cfg.layer_types):
            h = layer(h, position_embeddings=rope[t], attention_mask=masks[t])
        return self.norm(h)


class BuiltinCausalLM(nn.Module):
    """transformers' module tree (model.embed_tokens, model.layers, model.norm, lm_head) for the
    engine's skeleton; forward returns the final hidden states (the engine never computes logits)."""

    base_model_prefix = "model"

    def __init__(self, cfg: BuiltinConfig, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.config = cfg
        self.model = _make(DecoderModel, cfg, cfg, dtype)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        if cfg.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        self.to(dtype)

    def get_input_embeddings(self) -> nn.Module:
        return self.model.embed_tokens

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        return self.model(input_ids, attention_mask)


def build_causal_lm(cfg: BuiltinConfig, dtype: torch.dtype = torch.float32) -> BuiltinCausalLM:
    """The model for `cfg`, its classes under transformers' names (LlamaForCausalLM, ...)."""
    return _make(BuiltinCausalLM, cfg, cfg, dtype)
