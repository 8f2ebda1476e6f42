"""Calibration sets: translation demonstrations (the paper's), monolingual text, code, or any texts.

A spec is one or more components joined with ``+``; each component is a *bucket* whose activation
statistics the engine keeps apart (so contrastive pruning can divide one by another):

* ``mt:SRC-TGT``  translation demonstrations, ``{Src}: {s}{eos}{Tgt}: {t}{eos}`` repeated ``shots`` times
  per sample (Kim et al. 2024). ``mt:fr-en`` is French source, English target. Pairs come from
  ``data`` (any :func:`corpora.load_parallel` layout, calibration split) or, without ``data``, from this
  machine's gettext catalogs.
* ``mono:LANG``   ``{Lang}: {s}{eos}`` repeated ``shots`` times; sentences from ``data`` (the LANG side of
  a parallel corpus, or a text file) or, without it, from the dataset-build package.
* ``code``        windows of Python standard-library source, concatenated until a sample is full
  (``code:DIR`` takes the .py files under DIR instead).
* ``texts:FILE``  a JSONL file of {"text": ...}, or a .txt file of paragraphs separated by blank lines;
  each text (paragraph) is one sample.

Sample counts: ``nsamples`` is split evenly across components, the first ``nsamples % k`` components
getting one extra (100 over 3 buckets -> 34, 33, 33). Within a bucket every sentence pair (or sentence,
or text) is used at most once: a bucket needs ``samples x shots`` distinct pairs.

Paper defaults: 4 shots, 100 samples, 512 tokens, seed 0. Sampling is seeded per bucket by
(seed, component), so adding a component does not change the others' samples.
"""

from __future__ import annotations

import os
import random
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import torch

from ..errors import InputError, MissingInputError
from . import corpora
from .calibration_set import CalibrationSet, read_calibration_texts
from .languages import Language, resolve

__all__ = ["Component", "build_calibration", "mono_demonstration", "mt_demonstration", "parse_spec",
           "split_counts", "SPEC_HELP"]

SPEC_HELP = ("a calibration spec is components joined by '+': mt:SRC-TGT (e.g. mt:fr-en), mono:LANG "
             "(e.g. mono:fr), code (or code:DIR), texts:FILE.jsonl or texts:FILE.txt; e.g. 'mt:fr-en+mt:zh-en'")
PathLike = Union[str, os.PathLike]


@dataclass(frozen=True)
class Component:
    """One bucket of a spec. ``name`` is canonical (codes as locales): 'mt:fr-en', 'mono:zh_CN'."""

    kind: str
    name: str
    src: Optional[Language] = None
    tgt: Optional[Language] = None
    lang: Optional[Language] = None
    path: Optional[str] = None


def _bad(spec: str, why: str) -> InputError:
    return InputError(f"bad calibration spec {spec!r}: {why}; {SPEC_HELP}")


def _parse_pair(spec: str, body: str) -> tuple[Language, Language]:
    # Locales may be written with '-' ("zh-CN-en"): accept the one split where both sides resolve.
    parts = body.split("-")
    found = []
    for i in range(1, len(parts)):
        try:
            found.append((resolve("-".join(parts[:i])), resolve("-".join(parts[i:]))))
        except ValueError:
            continue
    if len(found) != 1:
        if not found and len(parts) == 2:  # the common case: let resolve() list the known codes
            resolve(parts[0]), resolve(parts[1])
        raise _bad(spec, f"cannot read {body!r} as SRC-TGT")
    src, tgt = found[0]
    if src == tgt:
        raise _bad(spec, f"source and target are both {src.name}")
    return src, tgt


def parse_spec(spec: str) -> list[Component]:
    """Parse 'mt:fr-en+code' into components; ValueError says what parses."""
    if not isinstance(spec, str) or not spec.strip():
        raise _bad(str(spec), "empty")
    out: list[Component] = []
    for raw in spec.split("+"):
        item = raw.strip()
        kind, _, body = item.partition(":")
        kind, body = kind.strip().lower(), body.strip()
        if kind == "mt" and body:
            src, tgt = _parse_pair(spec, body)
            comp = Component("mt", f"mt:{src.locale}-{tgt.locale}", src=src, tgt=tgt)
        elif kind == "mono" and body:
            lang = resolve(body)
            comp = Component("mono", f"mono:{lang.locale}", lang=lang)
        elif kind == "code":
            comp = Component("code", f"code:{body}" if body else "code", path=body or None)
        elif kind == "texts" and body:
            comp = Component("texts", f"texts:{body}", path=body)
        else:
            raise _bad(spec, f"cannot parse component {item!r}")
        if any(c.name == comp.name for c in out):
            raise _bad(spec, f"component {comp.name!r} appears twice")
        out.append(comp)
    return out


