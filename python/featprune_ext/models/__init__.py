"""featprune's built-in model code: the calibration forward of Llama, Mistral, Qwen2 and Gemma 3
(text) without importing transformers, whose model modules take seconds to import.

`FEATPRUNE_MODEL_CODE=transformers` uses transformers' classes for every family (the behaviour
before the built-in code; also the fallback for every model the built-in code does not cover).
"""

from __future__ import annotations

import os

from ..errors import InputError
from .config import BuiltinConfig, parse_config
from .decoder import BuiltinCausalLM, build_causal_lm

__all__ = ["BuiltinCausalLM", "BuiltinConfig", "build_causal_lm", "builtin_config"]

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
