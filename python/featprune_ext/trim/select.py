"""Which tokens a trim keeps: by script (lossless) or by what a corpus uses (smaller, lossy outside it).

Both always keep the special and added tokens, the tokens a post-processor or the config names, the
base tokens without which some string could no longer be encoded (tokenizer_edit.TokenizerVocab.base_ids),
and the merge closure of everything kept.
"""

from __future__ import annotations

import bisect
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from ..data import corpora
from ..data.languages import Language
from ..errors import InputError, MissingInputError
from ..files import read_jsonl_objects
from .scripts import ScriptFilter
from .tokenizer_edit import FAMILY_BYTE_LEVEL, TokenizerVocab, byte_alphabet, token_bytes_or_text

__all__ = ["CorpusTexts", "Selection", "always_kept", "coverage", "load_corpus_texts", "select_by_corpus",
           "select_by_scripts"]

ENCODE_CHUNK = 4096  # texts encoded at once
HELDOUT_EVERY = 10  # every 10th corpus text is held out to measure coverage (when there are >= 20)


@dataclass
class Selection:
    kept: list  # sorted old ids
    reasons: dict  # why, in counts: special_and_added, base, config_ids, scripts/corpus, closure
    corpus: Optional[dict] = None
    heldout: list = field(default_factory=list)


def always_kept(vocab: TokenizerVocab, config_ids: set) -> dict[str, set]:
    """The ids every trim keeps, by reason (a token counts under its first reason)."""
    special = vocab.added_ids | vocab.post_processor_ids() | vocab.unk_ids()
    base = vocab.base_ids - special
    named = {i for i in config_ids if i < len(vocab.tokens)} - special - base
    return {"special_and_added": special, "base": base, "config_ids": named}


def _closed(vocab: TokenizerVocab, fixed: dict[str, set], chosen: set, reason: str) -> Selection:
    kept = set().union(*fixed.values())
    chosen = chosen - kept
    kept |= chosen
    added = vocab.closure(kept, have=set(kept))
    reasons = {name: len(ids) for name, ids in fixed.items()}
    reasons[reason] = len(chosen)
    reasons["closure"] = len(added)
    kept |= added
    return Selection(kept=sorted(i for i in kept if vocab.tokens[i] is not None), reasons=reasons)


def select_by_scripts(vocab: TokenizerVocab, scripts: Sequence[str], fixed: dict[str, set]) -> Selection:
    """Every token whose characters (or bytes, for byte-level BPE) all belong to `scripts` or the shared
    characters. Parts of such a token are substrings of it, so the closure adds nothing: recorded."""
    filt = ScriptFilter(scripts)
    inverse = {c: b for b, c in byte_alphabet().items()} if vocab.family == FAMILY_BYTE_LEVEL else None
    chosen = set()
    for i, token in enumerate(vocab.tokens):
        if token is None:
            continue
        what = token_bytes_or_text(vocab, token, inverse)
        if what is None:
            continue
        if (filt.allows_bytes(what) if isinstance(what, bytes) else filt.allows_text(what)):
            chosen.add(i)
    return _closed(vocab, fixed, chosen, "scripts")


# -- corpus mode -------------------------------------------------------------------------------
@dataclass
class CorpusTexts:
    texts: list  # used for counting
    heldout: list  # kept aside for the coverage figures
    sources: list  # [{"path", "kind", "texts"}]


def _lines(path: Path) -> list[str]:
    try:
        return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except UnicodeDecodeError as exc:
        raise InputError(f"{path} is not UTF-8 text: {exc}") from None


def _read_texts_file(path: Path) -> list[str]:
    """--texts FILE: JSONL of {"text": ...} objects, or plain text (one text per line)."""
    if not path.is_file():
        raise MissingInputError(f"--texts file does not exist: {path}")
    if path.suffix.lower() in (".jsonl", ".ndjson", ".json"):
        out = []
        for lineno, obj in read_jsonl_objects(path):
            text = obj.get("text")
            if not isinstance(text, str):
                raise InputError(f"{path}:{lineno}: expected a \"text\" string")
            if text.strip():
                out.append(text)
        return out
    return _lines(path)


def _read_data(path: Path, langs: Sequence[Language]) -> tuple[list[str], str]:
    """--data CORPUS: a plain text file or word list (every line), else each language's side of a
    corpus `--calib` reads (gettext, FLORES-200, TSV/JSONL, saved dataset, dataset-build folder), whose
    calibration split only is used (evaluation splits stay unseen)."""
    if not path.exists():
        raise MissingInputError(f"--data corpus does not exist: {path}")
    if path.is_file() and path.suffix.lower() not in (".jsonl", ".ndjson", ".json", ".tsv", ".tab"):
        return _lines(path), "text lines"
    out = []
    for lang in langs:
        try:
            texts = corpora.load_mono(path, lang)
        except InputError as exc:
            raise InputError(f"--data {path} has no {lang.name} text: {exc}") from None
        out.extend(texts)
    return out, corpora.detect_layout(path) if not path.is_dir() or not _is_dataset_build(path) else "dataset-build"


def _is_dataset_build(folder: Path) -> bool:
    return any((d / f"{d.name}.txt").is_file() for d in folder.iterdir() if d.is_dir())


