"""One writer per output: an OS advisory lock held for the whole run.

The lock file sits beside the output (`OUT.lock`), not inside `OUT.partial/`, so it
exists before the partial directory does and two runs starting in the same instant are
serialised by the kernel. flock locks belong to the open file: when the process dies,
kill -9 included, the kernel releases it, so nothing stale is ever left to clean up.
The file holds who holds it (pid, host, start time) for the error the next run prints.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

from ..errors import InputError

__all__ = ["RunLock", "lock_path"]


def lock_path(out_dir: Path) -> Path:
    out_dir = Path(out_dir)
    return out_dir.with_name(out_dir.name + ".lock")


class RunLock:
    """`with RunLock(out_dir):` -- InputError at once if another process holds it."""

    def __init__(self, out_dir: Path):
        self.out_dir = Path(out_dir)
        self.path = lock_path(out_dir)
        self.fd: int | None = None

    def acquire(self) -> None:
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _describe(fd)
                os.close(fd)
                raise InputError(f"another featprune run is writing {self.out_dir}.partial "
                                 f"({holder}); wait for it to finish or stop it, then rerun (with --resume to "
                                 "continue its work)") from None
            # The holder before us may have unlinked the file on its way out: then we locked a
            # file nobody else will see. Only a lock on the file at the path counts.
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "started": time.strftime("%Y-%m-%d %H:%M:%S %z")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self.fd = fd

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            os.unlink(self.path)  # while still holding it: see the inode check in acquire
        except FileNotFoundError:
            pass
        os.close(self.fd)  # closing releases the lock
        self.fd = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _describe(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        info = {}
    if not info:
        return "holder unknown: it is just starting"
    return f"pid {info.get('pid')} on {info.get('host')}, started {info.get('started')}"
