"""The calibration set the engine consumes: token ids already cut to length, with buckets.

A bucket is a named group of samples whose statistics are kept apart (e.g. "translation"
vs "code" for the contrastive method); plain Wanda uses one bucket. Where the samples
come from (demonstrations, corpora) is calibration.py's business, not the engine's.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch

from ..errors import InputError, MissingInputError
from ..files import read_jsonl_objects

__all__ = ["CalibrationSet", "read_calibration_texts", "read_jsonl_texts", "read_text_paragraphs"]


@dataclass
class CalibrationSet:
    samples: list[torch.Tensor]  # 1-D int64 token ids, each already truncated to seqlen
    buckets: list[int]  # bucket index of each sample
    bucket_names: list[str]
    summary: dict = field(default_factory=dict)  # copied into featprune.json

    def __post_init__(self) -> None:
        if not self.samples:
            raise InputError("the calibration set is empty: no sample has any token")
        if len(self.buckets) != len(self.samples):
            raise ValueError(f"{len(self.samples)} samples but {len(self.buckets)} bucket indices")
        for i, (s, b) in enumerate(zip(self.samples, self.buckets)):
            if not isinstance(s, torch.Tensor) or s.dim() != 1 or s.dtype != torch.int64:
                raise ValueError(f"sample {i} must be a 1-D int64 tensor of token ids")
            if s.numel() == 0:
                raise InputError(f"calibration sample {i} has no tokens")
            if not 0 <= b < len(self.bucket_names):
                raise ValueError(f"sample {i} has bucket {b}, outside the {len(self.bucket_names)} bucket names")

    @property
    def max_len(self) -> int:
        return max(s.numel() for s in self.samples)

    @property
    def num_tokens(self) -> int:
        return sum(s.numel() for s in self.samples)

    def fingerprint(self) -> str:
        """Hash of the exact token ids and buckets (a resumed run must see the same data)."""
        h = hashlib.sha256(json.dumps(self.bucket_names).encode())
        for s, b in zip(self.samples, self.buckets):
            h.update(b.to_bytes(4, "little"))
            h.update(s.numel().to_bytes(8, "little"))
            h.update(s.contiguous().numpy().tobytes())
        return h.hexdigest()

    def describe(self) -> dict:
        per_bucket = {}
        for name_idx, name in enumerate(self.bucket_names):
            lens = [s.numel() for s, b in zip(self.samples, self.buckets) if b == name_idx]
            per_bucket[name] = {"samples": len(lens), "tokens": sum(lens)}
        return {**self.summary, "samples": len(self.samples), "tokens": self.num_tokens,
                "max_len": self.max_len, "buckets": per_bucket}

    @classmethod
    def from_texts(cls, texts: Sequence[str], tokenizer, nsamples: int, seqlen: int, seed: int = 0, *,
                   buckets: Sequence[str] | None = None, source: str | None = None) -> CalibrationSet:
        """Each text is one sample: tokenized (with the tokenizer's special tokens) and cut to
        `seqlen` tokens. With more texts than `nsamples`, a seeded random subset is taken (kept
        in file order); with fewer, all are used and the summary says so. `buckets` gives each
        text's bucket name (default: one bucket, "calibration")."""
        if not isinstance(nsamples, int) or nsamples < 1:
            raise InputError(f"nsamples must be a positive integer, got {nsamples!r}")
        if not isinstance(seqlen, int) or seqlen < 1:
            raise InputError(f"seqlen must be a positive integer, got {seqlen!r}")
        names = list(buckets) if buckets is not None else ["calibration"] * len(texts)
        if len(names) != len(texts):
            raise ValueError(f"{len(texts)} texts but {len(names)} bucket names")
        usable = [i for i, t in enumerate(texts) if isinstance(t, str) and t.strip()]
        if not usable:
            raise InputError("no calibration text: the input has no non-empty text")
        chosen = usable
        if len(usable) > nsamples:
            chosen = sorted(random.Random(seed).sample(usable, nsamples))
        bucket_names = sorted(set(names[i] for i in chosen), key=lambda n: names.index(n))
        samples, bucket_ids, truncated = [], [], 0
        for i in chosen:
            ids = tokenizer(texts[i], add_special_tokens=True)["input_ids"]
            if len(ids) > seqlen:
                truncated += 1
                ids = ids[:seqlen]
            if not ids:
                continue
            samples.append(torch.tensor(ids, dtype=torch.int64))
            bucket_ids.append(bucket_names.index(names[i]))
        summary = {"requested_samples": nsamples, "available_texts": len(usable), "seqlen": seqlen,
                   "seed": seed, "truncated_samples": truncated}
        if source:
            summary["source"] = source
        return cls(samples, bucket_ids, bucket_names, summary)


def read_jsonl_texts(path) -> tuple[list[str], list[str] | None]:
    """Texts (and optional "bucket" names) from a JSONL file of {"text": ...} objects."""
    path = Path(path)
    if not path.exists():
        raise MissingInputError(f"calibration file {path} does not exist")
    texts, buckets = [], []
    for lineno, obj in read_jsonl_objects(path):
        if not isinstance(obj.get("text"), str):
            raise InputError(f'{path}:{lineno}: expected an object with a string "text" field')
        texts.append(obj["text"])
        buckets.append(str(obj.get("bucket", "calibration")))
    if not any(t.strip() for t in texts):
        raise InputError(f"calibration file {path} is empty: it has no non-empty \"text\"")
    return texts, (buckets if len(set(buckets)) > 1 else None)


def read_text_paragraphs(path) -> list[str]:
    """The paragraphs of a plain-text file, one calibration sample each: runs of lines separated by
    blank (or whitespace-only) lines, their inner line breaks kept."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"calibration file {path} does not exist")
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {path} as UTF-8 text: {exc}") from None
    paragraphs, current = [], []
    for line in [*lines, ""]:  # the sentinel closes the last paragraph
        if line.strip():
            current.append(line)
        elif current:
            paragraphs.append("\n".join(current))
            current = []
    if not paragraphs:
        raise InputError(f"calibration file {path} is empty: it has no paragraph of text")
    return paragraphs


def read_calibration_texts(path) -> tuple[list[str], list[str] | None]:
    """Texts (and optional bucket names) from a calibration file: plain text when it ends in .txt
    (one sample per blank-line-separated paragraph), else JSONL of {"text": ...} (read_jsonl_texts)."""
    if Path(path).suffix.lower() == ".txt":
        return read_text_paragraphs(path), None
    try:
        return read_jsonl_texts(path)
    except MissingInputError:
        raise
    except InputError as exc:
        raise InputError(f"{exc} (calibration files are JSONL of {{\"text\": ...}} objects, or plain text named "
                         "*.txt with one sample per paragraph)") from None