def load_corpus_texts(langs: Sequence[Language], data: Sequence, texts: Sequence) -> CorpusTexts:
    if not data and not texts:
        raise InputError("--keep corpus needs kept text: --data CORPUS and/or --texts FILE")
    collected, sources = [], []
    for p in data:
        got, kind = _read_data(Path(p), langs)
        sources.append({"path": str(Path(p).resolve()), "kind": kind, "texts": len(got)})
        collected.extend(got)
    for p in texts:
        got = _read_texts_file(Path(p))
        sources.append({"path": str(Path(p).resolve()), "kind": "texts", "texts": len(got)})
        collected.extend(got)
    collected = list(dict.fromkeys(t for t in collected if t.strip()))
    if not collected:
        raise InputError("no kept text: the --data/--texts sources hold no non-empty text")
    if len(collected) >= 2 * HELDOUT_EVERY:
        heldout = collected[HELDOUT_EVERY - 1::HELDOUT_EVERY]
        used = [t for i, t in enumerate(collected) if i % HELDOUT_EVERY != HELDOUT_EVERY - 1]
    else:
        heldout, used = [], collected
    return CorpusTexts(texts=used, heldout=heldout, sources=sources)


def select_by_corpus(vocab: TokenizerVocab, tokenizer, corpus: CorpusTexts, fixed: dict[str, set], *,
                     min_count: int = 1, max_tokens: Optional[int] = None) -> Selection:
    """The tokens the original tokenizer produces on the corpus at least `min_count` times; with
    `max_tokens`, the most frequent of them (with their closure) while the whole vocabulary stays
    within max_tokens."""
    if min_count < 1:
        raise InputError(f"--min-count must be at least 1, got {min_count}")
    counts: Counter = Counter()
    for start in range(0, len(corpus.texts), ENCODE_CHUNK):  # chunks: a word list's encodings add up
        for enc in tokenizer.encode_batch(corpus.texts[start:start + ENCODE_CHUNK], add_special_tokens=False):
            counts.update(enc.ids)
    candidates = sorted((i for i, c in counts.items() if c >= min_count), key=lambda i: (-counts[i], i))
    if not candidates:
        raise InputError(f"no token occurs {min_count} times or more in the corpus ({len(corpus.texts)} texts)")
    if max_tokens is None:
        sel = _closed(vocab, fixed, set(candidates), "corpus")
    else:
        base = set().union(*fixed.values())
        base |= vocab.closure(base, have=set(base))
        if len(base) > max_tokens:
            raise InputError(f"--max-tokens {max_tokens} is below the {len(base)} tokens every trim keeps "
                             "(special, added and base tokens)")
        kept, chosen = set(base), set()
        for i in candidates:
            if i in kept:
                continue
            new = vocab.closure({i}, have=kept)
            if len(kept) + len(new) > max_tokens:
                continue
            kept |= new
            chosen.add(i)
        sel = _closed(vocab, fixed, chosen, "corpus")
    sel.corpus = {"texts": len(corpus.texts), "heldout_texts": len(corpus.heldout), "sources": corpus.sources,
                  "distinct_tokens": len(counts), "min_count": min_count, "max_tokens": max_tokens}
    sel.heldout = corpus.heldout
    return sel


_WORD = re.compile(r"\S+")


def coverage(original, trimmed, old_to_new: dict, texts: Sequence[str]) -> Optional[dict]:
    """How much of held-out text the trimmed tokenizer still splits exactly as the original did:
    share of the original tokens kept, of whitespace-separated words and of whole texts tokenized to
    the same pieces."""
    if not texts:
        return None
    tokens = kept_tokens = words = same_words = same_texts = 0
    for text, a, b in _encoded_pairs(original, trimmed, list(texts)):
        mapped = [old_to_new.get(i, -1) for i in a.ids]
        tokens += len(mapped)
        kept_tokens += sum(1 for i in mapped if i >= 0)
        same_texts += mapped == list(b.ids)
        ends = [m.end() for m in _WORD.finditer(text)]
        groups_a = _by_word(mapped, a.offsets, ends)
        groups_b = _by_word(list(b.ids), b.offsets, ends)
        words += len(ends)
        same_words += sum(1 for w in range(len(ends)) if groups_a.get(w) == groups_b.get(w))
    return {"heldout_texts": len(texts), "token_coverage": round(kept_tokens / max(tokens, 1), 6),
            "words": words, "words_same_pieces": round(same_words / max(words, 1), 6),
            "texts_same_pieces": round(same_texts / len(texts), 6)}


def _encoded_pairs(original, trimmed, texts: list):
    """(text, original encoding, trimmed encoding), encoded ENCODE_CHUNK texts at a time."""
    for start in range(0, len(texts), ENCODE_CHUNK):
        chunk = texts[start:start + ENCODE_CHUNK]
        yield from zip(chunk, original.encode_batch(chunk, add_special_tokens=False),
                       trimmed.encode_batch(chunk, add_special_tokens=False))


def _by_word(ids: list, offsets: list, word_ends: list) -> dict:
    """ids grouped by the word each token ends in (a token that ends in the spaces before a word
    belongs to that word)."""
    groups: dict = {}
    for i, (_, end) in zip(ids, offsets):
        groups.setdefault(bisect.bisect_left(word_ends, end), []).append(i)
    return groups
