"""Small file helpers shared by every layer: atomic writes and JSONL reading.

An atomic write goes to `<path>.tmp`, is fsynced and renamed over `path`, so readers
see the old file or the new one, never half of one; ENOSPC becomes DiskFullError.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Union

from .errors import DiskFullError, InputError

__all__ = ["WEIGHT_SUFFIXES", "atomic_save_torch", "atomic_write", "atomic_write_bytes", "atomic_write_json",
           "disk_full", "fsync_dir", "read_jsonl_objects", "write_fd"]

PathLike = Union[str, os.PathLike]


# file names that hold model weights (every other file of a model folder is a "side file": config, tokenizer)
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".h5", ".msgpack", ".ckpt")


def disk_full(path: Path, exc: OSError) -> DiskFullError:
    return DiskFullError(errno.ENOSPC, f"disk full while writing {path} ({exc.strerror}); free space on that "
                                       "disk and rerun with --resume")


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_fd(fd: int, data) -> None:
    view = memoryview(data).cast("B")
    while view:
        n = os.write(fd, view[: 1 << 30])  # one write() moves at most ~2 GiB on Linux
        view = view[n:]


def atomic_write(path: Path, fill) -> None:
    """Run fill(fd) on `<path>.tmp`, fsync, rename over `path`; turn ENOSPC into DiskFullError."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            fill(fd)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.errno == errno.ENOSPC:
            raise disk_full(path, exc) from None
        raise


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    atomic_write(Path(path), lambda fd: write_fd(fd, data))


def atomic_write_json(path: PathLike, obj, *, sort_keys: bool = True, mkdir: bool = False) -> None:
    """JSON (UTF-8, indented) written atomically; `mkdir` creates missing parent folders."""
    path = Path(path)
    if mkdir:
        path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(obj, indent=2, sort_keys=sort_keys, ensure_ascii=False) + "\n"
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_save_torch(path: PathLike, obj) -> None:
    """torch.save with the same tmp + fsync + rename discipline."""
    import torch

    def fill(fd: int) -> None:
        with os.fdopen(os.dup(fd), "wb") as f:  # closing the duplicate flushes; the caller fsyncs
            torch.save(obj, f)

    atomic_write(Path(path), fill)


def read_jsonl_objects(path: PathLike) -> list[tuple[int, dict]]:
    """(line number, object) for every non-blank line of a JSONL file; InputError names the bad line."""
    rows = []
    try:
        with open(path, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except ValueError as exc:
                    raise InputError(f"{path}:{lineno}: not JSON ({exc})") from None
                if not isinstance(obj, dict):
                    raise InputError(f"{path}:{lineno}: expected a JSON object per line")
                rows.append((lineno, obj))
    except FileNotFoundError:
        raise InputError(f"{path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {path}: {exc}") from None
    return rows
