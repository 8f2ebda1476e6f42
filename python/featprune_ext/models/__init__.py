"""featprune's built-in model code: the calibration forward of Llama, Mistral, Qwen2 and Gemma 3
(text) without importing transformers, whose model modules take seconds to import.

`FEATPRUNE_MODEL_CODE=transformers` uses transformers' classes for every family (the behaviour
before the built-in code; also the fallback for every model the built-in code does not cover).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import InputError
from .config import BuiltinConfig, parse_config
from .decoder import BuiltinCausalLM, build_causal_lm

__all__ = ["BuiltinCausalLM", "BuiltinConfig", "build_causal_lm", "builtin_config", "load_config",
           "transformers_config"]

_CHOICES = ("auto", "transformers")


def builtin_config(config_dict: dict) -> BuiltinConfig | str:
    """The built-in config for a config.json dict, or why transformers' code runs it instead
    (unsupported, or FEATPRUNE_MODEL_CODE=transformers)."""
    choice = os.environ.get("FEATPRUNE_MODEL_CODE", "auto") or "auto"
    if choice not in _CHOICES:
        raise InputError(f"FEATPRUNE_MODEL_CODE must be one of {', '.join(_CHOICES)}, got {choice!r}")
    if choice == "transformers":
        return "FEATPRUNE_MODEL_CODE=transformers"
    return parse_config(config_dict)


def transformers_config(model_dir, model_type=None):
    """transformers' AutoConfig for model_dir; InputError naming the model_type when it cannot read it."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(model_dir)
    except (ValueError, KeyError, OSError) as exc:
        raise InputError(f"unknown architecture (model_type {model_type!r}) in {model_dir}/config.json: "
                         f"{str(exc).splitlines()[0]}") from None


def load_config(model_dir):
    """The model's config: the built-in one when the built-in code covers it (no transformers import),
    else transformers' AutoConfig."""
    try:
        raw = json.loads((Path(model_dir) / "config.json").read_text())
    except (OSError, ValueError):
        raw = None  # AutoConfig names the problem
    if not isinstance(raw, dict):
        return transformers_config(model_dir)
    builtin = builtin_config(raw)
    return builtin if isinstance(builtin, BuiltinConfig) else transformers_config(model_dir, raw.get("model_type"))
