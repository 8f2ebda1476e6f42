"""featprune's built-in model code: the calibration forward of Llama, Mistral, Qwen2 and Gemma 3
(text) without importing transformers, whose model modules take seconds to import.

`--model-code transformers` (model_code="transformers") uses transformers' classes for every family
(the behaviour before the built-in code; also the fallback, under "auto", for every model the built-in
code does not cover); `--model-code builtin` refuses a model the built-in code does not cover.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import InputError
from .config import BuiltinConfig, parse_config
from .decoder import BuiltinCausalLM, build_causal_lm

__all__ = ["MODEL_CODES", "BuiltinCausalLM", "BuiltinConfig", "build_causal_lm", "builtin_config", "load_config",
           "transformers_config"]

MODEL_CODES = ("auto", "builtin", "transformers")


def builtin_config(config_dict: dict, model_code: str = "auto") -> BuiltinConfig | str:
    """The built-in config for a config.json dict, or why transformers' code runs it instead
    (unsupported, or model_code "transformers"). model_code "builtin": InputError when unsupported."""
    if model_code not in MODEL_CODES:
        raise InputError(f"--model-code must be one of {', '.join(MODEL_CODES)}, got {model_code!r}")
    if model_code == "transformers":
        return "--model-code transformers"
    config = parse_config(config_dict)
    if model_code == "builtin" and not isinstance(config, BuiltinConfig):
        raise InputError(f"--model-code builtin: featprune's own model code does not run this model ({config}); "
                         "use --model-code auto or transformers")
    return config


def transformers_config(model_dir, model_type=None):
    """transformers' AutoConfig for model_dir; InputError naming the model_type when it cannot read it."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(model_dir)
    except (ValueError, KeyError, OSError) as exc:
        raise InputError(f"unknown architecture (model_type {model_type!r}) in {model_dir}/config.json: "
                         f"{str(exc).splitlines()[0]}") from None


def load_config(model_dir, model_code: str = "auto"):
    """The model's config: the built-in one when the built-in code covers it (no transformers import)
    and model_code allows it, else transformers' AutoConfig."""
    try:
        raw = json.loads((Path(model_dir) / "config.json").read_text())
    except (OSError, ValueError):
        raw = None  # AutoConfig names the problem
    if not isinstance(raw, dict):
        return transformers_config(model_dir)
    builtin = builtin_config(raw, model_code)
    return builtin if isinstance(builtin, BuiltinConfig) else transformers_config(model_dir, raw.get("model_type"))
