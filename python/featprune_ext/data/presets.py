"""Presets: several calibration settings under one name (`featprune prune --preset paper`).

PAPER_PRESET is the calibration of Kim et al. (2024): 100 samples of 4-shot X->English translation
demonstrations, each cut to 512 tokens, drawn from FLORES-200's dev split (a FLORES corpus is read
through its dev split for calibration in any case; devtest is kept for evaluation).

Explicit settings override a preset. `resolve_settings` takes each setting as given (None: not
given), fills the others from the preset, then from featprune's own defaults (DEFAULTS: 128
samples, 4 shots, min(2048, the model's limit) tokens), and returns the values together with what
featprune.json records: the preset's name and settings, what was overridden, and where the run
departs from the paper's design (demonstrations that are not X->English, a corpus that is not
FLORES-200); each departure is also a warning.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Optional, Union

from ..errors import InputError

__all__ = ["DEFAULTS", "PAPER_PRESET", "PRESETS", "ResolvedSettings", "resolve_settings"]

PathLike = Union[str, os.PathLike]

PAPER_PRESET = {"nsamples": 100, "shots": 4, "seqlen": 512, "direction": "X->en", "split": "dev"}
PRESETS = {"paper": PAPER_PRESET}
DEFAULTS = {"nsamples": 128, "shots": 4, "seqlen": None}  # seqlen None: min(2048, the model's limit)
SETTINGS = ("nsamples", "shots", "seqlen")


@dataclass(frozen=True)
class ResolvedSettings:
    nsamples: int
    shots: int
    seqlen: Optional[int]
    record: Optional[dict]  # featprune.json's "preset" entry (None without a preset)


def _departures(calib: Optional[str], calib_texts, data: Optional[PathLike]) -> tuple[list[str], str]:
    """Where a paper-preset run departs from the paper's design, and the corpus split it reads."""
    from .calibration import parse_spec
    from .corpora import detect_layout

    out = []
    components = parse_spec(calib) if calib else []
    for comp in components:
        if comp.kind != "mt" or comp.tgt is None or comp.tgt.iso1 != "en":
            out.append(f"calibration component {comp.name} is not X->English translation demonstrations")
    if calib_texts:
        out.append(f"--calib-texts {calib_texts}: calibration texts, not X->English translation demonstrations")
    split = "calibration split"
    if data is not None:
        layout = detect_layout(data)
        if layout == "flores":
            split = "dev"
        else:
            out.append(f"the corpus {data} is a {layout} corpus, not FLORES-200 (its calibration split is used)")
    elif any(c.kind in ("mt", "mono") for c in components):
        out.append("no --data: sentences come from this machine's gettext catalogs, not FLORES-200's dev split")
    return out, split


def resolve_settings(preset: Optional[str], *, nsamples: Optional[int] = None, shots: Optional[int] = None,
                     seqlen: Optional[int] = None, calib: Optional[str] = None, calib_texts=None,
                     data: Optional[PathLike] = None) -> ResolvedSettings:
    """The calibration settings to use: explicit values, else the preset's, else DEFAULTS."""
    given = {"nsamples": nsamples, "shots": shots, "seqlen": seqlen}
    if preset is None:
        values = {k: DEFAULTS[k] if given[k] is None else given[k] for k in SETTINGS}
        return ResolvedSettings(**values, record=None)
    if preset not in PRESETS:
        raise InputError(f"unknown preset {preset!r}; choose one of {', '.join(sorted(PRESETS))}")
    table = PRESETS[preset]
    values = {k: table[k] if given[k] is None else given[k] for k in SETTINGS}
    overridden = {k: given[k] for k in SETTINGS if given[k] is not None and given[k] != table[k]}
    departures, split = _departures(calib, calib_texts, data)
    for d in departures:
        warnings.warn(f"featprune: --preset {preset}: {d}", UserWarning, stacklevel=3)
    record = {"name": preset, "settings": dict(table), "used": values, "overridden": overridden,
              "data_split": split, "departures": departures}
    return ResolvedSettings(**values, record=record)