def split_counts(nsamples: int, k: int) -> list[int]:
    """nsamples over k buckets, evenly; the first nsamples % k get one more."""
    return [nsamples // k + (1 if i < nsamples % k else 0) for i in range(k)]


def mt_demonstration(pairs: list[tuple[str, str]], src: Language, tgt: Language, eos: str) -> str:
    return "".join(f"{src.name}: {s}{eos}{tgt.name}: {t}{eos}" for s, t in pairs)


def mono_demonstration(sentences: list[str], lang: Language, eos: str) -> str:
    return "".join(f"{lang.name}: {s}{eos}" for s in sentences)


# ---------------------------------------------------------------------------------- per bucket
def _draw(items: list, n: int, shots: int, rng: random.Random) -> list[list]:
    """n groups of ``shots`` items, all distinct (drawn without replacement over the whole set)."""
    chosen = rng.sample(items, n * shots)
    return [chosen[i * shots:(i + 1) * shots] for i in range(n)]


def _mt_texts(comp: Component, data: Optional[PathLike], n: int, shots: int, rng: random.Random,
              eos: str) -> tuple[list[str], dict]:
    pairs = corpora.load_parallel(data, comp.src, comp.tgt)
    source = corpora.describe_source(data)
    need = n * shots
    if len(pairs) < need:
        raise InputError(f"{comp.name}: only {len(pairs)} {comp.src.locale}-{comp.tgt.locale} pairs in {source} "
                         f"(calibration split), need samples x shots = {n} x {shots} = {need}; lower nsamples/shots "
                         f"or use a larger corpus (FLORES-200, or `featprune data gettext --extra-deb`)")
    texts = [mt_demonstration(group, comp.src, comp.tgt, eos) for group in _draw(pairs, n, shots, rng)]
    return texts, {"source": source, "available": len(pairs)}


def _mono_texts(comp: Component, data: Optional[PathLike], n: int, shots: int, rng: random.Random,
                eos: str) -> tuple[list[str], dict]:
    sentences = corpora.load_mono(data, comp.lang)
    if data is None:
        source = f"dataset-build package ({corpora.dataset_build_dir()})"
    else:
        source = corpora.describe_source(data)
    need = n * shots
    if len(sentences) < need:
        raise InputError(f"{comp.name}: only {len(sentences)} {comp.lang.name} sentences in {source}, need "
                         f"samples x shots = {n} x {shots} = {need}")
    texts = [mono_demonstration(group, comp.lang, eos) for group in _draw(sentences, n, shots, rng)]
    return texts, {"source": source, "available": len(sentences)}


def _code_texts(path: Optional[str], n: int, seqlen: int, rng: random.Random) -> tuple[list[str], dict]:
    files = corpora.code_files(path)
    order = rng.sample(files, len(files))
    # ~8 characters per token is more than Python source needs, so a sample fills seqlen tokens.
    budget = seqlen * 8
    texts, used, pos = [], [], 0
    for _ in range(n):
        parts, size = [], 0
        while size < budget:
            if pos == len(order):
                if not used:
                    raise InputError(f"no readable .py source in {len(files)} files under "
                                     f"{path or 'the stdlib'}: the code set is empty")
                pos = 0  # every file used once: wrap around (different windows)
            f = order[pos]
            pos += 1
            text = corpora.read_code(f)
            if text is None:
                continue
            used.append(f)
            # A window of the file starting at a random line, so samples are not all license headers.
            lines = text.splitlines(keepends=True)
            start = rng.randrange(len(lines))
            window = "".join(lines[start:])[: budget - size] if len(text) > budget - size else text
            parts.append(window)
            size += len(window) + 2
        texts.append("\n\n".join(parts))
    where = sysconfig.get_paths()["stdlib"] if path is None else str(Path(path).resolve())
    return texts, {"source": f"{'Python stdlib ' if path is None else ''}.py files ({where})",
                   "available": len(files), "files_used": len(set(used))}


def _read_texts(comp: Component, n: int, rng: random.Random) -> tuple[list[str], dict]:
    p = Path(comp.path)
    if not p.is_file():
        raise MissingInputError(f"{comp.name}: file not found: {p}")
    texts = [t for t in read_calibration_texts(p)[0] if t.strip()]  # per-line "bucket" fields: one bucket here
    if len(texts) < n:
        raise InputError(f"{comp.name}: {p} has {len(texts)} texts, need {n} samples for this bucket")
    return rng.sample(texts, n), {"source": str(p.resolve()), "available": len(texts)}


# ------------------------------------------------------------------------------------ the set
def _encode(tokenizer: Any, text: str) -> list[int]:
    ids = tokenizer(text)["input_ids"]  # the tokenizer's own special tokens (BOS where it adds one)
    if ids and isinstance(ids[0], list):  # some tokenizers return a batch of one
        ids = ids[0]
    return list(ids)


def build_calibration(spec: str, tokenizer: Any, *, data: Optional[PathLike] = None, nsamples: int = 100,
                      seqlen: int = 512, shots: int = 4, seed: int = 0) -> CalibrationSet:
    """Token ids of every calibration sample (truncated to ``seqlen``), grouped by bucket in spec order.

    data: the corpus for mt and mono components (see the module docstring); code and texts components
    bring their own. Raises ValueError/FileNotFoundError on bad input, before anything is tokenized.
    """
    components = parse_spec(spec)
    for name, value, low in (("nsamples", nsamples, len(components)), ("seqlen", seqlen, 1), ("shots", shots, 1)):
        if not isinstance(value, int) or value < low:
            raise InputError(f"{name} must be an integer >= {low}" +
                             (f" (one sample per component of {spec!r})" if name == "nsamples" else "") +
                             f", got {value!r}")
    if data is not None and not Path(data).exists():
        raise MissingInputError(f"calibration data path does not exist: {data}")
    eos = getattr(tokenizer, "eos_token", None)
    if any(c.kind in ("mt", "mono") for c in components) and not eos:
        raise InputError("the tokenizer has no eos token, which demonstrations need as a separator")

    counts = split_counts(nsamples, len(components))
    texts_per_bucket, infos = [], []
    for comp, n in zip(components, counts):
        # Seeded by component too: a bucket's samples do not depend on what else is in the spec.
        rng = random.Random(f"featprune-calibration:{seed}:{comp.name}")
        if comp.kind == "mt":
            texts, info = _mt_texts(comp, data, n, shots, rng, eos)
        elif comp.kind == "mono":
            texts, info = _mono_texts(comp, data, n, shots, rng, eos)
        elif comp.kind == "code":
            texts, info = _code_texts(comp.path, n, seqlen, rng)
        else:
            texts, info = _read_texts(comp, n, rng)
        texts_per_bucket.append(texts)
        infos.append(info)

    samples, buckets, components_summary = [], [], []
    for b, (comp, texts, info) in enumerate(zip(components, texts_per_bucket, infos)):
        tokens = truncated = 0
        for text in texts:
            ids = _encode(tokenizer, text)
            truncated += len(ids) > seqlen
            ids = ids[:seqlen]
            samples.append(torch.tensor(ids, dtype=torch.long))
            buckets.append(b)
            tokens += len(ids)
        components_summary.append({"name": comp.name, "kind": comp.kind, "samples": len(texts), "tokens": tokens,
                                 "truncated": truncated, **info, "preview": texts[0][:300]})
    summary = {
        "spec": "+".join(c.name for c in components), "nsamples": nsamples, "seqlen": seqlen, "shots": shots,
        "seed": seed, "eos": eos, "data": None if data is None else str(Path(data).resolve()),
        "sample_split": "nsamples split evenly across buckets; the first nsamples % k get one more",
        # "components", not "buckets": CalibrationSet.describe() writes its own "buckets" entry.
        "components": components_summary, "tokens": sum(s["tokens"] for s in components_summary),
        "sources": list(dict.fromkeys(s["source"] for s in components_summary)),
    }
    return CalibrationSet(samples=samples, buckets=buckets, bucket_names=[c.name for c in components],
                          summary=summary)


def build_contrast_calibration(calib: str, contrast: Optional[str], tokenizer: Any, **options) -> CalibrationSet:
    """The base demonstrations of `calib` and, when given, the contrast set of `contrast`, as one
    CalibrationSet whose buckets are the base components followed by the contrast components.
    `options` go to build_calibration (data, nsamples, seqlen, shots, seed) for each spec."""
    base = build_calibration(calib, tokenizer, **options)
    if not contrast:
        return base
    other = build_calibration(contrast, tokenizer, **options)
    names = base.bucket_names + other.bucket_names
    if len(set(names)) != len(names):
        raise InputError(f"--calib and --contrast share a component: {base.bucket_names} vs {other.bucket_names}")
    offset = len(base.bucket_names)
    return CalibrationSet(samples=base.samples + other.samples,
                          buckets=base.buckets + [b + offset for b in other.buckets], bucket_names=names,
                          summary={"base": base.describe(), "contrast": other.describe()})
