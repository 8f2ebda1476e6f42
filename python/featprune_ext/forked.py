"""One function run in a forked child process while the parent goes on.

Loading a large tokenizer is seconds of single-threaded Python inside transformers (Gemma 3's
262k-token tokenizer.json is parsed three times), and so is importing a model class; neither needs
the other. prune() therefore loads the tokenizer and tokenizes the calibration set in a child while
the parent imports the model class and builds the model's skeleton, on the other core. The child
returns its result (or its exception, and the warnings it raised) through a pipe, pickled.

Forking is skipped (the function runs in the caller) where it is not safe or not wanted: not
Linux, other Python threads alive (a lock they hold would stay held in the child), or fork=False
(engine/tuning.py's Tuning.fork, a benchmark lever).
"""

from __future__ import annotations

import os
import pickle
import signal
import sys
import threading
import traceback
import warnings
from typing import Any, Callable

__all__ = ["ForkedCall", "fork_allowed"]

def fork_allowed() -> bool:
    # Linux only: on macOS, system frameworks loaded by torch are not safe to use after fork
    return sys.platform.startswith("linux") and threading.active_count() == 1


def _portable(exc: BaseException) -> BaseException:
    """exc if it survives pickling, else a RuntimeError carrying its text and traceback."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:  # noqa: BLE001 - any unpicklable exception becomes text
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        return RuntimeError(f"in the forked child: {type(exc).__name__}: {exc}\n{text}")


class ForkedCall:
    """fn() in a forked child (or here, when forking is not allowed); result() returns its value.

    Call result() or close() exactly once: close() kills and reaps a child that is still running.
    """

    def __init__(self, fn: Callable[[], Any], *, fork: bool | None = None):
        """fork: True forks (the tests), False runs fn here, None forks where fork_allowed()."""
        self._pid, self._fd, self._done, self._value = None, None, False, None
        if not (fork_allowed() if fork is None else fork):
            self._run_here(fn)
            return
        read_fd, write_fd = os.pipe()
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # the child: never returns into the caller's stack
            os.close(read_fd)
            _child(fn, write_fd, parent)
        os.close(write_fd)
        self._pid, self._fd = pid, read_fd

    def _run_here(self, fn) -> None:
        self._done = True
        try:
            self._value = ("ok", fn(), [])
        except BaseException as exc:  # noqa: BLE001 - raised again by result()
            self._value = ("err", exc, [])

    @property
    def forked(self) -> bool:
        return self._pid is not None

    def result(self) -> Any:
        if not self._done:
            self._done = True
            self._value = self._collect()
        kind, value, caught = self._value
        for message, category in caught:  # the child's warnings, raised again where callers can see them
            warnings.warn(message, category, stacklevel=2)
        if kind == "err":
            raise value
        return value

    def _collect(self):
        chunks = []
        try:
            while True:
                chunk = os.read(self._fd, 1 << 20)
                if not chunk:
                    break
                chunks.append(chunk)
        finally:
            os.close(self._fd)
            _, status = os.waitpid(self._pid, 0)
            self._pid = None
        if not chunks:
            how = (f"killed by signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status)
                   else f"exit status {os.WEXITSTATUS(status)}")
            return ("err", RuntimeError(f"the forked child died without a result ({how}); featprune_ext.prune("
                                        "..., tuning=Tuning(fork=False)) works in one process"), [])
        return pickle.loads(b"".join(chunks))

    def close(self) -> None:
        """Kill and reap the child if result() was never called (e.g. the parent failed first)."""
        if self._pid is not None:
            try:
                os.kill(self._pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            os.close(self._fd)
            os.waitpid(self._pid, 0)
            self._pid, self._done = None, True


def _die_with_parent() -> None:
    """Linux: the kernel kills this child when the parent dies (kill -9 included), so a child still
    tokenizing never outlives an interrupted run."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _child(fn, write_fd: int, parent: int) -> None:
    code = 0
    try:
        _die_with_parent()
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)
        import torch

        torch.set_num_threads(1)  # the parent's OpenMP workers do not exist here: stay serial
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                payload = ("ok", fn())
            except BaseException as exc:  # noqa: BLE001 - sent to the parent
                payload = ("err", _portable(exc))
        data = pickle.dumps((*payload, [(str(w.message), w.category) for w in caught]),
                            protocol=pickle.HIGHEST_PROTOCOL)
        view = memoryview(data)
        while view:
            view = view[os.write(write_fd, view):]
    except BaseException:  # noqa: BLE001 - nothing sent: the parent reports the exit status
        code = 1
    finally:
        os._exit(code)
