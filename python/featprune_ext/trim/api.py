"""featprune_ext.trim.trim: cut a model's vocabulary to the tokens its languages use."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Optional, Sequence, Union

import torch

from .._version import versions
from ..engine.checkpoint import Checkpoint
from ..engine.lock import RunLock
from ..engine.report import peak_rss_bytes
from ..errors import InputError
from ..files import atomic_write_bytes, atomic_write_json, fsync_dir
from ..hub import resolve_model
from .scripts import resolve_languages, scripts_of
from .select import always_kept, coverage, load_corpus_texts, select_by_corpus, select_by_scripts
from .tokenizer_edit import TokenizerVocab, load_tokenizer_json
from .write import (
    ID_MAP_NAME,
    REPORT_NAME,
    config_token_ids,
    find_vocab_tensors,
    read_json,
    write_side_files,
    write_weights,
)

__all__ = ["KEEP_MODES", "trim"]

KEEP_MODES = ("scripts", "corpus")
PathLike = Union[str, os.PathLike]


def _languages(langs) -> list:
    codes = langs.split(",") if isinstance(langs, str) else list(langs or [])
    return resolve_languages(codes)


def _config_ids(model_dir: Path, config: dict) -> set:
    ids = config_token_ids(config)
    for name in ("generation_config.json", "tokenizer_config.json"):
        if (model_dir / name).is_file():
            ids |= config_token_ids(read_json(model_dir / name))
    return ids


def _params(ckpt: Checkpoint) -> int:
    total = 0
    for info in ckpt.tensors.values():
        n = 1
        for s in info.shape:
            n *= s
        total += n
    return total


def trim(model_dir: PathLike, out_dir: PathLike, *, langs: Union[str, Sequence[str]], keep: str = "scripts",
         data: Sequence[PathLike] = (), texts: Sequence[PathLike] = (), min_count: Optional[int] = None,
         max_tokens: Optional[int] = None, progress: bool = True) -> dict:
    """Write a copy of a local Hugging Face causal LM whose vocabulary holds only the tokens of `langs`.

    keep="scripts" (default, lossless for any text in the languages' scripts): every token whose
    characters all belong to those scripts or to the shared characters (digits, punctuation, symbols,
    spaces, combining marks). keep="corpus": the tokens the original tokenizer produces on `data`
    (corpora as --calib reads them, or plain text/word lists) and `texts` (JSONL {"text"} or plain text),
    at least `min_count` times (default 1), at most `max_tokens` tokens in all; text outside the corpus
    may split into smaller pieces. Both keep every special and added token, the byte (or single-character)
    tokens every string needs, and the merge closure. Ids are renumbered in the original order.

    Returns the report written as OUT/featprune.json; OUT must not exist (built in OUT.partial/).
    """
    t0 = time.perf_counter()
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    say = (lambda msg: print(f"featprune trim: {msg}", file=sys.stderr, flush=True)) if progress else (lambda m: None)
    if keep not in KEEP_MODES:
        raise InputError(f"--keep must be one of {', '.join(KEEP_MODES)}, got {keep!r}")
    if keep == "scripts" and (data or texts or min_count is not None or max_tokens is not None):
        raise InputError("--data, --texts, --min-count and --max-tokens choose tokens in --keep corpus mode; "
                         "--keep scripts needs no corpus")
    if max_tokens is not None and max_tokens < 1:
        raise InputError(f"--max-tokens must be positive, got {max_tokens}")
    languages = _languages(langs)
    scripts = scripts_of(languages)
    if out_dir.exists():
        raise InputError(f"{out_dir} already exists; refusing to overwrite it (choose another --out or delete it)")
    model_dir = resolve_model(model_dir)  # a hub id: its snapshot in the HF cache, downloaded if need be
    if out_dir.resolve() == model_dir.resolve():
        raise InputError("--out must differ from the input model")

    ckpt = Checkpoint(model_dir)
    tensors = find_vocab_tensors(ckpt)
    tok_json = load_tokenizer_json(model_dir)
    vocab = TokenizerVocab.from_json(tok_json)
    if tensors.rows < len(vocab.tokens):
        raise InputError(f"the embedding {tensors.embeddings[0]} has {tensors.rows} rows but the tokenizer has ids "
                         f"up to {len(vocab.tokens) - 1}: tokenizer and model do not match")
    config_ids = _config_ids(model_dir, ckpt.config_dict)
    beyond = sorted(i for i in config_ids if i >= len(vocab.tokens) or vocab.tokens[i] is None)
    if beyond:
        raise InputError(f"the config names token id {beyond[0]}, which the tokenizer does not have")
    fixed = always_kept(vocab, config_ids)

    say(f"{vocab.family} tokenizer, {len(vocab.tokens)} ids; keeping {keep} of "
        f"{', '.join(lang.locale for lang in languages)} ({', '.join(scripts)})")
    tokenizer = None
    if keep == "scripts":
        sel = select_by_scripts(vocab, scripts, fixed)
    else:
        from tokenizers import Tokenizer

        corpus = load_corpus_texts(languages, list(data), list(texts))
        tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        sel = select_by_corpus(vocab, tokenizer, corpus, fixed, min_count=1 if min_count is None else min_count,
                               max_tokens=max_tokens)
    kept = sel.kept
    old_to_new = {old: new for new, old in enumerate(kept)}
    new_json = vocab.trimmed_json(kept)
    if tokenizer is not None:
        from tokenizers import Tokenizer

        trimmed_tok = Tokenizer.from_str(json.dumps(new_json))
        sel.corpus["coverage"] = coverage(tokenizer, trimmed_tok, old_to_new, sel.heldout)
        cov = sel.corpus["coverage"]
        if cov:
            say(f"coverage on {cov['heldout_texts']} held-out corpus texts: {cov['words_same_pieces']:.1%} of words "
                f"and {cov['texts_same_pieces']:.1%} of texts keep their pieces, {cov['token_coverage']:.1%} of "
                "tokens kept")
    say(f"keeping {len(kept)} of {len(vocab.tokens)} tokens ({', '.join(f'{k} {v}' for k, v in sel.reasons.items())})")

    id_map = [-1] * tensors.rows
    for old, new in old_to_new.items():
        id_map[old] = new
    id_map_bytes = json.dumps({"old_vocab_size": tensors.rows, "new_vocab_size": len(kept),
                               "old_to_new": id_map}, separators=(",", ":")).encode()

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with RunLock(out_dir):
        if out_dir.exists():
            raise InputError(f"{out_dir} appeared while trimming; refusing to overwrite it")
        part = out_dir.with_name(out_dir.name + ".partial")
        if part.exists():  # a killed trim's leftovers: we hold the lock, so no one is writing them
            shutil.rmtree(part)
        part.mkdir(parents=True)
        out_bytes = write_weights(ckpt, part, tensors, torch.tensor(kept, dtype=torch.int64), progress=say)
        files = write_side_files(model_dir, part, new_json, old_to_new, len(kept))
        atomic_write_bytes(part / ID_MAP_NAME, id_map_bytes)
        removed_rows = tensors.rows - len(kept)
        params_before = _params(ckpt)
        removed = sum(removed_rows * _row_size(ckpt.info(n).shape) for n in tensors.names)
        previous = model_dir / REPORT_NAME
        report = {
            "format": 1,
            "kind": "trim",
            "trim": {
                "keep": keep,
                "languages": [lang.locale for lang in languages],
                "scripts": scripts if keep == "scripts" else None,
                "tokenizer_family": vocab.family,
                "old_vocab_size": tensors.rows,
                "tokenizer_ids": len(vocab.tokens),
                "kept_tokens": len(kept),
                "kept_by_reason": sel.reasons,
                "merges": {"before": len(vocab.merges), "after": len(new_json["model"].get("merges") or [])},
                "corpus": sel.corpus,
                "id_map": {"file": ID_MAP_NAME, "sha256": hashlib.sha256(id_map_bytes).hexdigest()},
            },
            "model": {"source": str(model_dir.resolve()), "architecture": (ckpt.config_dict.get("architectures")
                                                                           or [None])[0],
                      "vocab_tensors": tensors.names, "tied_embeddings": not tensors.heads,
                      "params_before": params_before, "params_after": params_before - removed,
                      "input_bytes": ckpt.file_bytes, "output_data_bytes": out_bytes},
            "files": files,
            "input_report": read_json(previous) if previous.is_file() else None,
            "timings": {"total_s": round(time.perf_counter() - t0, 3)},
            "peak_rss_bytes": peak_rss_bytes(),
            "versions": versions(),
        }
        atomic_write_json(part / REPORT_NAME, report)
        fsync_dir(part)
        if out_dir.exists():
            raise InputError(f"{out_dir} appeared while trimming; the result is left in {part}")
        os.rename(part, out_dir)
        fsync_dir(out_dir.parent)
    ckpt.close()
    say(f"wrote {out_dir}: {report['model']['params_after'] / 1e6:.1f}M of {params_before / 1e6:.1f}M parameters, "
        f"{report['timings']['total_s']:.1f} s")
    return report


def _row_size(shape) -> int:
    n = 1
    for s in shape[1:]:
        n *= s
    return n
