"""config.json -> the settings featprune's built-in model code needs, or the reason it cannot run it.

Only what the calibration forward uses is read. A key the built-in code would have to guess is a
reason to fall back to transformers' own model code; the exceptions (_DEFAULTS) are defaults that all
four families' config classes share, or that cannot change a block's output.
"""

from __future__ import annotations

from typing import Any

__all__ = ["BuiltinConfig", "parse_config"]

_SUPPORTED = ("llama", "mistral", "qwen2", "gemma3_text")
_ACTIVATIONS = ("silu", "gelu_pytorch_tanh")
_REQUIRED = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size",
             "rms_norm_eps")
# Keys whose transformers default differs from what a missing key would mean here (e.g. Mistral's
# sliding_window defaults to 4096, Gemma 3's head_dim to 256): required, per family.
_REQUIRED_BY_FAMILY = {"mistral": ("num_key_value_heads", "sliding_window"), "qwen2": ("num_key_value_heads",),
                       "gemma3_text": ("num_key_value_heads", "head_dim", "query_pre_attn_scalar")}
# Defaults all four families' config classes share, except tie_word_embeddings: the output head is never
# run, so tying only decides whether the checkpoint must hold a separate lm_head.weight; tied accepts both.
_DEFAULTS: dict[str, Any] = {"attention_bias": False, "mlp_bias": False, "head_dim": None,
                             "tie_word_embeddings": True, "pad_token_id": None}


class BuiltinConfig:
    """config.json's values as attributes (a missing key raises AttributeError, as getattr's default
    expects), plus the resolved fields the built-in layers read."""

    def __init__(self, raw: dict, **resolved):
        self._raw = raw
        self.__dict__.update(resolved)

    def __getattr__(self, name: str):
        raw = self.__dict__.get("_raw", {})
        if name in raw:
            return raw[name]
        if name in _DEFAULTS:
            return _DEFAULTS[name]
        raise AttributeError(name)

    def get_text_config(self) -> BuiltinConfig:
        return self

    def __repr__(self) -> str:
        return f"BuiltinConfig(model_type={self.model_type!r}, layers={self.num_hidden_layers})"


def _rope_thetas(raw: dict, layer_types: list[str]) -> dict[str, float] | str:
    """layer type -> rope theta, or why the rope setting is not the plain (default) one."""
    params = raw.get("rope_parameters")
    if params is None:  # the format before transformers 5: rope_theta (+ rope_scaling)
        if raw.get("rope_scaling") is not None:
            return "rope_scaling is set"
        if "rope_theta" not in raw or raw.get("model_type") == "gemma3_text":
            return "no rope_parameters"
        return dict.fromkeys(layer_types, float(raw["rope_theta"]))
    per_type = params if all(t in params for t in layer_types) and "rope_theta" not in params \
        else dict.fromkeys(layer_types, params)
    thetas = {}
    for t in set(layer_types):
        p = per_type.get(t)
        if not isinstance(p, dict) or p.get("rope_type", "default") != "default" or "rope_theta" not in p:
            return f"rope {p!r} for {t} layers is not the default rope"
        thetas[t] = float(p["rope_theta"])
    return thetas


def parse_config(raw: dict) -> BuiltinConfig | str:
    """The built-in config for a config.json dict, or a one-line reason to use transformers instead."""
    mt = raw.get("model_type")
    if mt not in _SUPPORTED:
        return f"model_type {mt!r} has no built-in code (built in: {', '.join(_SUPPORTED)})"
    missing = [k for k in _REQUIRED + _REQUIRED_BY_FAMILY.get(mt, ()) if k not in raw]
    if missing:
        return f"config.json lacks {', '.join(missing)}"
    gemma = mt == "gemma3_text"
    act = raw.get("hidden_activation" if gemma else "hidden_act")
    if act not in _ACTIVATIONS:
        return f"activation {act!r} has no built-in code"
    heads = int(raw["num_attention_heads"])
    kv_heads = int(raw.get("num_key_value_heads") or heads)
    head_dim = raw.get("head_dim") or raw["hidden_size"] // heads
    n = int(raw["num_hidden_layers"])
    window = None
    if gemma:
        if raw.get("use_bidirectional_attention") or raw.get("attn_logit_softcapping") is not None:
            return "bidirectional or soft-capped attention has no built-in code"
        layer_types = raw.get("layer_types")
        if not isinstance(layer_types, list) or len(layer_types) != n \
                or set(layer_types) - {"full_attention", "sliding_attention"}:
            return "config.json's layer_types are missing or unknown"
        if "sliding_attention" in layer_types:
            if "sliding_window" not in raw:
                return "config.json lacks sliding_window"
            window = raw["sliding_window"]
        scaling = float(raw["query_pre_attn_scalar"]) ** -0.5
    else:
        scaling = float(head_dim) ** -0.5
        if mt == "qwen2" and raw.get("use_sliding_window"):
            return "Qwen2's sliding-window layers have no built-in code"
        if mt == "mistral":  # one sliding window for every layer, or none (null)
            window = raw["sliding_window"]
        layer_types = ["sliding_attention" if window is not None else "full_attention"] * n
        if raw.get("layer_types") not in (None, layer_types):
            return "config.json's layer_types have no built-in code"
    if window is not None and (not isinstance(window, int) or window <= 0):
        return f"sliding_window {window!r} is not a positive integer"
    thetas = _rope_thetas(raw, layer_types)
    if isinstance(thetas, str):
        return thetas
    return BuiltinConfig(raw, model_type=mt, gemma=gemma, activation=act, num_key_value_heads=kv_heads,
                         head_dim=int(head_dim), scaling=scaling, layer_types=layer_types, sliding_window=window,
                         rope_thetas=thetas)
