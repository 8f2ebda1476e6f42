"""Token ids of calibration texts, kept on disk per tokenizer, so a rerun need not load the tokenizer.

Loading a large tokenizer is the slowest step of a small pruning run: transformers 5 parses Gemma 3's
33 MB tokenizer.json with Python's json seven times and builds its 262k-entry vocabulary in Python
(about 6 s on a 2-core CPU, against about 30 s for the two forward passes of 16 texts). Calibration
asks a tokenizer only two things: the ids of a text with the tokenizer's special tokens, and its
eos token. CachedTokenizer answers both from a file keyed by a fingerprint of everything
AutoTokenizer reads (every non-weight file of the model folder, byte for byte) and of the library
versions that tokenize; the real tokenizer is loaded only when a text is missing. The same files and
versions give the same ids, so a hit returns what the tokenizer would.

New texts for a tokenizer seen before need not load transformers either. When transformers' tokenizer
runs on a `tokenizers` pipeline, the cache records a sha256 of that pipeline as it encodes (its JSON,
truncation and padding off) and its split_special_tokens setting. A later miss loads tokenizer.json
with the `tokenizers` library alone (1.0 s for Gemma 3's, against 4.3 s for importing transformers
and building its tokenizer: bench/RESULTS.md, session 11) and uses it only if its pipeline hashes the
same. Then it runs the pipeline transformers' tokenizer runs (transformers 5 encodes a text with that
pipeline's encode; the tests compare the ids, on Gemma 3's tokenizer too): status "direct".
Otherwise transformers' tokenizer loads.

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


def _pipeline_sha(backend) -> str:
    """sha256 of a tokenizers.Tokenizer's whole pipeline (normalizer, pre-tokenizer, model, added and
    special tokens, post-processor), as serialized by the library."""
    return hashlib.sha256(backend.to_str().encode("utf-8")).hexdigest()


def _backend_of(real):
    """The `tokenizers` pipeline transformers' tokenizer encodes with, or None (a slow tokenizer)."""
    try:
        import tokenizers
    except ImportError:
        return None
    backend = getattr(real, "backend_tokenizer", None)
    return backend if isinstance(backend, tokenizers.Tokenizer) else None


class CachedTokenizer:
    """tokenizer(text)["input_ids"] and tokenizer.eos_token, from the cache when it has them.

    load: builds the real tokenizer (called at most once, on the first miss). Call save() once
    the texts are encoded; status is "hit" (the tokenizer was never loaded), "miss" or "off"."""

    def __init__(self, model_dir: Path, load: Callable[[], Any], cache_dir: Optional[Path] = None):
        self._load, self._real = load, None
        self._direct, self._direct_tried = None, False  # tokenizer.json through `tokenizers`, once verified
        self._json = Path(model_dir) / "tokenizer.json"
        self._path = None
        self._data: dict = {"format": _FORMAT, "ids": {}}  # "eos_token" once known (it may be None)
        self._new: dict[str, list] = {}
        if cache_dir is not None:
            self._path = cache_dir / f"{tokenizer_fingerprint(model_dir)[:32]}.json"
            self._data = self._read() or self._data

    @property
    def status(self) -> str:
        """"off", "hit" (nothing loaded), "direct" (misses encoded by the verified tokenizer.json) or
        "miss" (transformers' tokenizer loaded)."""
        if self._path is None:
            return "off"
        if self._real is not None:
            return "miss"
        return "direct" if self._direct is not None else "hit"

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

    def _verified_direct(self):
        """tokenizer.json loaded by `tokenizers` alone, if its pipeline is the one transformers'
        tokenizer encoded with (recorded by an earlier miss); else None."""
        if not self._direct_tried:
            self._direct_tried = True
            sha, split = self._data.get("pipeline_sha256"), self._data.get("split_special_tokens")
            if isinstance(sha, str) and isinstance(split, bool) and "eos_token" in self._data and self._json.is_file():
                try:
                    import tokenizers

                    backend = tokenizers.Tokenizer.from_file(str(self._json))
                    backend.no_truncation()
                    backend.no_padding()
                    backend.encode_special_tokens = split
                    self._direct = backend if _pipeline_sha(backend) == sha else None
                except Exception:  # any failure: transformers' tokenizer decides
                    self._direct = None
        return self._direct

    def _encode(self, text: str) -> list:
        if self._real is None and self._path is not None and self._verified_direct() is not None:
            return self._direct.encode(text, add_special_tokens=True).ids
        ids = self._tokenizer()(text, add_special_tokens=True)["input_ids"]
        return ids.tolist() if hasattr(ids, "tolist") else list(ids)

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict:
        if not add_special_tokens:  # calibration always asks for them; nothing else is cached
            return self._tokenizer()(text, add_special_tokens=False)
        key = _text_key(text)
        ids = self._data["ids"].get(key) if self._path is not None else None
        if not _is_ids(ids):  # a miss (or an entry that is not a list of ids: not trusted)
            ids = self._encode(text)
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
        if self._real is not None:  # what the direct path needs next time, as the real tokenizer encoded
            data["eos_token"] = getattr(self._real, "eos_token", None)
            backend = _backend_of(self._real)
            split = getattr(self._real, "split_special_tokens", None)
            if backend is not None and isinstance(split, bool):
                data["pipeline_sha256"], data["split_special_tokens"] = _pipeline_sha(backend), split
            else:
                data.pop("pipeline_sha256", None)
        else:  # encoded directly: keep what the verified record says
            for k in ("eos_token", "pipeline_sha256", "split_special_tokens"):
                if k in self._data:
                    data[k] = self._data[k]
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(self._path, json.dumps(data, separators=(",", ":")).encode("utf-8"))
        except OSError:  # a read-only home or a full disk must not fail the run: the cache is optional
            pass
        self._new = {}
