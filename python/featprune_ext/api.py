"""`featprune_ext.prune`: the whole-model entry point, everything `featprune prune` does
except printing. Sits above data, methods and engine; the CLI calls it."""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Union

from .data.presets import PAPER_PRESET, PRESETS
from .errors import InputError
from .settings import CONCERNS, PruneSettings, flag_of, options_of

__all__ = ["PAPER_PRESET", "PRESETS", "PruneSettings", "build_method", "prune"]

PathLike = Union[str, os.PathLike]


def build_method(method: str = "wanda", **options):
    """The PruneMethod that `featprune prune --method METHOD ...` runs, from the same keywords as
    prune() (calib, contrast, protect_top, protect_absmax, seed, sparsegpt_damp, ...)."""
    return PruneSettings.of(method=method, **options).build_method()


def _calibration(model_dir: Path, *, calib, calib_texts, contrast, data, nsamples, seqlen, shots, seed, model_code,
                 fork):
    """The calibration set, being built: a ForkedCall whose result() is the CalibrationSet.

    The sequence length is checked against the model here; the tokenizer is loaded and the texts
    tokenized in a forked child (forked.py; fork=False: here) while the caller goes on to build the
    model's skeleton."""
    from .data.calibration_set import read_calibration_texts
    from .engine.families import max_positions
    from .forked import ForkedCall
    from .models import load_config

    config = load_config(model_dir, model_code)
    limit = max_positions(config)
    seqlen = seqlen or (min(2048, limit) if limit else 2048)
    if limit is not None and seqlen > limit:
        raise InputError(f"--seqlen {seqlen} is above the model's limit of {limit} positions")
    texts, buckets = read_calibration_texts(calib_texts) if calib_texts else (None, None)
    return ForkedCall(lambda: _build_calibration(model_dir, calib, contrast, texts, buckets, calib_texts, data=data,
                                                 nsamples=nsamples, seqlen=seqlen, shots=shots, seed=seed),
                      fork=None if fork else False)


def _load_tokenizer(model_dir):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(model_dir)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot load the tokenizer from {model_dir}: {str(exc).splitlines()[0]}") from None


def _build_calibration(model_dir, calib, contrast, texts, buckets, calib_texts, **options):
    from .data.calibration import build_contrast_calibration
    from .data.calibration_set import CalibrationSet
    from .data.token_cache import CachedTokenizer, token_cache_dir

    # the tokenizer is loaded only if a text's ids are not in the token cache (data/token_cache.py)
    tokenizer = CachedTokenizer(Path(model_dir), lambda: _load_tokenizer(model_dir), token_cache_dir())
    if calib:
        calibration = build_contrast_calibration(calib, contrast, tokenizer, **options)
    else:
        calibration = CalibrationSet.from_texts(texts, tokenizer, options["nsamples"], options["seqlen"],
                                                options["seed"], buckets=buckets, source=str(calib_texts))
    tokenizer.save()
    calibration.summary["token_cache"] = tokenizer.status
    return calibration


def prune(model_dir: PathLike, out_dir: PathLike, *, dist=None, tuning=None, **options) -> dict:
    """Prune every linear of every transformer block of a Hugging Face model, one block at a time.

    model_dir: folder with config.json, *.safetensors and the tokenizer; never modified. Or a Hugging Face
        hub id "ORG/NAME" ("ORG/NAME@REVISION"): its snapshot in the local HF cache, else downloaded (hub.py).
    out_dir: the pruned model's folder; must not exist. Built in `OUT.partial/` and renamed at the end.
    options: the settings of `featprune prune`, as keywords (featprune_ext.settings, listed below; a
        keyword left out, or None, is "not given"); an option that does not apply to the chosen method
        or mode is an InputError naming it.
    dist: a DistContext for data-parallel calibration under torchrun (engine.distributed).
    tuning: an engine.tuning.Tuning: speed levers for benchmarks (never changes a mask).

    Returns the run's report (also written to out_dir/featprune.json): method, calibration summary,
    per-layer and per-matrix sparsity, timings in seconds, peak memory in bytes, versions.
    Raises InputError on bad input (nothing complete-looking is left behind) and DiskFullError when
    the output disk fills up (free space and rerun with resume=True).
    """
    return prune_with(model_dir, out_dir, PruneSettings.of(**options), dist=dist, tuning=tuning)


