"""--batch-size auto (engine/batches.py) and the per-phase timings in featprune.json (engine/timing.py)."""

import pytest
import torch

from featprune_ext.data.calibration_set import CalibrationSet
from featprune_ext.engine import prune_model
from featprune_ext.engine.batches import AUTO, auto_batch_size, make_batches, parse_batch_size
from featprune_ext.engine.timing import PHASES
from featprune_ext.errors import InputError
from featprune_ext.methods import Wanda


def _calib(n, length, buckets=None):
    samples = [torch.arange(1, length + 1, dtype=torch.int64) for _ in range(n)]
    names = sorted(set(buckets)) if buckets else ["calibration"]
    return CalibrationSet(samples, [names.index(b) for b in buckets] if buckets else [0] * n, names)


def test_parse_batch_size():
    assert parse_batch_size("auto") == AUTO and parse_batch_size(" AUTO ") == AUTO
    assert parse_batch_size(3) == 3 and parse_batch_size("4") == 4
    for bad in (0, -1, "x", 1.5, True, None):
        with pytest.raises(InputError):
            parse_batch_size(bad)


def test_auto_batch_size_follows_memory_tokens_and_ranks():
    calib = _calib(10, 100)
    # a quarter of 1.6 MB fits 4 samples of 100 tokens x 1000 bytes
    assert auto_batch_size(calib, 1000, 0, torch.device("cpu"), available=1_600_000) == 4
    # attention scores grow with the length: 100 tokens x 100 positions x 10 bytes per sample more
    assert auto_batch_size(calib, 1000, 10, torch.device("cpu"), available=1_600_000) == 2
    assert auto_batch_size(calib, 1, 0, torch.device("cpu"), available=1 << 40) == 10  # all samples
    assert auto_batch_size(_calib(40, 100), 1, 0, torch.device("cpu"), available=1 << 40) == 20  # 2048 tokens
    assert auto_batch_size(calib, 1000, 0, torch.device("cpu"), available=1) == 1
    # every rank needs a batch: 10 samples for 5 ranks -> at most 2 a batch
    assert auto_batch_size(calib, 1, 0, torch.device("cpu"), world_size=5, available=1 << 40) == 2
    size = auto_batch_size(_calib(6, 10, ["a", "a", "a", "a", "b", "b"]), 1, 0, torch.device("cpu"),
                           world_size=4, available=1 << 40)
    assert len(make_batches(_calib(6, 10, ["a", "a", "a", "a", "b", "b"]), size, 0)) >= 4


def test_auto_resolves_and_phases_are_reported(tiny_model, tmp_path):
    from tiny_models import TEXTS
    from transformers import AutoTokenizer

    src = tiny_model("llama")
    calib = CalibrationSet.from_texts(TEXTS, AutoTokenizer.from_pretrained(src), 12, 32, 0)
    report = prune_model(src, tmp_path / "o", calibration=calib, method=Wanda(), sparsity=0.5, batch_size="auto",
                         progress=False)
    assert isinstance(report["batch_size"], int) and report["batch_size"] >= 1 and report["batch_size_auto"]
    phases = report["timings"]["phases"]
    assert set(PHASES) <= set(phases) and all(v >= 0 for v in phases.values())
    assert phases["stats_s"] > 0 and phases["pruned_pass_s"] > 0 and phases["write_s"] > 0
    with pytest.raises(InputError, match="batch_size"):
        prune_model(src, tmp_path / "p", calibration=calib, method=Wanda(), sparsity=0.5, batch_size="big",
                    progress=False)
