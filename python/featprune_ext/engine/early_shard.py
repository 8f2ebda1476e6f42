"""The shard of unpruned tensors (embeddings, final norm, output head: often the largest tensors of a
small model) copied from the start of the run, beside the skeleton and the first blocks.

Importing transformers' model classes (for families without featprune's built-in model code) takes
seconds on one core and leaves the other idle; with the built-in code the copy runs beside the first
blocks instead. Copied at the end, the same bytes keep the main thread waiting for the writer
(bench/RESULTS.md, session 11: 0.41 s against 0.04 s for Gemma 3 270M). Which tensors belong to no block is
known only once the skeleton is built, so the copy guesses them by name (no numbered path component,
unlike model.layers.3....) and is used only when the guess equals the skeleton's `other_keys`;
otherwise it is dropped and the shard is written as before.

The copy goes into an unnamed file (O_TMPFILE) in the output's parent folder: until it is linked into
place, a crash frees it with the process and leaves nothing behind. Filesystems or systems without
unnamed files skip the early copy. Tuning.early_shard=False (tuning.py) turns it off.
"""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path

from .checkpoint import Checkpoint, RawTensor, safetensors_filler

__all__ = ["EarlyShard", "start_early_shard"]

_NUMBERED = re.compile(r"(^|\.)\d+(\.|$)")  # a path component that is a number: a block's (or expert's) index


def guess_unpruned_keys(ckpt: Checkpoint) -> list[str]:
    return sorted(k for k in ckpt.tensors if not _NUMBERED.search(k))


class EarlyShard:
    """A background copy of the guessed unpruned tensors into an unnamed file in `directory`."""

    def __init__(self, ckpt: Checkpoint, directory: Path):
        self.keys = guess_unpruned_keys(ckpt)
        fill, _ = safetensors_filler([(k, RawTensor(ckpt, k)) for k in self.keys])
        self.fd = os.open(directory, os.O_TMPFILE | os.O_WRONLY, 0o644)
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._copy, args=(fill,), name="featprune-early-shard", daemon=True)
        self._thread.start()

    def _copy(self, fill) -> None:
        try:
            fill(self.fd)
            os.fsync(self.fd)
        except BaseException as exc:  # reported by link(): the shard is then written the usual way
            self.error = exc

    def link(self, keys: list[str], path: Path) -> bool:
        """Put the copy at `path` (atomically, like write_safetensors) if it holds exactly `keys`
        and was written whole; drop it otherwise. True when it was used."""
        self._thread.join()
        try:
            if self.error is not None or sorted(keys) != self.keys:
                return False
            path = Path(path)
            tmp = path.with_name(path.name + ".tmp")
            tmp.unlink(missing_ok=True)
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:  # a dir fd makes os.link call linkat(AT_SYMLINK_FOLLOW), which names an unnamed file
                os.link(f"/proc/self/fd/{self.fd}", tmp.name, dst_dir_fd=dir_fd, follow_symlinks=True)
            finally:
                os.close(dir_fd)
            os.replace(tmp, path)
            return True
        finally:
            self.close()

    def close(self) -> None:
        """Drop the copy unless link() used it (an unnamed file is freed with its last descriptor)."""
        self._thread.join()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def start_early_shard(ckpt: Checkpoint, part: Path, dist=None) -> EarlyShard | None:
    """An EarlyShard copying into the folder of `part` (the run's OUT.partial/) for a fresh run by a
    single process; None for a resumed or distributed run, where unnamed files are not available
    (the caller skips it when Tuning.early_shard is off)."""
    part = Path(part)
    if part.exists() or (dist is not None and dist.enabled):
        return None
    if not hasattr(os, "O_TMPFILE") or not os.path.isdir("/proc/self/fd") or not guess_unpruned_keys(ckpt):
        return None
    try:
        return EarlyShard(ckpt, part.parent)
    except OSError:  # e.g. EOPNOTSUPP: this filesystem has no unnamed files
        return None
