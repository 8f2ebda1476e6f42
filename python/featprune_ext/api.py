"""`featprune_ext.prune`: the whole-model entry point, everything `featprune prune` does
except printing. Sits above data, methods and engine; the CLI calls it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence, Union

from .errors import InputError

__all__ = ["build_method", "prune"]

PathLike = Union[str, os.PathLike]


def build_method(method: str = "wanda", *, calib: Optional[str] = None, contrast: Optional[str] = None,
                 protect_top: float = 0.0, protect_absmax: Optional[float] = None, seed: int = 0):
    """The PruneMethod for `method` plus the paper's options: `contrast` (norm = base * base /
    contrast, implies the contrastive method) and outlier protection."""
    from .methods import OutlierProtection, get_method, parse_spec_components

    protection = OutlierProtection(top_percent=protect_top, absmax_threshold=protect_absmax)
    if contrast:
        if method not in ("wanda", "contrastive"):
            raise InputError(f"--contrast needs a calibrated method (wanda/contrastive), not --method {method}")
        if not calib:
            raise InputError("--contrast needs --calib SPEC for the base demonstrations")
        return get_method("contrastive", seed=seed, protection=protection,
                          base_buckets=parse_spec_components(calib),
                          contrast_buckets=parse_spec_components(contrast))
    if method == "contrastive":
        raise InputError("--method contrastive needs --contrast SPEC (e.g. --contrast code)")
    return get_method(method, seed=seed, protection=protection,
                      base_buckets=parse_spec_components(calib) if calib else None)


def _calibration(model_dir: Path, method, *, calib, calib_texts, contrast, data, nsamples, seqlen, shots, seed):
    from transformers import AutoConfig, AutoTokenizer

    from .data.calibration import build_contrast_calibration
    from .data.calibration_set import CalibrationSet, read_jsonl_texts
    from .engine.families import max_positions

    if not calib_texts and not calib:
        raise InputError(f"--method {method.name} needs calibration data: --calib SPEC or --calib-texts FILE.jsonl")
    if calib_texts and calib:
        raise InputError("give --calib or --calib-texts, not both (--calib texts:FILE.jsonl combines them)")
    try:
        config = AutoConfig.from_pretrained(model_dir)
    except (ValueError, KeyError, OSError) as exc:
        raise InputError(f"unknown architecture in {model_dir}/config.json: {str(exc).splitlines()[0]}") from None
    limit = max_positions(config)
    seqlen = seqlen or (min(2048, limit) if limit else 2048)
    if limit is not None and seqlen > limit:
        raise InputError(f"--seqlen {seqlen} is above the model's limit of {limit} positions")
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot load the tokenizer from {model_dir}: {str(exc).splitlines()[0]}") from None
    if calib:
        return build_contrast_calibration(calib, contrast, tokenizer, data=data, nsamples=nsamples, seqlen=seqlen,
                                          shots=shots, seed=seed)
    texts, buckets = read_jsonl_texts(calib_texts)
    return CalibrationSet.from_texts(texts, tokenizer, nsamples, seqlen, seed, buckets=buckets,
                                     source=str(calib_texts))


def prune(model_dir: PathLike, out_dir: PathLike, *, method: str = "wanda", sparsity: Optional[float] = None,
          pattern: Optional[Union[str, Sequence[int]]] = None, calib: Optional[str] = None,
          calib_texts: Optional[PathLike] = None, data: Optional[PathLike] = None, contrast: Optional[str] = None,
          nsamples: int = 128, seqlen: Optional[int] = None, shots: int = 4, seed: int = 0,
          protect_top: float = 0.0, protect_absmax: Optional[float] = None, device: str = "cpu",
          batch_size: int = 1, dtype: Optional[str] = None, resume: bool = False, progress: bool = True,
          dist=None) -> dict:
    """Prune every linear of every transformer block of a local Hugging Face model, one block at a time.

    model_dir: folder with config.json, *.safetensors and the tokenizer; never modified.
    out_dir: the pruned model's folder; must not exist. Built in `OUT.partial/` and renamed at the end.
    method: "wanda" (|W| * RMS of the inputs), "contrastive", "magnitude" or "random".
    sparsity: fraction of each row's entries set to zero, in [0, 1) (exactly floor(in_features * sparsity)).
    pattern: N:M semi-structured sparsity instead, "2:4" or (2, 4): N kept in every M consecutive inputs.
    calib: the paper's demonstrations, e.g. "mt:fr-en" (4-shot French->English), "mono:fr", "code",
        "texts:FILE.jsonl"; components joined with "+" keep separate statistics.
    calib_texts: instead of `calib`, a JSONL file of {"text": ...} objects (optional "bucket").
    data: corpus folder for `calib` (FLORES-200, TSV/JSONL, saved HF dataset, `featprune data gettext`).
    contrast: contrast set spec (e.g. "code"): norm = base * base / contrast (the paper's refinement).
    nsamples: calibration samples per spec component; seqlen: tokens per sample (default min(2048, model
        limit)); shots: demonstrations per sample; seed: sample selection and random-mask seed.
    protect_top: percent of input features (by RMS) never pruned in matrices reading the hidden state.
    protect_absmax: never prune input features whose max |x| reaches this value (LLM.int8() used 6.0).
    device: "cpu" or "cuda"; batch_size: calibration samples per forward pass.
    dtype: dtype of the forward passes, "float32", "bfloat16" or "float16" (default: the checkpoint's
        storage dtype); statistics are accumulated in fp32/fp64 and weights written in their stored dtype.
    resume: continue an interrupted run from `OUT.partial/`; progress: show a progress bar on stderr.
    dist: a DistContext for data-parallel calibration under torchrun (engine.distributed).

    Returns the run's report (also written to out_dir/featprune.json): method, calibration summary,
    per-layer and per-matrix sparsity, timings in seconds, peak memory in bytes, versions.
    Raises InputError on bad input (nothing complete-looking is left behind) and DiskFullError when
    the output disk fills up (free space and rerun with resume=True).
    """
    from .engine import prune_model, validate_pattern
    from .engine.checkpoint import Checkpoint

    from .engine.run import parse_dtype

    sparsity, pattern = validate_pattern(sparsity, pattern)
    parse_dtype(dtype)  # a bad name fails before any work
    if str(device).split(":")[0] not in ("cpu", "cuda"):
        raise InputError(f"--device must be cpu or cuda, got {device!r}")
    pruner = build_method(method, calib=calib, contrast=contrast, protect_top=protect_top,
                          protect_absmax=protect_absmax, seed=seed)
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    if out_dir.exists():
        raise InputError(f"{out_dir} already exists; refusing to overwrite it (choose another --out or delete it)")
    Checkpoint(model_dir).close()  # fails fast on a missing or corrupt model directory
    calibration = None
    if pruner.needs_calibration:
        calibration = _calibration(model_dir, pruner, calib=calib, calib_texts=calib_texts, contrast=contrast,
                                   data=data, nsamples=nsamples, seqlen=seqlen, shots=shots, seed=seed)
    return prune_model(model_dir, out_dir, calibration=calibration, method=pruner, sparsity=sparsity,
                       pattern=pattern, device=device, batch_size=batch_size, resume=resume, progress=progress,
                       dist=dist, dtype=dtype)
