"""The engine's CUDA branches on a CPU-only machine, through the stand-ins of tests/helpers/cuda_standin.py:
pinned reads, the copy on a side stream with an event, the compute stream waiting on it, record_stream
for every block tensor, peak-memory reporting, and output bit-identical to the CPU path. (On a GPU
machine the real thing runs in bench/gpu_check.sh.)"""

from __future__ import annotations

import json

import pytest
from cuda_standin import PEAK_BYTES, install
from tiny_models import TEXTS
from transformers import AutoTokenizer

from featprune_ext.data.calibration_set import CalibrationSet
from featprune_ext.engine import block_statistics as stats_pass
from featprune_ext.engine import prune_model
from featprune_ext.methods import Wanda


def shards(out):
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.suffix == ".safetensors"}


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_cuda_branches_follow_the_stream_protocol_and_match_cpu(tiny_model, tmp_path, monkeypatch, family):
    src = tiny_model(family)
    calib = CalibrationSet.from_texts(TEXTS, AutoTokenizer.from_pretrained(src), 6, 24, 0)
    cpu = prune_model(src, tmp_path / "cpu", calibration=calib, method=Wanda(), sparsity=0.5, batch_size=2,
                      progress=False)

    log = install(monkeypatch)
    order = []
    real_stats = stats_pass.collect_stats

    def stats_spy(*args, **kwargs):
        order.append(("stats", len(log.events)))
        return real_stats(*args, **kwargs)

    monkeypatch.setattr(stats_pass, "collect_stats", stats_spy)
    report = prune_model(src, tmp_path / "sim", calibration=calib, method=Wanda(), sparsity=0.5, batch_size=2,
                         progress=False)
    assert log.of("run_on_sim_cuda") and len(log.of("new_stream")) == 2 and len(log.of("reset_peak")) == 1

    blocks = report["model"]["blocks"]
    prefix = report["model"]["blocks_path"]
    reads = log.of("read")
    block_reads = [[r for r in reads if r["name"].startswith(f"{prefix}.{i}.")] for i in range(blocks)]
    assert all(block_reads), "every block's tensors are read"
    assert all(r["pinned"] for rs in block_reads for r in rs)  # block tensors: pinned, for async copies
    assert not any(r["pinned"] for r in reads if not r["name"].startswith(f"{prefix}."))
    assert all(r["thread"].startswith("featprune-prefetch") for rs in block_reads for r in rs)

    # per block: event recorded on the copy stream (prefetch thread, inside the copy stream context),
    # then the compute stream waits on it, then record_stream for each tensor, then the statistics pass
    recorded = [r for r in log.of("record_event") if r["stream"] == "copy"]
    waits = log.of("wait_event")
    handed = [h for h in log.of("record_stream") if h["stream"] == "compute"]
    assert len(recorded) == len(waits) == blocks
    assert all(r["thread"].startswith("featprune-prefetch") for r in recorded)
    assert [w["event"] for w in waits] == [r["event"] for r in recorded]
    assert all(w["stream"] == "compute" and w["on"] == "copy" for w in waits)
    assert len(handed) == sum(len(rs) for rs in block_reads)  # every block tensor, once

    # the pruned matrices go to pinned host buffers on the d2h stream, after the pruning kernels
    # (it waits on the compute stream), each handed to it with record_stream; the writer waits for
    # the block's d2h event before it writes, and a phase only synchronises the compute stream
    pruned = sum(len(layer["matrices"]) for layer in report["layers"])
    assert len(log.of("pinned_alloc")) == pruned
    assert len([h for h in log.of("record_stream") if h["stream"] == "d2h"]) == pruned
    d2h_events = [r["event"] for r in log.of("record_event") if r["stream"] == "d2h"]
    assert len(d2h_events) == blocks == len([w for w in log.of("wait_stream") if w == {
        "thread": "MainThread", "stream": "d2h", "on": "compute"}])
    synced = log.of("event_synchronize")
    assert [e["event"] for e in synced] == d2h_events
    assert all(e["thread"].startswith("featprune-writer") for e in synced)
    assert log.of("synchronize") and all(e["stream"] == "compute" for e in log.of("synchronize"))
    kinds = [k for k, _, _ in log.events]
    waits_at = [i for i, k in enumerate(kinds) if k == "wait_event"]
    stats_at = [n for _, n in order]
    assert len(stats_at) == blocks
    for i in range(blocks):
        assert waits_at[i] < stats_at[i], f"block {i} ran before its copy was waited on"
        between = kinds[waits_at[i]:stats_at[i]]
        assert between.count("record_stream") == len(block_reads[i]), f"block {i}"

    # CUDA-only report fields, and the very same output as the CPU path
    assert report["peak_cuda_bytes"] == PEAK_BYTES
    assert all(layer["peak_cuda_bytes"] == PEAK_BYTES for layer in report["layers"])
    assert cpu["peak_cuda_bytes"] is None and "peak_cuda_bytes" not in cpu["layers"][0]
    assert shards(tmp_path / "sim") == shards(tmp_path / "cpu")
    saved = json.loads((tmp_path / "sim" / "featprune.json").read_text())
    assert saved["peak_cuda_bytes"] == PEAK_BYTES
