"""`featprune_ext.prune`: the whole-model entry point, everything `featprune prune` does
except printing. Sits above data, methods and engine; the CLI calls it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence, Union

from .data.presets import PAPER_PRESET, PRESETS
from .errors import InputError

__all__ = ["PAPER_PRESET", "PRESETS", "build_method", "prune"]

PathLike = Union[str, os.PathLike]


def build_method(method: str = "wanda", *, calib: Optional[str] = None, contrast: Optional[str] = None,
                 protect_top: float = 0.0, protect_absmax: Optional[float] = None, seed: int = 0,
                 sparsegpt_damp: float = 0.01, sparsegpt_blocksize: int = 128):
    """The PruneMethod for `method` plus the paper's options: `contrast` (norm = base * base /
    contrast, implies the contrastive method) and outlier protection; SparseGPT's dampening and block size."""
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
                      base_buckets=parse_spec_components(calib) if calib else None,
                      sparsegpt_damp=sparsegpt_damp, sparsegpt_blocksize=sparsegpt_blocksize)


def _layerwise(layerwise, owl_m, owl_lambda, method, sparsity, pattern):
    """None, or the methods.OWL for `layerwise="owl"` (checked against the method and pattern)."""
    from .methods import OWL

    if layerwise is None:
        return None
    if layerwise != "owl":
        raise InputError(f"--layerwise must be owl, got {layerwise!r}")
    owl = OWL(m=owl_m, lam=owl_lambda)
    owl.check(method, sparsity, pattern)
    return owl


def _calibration(model_dir: Path, method, *, calib, calib_texts, contrast, data, nsamples, seqlen, shots, seed):
    """The calibration set, being built: a ForkedCall whose result() is the CalibrationSet.

    The settings are checked here; the tokenizer is loaded and the texts tokenized in a forked child
    (forked.py) while the caller goes on to build the model's skeleton."""
    from .data.calibration_set import read_calibration_texts
    from .engine.families import max_positions
    from .forked import ForkedCall
    from .models import load_config

    if not calib_texts and not calib:
        raise InputError(f"--method {method.name} needs calibration data: --calib SPEC or --calib-texts FILE "
                         "(.txt or .jsonl)")
    if calib_texts and calib:
        raise InputError("give --calib or --calib-texts, not both (--calib texts:FILE.jsonl combines them)")
    config = load_config(model_dir)
    limit = max_positions(config)
    seqlen = seqlen or (min(2048, limit) if limit else 2048)
    if limit is not None and seqlen > limit:
        raise InputError(f"--seqlen {seqlen} is above the model's limit of {limit} positions")
    texts, buckets = read_calibration_texts(calib_texts) if calib_texts else (None, None)
    return ForkedCall(lambda: _build_calibration(model_dir, calib, contrast, texts, buckets, calib_texts, data=data,
                                                 nsamples=nsamples, seqlen=seqlen, shots=shots, seed=seed))


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


