"""Token ids of calibration texts, kept on disk per tokenizer, so a rerun need not load the tokenizer.

Loading a large tokenizer is the slowest step of a small pruning run: transformers 5 parses Gemma 3's
33 MB tokenizer.json with Python's json seven times and builds its 262k-entry vocabulary in Python
(about 6 s on a 2-core CPU, against about 30 s for the two forward passes of 16 texts). Calibration
asks a tokenizer only two things: the ids of a text with the tokenizer's special tokens, and its
eos token. CachedTokenizer answers both from a file keyed by a fingerprint of everything
AutoTokenizer reads (every non-weight file of the model folder, byte for byte) and of the library
versions that tokenize; the real tokenizer is loaded only when a text is missing. The same files and
versions give the same ids, so a hit returns what the tokenizer would.

FEATPRUNE_TOKEN_CACHE: the cache folder (default ~/.cache/featprune/tokens); 0 turns the cache off.
A cache file that cannot be read is ignored and rewritten; a cache that cannot be written is skipped.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Optional

from ..files import WEIGHT_SUFFIXES, atomic_write_bytes

__all__ = ["TOKEN_CACHE_ENV", "CachedTokenizer", "token_cache_dir", "tokenizer_fingerprint"]

TOKEN_CACHE_ENV = "FEATPRUNE_TOKEN_CACHE"
_FORMAT = 1
_NOT_READ_BY_TOKENIZERS = ("featprune.json", "model.safetensors.index.json")
_LIBRARIES = ("transformers", "tokenizers", "sentencepiece", "protobuf", "tiktoken")
_MAX_IDS = 20_000_000  # a file above this many ids starts again from this run's texts


def token_cache_dir() -> Optional[Path]:
    """The cache folder, or None when FEATPRUNE_TOKEN_CACHE=0."""
    value = os.environ.get(TOKEN_CACHE_ENV)
    if value == "0":
        return None
    return Path(value) if value else Path.home() / ".cache" / "featprune" / "tokens"


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "absent"


def tokenizer_fingerprint(model_dir: Path) -> str:
    """sha256 of the model folder's non-weight files (names and bytes) and the tokenizing libraries'
    versions: what AutoTokenizer.from_pretrained(model_dir) depends on."""
    h = hashlib.sha256(json.dumps({"format": _FORMAT, "python": sys.version_info[:2],
                                   "libraries": {n: _version(n) for n in _LIBRARIES}}).encode())
    for f in sorted(Path(model_dir).iterdir()):
        if not f.is_file() or f.name.endswith(WEIGHT_SUFFIXES) or f.name in _NOT_READ_BY_TOKENIZERS:
            continue
        h.update(f.name.encode() + b"\0")
        with open(f, "rb") as fh:
            h.update(hashlib.file_digest(fh, "sha256").digest() if hasattr(hashlib, "file_digest")
                     else hashlib.sha256(fh.read()).digest())
    return h.hexdigest()


def _is_ids(value) -> bool:
    """A list of int token ids, or (a tokenizer answering as a batch) a list holding one."""
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], list):
        value = value[0]
    return isinstance(value, list) and all(type(i) is int for i in value)


def _text_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


class CachedTokenizer:
    """tokenizer(text)["input_ids"] and tokenizer.eos_token, from the cache when it has them.

    load: builds the real tokenizer (called at most once, on the first miss). Call save() once
    the texts are encoded; status is "hit" (the tokenizer was never loaded), "miss" or "off"."""

    def __init__(self, model_dir: Path, load: Callable[[], Any], cache_dir: Optional[Path] = None):
        self._load, self._real = load, None
        self._path = None
        self._data: dict = {"format": _FORMAT, "ids": {}}  # "eos_token" once known (it may be None)
        self._new: dict[str, list] = {}
        if cache_dir is not None:
            self._path = cache_dir / f"{tokenizer_fingerprint(model_dir)[:32]}.json"
            self._data = self._read() or self._data

    @property
    def status(self) -> str:
        if self._path is None:
            return "off"
        return "hit" if self._real is None else "miss"

    def _read(self) -> Optional[dict]:
        try:
            data = json.loads(self._path.read_text(encoding="utf-8"))
        except (OSError, ValueError):  # absent, or unreadable: start again
            return None
        if not isinstance(data, dict) or data.get("format") != _FORMAT or not isinstance(data.get("ids"), dict):
            return None
        return data

    def _tokenizer(self):
        if self._real is None:
            self._real = self._load()
        return self._real

    @property
    def eos_token(self):
        if "eos_token" not in self._data:
            self._data["eos_token"] = getattr(self._tokenizer(), "eos_token", None)
        return self._data["eos_token"]

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict:
        if not add_special_tokens:  # calibration always asks for them; nothing else is cached
            return self._tokenizer()(text, add_special_tokens=False)
        key = _text_key(text)
        ids = self._data["ids"].get(key) if self._path is not None else None
        if not _is_ids(ids):  # a miss (or an entry that is not a list of ids: not trusted)
            ids = self._tokenizer()(text, add_special_tokens=True)["input_ids"]
            ids = ids.tolist() if hasattr(ids, "tolist") else list(ids)
            self._data["ids"][key] = self._new[key] = ids
        return {"input_ids": list(ids)}

    def save(self) -> None:
        """Add this run's new texts to the cache file (merged with what another run wrote since)."""
        if self._path is None or not self._new:
            return
        data = self._read() or {"format": _FORMAT, "ids": {}}
        if sum(len(v) for v in data["ids"].values()) > _MAX_IDS:
            data["ids"] = {}
        data["ids"].update(self._new)
        data["eos_token"] = getattr(self._real, "eos_token", None)  # _new is not empty: the tokenizer was loaded
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(self._path, json.dumps(data, separators=(",", ":")).encode("utf-8"))
        except OSError:  # a read-only home or a full disk must not fail the run: the cache is optional
            pass
        self._new = {}
