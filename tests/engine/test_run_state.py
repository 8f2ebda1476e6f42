"""The run's state (engine/state.py): the progress record round-trips through progress.json, --resume
refuses a record of other settings, and --resume-interval decides the resume points."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace

import pytest
import torch

from featprune_ext.engine.resume import resume_point_due
from featprune_ext.engine.state import PROGRESS_NAME, REPORT_NAME, Progress, RunConfig, RunRequest
from featprune_ext.errors import InputError
from featprune_ext.methods import Wanda


def _config(part, fingerprint="abc", batch_size="auto", resume_interval_s=60.0) -> RunConfig:
    request = RunRequest(Wanda(), sparsity=0.5, batch_size=batch_size, resume_interval_s=resume_interval_s)
    return RunConfig(request, part, None, torch.device("cpu"), None, fingerprint)


def test_progress_round_trips_and_resume_returns_it(tmp_path):
    config = _config(tmp_path)
    done = Progress("abc", 6, blocks_done=2, shard0_done=True, layers=[{"index": 0}, {"index": 1}],
                    activations="activations-00002.pt", layerwise={"target_sparsity": [0.4, 0.6]})
    done.save(config.progress_path)
    assert json.loads(config.progress_path.read_text())["blocks_done"] == 2
    loaded = Progress.load(config, batch_size=3)  # an "auto" run batches as the interrupted one did
    assert loaded == Progress("abc", 6, blocks_done=2, shard0_done=True, layers=done.layers,
                              activations=done.activations, layerwise=done.layerwise, resumed_from=2)
    assert Progress.load(_config(tmp_path, batch_size=4), batch_size=4).batch_size == 4  # an explicit size stays


def test_resume_refuses_other_settings_and_finds_a_finished_report(tmp_path):
    Progress("abc", 1).save(tmp_path / PROGRESS_NAME)
    with pytest.raises(InputError, match="different model, calibration set or settings"):
        Progress.load(_config(tmp_path, fingerprint="other"), 1)
    (tmp_path / PROGRESS_NAME).unlink()
    with pytest.raises(InputError, match="no readable progress.json"):
        Progress.load(_config(tmp_path), 1)
    (tmp_path / REPORT_NAME).write_text("{}")  # killed between the report and the rename
    assert Progress.load(_config(tmp_path), 1).finalized


@pytest.mark.parametrize("interval,due", [(60.0, False), (0.0, True)])
def test_resume_interval_makes_large_activations_resume_points(interval, due, monkeypatch):
    monkeypatch.delenv("FEATPRUNE_TEST_RESUME_EVERY", raising=False)
    weights = SimpleNamespace(nbytes=10)
    run = SimpleNamespace(t_resume_point=None, t_execute=time.perf_counter(),  # the run started just now
                          skel=SimpleNamespace(ckpt=SimpleNamespace(info=lambda k: weights), block_keys=[["w"]]),
                          dist=SimpleNamespace(enabled=False), config=_config(None, resume_interval_s=interval))
    large = [torch.zeros(100)]  # 400 bytes of outputs against 10 of weights
    assert resume_point_due(run, 0, large) is due
    assert resume_point_due(run, 0, [torch.zeros(1)])  # small outputs: always a resume point
