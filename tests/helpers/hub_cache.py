"""A Hugging Face hub cache built by hand, in the layout huggingface_hub writes:

    <cache>/models--ORG--NAME/blobs/<sha256 of the content>
    <cache>/models--ORG--NAME/snapshots/<commit>/<file>  -> symlink to ../../blobs/<sha256>
    <cache>/models--ORG--NAME/refs/main                  (the commit, no newline)

so the hub-id tests run offline (HF_HUB_OFFLINE=1, HF_HUB_CACHE=<cache>).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def add_to_hub_cache(cache: Path, repo_id: str, model_dir: Path, *, commit: str = COMMIT, ref: str = "main",
                     only: tuple[str, ...] | None = None) -> Path:
    """Put the files of model_dir (or those named in `only`) into `cache` as repo_id's snapshot at
    `commit`, with refs/<ref> pointing at it. Returns the snapshot folder."""
    repo = Path(cache) / ("models--" + repo_id.replace("/", "--"))
    blobs, snapshot = repo / "blobs", repo / "snapshots" / commit
    blobs.mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    for f in sorted(Path(model_dir).iterdir()):
        if not f.is_file() or (only is not None and f.name not in only):
            continue
        data = f.read_bytes()
        blob = blobs / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        link = snapshot / f.name
        if link.is_symlink() or link.exists():
            link.unlink()
        os.symlink(os.path.relpath(blob, snapshot), link)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / ref).write_text(commit)
    return snapshot


def tree_digest(root: Path) -> dict[str, str]:
    """sha256 of every file under root (symlinks followed): to check that nothing was modified."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(root).rglob("*")) if p.is_file()}
