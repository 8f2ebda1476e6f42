"""Argument types shared by the subcommands: argparse reports their messages as usage errors."""

from __future__ import annotations

import argparse

__all__ = ["MODEL_HELP", "VALUE_TYPES", "batch_size", "fraction", "positive_int", "seconds"]

MODEL_HELP = ("model directory (config.json, safetensors, tokenizer) or Hugging Face hub id ORG/NAME[@REVISION] "
              "(found in the local HF cache, else downloaded)")


def fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {value}")
    return value


def batch_size(text: str):
    """A positive integer or "auto" (--batch-size)."""
    if text.strip().lower() == "auto":
        return "auto"
    return positive_int(text)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def seconds(text: str) -> float:
    """A number of seconds >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of seconds >= 0, got {text}")
    return value


# the value kinds of featprune_ext.settings.Option.type
VALUE_TYPES = {"int": int, "float": float, "fraction": fraction, "positive_int": positive_int,
               "batch_size": batch_size, "seconds": seconds}
