"""The settings of a prune run: one frozen dataclass per concern, validated once.

    CalibrationSettings   what the statistics are computed on (--calib, --calib-texts, --nsamples, ...)
    MethodSettings        what is pruned and how (--method, --sparsity, --pattern, --protect-top, ...)
    LayerwiseSettings     per-block sparsity allocation (--layerwise owl, --owl-m, --owl-lambda)
    StructuredSettings    whole channels, key/value groups, blocks, experts removed (--structured, --recovery, ...)
    EngineSettings        where and how the run executes (--device, --dtype, --batch-size, --resume, ...)

Every field carries its command-line flag and help (`Option`), so `featprune prune`'s argument groups
(cli/prune.py) and `featprune_ext.prune`'s keywords (api.py) are both built from these classes: an
option is declared once. A field left at None was not given; its effective default is applied where
it is used (and named in its help), so "not given" stays visible to the checks.

`PruneSettings.of(**options)` splits keywords by concern, and its __post_init__ validates the values
and the combinations: an option that does not apply to the chosen method or mode (`--sparsegpt-damp`
with wanda, `--owl-m` without `--layerwise owl`, `--protect-top` with magnitude, `--calib` with a method
that reads no activations, ...) is an InputError naming it.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence, Union

from .errors import InputError

__all__ = ["MODEL_CODES", "CalibrationSettings", "EngineSettings", "LayerwiseSettings", "MethodSettings", "Option",
           "PruneSettings", "StructuredSettings", "flag_of"]

PathLike = Union[str, os.PathLike]
MODEL_CODES = ("auto", "builtin", "transformers")
DTYPES = ("float32", "bfloat16", "float16")


@dataclass(frozen=True)
class Option:
    """How a settings field appears on the command line (the flag is derived from the field's name)."""

    help: str
    type: Optional[str] = None  # the value's kind, parsed by cli/args.py: int, float, fraction, positive_int, ...
    metavar: Optional[str] = None
    choices: Union[Sequence[str], Callable[[], Sequence[str]], None] = None  # a callable: resolved by the parser
    action: Optional[str] = None  # "append" (repeatable), "store_true"
    cli: bool = True  # False: a keyword of featprune_ext.prune only


def _option(default, help: str, **kw):
    return field(default=default, metadata={"option": Option(help, **kw)})


def flag_of(name: str) -> str:
    """The command-line flag of the settings field `name`: sparsegpt_damp -> --sparsegpt-damp."""
    return "--" + name.replace("_", "-")


def _presets():
    from .data.presets import PRESETS

    return sorted(PRESETS)


def _methods():
    from .methods import method_names

    return method_names()


@dataclass(frozen=True)
class CalibrationSettings:
    """What the statistics are computed on."""

    TITLE = "calibration data"
    calib: Optional[str] = _option(None, "the paper's demonstrations: mt:fr-en (translation), mono:fr, code, "
                                         "texts:FILE.jsonl; combine with + (mt:fr-en+mt:zh-en); statistics are kept "
                                         "per component", metavar="SPEC")
    calib_texts: Optional[PathLike] = _option(None, "your own calibration text, instead of --calib: a .txt file (one "
                                                    "sample per paragraph, paragraphs separated by blank lines) or a "
                                                    'JSONL file of {"text": ...} objects (optional "bucket" field)',
                                              metavar="FILE")
    data: Optional[PathLike] = _option(None, "parallel/monolingual corpus for --calib: FLORES-200 dir, TSV/JSONL, "
                                             "saved HF dataset, or `featprune data gettext` output", metavar="DIR")
    contrast: Optional[str] = _option(None, "contrast set (e.g. code or mono:en): prune with norm = base * base / "
                                            "contrast (the paper's refinement); implies --method contrastive",
                                      metavar="SPEC")
    preset: Optional[str] = _option(None, "paper: the paper's calibration (100 samples, 4 shots, 512 tokens, "
                                          "X->English demonstrations, FLORES dev split); explicit --nsamples/--shots/"
                                          "--seqlen override it", choices=_presets)
    nsamples: Optional[int] = _option(None, "calibration samples (default 128; 100 with --preset paper)",
                                      type="positive_int")
    seqlen: Optional[int] = _option(None, "tokens per sample, longer texts are cut (default: min(2048, model limit); "
                                          "512 with --preset paper)", type="positive_int")
    shots: Optional[int] = _option(None, "demonstrations per sample of --calib (default 4, as the paper)",
                                   type="positive_int")
    seed: int = _option(0, "sample selection and random-mask seed (default 0)", type="int")

    def given(self) -> list[str]:
        return _given(self)


@dataclass(frozen=True)
class MethodSettings:
    """What is pruned, and how."""

    TITLE = "method"
    method: str = _option("wanda", "default: wanda", choices=_methods)
    sparsity: Optional[float] = _option(None, "fraction of each row to prune, e.g. 0.5", type="fraction")
    pattern: Union[str, Sequence[int], None] = _option(None, "N:M semi-structured sparsity instead, e.g. 2:4")
    targets: Union[str, Sequence[str], None] = _option(
        None, "prune only matching matrices (repeatable): a module class name (Linear, Conv1D, LlamaAttention) or a "
              "regex matched with re.fullmatch against the checkpoint name without .weight "
              "(model.layers.0.self_attn.q_proj, '.*down_proj'); default: every Linear/Conv1D in the blocks except "
              "MoE routers", metavar="PATTERN", action="append")
    ignore: Union[str, Sequence[str], None] = _option(
        None, "never prune matching matrices (repeatable; same syntax as --targets); they are copied unchanged and "
              "listed as skipped in featprune.json", metavar="PATTERN", action="append")
    protect_top: Optional[float] = _option(None, "wanda/contrastive: never prune the top P%% input features by RMS "
                                                 "in matrices reading the hidden state", type="float", metavar="P")
    protect_absmax: Optional[float] = _option(None, "wanda/contrastive: never prune input features whose max |x| "
                                                    "reaches T (LLM.int8() used 6.0); off by default", type="float",
                                              metavar="T")
    sparsegpt_damp: Optional[float] = _option(None, "sparsegpt: dampening, a fraction of the Hessian's mean diagonal "
                                                    "(default 0.01)", type="float", metavar="F")
    sparsegpt_blocksize: Optional[int] = _option(None, "sparsegpt: columns per lazy-update block (default 128)",
                                                 type="positive_int", metavar="B")

    def given(self) -> list[str]:
        return _given(self, exclude=("method",))


@dataclass(frozen=True)
class LayerwiseSettings:
    """How the target sparsity is spread over the blocks (default: the same for every block)."""

    TITLE = "layer-wise sparsity"
    layerwise: Optional[str] = _option(None, "owl: per-block sparsity from each block's share of outlier Wanda scores "
                                             "(Yin et al. 2024); one extra dense pass over the model; with --sparsity, "
                                             "not --pattern", choices=("owl",))
    owl_m: Optional[float] = _option(None, "owl: a score is an outlier above M x the block's mean score (default 5)",
                                     type="float", metavar="M")
    owl_lambda: Optional[float] = _option(None, "owl: block sparsities spread over [s - L, s + L] (default 0.08)",
                                          type="float", metavar="L")

    def given(self) -> list[str]:
        return _given(self)


@dataclass(frozen=True)
class StructuredSettings:
    """Structured pruning: whole MLP channels, key/value groups, blocks and experts removed, so the output is a smaller
    dense model (docs/structured.md). The defaults are structured.Options()'s, the arm that measured best on held-out
    text (bench/results_structured.md): the wanda score; Adam recovery, 80-160 steps (8 passes) of 1024 tokens
    drawn from at most 32768 kept, lr 0.01 x each matrix's RMS decaying on a cosine, toward the dense model's
    residual stream."""

    TITLE = "structured pruning"
    structured: Optional[str] = _option(None, "remove whole structures: a comma list of mlp=FRACTION (MLP channels "
                                              "per block), heads=FRACTION (key/value groups with their query heads), "
                                              "blocks=COUNT (whole blocks, lowest influence first), experts=FRACTION "
                                              "(experts per MoE block, lowest routing saliency first), e.g. mlp=0.25; "
                                              "combines with --sparsity/--pattern on the remaining matrices",
                                        metavar="SPEC")
    structured_score: Optional[str] = _option(None, "channel/group score: wanda (||X_j|| x ||W[:, j]||, default) or "
                                                    "magnitude (||W[:, j]||)", choices=("wanda", "magnitude"))
    recovery: Optional[str] = _option(None, "rebuild each cut block toward the dense block's outputs on the "
                                            "calibration tokens: adam (default: Adam steps on the kept weights), ls "
                                            "(least-squares refit of down_proj/o_proj) or none",
                                      choices=("adam", "ls", "none"))
    recovery_damp: Optional[float] = _option(None, "ls: ridge, a fraction of the kept Gram's mean diagonal "
                                                   "(default 0.01)", type="float", metavar="F")
    recovery_steps: Optional[int] = _option(None, "adam: steps per cut module (default: about 8 passes over the kept "
                                                  "tokens, 80 to 160)", type="positive_int", metavar="N")
    recovery_lr: Optional[float] = _option(None, "adam: peak learning rate relative to each weight matrix's RMS, "
                                                 "decaying to 0 on a cosine (default 0.01)", type="float", metavar="LR")
    recovery_tokens: Optional[int] = _option(None, "adam: calibration tokens per MLP minibatch (default 1024)",
                                             type="positive_int", metavar="N")
    recovery_fit_tokens: Optional[int] = _option(None, "adam: calibration tokens the MLP refit keeps, drawn at random "
                                                       "(default 32768): bounds the recovery's memory; scores use "
                                                       "every token", type="positive_int", metavar="N")
    recovery_target: Optional[str] = _option(None, "adam: what each cut MLP is fit to: model (default: the dense "
                                                   "model's hidden states after the block, which also undoes the "
                                                   "drift of the blocks cut before) or block (the dense MLP's "
                                                   "outputs on the same inputs)", choices=("model", "block"))

    def given(self) -> list[str]:
        return _given(self)

    def options(self):
        """The structured.Options of these settings (None: no --structured)."""
        from .structured import Options

        if self.structured is None:
            return None
        given = {"score": self.structured_score, "recovery": self.recovery, "damp": self.recovery_damp,
                 "adam_steps": self.recovery_steps, "adam_lr": self.recovery_lr, "adam_tokens": self.recovery_tokens,
                 "fit_tokens": self.recovery_fit_tokens, "target": self.recovery_target}
        return Options(**{k: v for k, v in given.items() if v is not None})


@dataclass(frozen=True)
class EngineSettings:
    """Where and how the run executes; none of these changes which weights are pruned, except dtype (the
    precision of the forward passes, hence of the statistics)."""

    TITLE = "engine"
    device: str = _option("cpu", "cpu or cuda (default cpu)")
    dtype: Optional[str] = _option(None, "dtype of the forward passes (default: the checkpoint's storage dtype); "
                                         "statistics are accumulated in fp32/fp64 and weights are written back in "
                                         "their stored dtype", choices=DTYPES)
    batch_size: Union[int, str] = _option("auto", "calibration samples per forward pass, or auto (default): as many "
                                                  "as keep one block's activations under a quarter of the free memory, "
                                                  "up to 2048 tokens per batch on CPU and 16384 on CUDA; padding never "
                                                  "enters the statistics", type="batch_size")
    model_code: str = _option("auto", "the calibration forward's code: builtin (featprune's own Llama, Mistral, Qwen2, "
                                      "Gemma 3; refused for other families), transformers (transformers' classes), or "
                                      "auto (default: builtin where it covers the model)", choices=MODEL_CODES)
    resume: bool = _option(False, "continue an interrupted run from OUT.partial", action="store_true")
    resume_interval: Optional[float] = _option(
        None, "seconds between resume points when a block's saved outputs would be large next to its weights "
              "(default 60; 0: every block); blocks after the last resume point are redone by --resume",
        type="seconds", metavar="S")
    progress: bool = _option(True, "a progress bar on stderr", cli=False)

    def given(self) -> list[str]:
        return _given(self)


CONCERNS = (("calibration", CalibrationSettings), ("method", MethodSettings), ("layerwise", LayerwiseSettings),
            ("structured", StructuredSettings), ("engine", EngineSettings))


def _given(settings, exclude=()) -> list[str]:
    """The fields of `settings` that differ from their defaults (the options the caller gave)."""
    return [f.name for f in dataclasses.fields(settings)
            if f.name not in exclude and getattr(settings, f.name) != f.default]


def options_of(cls) -> list[tuple[dataclasses.Field, Option]]:
    """(field, Option) of every option of a settings class, in declaration order."""
    return [(f, f.metadata["option"]) for f in dataclasses.fields(cls) if "option" in f.metadata]


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class PruneSettings:
    """Every setting of a prune run, by concern; constructing one validates them all."""

    calibration: CalibrationSettings = field(default_factory=CalibrationSettings)
    method: MethodSettings = field(default_factory=MethodSettings)
    layerwise: LayerwiseSettings = field(default_factory=LayerwiseSettings)
    structured: StructuredSettings = field(default_factory=StructuredSettings)
    engine: EngineSettings = field(default_factory=EngineSettings)

    @classmethod
    def of(cls, **options) -> PruneSettings:
        """Settings from flat keywords (featprune_ext.prune's, argparse's dests); TypeError for an unknown one."""
        parts = {}
        for concern, klass in CONCERNS:
            names = {f.name for f in dataclasses.fields(klass)}
            parts[concern] = klass(**{k: options.pop(k) for k in list(options) if k in names})
        if options:
            raise TypeError(f"unknown prune option(s): {', '.join(sorted(options))}")
        return cls(**parts)

    def __post_init__(self) -> None:
        from .methods import method_reads_calibration

        self._check_values()
        self._check_method()
        self._check_layerwise()
        self._check_structured()
        self._check_calibration(method_reads_calibration(self.method_name) or self.structured.structured is not None)

    # -- the checks, in the order a user meets them --
    def _check_values(self) -> None:
        from .engine.batches import parse_batch_size, parse_dtype, validate_pattern

        m, e = self.method, self.engine
        if self.structured.structured is None or m.sparsity is not None or m.pattern is not None:
            validate_pattern(m.sparsity, m.pattern)  # --structured alone prunes no weights inside the kept matrices
        parse_dtype(e.dtype)  # a bad name fails before any work
        parse_batch_size(e.batch_size)
        if str(e.device).split(":")[0] not in ("cpu", "cuda"):
            raise InputError(f"--device must be cpu or cuda, got {e.device!r}")
        if e.model_code not in MODEL_CODES:
            raise InputError(f"--model-code must be one of {', '.join(MODEL_CODES)}, got {e.model_code!r}")
        if e.resume_interval is not None and not (_is_number(e.resume_interval) and e.resume_interval >= 0):
            raise InputError(f"--resume-interval must be a number of seconds >= 0, got {e.resume_interval!r}")

    def _check_method(self) -> None:
        """Options the chosen method does not read (each method's factory names the ones it takes)."""
        from .methods import method_options

        m, c = self.method, self.calibration
        if c.contrast:  # the paper's refinement: wanda (or contrastive) with a contrast set
            if m.method not in ("wanda", "contrastive"):
                raise InputError(f"--contrast needs a calibrated method (wanda/contrastive), not --method {m.method}")
            if not c.calib:
                raise InputError("--contrast needs --calib SPEC for the base demonstrations")
        elif m.method == "contrastive":
            raise InputError("--method contrastive needs --contrast SPEC (e.g. --contrast code)")
        takes = method_options(self.method_name)
        for name in m.given():
            param = _METHOD_PARAM.get(name)
            if param is not None and param not in takes:
                raise InputError(f"{flag_of(name)} does not apply to --method {m.method}")

    @property
    def method_name(self) -> str:
        """The method that runs: --contrast turns wanda into contrastive."""
        return "contrastive" if self.calibration.contrast else self.method.method

    def _check_layerwise(self) -> None:
        lw = self.layerwise
        if lw.layerwise is None:
            for name in lw.given():
                raise InputError(f"{flag_of(name)} does not apply without --layerwise owl")
        elif lw.layerwise != "owl":
            raise InputError(f"--layerwise must be owl, got {lw.layerwise!r}")
        else:
            self.owl()  # its values: OWL's own checks

    def _check_structured(self) -> None:
        """--structured's spec on its own (against the model: engine.RunConfig.plan); the recovery and
        score options only with --structured, and each recovery's own options only with that recovery."""
        from .structured import parse_spec

        st = self.structured
        if st.structured is None:
            for name in st.given():
                raise InputError(f"{flag_of(name)} does not apply without --structured SPEC")
            return
        parse_spec(st.structured)
        if self.layerwise.layerwise is not None:
            raise InputError("--layerwise does not combine with --structured")
        if self.engine.dtype is not None:
            raise InputError("--dtype does not combine with --structured: the forward passes run in the stored dtype")
        recovery = st.options().recovery
        own = {"recovery_damp": "ls", "recovery_steps": "adam", "recovery_lr": "adam", "recovery_tokens": "adam",
               "recovery_fit_tokens": "adam", "recovery_target": "adam"}
        for name, needs in own.items():
            if getattr(st, name) is not None and recovery != needs:
                raise InputError(f"{flag_of(name)} applies to --recovery {needs}, not --recovery {recovery}")
        st.options().check()

    def _check_calibration(self, needs_calibration: bool) -> None:
        """Calibration options with a method that reads no calibration data (magnitude, random); else the
        calibration source: --calib or --calib-texts, not both, and --shots/--data only with --calib."""
        c = self.calibration
        if not needs_calibration:
            for name in ("calib", "calib_texts", "data", "preset", "nsamples", "seqlen", "shots"):
                if getattr(c, name) is not None:
                    raise InputError(f"{flag_of(name)} does not apply to --method {self.method_name}: it reads no "
                                     "calibration data")
            return
        if not c.calib_texts and not c.calib:
            raise InputError(f"--method {self.method_name} needs calibration data: --calib SPEC or --calib-texts "
                             "FILE (.txt or .jsonl)")
        if c.calib_texts and c.calib:
            raise InputError("give --calib or --calib-texts, not both (--calib texts:FILE.jsonl combines them)")
        if c.calib_texts and c.shots is not None:
            raise InputError("--shots does not apply to --calib-texts: it counts the demonstrations of --calib")

    # -- what the run is built from --
    def owl(self):
        """None, or the methods.OWL of `--layerwise owl` (its own checks: m, lambda)."""
        from .methods import OWL

        lw = self.layerwise
        if lw.layerwise is None:
            return None
        return OWL(m=5.0 if lw.owl_m is None else lw.owl_m, lam=0.08 if lw.owl_lambda is None else lw.owl_lambda)

    def structured_request(self):
        """None, or the engine's StructuredRequest of `--structured SPEC` (checked against the model by the engine)."""
        from .structured import StructuredRequest, parse_spec

        st = self.structured
        if st.structured is None:
            return None
        return StructuredRequest(parse_spec(st.structured), st.options())

    def build_method(self):
        """The PruneMethod, from the registry, with the options its factory takes."""
        from .methods import OutlierProtection, get_method, method_options, parse_spec_components

        m, c = self.method, self.calibration
        options: dict[str, Any] = {}
        takes = method_options(self.method_name)
        if "seed" in takes:
            options["seed"] = c.seed
        if c.calib and "base_buckets" in takes:
            options["base_buckets"] = parse_spec_components(c.calib)
        if c.contrast:
            options["contrast_buckets"] = parse_spec_components(c.contrast)
        if "protection" in takes:
            options["protection"] = OutlierProtection(top_percent=m.protect_top or 0.0,
                                                      absmax_threshold=m.protect_absmax)
        if m.sparsegpt_damp is not None:
            options["sparsegpt_damp"] = m.sparsegpt_damp
        if m.sparsegpt_blocksize is not None:
            options["sparsegpt_blocksize"] = m.sparsegpt_blocksize
        return get_method(self.method_name, **options)


# method options -> the factory parameter that reads them (methods.method_options)
_METHOD_PARAM = {"protect_top": "protection", "protect_absmax": "protection", "sparsegpt_damp": "sparsegpt_damp",
                 "sparsegpt_blocksize": "sparsegpt_blocksize"}