def prune_with(model_dir: PathLike, out_dir: PathLike, settings: PruneSettings, *, dist=None, tuning=None) -> dict:
    """prune() from validated settings."""
    from .data.presets import resolve_settings
    from .engine import ModelSkeleton, prune_model, validate_pattern
    from .engine.checkpoint import Checkpoint
    from .engine.select import Selection
    from .engine.tuning import DEFAULT_TUNING
    from .hub import resolve_model

    tuning = tuning or DEFAULT_TUNING
    c, m, e = settings.calibration, settings.method, settings.engine
    structured = settings.structured_request()
    sparsity, pattern = None, None
    if structured is None or m.sparsity is not None or m.pattern is not None:
        sparsity, pattern = validate_pattern(m.sparsity, m.pattern)
    select = Selection.of(m.targets, m.ignore)
    pruner = settings.build_method()
    pruner.check_pattern(*(pattern or (0, 0)))
    owl = settings.owl()
    if owl is not None:
        owl.check(pruner, sparsity, pattern)
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    if out_dir.exists():
        raise InputError(f"{out_dir} already exists; refusing to overwrite it (choose another --out or delete it)")
    model_dir = resolve_model(model_dir)  # a hub id: its snapshot in the HF cache, downloaded if need be
    ckpt = Checkpoint(model_dir)  # fails fast on a missing or corrupt model directory
    try:
        if not select.is_default:  # patterns are checked against the model before any calibration work
            select.resolve(ModelSkeleton(ckpt, model_code=e.model_code))
    finally:
        ckpt.close()
    preset = resolve_settings(c.preset, nsamples=c.nsamples, shots=c.shots, seqlen=c.seqlen, calib=c.calib,
                              calib_texts=c.calib_texts, data=c.data)
    calibration = None
    if pruner.needs_calibration or structured is not None:
        calibration = _calibration(model_dir, calib=c.calib, calib_texts=c.calib_texts, contrast=c.contrast,
                                   data=c.data, nsamples=preset.nsamples, seqlen=preset.seqlen, shots=preset.shots,
                                   seed=c.seed, model_code=e.model_code, fork=tuning.fork)
    try:
        return prune_model(model_dir, out_dir, calibration=calibration, method=pruner, sparsity=sparsity,
                           pattern=pattern, device=e.device, batch_size=e.batch_size, resume=e.resume,
                           progress=e.progress, dist=dist, dtype=e.dtype, select=select,
                           notes={"preset": preset.record}, layerwise=owl, model_code=e.model_code,
                           resume_interval_s=e.resume_interval, tuning=tuning, structured=structured)
    finally:
        if calibration is not None:
            calibration.close()  # a child still tokenizing when prune_model failed early


def _signature_and_doc() -> tuple[inspect.Signature, str]:
    """prune()'s keywords and their help, from the settings classes (one declaration per option)."""
    params = [inspect.Parameter("model_dir", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation="PathLike"),
              inspect.Parameter("out_dir", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation="PathLike")]
    lines = []
    for _, cls in CONCERNS:
        lines.append(f"\n    {cls.TITLE} ({cls.__name__}):")
        for f, opt in options_of(cls):
            params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default))
            flag = "" if not opt.cli else f" ({flag_of(f.name)})"
            lines.append(f"    {f.name}{flag}: {opt.help.replace('%%', '%')}")
    for name in ("dist", "tuning"):
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None))
    return inspect.Signature(params, return_annotation=dict), "\n".join(lines)


prune.__signature__, _options_doc = _signature_and_doc()
if prune.__doc__:  # None under python -OO
    prune.__doc__ += "\n    Options, by concern:" + _options_doc + "\n"
