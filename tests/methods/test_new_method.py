"""A new method is a PruneMethod subclass and its factory: the engine asks it for its statistics and
records its per-matrix result, and the settings refuse the options its factory does not take."""

from __future__ import annotations

import json

import pytest
import torch

import featprune_ext
from featprune_ext import methods
from featprune_ext.errors import InputError
from featprune_ext.methods import MatrixResult, PruneMethod


class SquaredWanda(PruneMethod):
    """|W| * mean(x^2) (Wanda without the square root), noting each matrix's largest scale."""

    name = "squared-wanda-test"

    def __init__(self, *, base_buckets=None, seen=None):
        super().__init__(base_buckets=base_buckets)
        self.seen = seen if seen is not None else []

    @classmethod
    def create(cls, *, base_buckets=None):
        return cls(base_buckets=base_buckets)

    def collect_statistics(self, block_stats):
        stats = block_stats.sums_of_squares()
        self.seen.append(sorted(stats))
        return stats

    def column_scale(self, stats, weight):
        return stats.rms(self.base_buckets) ** 2

    def prune_matrix_(self, weight, stats, *, sparsity=None, n=0, m=0, name=""):
        result = super().prune_matrix_(weight, stats, sparsity=sparsity, n=n, m=m, name=name)
        return MatrixResult(result.pruned, {"max_scale": float(self.column_scale(stats, weight).max())})


def test_a_registered_method_runs_end_to_end(tiny_model, calib_jsonl, tmp_path, monkeypatch):
    seen = []
    monkeypatch.setitem(methods._REGISTRY, SquaredWanda.name, lambda *, base_buckets=None: SquaredWanda(seen=seen))
    src = tiny_model("llama")
    report = featprune_ext.prune(src, tmp_path / "o", method=SquaredWanda.name, calib_texts=calib_jsonl, nsamples=6,
                                 seqlen=32, sparsity=0.5, progress=False)
    assert report["method"]["name"] == SquaredWanda.name
    assert len(seen) == report["model"]["blocks"] and all(len(names) == 7 for names in seen)
    on_disk = json.loads((tmp_path / "o" / "featprune.json").read_text())
    for layer in on_disk["layers"]:
        for info in layer["matrices"].values():
            assert info["max_scale"] > 0 and info["sparsity"] == pytest.approx(0.5)
    # an option its factory does not take is refused, naming the flag
    with pytest.raises(InputError, match="--protect-top does not apply to --method squared-wanda-test"):
        featprune_ext.prune(src, tmp_path / "p", method=SquaredWanda.name, calib_texts=calib_jsonl, sparsity=0.5,
                            protect_top=1.0)


def test_get_method_refuses_options_the_factory_does_not_take():
    with pytest.raises(InputError, match="method wanda takes no option sparsegpt_damp"):
        methods.get_method("wanda", sparsegpt_damp=0.1)
    assert methods.method_options("sparsegpt") == {"base_buckets", "sparsegpt_damp", "sparsegpt_blocksize"}
    assert methods.method_options("magnitude") == frozenset()
    assert not methods.method_reads_calibration("random") and methods.method_reads_calibration("wanda")
    w = torch.randn(4, 8)
    assert methods.get_method("magnitude").prune_matrix_(w, None, sparsity=0.5).pruned == 16