def prune(model_dir: PathLike, out_dir: PathLike, *, method: str = "wanda", sparsity: Optional[float] = None,
          pattern: Optional[Union[str, Sequence[int]]] = None, calib: Optional[str] = None,
          calib_texts: Optional[PathLike] = None, data: Optional[PathLike] = None, contrast: Optional[str] = None,
          nsamples: Optional[int] = None, seqlen: Optional[int] = None, shots: Optional[int] = None, seed: int = 0,
          protect_top: float = 0.0, protect_absmax: Optional[float] = None, device: str = "cpu",
          batch_size: Union[int, str] = "auto", dtype: Optional[str] = None, resume: bool = False,
          progress: bool = True,
          dist=None, targets: Union[str, Sequence[str], None] = None, ignore: Union[str, Sequence[str], None] = None,
          preset: Optional[str] = None, sparsegpt_damp: float = 0.01, sparsegpt_blocksize: int = 128,
          layerwise: Optional[str] = None, owl_m: float = 5.0, owl_lambda: float = 0.08) -> dict:
    """Prune every linear of every transformer block of a Hugging Face model, one block at a time.

    model_dir: folder with config.json, *.safetensors and the tokenizer; never modified. Or a Hugging Face
        hub id "ORG/NAME" ("ORG/NAME@REVISION"): its snapshot in the local HF cache, else downloaded (hub.py).
    out_dir: the pruned model's folder; must not exist. Built in `OUT.partial/` and renamed at the end.
    method: "wanda" (|W| * RMS of the inputs), "contrastive", "magnitude", "random" or "sparsegpt"
        (Frantar & Alistarh 2023: OBS mask selection and updates of the kept weights from the inputs'
        Hessian 2 X^T X / n; methods/sparsegpt.py).
    sparsegpt_damp: SparseGPT's dampening, a fraction of the Hessian's mean diagonal added to it (default 0.01);
        sparsegpt_blocksize: columns per lazy-update block (default 128; a multiple of M for N:M).
    layerwise: "owl" for OWL's per-block sparsity (Yin et al. 2024): blocks with more outlier Wanda scores
        (above owl_m x their mean, default 5) are pruned less, spread over [s - owl_lambda, s + owl_lambda]
        (default 0.08) and shifted so the parameter-weighted mean is `sparsity`. Costs one extra dense pass
        over the model (engine/layerwise.py); with wanda, contrastive or sparsegpt; not with `pattern`.
    sparsity: fraction of each row's entries set to zero, in [0, 1) (exactly floor(in_features * sparsity)).
    pattern: N:M semi-structured sparsity instead, "2:4" or (2, 4): N kept in every M consecutive inputs.
    calib: the paper's demonstrations, e.g. "mt:fr-en" (4-shot French->English), "mono:fr", "code",
        "texts:FILE.jsonl"; components joined with "+" keep separate statistics.
    calib_texts: instead of `calib`, a plain-text file ending in .txt (one sample per paragraph, paragraphs
        separated by blank lines) or a JSONL file of {"text": ...} objects (optional "bucket").
    data: corpus folder for `calib` (FLORES-200, TSV/JSONL, saved HF dataset, `featprune data gettext`).
    contrast: contrast set spec (e.g. "code"): norm = base * base / contrast (the paper's refinement).
    nsamples: calibration samples, split across the spec's components (default 128); seqlen: tokens per
        sample (default min(2048, model limit)); shots: demonstrations per sample (default 4); seed: sample
        selection and random-mask seed. None means "the preset's value, else the default".
    preset: "paper" (PAPER_PRESET: 100 samples, 4 shots, 512 tokens, X->English demonstrations, FLORES dev
        split): fills nsamples/shots/seqlen left at None; explicit values win. Recorded in featprune.json,
        with any departure from the paper's design (also a warning). See data/presets.py.
    targets / ignore: which matrices to prune, a pattern or a list of them: a module class name of the
        model ("Linear", "Conv1D", "LlamaAttention") or a regular expression matched with re.fullmatch
        against the matrix's checkpoint name without ".weight" ("model.layers.0.self_attn.q_proj",
        ".*down_proj"). Default targets: every Linear/Conv1D in the blocks except MoE routers. A pattern
        that matches nothing is an InputError listing what exists; skipped matrices are copied unchanged
        and listed in featprune.json ("skipped", also per layer). See engine/select.py.
    protect_top: percent of input features (by RMS) never pruned in matrices reading the hidden state.
    protect_absmax: never prune input features whose max |x| reaches this value (LLM.int8() used 6.0).
    device: "cpu" or "cuda"; batch_size: calibration samples per forward pass, or "auto" (default: from the
        memory available, engine/batches.py auto_batch_size; the size used is in featprune.json).
    dtype: dtype of the forward passes, "float32", "bfloat16" or "float16" (default: the checkpoint's
        storage dtype); statistics are accumulated in fp32/fp64 and weights written in their stored dtype.
    resume: continue an interrupted run from `OUT.partial/`; progress: show a progress bar on stderr.
    dist: a DistContext for data-parallel calibration under torchrun (engine.distributed).

    Returns the run's report (also written to out_dir/featprune.json): method, calibration summary,
    per-layer and per-matrix sparsity, timings in seconds, peak memory in bytes, versions.
    Raises InputError on bad input (nothing complete-looking is left behind) and DiskFullError when
    the output disk fills up (free space and rerun with resume=True).
    """
    from .data.presets import resolve_settings
    from .engine import ModelSkeleton, prune_model, validate_pattern
    from .engine.batches import parse_dtype
    from .engine.checkpoint import Checkpoint
    from .engine.select import Selection
    from .hub import resolve_model

    sparsity, pattern = validate_pattern(sparsity, pattern)
    parse_dtype(dtype)  # a bad name fails before any work
    select = Selection.of(targets, ignore)
    if str(device).split(":")[0] not in ("cpu", "cuda"):
        raise InputError(f"--device must be cpu or cuda, got {device!r}")
    pruner = build_method(method, calib=calib, contrast=contrast, protect_top=protect_top,
                          protect_absmax=protect_absmax, seed=seed, sparsegpt_damp=sparsegpt_damp,
                          sparsegpt_blocksize=sparsegpt_blocksize)
    pruner.check_pattern(*(pattern or (0, 0)))
    owl = _layerwise(layerwise, owl_m, owl_lambda, pruner, sparsity, pattern)
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    if out_dir.exists():
        raise InputError(f"{out_dir} already exists; refusing to overwrite it (choose another --out or delete it)")
    model_dir = resolve_model(model_dir)  # a hub id: its snapshot in the HF cache, downloaded if need be
    ckpt = Checkpoint(model_dir)  # fails fast on a missing or corrupt model directory
    try:
        if not select.is_default:  # patterns are checked against the model before any calibration work
            select.resolve(ModelSkeleton(ckpt))
    finally:
        ckpt.close()
    settings = resolve_settings(preset, nsamples=nsamples, shots=shots, seqlen=seqlen, calib=calib,
                                calib_texts=calib_texts, data=data)
    calibration = None
    if pruner.needs_calibration:
        calibration = _calibration(model_dir, pruner, calib=calib, calib_texts=calib_texts, contrast=contrast,
                                   data=data, nsamples=settings.nsamples, seqlen=settings.seqlen,
                                   shots=settings.shots, seed=seed)
    try:
        return prune_model(model_dir, out_dir, calibration=calibration, method=pruner, sparsity=sparsity,
                           pattern=pattern, device=device, batch_size=batch_size, resume=resume, progress=progress,
                           dist=dist, dtype=dtype, select=select, notes={"preset": settings.record},
                           layerwise=owl)
    finally:
        if calibration is not None:
            calibration.close()  # a child still tokenizing when prune_model failed early
