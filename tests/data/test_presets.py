"""--preset (data/presets.py): the paper's settings in one name; explicit settings win."""

from __future__ import annotations

import pytest

from featprune_ext.api import PAPER_PRESET
from featprune_ext.data.presets import DEFAULTS, resolve_settings
from featprune_ext.errors import InputError


def flores(root, n=8):
    for split in ("dev", "devtest"):
        (root / split).mkdir(parents=True)
        (root / split / f"fra_Latn.{split}").write_text("".join(f"Phrase {i}.\n" for i in range(n)))
        (root / split / f"eng_Latn.{split}").write_text("".join(f"Sentence {i}.\n" for i in range(n)))
    return root


def test_no_preset_uses_the_cli_defaults():
    s = resolve_settings(None)
    assert (s.nsamples, s.shots, s.seqlen, s.record) == (128, 4, None, None)
    assert DEFAULTS == {"nsamples": 128, "shots": 4, "seqlen": None}
    s = resolve_settings(None, nsamples=7, seqlen=33)
    assert (s.nsamples, s.shots, s.seqlen) == (7, 4, 33)


def test_paper_preset_values_and_explicit_overrides(tmp_path):
    assert PAPER_PRESET == {"nsamples": 100, "shots": 4, "seqlen": 512, "direction": "X->en", "split": "dev"}
    data = flores(tmp_path / "flores")
    s = resolve_settings("paper", calib="mt:fr-en", data=data)
    assert (s.nsamples, s.shots, s.seqlen) == (100, 4, 512)
    assert s.record["name"] == "paper" and s.record["overridden"] == {} and s.record["departures"] == []
    assert s.record["data_split"] == "dev" and s.record["settings"] == PAPER_PRESET
    s = resolve_settings("paper", nsamples=32, shots=4, seqlen=256, calib="mt:fra_Latn-eng_Latn", data=data)
    assert (s.nsamples, s.shots, s.seqlen) == (32, 4, 256)
    # an explicit value equal to the preset's (shots=4) is no override
    assert s.record["overridden"] == {"nsamples": 32, "seqlen": 256}
    assert s.record["used"] == {"nsamples": 32, "shots": 4, "seqlen": 256}


def test_departures_from_the_paper_are_recorded_and_warned(tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"en": "a", "fr": "b"}\n')
    with pytest.warns(UserWarning, match="not X->English"):
        s = resolve_settings("paper", calib="mt:en-fr+mono:fr", data=pairs)
    assert len(s.record["departures"]) == 3  # en->fr, mono:fr, a non-FLORES corpus
    assert "not FLORES-200" in s.record["departures"][-1] and s.record["data_split"] == "calibration split"
    with pytest.warns(UserWarning, match="gettext catalogs"):
        resolve_settings("paper", calib="mt:fr-en")


def test_unknown_preset():
    with pytest.raises(InputError, match="unknown preset 'wanda'.*paper"):
        resolve_settings("wanda")
