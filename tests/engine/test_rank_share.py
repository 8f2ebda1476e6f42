"""Each rank's share of the calibration batches, in process (no torchrun).

Under torchrun every rank must run its own round-robin share and nothing else. A bug that
made every rank process every batch would go unseen by "2 ranks = 1 process": Wanda's masks
do not change when all the statistics scale together. Here one process plays rank r of a
world whose other ranks contribute nothing (collectives are no-ops), and a spy on the
statistics pass records exactly which batches it sees.
"""

from __future__ import annotations

import inspect

import pytest
from tiny_models import TEXTS
from transformers import AutoTokenizer

from featprune_ext.data.calibration_set import CalibrationSet
from featprune_ext.engine import block_statistics as stats_pass
from featprune_ext.engine import make_batches, prune_model
from featprune_ext.engine.distributed import DistContext
from featprune_ext.errors import InputError
from featprune_ext.methods import OutlierProtection, Wanda


class LoneRank(DistContext):
    """Rank `rank` of `world_size`, alone: the collectives do nothing. `partial`: the OUT.partial/
    that rank 0 would have created by the first barrier (a non-writer rank saves its activations there)."""

    partial = None

    def all_reduce_(self, sums, maxima):
        self.reductions = getattr(self, "reductions", 0) + 1

    def barrier(self):
        if self.partial is not None:
            self.partial.mkdir(exist_ok=True)

    def broadcast_object(self, obj):
        return obj

    def shutdown(self):
        pass


def calibration(model_dir, nsamples):
    tok = AutoTokenizer.from_pretrained(model_dir)
    return CalibrationSet.from_texts(TEXTS, tok, nsamples, 24, 0)


@pytest.fixture
def seen_batches(monkeypatch):
    """[[token ids of each batch the statistics pass of block i saw] for each block]."""
    seen = []
    real = stats_pass.collect_stats
    signature = inspect.signature(real)

    def spy(*args, **kwargs):
        batches = signature.bind(*args, **kwargs).arguments["batches"]
        seen.append([b.ids.tolist() for b in batches])
        return real(*args, **kwargs)

    monkeypatch.setattr(stats_pass, "collect_stats", spy)
    return seen


def test_batch_indices_round_robin_known_answer():
    shares = [DistContext(rank=r, world_size=3).batch_indices(7) for r in range(3)]
    assert shares == [[0, 3, 6], [1, 4], [2, 5]]
    assert DistContext().batch_indices(4) == [0, 1, 2, 3]


@pytest.mark.parametrize("rank", [0, 1])
def test_each_rank_runs_exactly_its_round_robin_share(tiny_model, tmp_path, seen_batches, rank):
    src = tiny_model("llama")  # 3 blocks
    calib = calibration(src, 8)
    everything = [b.ids.tolist() for b in make_batches(calib, 2, 0)]
    assert len(everything) == 4
    out = tmp_path / "o"
    dist = LoneRank(rank=rank, world_size=2)
    if rank:
        dist.partial = tmp_path / "o.partial"
    result = prune_model(src, out, calibration=calib, method=Wanda(protection=OutlierProtection(absmax_threshold=3.0)),
                         sparsity=0.5, batch_size=2, progress=False, dist=dist)
    assert len(seen_batches) == 3  # one statistics pass per block
    for block, batches in enumerate(seen_batches):
        assert batches == everything[rank::2], f"block {block}: rank {rank} ran the wrong batches"
    assert dist.reductions == 3  # the statistics of every block were all-reduced
    if rank:
        assert result == {"rank": 1, "world_size": 2, "out": str(out.resolve())} and not out.exists()
        saved = sorted(p.name for p in (tmp_path / "o.partial").glob("activations-*"))
        assert saved and all(name.endswith(".rank1.pt") for name in saved)
    else:
        assert out.exists() and result["calibration"]["samples"] == 8


def test_fewer_batches_than_ranks_is_input_error(tiny_model, tmp_path):
    src = tiny_model("llama")
    calib = calibration(src, 3)
    assert len(make_batches(calib, 1, 0)) == 3
    with pytest.raises(InputError, match="3 calibration batches cannot feed 4 ranks"):
        prune_model(src, tmp_path / "o", calibration=calib, method=Wanda(), sparsity=0.5, progress=False,
                    dist=LoneRank(rank=0, world_size=4))
    assert not (tmp_path / "o").exists() and not (tmp_path / "o.partial").exists()
    # the same run on 3 ranks is fine
    prune_model(src, tmp_path / "o3", calibration=calib, method=Wanda(), sparsity=0.5, progress=False,
                dist=LoneRank(rank=0, world_size=3))
    assert (tmp_path / "o3").exists()
