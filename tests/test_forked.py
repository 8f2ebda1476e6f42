"""forked.ForkedCall: the calibration set is built in a forked child while the parent builds the skeleton."""

import json
import os
import signal
import sys
import warnings
from pathlib import Path

import pytest
import torch

import featprune_ext
from featprune_ext.engine.tuning import Tuning
from featprune_ext.errors import InputError
from featprune_ext.forked import ForkedCall, fork_allowed

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="forks on Linux only")


def _child_pid():
    return os.getpid()


def test_value_comes_back_from_another_process():
    call = ForkedCall(lambda: {"pid": _child_pid(), "ids": torch.arange(7)}, fork=True)
    assert call.forked
    got = call.result()
    assert got["pid"] != os.getpid()
    assert torch.equal(got["ids"], torch.arange(7))


def test_exception_is_raised_in_the_parent_with_its_type_and_message():
    def fail():
        raise InputError("cannot load the tokenizer from /nowhere")

    call = ForkedCall(fail, fork=True)
    with pytest.raises(InputError, match="cannot load the tokenizer from /nowhere"):
        call.result()


def test_unpicklable_exception_becomes_a_runtime_error_with_its_text():
    class Local(Exception):  # a local class cannot be pickled
        pass

    def fail():
        raise Local("bad vocabulary")

    with pytest.raises(RuntimeError, match="Local: bad vocabulary"):
        ForkedCall(fail, fork=True).result()


def test_child_warnings_are_raised_again_in_the_parent():
    def warn():
        warnings.warn("featprune: a departure from the paper", UserWarning, stacklevel=2)
        return 3

    call = ForkedCall(warn, fork=True)
    with pytest.warns(UserWarning, match="a departure from the paper"):
        assert call.result() == 3


def test_a_child_that_dies_is_reported():
    call = ForkedCall(lambda: os.kill(os.getpid(), signal.SIGKILL), fork=True)
    with pytest.raises(RuntimeError, match=f"killed by signal {int(signal.SIGKILL)}.*fork=False"):
        call.result()


def test_close_kills_and_reaps_a_running_child():
    import time

    call = ForkedCall(lambda: time.sleep(60), fork=True)
    pid = call._pid
    t0 = time.perf_counter()
    call.close()
    assert time.perf_counter() - t0 < 10
    with pytest.raises(ChildProcessError):  # reaped: no zombie left behind
        os.waitpid(pid, os.WNOHANG)


def test_fork_false_and_threads_keep_the_work_in_process():
    call = ForkedCall(_child_pid, fork=False)
    assert not call.forked and call.result() == os.getpid()
    import threading

    stop = threading.Event()
    t = threading.Thread(target=stop.wait)
    t.start()
    try:
        assert not fork_allowed()  # a lock another thread holds would stay held in a child
    finally:
        stop.set()
        t.join()


def test_prune_masks_and_calibration_identical_with_and_without_fork(tiny_model, calib_jsonl, tmp_path,
                                                                     monkeypatch):
    src = tiny_model("llama")
    monkeypatch.setenv("FEATPRUNE_TOKEN_CACHE", "0")  # both arms tokenize (the second would hit the cache)
    reports = {}
    for fork in ("1", "0"):
        out = tmp_path / f"fork{fork}"
        featprune_ext.prune(src, out, calib_texts=calib_jsonl, nsamples=8, seqlen=64, sparsity=0.5, progress=False,
                            tuning=Tuning(fork=fork == "1"))
        reports[fork] = json.loads((out / "featprune.json").read_text())
    assert reports["1"]["calibration"] == reports["0"]["calibration"]
    assert reports["1"]["calibration"]["tokens"] > 0
    from safetensors.torch import load_file

    for name in sorted(p.name for p in (tmp_path / "fork1").glob("*.safetensors")):
        a, b = load_file(tmp_path / "fork1" / name), load_file(tmp_path / "fork0" / name)
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), k


def test_prune_reports_a_tokenizer_error_from_the_child(tiny_model, calib_jsonl, tmp_path):
    import shutil

    src = tiny_model("llama")
    broken = tmp_path / "model"
    shutil.copytree(src, broken)
    for f in broken.glob("tokenizer*"):
        f.write_text("{not json")
    with pytest.raises(InputError, match="cannot load the tokenizer"):
        featprune_ext.prune(broken, tmp_path / "out", calib_texts=calib_jsonl, nsamples=4, seqlen=32, sparsity=0.5,
                            progress=False)
    assert not [p.name for p in tmp_path.glob("out*")]  # no output, no OUT.partial, no OUT.lock


def _alive(pid: int) -> bool:
    """Running or sleeping; a zombie waiting for init to reap it counts as dead."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def test_child_dies_with_its_parent(tmp_path):
    """kill -9 of a prune run must not leave a child tokenizing on its own."""
    import subprocess
    import time

    pid_file = tmp_path / "child.pid"
    script = (
        "import os, time\n"
        "from featprune_ext.forked import ForkedCall\n"
        f"c = ForkedCall(lambda: (open({str(pid_file)!r}, 'w').write(str(os.getpid())), time.sleep(120)), fork=True)\n"
        "time.sleep(120)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.time() + 60
        while not (pid_file.exists() and pid_file.read_text()) and time.time() < deadline:
            time.sleep(0.1)
        child = int(pid_file.read_text())
        os.kill(child, 0)  # alive
    finally:
        parent.kill()
        parent.wait()
    deadline = time.time() + 10
    while time.time() < deadline and _alive(child):
        time.sleep(0.1)
    if _alive(child):
        os.kill(child, signal.SIGKILL)
        pytest.fail("the forked child outlived its killed parent")
