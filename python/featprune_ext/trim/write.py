"""Writing the trimmed model directory: weights, config files and tokenizer files.

Weights keep the input's file layout (same shard names, same tensors per shard). The embedding and
an untied LM head are gathered row by row from the input file in chunks, so the whole matrix is never
in memory; every other tensor is copied byte for byte (os.copy_file_range).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import torch

from ..engine.checkpoint import INDEX_NAME, Checkpoint, RawTensor, RowGather, write_index, write_safetensors
from ..errors import InputError
from ..files import WEIGHT_SUFFIXES, atomic_write_bytes, atomic_write_json

__all__ = ["ID_MAP_NAME", "VocabTensors", "config_token_ids", "find_vocab_tensors", "read_json", "remap_config",
           "write_side_files", "write_weights"]

ID_MAP_NAME = "featprune_id_map.json"
REPORT_NAME = "featprune.json"
# Tensors indexed by token id, by the end of their name: input embeddings, then output heads.
EMBEDDING_SUFFIXES = ("embed_tokens.weight", "wte.weight", "word_embeddings.weight", "embed_in.weight")
HEAD_SUFFIXES = ("lm_head.weight", "embed_out.weight", "lm_head.bias", "embed_out.bias")
# Vocabulary files a trimmed tokenizer.json makes stale: loaders that prefer them would see the old ids.
STALE_TOKENIZER_FILES = ("tokenizer.model", "spiece.model", "sentencepiece.bpe.model", "vocab.json", "merges.txt",
                         "vocab.txt")
REWRITTEN_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                   "added_tokens.json")
# Config keys that hold token ids (bos_token_id, eos_token_id (int or list), decoder_start_token_id,
# image_token_index, ...), plus generation_config's suppress lists.
_ID_KEY = re.compile(r".*_token_ids?$|.*_token_index$|^(begin_)?suppress_tokens$")


class VocabTensors:
    """The checkpoint tensors with one row per token id."""

    def __init__(self, embeddings: list[str], heads: list[str], rows: int):
        self.embeddings, self.heads, self.rows = embeddings, heads, rows

    @property
    def names(self) -> list[str]:
        return [*self.embeddings, *self.heads]


def _text_config(config: dict) -> dict:
    return config.get("text_config") if isinstance(config.get("text_config"), dict) else config


def find_vocab_tensors(ckpt: Checkpoint) -> VocabTensors:
    """The embedding and (untied) head tensors; InputError when none is found, when they disagree on
    the vocabulary, or when another tensor has a row per token (a layout trim does not know)."""
    emb = [n for n in ckpt.tensors if n.endswith(EMBEDDING_SUFFIXES) and len(ckpt.info(n).shape) == 2]
    if len(emb) != 1:
        raise InputError(f"{ckpt.dir}: cannot find the one token embedding (tensors ending in "
                         f"{', '.join(EMBEDDING_SUFFIXES)}; found {emb or 'none'})")
    rows = ckpt.info(emb[0]).shape[0]
    heads = [n for n in ckpt.tensors if n.endswith(HEAD_SUFFIXES)]
    for n in heads:
        if ckpt.info(n).shape[0] != rows:
            raise InputError(f"{n} has {ckpt.info(n).shape[0]} rows but the embedding {emb[0]} has {rows}")
    others = [n for n in ckpt.tensors if n not in emb and n not in heads and len(ckpt.info(n).shape) == 2
              and ckpt.info(n).shape[0] == rows and ckpt.info(n).shape[1] != rows]
    if others:
        raise InputError(f"{ckpt.dir}: tensor {others[0]} has one row per token like the embedding; featprune "
                         "trim does not know how to trim it")
    return VocabTensors(emb, heads, rows)


# -- config files ------------------------------------------------------------------------------
def _walk_ids(obj, fn):
    """Apply fn(key, value) -> new value to every token-id entry of a config dict (nested dicts too)."""
    if isinstance(obj, dict):
        for key in list(obj):
            value = obj[key]
            if _ID_KEY.match(key) and value is not None:
                obj[key] = fn(key, value)
            elif isinstance(value, dict):
                _walk_ids(value, fn)
    return obj


def config_token_ids(config: dict) -> set:
    """Every token id a config (or generation config) names."""
    found: set = set()

    def collect(key, value):
        for v in value if isinstance(value, list) else [value]:
            if not isinstance(v, int) or isinstance(v, bool):
                raise InputError(f"config field {key} = {value!r} is not a token id or a list of them")
            found.add(v)
        return value

    _walk_ids(json.loads(json.dumps(config)), collect)
    return found


def remap_config(config: dict, old_to_new: dict, new_vocab: int) -> dict:
    """A copy of a config with every token id renumbered and the vocabulary size set."""
    out = json.loads(json.dumps(config))

    def remap(key, value):
        if isinstance(value, list):
            return [old_to_new[v] for v in value]
        return old_to_new[value]

    _walk_ids(out, remap)
    for cfg in (out, out.get("text_config")):
        if isinstance(cfg, dict) and "vocab_size" in cfg:
            cfg["vocab_size"] = new_vocab
    return out


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"{path} is not valid JSON: {exc}") from None


def write_side_files(model_dir: Path, part: Path, tokenizer_json: dict, old_to_new: dict,
                     new_vocab: int) -> dict:
    """Rewrite the config and tokenizer files for the new ids; copy the other non-weight files; leave
    out the vocabulary files the new tokenizer.json replaces. Returns what was done with each file."""
    done = {"rewritten": [], "copied": [], "dropped": []}
    for f in sorted(model_dir.iterdir()):
        name = f.name
        if not f.is_file() or name in (INDEX_NAME, REPORT_NAME, ID_MAP_NAME) or name.endswith(WEIGHT_SUFFIXES):
            continue
        if name in STALE_TOKENIZER_FILES:
            done["dropped"].append(name)
            continue
        if name not in REWRITTEN_FILES:
            shutil.copyfile(f, part / name)
            done["copied"].append(name)
            continue
        if name == "tokenizer.json":
            text = json.dumps(tokenizer_json, ensure_ascii=False, separators=(",", ":"))
            atomic_write_bytes(part / name, text.encode("utf-8"))
        elif name in ("config.json", "generation_config.json"):
            atomic_write_json(part / name, remap_config(read_json(f), old_to_new, new_vocab), sort_keys=False)
        elif name == "tokenizer_config.json":
            cfg = remap_config(read_json(f), old_to_new, new_vocab)
            cfg.pop("vocab_size", None)
            decoder = cfg.get("added_tokens_decoder")
            if isinstance(decoder, dict):
                cfg["added_tokens_decoder"] = {str(old_to_new[int(k)]): v for k, v in decoder.items()}
            atomic_write_json(part / name, cfg, sort_keys=False)
        elif name == "added_tokens.json":
            atomic_write_json(part / name, {k: old_to_new[int(v)] for k, v in read_json(f).items()},
                              sort_keys=False)
        done["rewritten"].append(name)
    return done


# -- weights -------------------------------------------------------------------------------------
def write_weights(ckpt: Checkpoint, part: Path, vocab: VocabTensors, kept: torch.Tensor, progress=None) -> int:
    """One output file per input file, same names and tensors; returns the data bytes written."""
    by_file: dict[Path, list] = {}
    for name, info in ckpt.tensors.items():
        src = RowGather(ckpt, name, kept) if name in vocab.names else RawTensor(ckpt, name)
        by_file.setdefault(info.path, []).append((name, src))
    total = 0
    weight_map = {}
    for n, (path, entries) in enumerate(sorted(by_file.items()), start=1):
        if progress:
            progress(f"writing {path.name} ({n} of {len(by_file)})")
        total += write_safetensors(part / path.name, entries)
        weight_map.update({name: path.name for name, _ in entries})
    if ckpt.index_path is not None:
        write_index(part, weight_map, total)
    return total
