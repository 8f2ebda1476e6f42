"""The statistics passes stop each batch once the block's last linear has its input
(engine/call_order.py): the statistics must be exactly those of batches run to the end, whatever
the block does."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from featprune_ext.engine.batches import Batch
from featprune_ext.engine.call_order import CallOrder, InputsSeen
from featprune_ext.engine.stats import collect_stats

from .test_engine import calibration, load_dir

FEATURES = 24


class Chain(nn.Module):
    """a -> b -> c, like attention then MLP; `order(h)` may reorder the calls per batch."""

    def __init__(self, order=None):
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b, self.c = (nn.Linear(FEATURES, FEATURES) for _ in range(3))
        self.order = order or (lambda h: "abc")
        self.c_forwards = 0  # completed forwards of c (a forward hook runs after the GEMM)
        self.c.register_forward_hook(lambda *_: setattr(self, "c_forwards", self.c_forwards + 1))

    def forward(self, h):
        for name in self.order(h):
            h = h + torch.tanh(getattr(self, name)(h))
        return (h,)


class Call:
    def run(self, block, h):
        return block(h)[0]


def run_stats(block, call_orders, nbatches=4):
    gen = torch.Generator().manual_seed(1)
    hidden = [torch.randn(2, 5 + i, FEATURES, generator=gen) * (1 + i) for i in range(nbatches)]
    batches = [Batch(ids=torch.zeros(h.shape[:2], dtype=torch.int64), mask=torch.rand(h.shape[:2], generator=gen) > 0.3,
                     bucket=i % 2) for i, h in enumerate(hidden)]
    linears = [SimpleNamespace(name=n, module=getattr(block, n), in_features=FEATURES) for n in "abc"]
    with torch.no_grad():
        return collect_stats(block, linears, [Call()] * nbatches, hidden, batches, ["x", "y"], torch.device("cpu"),
                             call_orders=call_orders)


def assert_same_stats(got, want):
    assert got.keys() == want.keys()
    for name in want:
        for field in ("sumsq", "count", "absmax"):
            assert torch.equal(getattr(got[name], field), getattr(want[name], field)), (name, field)


def test_early_stop_skips_the_last_linear_and_keeps_the_statistics_exact():
    whole, stopped = Chain(), Chain()
    want = run_stats(whole, None)
    orders = {}
    got = run_stats(stopped, orders)
    assert_same_stats(got, want)
    assert list(orders.values()) == [["a", "b", "c"]]  # learnt on the first batch
    assert whole.c_forwards == 4
    assert stopped.c_forwards == 1  # only the first batch, which learnt the order, ran c's GEMM
    run_stats(stopped, orders)
    assert stopped.c_forwards == 1  # the order is known now: no batch runs c's GEMM


def test_a_batch_that_calls_the_last_linear_early_runs_whole():
    """The second batch calls c before b: stopping at c (the learnt last linear) would lose b's input."""
    reorder = lambda h: "abc" if h.shape[1] == 5 else "acb"  # noqa: E731
    want = run_stats(Chain(reorder), None)
    orders = {}
    got = run_stats(Chain(reorder), orders)
    assert_same_stats(got, want)


def test_a_block_calling_a_linear_twice_is_never_stopped():
    twice = lambda h: "abcb"  # noqa: E731
    orders = {}
    got = run_stats(Chain(twice), orders)
    assert orders == {}
    assert_same_stats(got, run_stats(Chain(twice), None))


@pytest.mark.parametrize("family,method", [("llama", "wanda"), ("gemma3", "wanda"), ("qwen2_moe", "wanda"),
                                           ("gpt_neox", "sparsegpt"), ("qwen2", "sparsegpt")])
def test_engine_output_identical_with_and_without_early_stop(tiny_model, tmp_path, monkeypatch, family, method):
    from featprune_ext.engine import prune_model
    from featprune_ext.engine.tuning import Tuning
    from featprune_ext.methods import get_method

    src = tiny_model(family)
    stops = []
    saw = CallOrder.saw

    def counting_saw(self, name, routed):
        try:
            saw(self, name, routed)
        except InputsSeen:
            stops.append(name)
            raise

    monkeypatch.setattr(CallOrder, "saw", counting_saw)
    outs, stopped = {}, {}
    for arm in ("1", "0"):
        outs[arm] = tmp_path / f"out{arm}"
        stops.clear()
        prune_model(src, outs[arm], calibration=calibration(src), method=get_method(method), sparsity=0.5, batch_size=3,
                    progress=False, tuning=Tuning(stats_early_stop=arm == "1"))
        stopped[arm] = len(stops)
    assert stopped["0"] == 0
    assert (stopped["1"] == 0) == (family == "qwen2_moe")  # MoE blocks always run whole
    on, off = load_dir(outs["1"]), load_dir(outs["0"])
    assert on.keys() == off.keys()
    for k in on:
        assert torch.equal(on[k], off[k]), k
