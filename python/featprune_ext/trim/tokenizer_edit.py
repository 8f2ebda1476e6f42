"""Reading and rewriting a tokenizer.json for a smaller vocabulary.

Three families are supported, the ones multilingual causal LMs ship:
  * byte-level BPE (GPT-2, SmolLM2, Qwen2, Llama 3): tokens are spelled in a 256-character byte
    alphabet; the 256 byte tokens can encode any text and are always kept;
  * SentencePiece-style BPE with byte fallback (Gemma 3, Llama 2, Mistral): `<0x00>`..`<0xFF>` are
    always kept, so a character whose token was dropped is spelled in bytes;
  * unigram (XGLM, mT5): every single-character piece is kept.
Any other tokenizer model (WordPiece, WordLevel) is an InputError naming it.

Ids are renumbered in the original order: the new id of a kept token is the number of kept tokens
before it. Only merges whose result is kept stay, in their original order: with every part of a kept
token kept too (the merge closure), BPE applies, on any text whose original tokens are all kept, the
same merges in the same order, so the pieces are the same.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

from ..errors import InputError

__all__ = ["TokenizerVocab", "byte_alphabet", "load_tokenizer_json", "remap_ids_in"]

_BYTE_PIECE = re.compile(r"^<0x[0-9A-Fa-f]{2}>$")
FAMILY_BYTE_LEVEL = "byte-level BPE"
FAMILY_BYTE_FALLBACK = "BPE with byte fallback"
FAMILY_BPE = "BPE"
FAMILY_UNIGRAM = "unigram"


def byte_alphabet() -> dict[int, str]:
    """Byte-level BPE's spelling of the 256 bytes: printable Latin-1 bytes stand for themselves, the
    others (controls, space, soft hyphen...) are shifted to U+0100 and up, in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    table = {b: chr(b) for b in printable}
    shifted = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + shifted)
            shifted += 1
    return table


def load_tokenizer_json(model_dir: Path) -> dict:
    path = Path(model_dir) / "tokenizer.json"
    if not path.is_file():
        raise InputError(f"{model_dir} has no tokenizer.json: featprune trim rewrites the fast tokenizer's "
                         "file (save the tokenizer with transformers to create it)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"{path} is not valid JSON: {exc}") from None


def _has_type(component, name: str) -> bool:
    """True when a tokenizer.json component (or a Sequence of them) has type `name`."""
    if isinstance(component, dict):
        if component.get("type") == name:
            return True
        return any(_has_type(c, name) for key in ("pretokenizers", "decoders", "normalizers", "processors")
                   for c in component.get(key) or [])
    return False


@dataclass
class TokenizerVocab:
    """The vocabulary of a tokenizer.json, by id, with what trimming must know about it."""

    data: dict
    family: str
    tokens: list  # id -> token string as the model spells it (None: an id no token has)
    added_ids: set = field(default_factory=set)
    base_ids: set = field(default_factory=set)
    merges: list = field(default_factory=list)  # (left, right, result) token strings, in rank order
    _ids: Optional[dict] = field(default=None, repr=False)  # token -> id, built by closure()
    _parts: Optional[dict] = field(default=None, repr=False)  # result -> [(left, right)], built by closure()

    @classmethod
    def from_json(cls, data: dict) -> TokenizerVocab:
        model = data.get("model") or {}
        kind = model.get("type")
        if kind not in ("BPE", "Unigram"):
            raise InputError(f"unsupported tokenizer model {kind!r}: featprune trim handles BPE (byte-level or "
                             "with byte fallback) and Unigram tokenizers")
        added = data.get("added_tokens") or []
        if kind == "BPE":
            vocab = model.get("vocab") or {}
            entries = [(int(i), t) for t, i in vocab.items()]
        else:
            entries = [(i, piece[0]) for i, piece in enumerate(model.get("vocab") or [])]
        size = max([i for i, _ in entries] + [int(a["id"]) for a in added] + [-1]) + 1
        tokens: list = [None] * size
        for i, t in entries:
            tokens[i] = t
        for a in added:
            if tokens[int(a["id"])] is None:
                tokens[int(a["id"])] = a["content"]
        if kind == "Unigram":
            family = FAMILY_UNIGRAM
        elif _has_type(data.get("pre_tokenizer"), "ByteLevel") or _has_type(data.get("decoder"), "ByteLevel"):
            family = FAMILY_BYTE_LEVEL
        elif model.get("byte_fallback"):
            family = FAMILY_BYTE_FALLBACK
        else:
            family = FAMILY_BPE
        self = cls(data=data, family=family, tokens=tokens, added_ids={int(a["id"]) for a in added})
        self.base_ids = self._base_ids()
        if kind == "BPE":
            self.merges = self._parse_merges(model)
        return self

    # -- what every trim keeps ------------------------------------------------------------------
    def _base_ids(self) -> set:
        """The tokens without which some string could no longer be encoded."""
        if self.family == FAMILY_BYTE_LEVEL:
            alphabet = set(byte_alphabet().values())
            return {i for i, t in enumerate(self.tokens) if t in alphabet}
        if self.family == FAMILY_BYTE_FALLBACK:
            return {i for i, t in enumerate(self.tokens) if t is not None and _BYTE_PIECE.match(t)}
        # unigram, or BPE without byte fallback: a dropped character would become the unknown token
        return {i for i, t in enumerate(self.tokens) if t is not None and len(t) == 1}

    def unk_ids(self) -> set:
        model = self.data["model"]
        if self.family == FAMILY_UNIGRAM:
            unk = model.get("unk_id")
            return {int(unk)} if unk is not None else set()
        unk = model.get("unk_token")
        ids = {i for i, t in enumerate(self.tokens) if unk is not None and t == unk}
        return ids

    # -- merges --------------------------------------------------------------------------------
    def _parse_merges(self, model: dict) -> list:
        prefix = model.get("continuing_subword_prefix") or ""
        out = []
        for m in model.get("merges") or []:
            if isinstance(m, str):
                parts = m.split(" ")
                if len(parts) != 2:
                    raise InputError(f"tokenizer.json: cannot read merge {m!r} (expected 'left right')")
            else:
                parts = list(m)
            left, right = parts
            joined_right = right[len(prefix):] if prefix and right.startswith(prefix) else right
            out.append((left, right, left + joined_right))
        return out

    def closure(self, keep: set, have: Optional[set] = None) -> set:
        """`keep` plus every token on any merge path of a kept token (both parts of every merge that
        builds a kept token, recursively). With `have`: only the ids of that closure not in `have` (whose
        members are not walked from unless they are in `keep`: pass a closed set)."""
        if self._parts is None:
            self._ids = {t: i for i, t in enumerate(self.tokens) if t is not None}
            self._parts = {}
            for left, right, result in self.merges:
                self._parts.setdefault(result, []).append((left, right))
        have = set() if have is None else have
        out = {i for i in keep if i not in have}
        todo = [self.tokens[i] for i in keep if self.tokens[i] is not None]  # walk from all of keep
        while todo:
            token = todo.pop()
            for pair in self._parts.get(token, ()):
                for piece in pair:
                    i = self._ids.get(piece)
                    if i is not None and i not in out and i not in have:
                        out.add(i)
                        todo.append(piece)
        return out

    # -- the kept vocabulary's tokenizer.json ----------------------------------------------------
    def trimmed_json(self, kept: list[int]) -> dict:
        """A new tokenizer.json holding the tokens `kept` (sorted old ids), renumbered 0..len-1 in order."""
        old_to_new = {old: new for new, old in enumerate(kept)}
        # New objects for every part that changes (the caller's dict is left as it was), without
        # deep-copying a 262k-token vocabulary and its half a million merges.
        data = dict(self.data)
        model = data["model"] = dict(self.data["model"])
        data["added_tokens"] = [dict(a) for a in self.data.get("added_tokens") or []]
        data["post_processor"] = copy.deepcopy(self.data.get("post_processor"))
        data["padding"] = copy.deepcopy(self.data.get("padding"))
        if model["type"] == "BPE":
            model["vocab"] = {self.tokens[old]: new for new, old in enumerate(kept)
                              if old in old_to_new and self.tokens[old] in model["vocab"]}
            kept_tokens = set(model["vocab"])
            new_merges = []
            for raw, (left, right, result) in zip(model.get("merges") or [], self.merges):
                if result in kept_tokens:
                    if left not in kept_tokens or right not in kept_tokens:
                        raise AssertionError(f"merge closure broken: {left!r} + {right!r} -> kept {result!r}")
                    new_merges.append(raw)
            model["merges"] = new_merges
        else:
            vocab = model.get("vocab") or []
            model["vocab"] = [vocab[old] for old in kept if old < len(vocab)]
            if model.get("unk_id") is not None:
                model["unk_id"] = old_to_new[int(model["unk_id"])]
        for a in data.get("added_tokens") or []:
            a["id"] = old_to_new[int(a["id"])]
        remap_ids_in(data.get("post_processor"), old_to_new)
        padding = data.get("padding")
        if isinstance(padding, dict) and padding.get("pad_id") is not None:
            padding["pad_id"] = old_to_new[int(padding["pad_id"])]
        return data

    def post_processor_ids(self) -> set:
        """Ids the post-processor inserts (template special tokens): kept like special tokens."""
        found: set = set()
        _collect_post_processor_ids(self.data.get("post_processor"), found)
        padding = self.data.get("padding")
        if isinstance(padding, dict) and padding.get("pad_id") is not None:
            found.add(int(padding["pad_id"]))
        return found


def _collect_post_processor_ids(obj, found: set) -> None:
    if isinstance(obj, dict):
        for key, value in obj.items():
            if key == "ids" and isinstance(value, list):
                found.update(int(v) for v in value)
            elif key in ("sep", "cls") and isinstance(value, list) and len(value) == 2:
                found.add(int(value[1]))
            else:
                _collect_post_processor_ids(value, found)
    elif isinstance(obj, list):
        for v in obj:
            _collect_post_processor_ids(v, found)


def remap_ids_in(obj, old_to_new: dict) -> None:
    """Rewrite, in place, the token ids of a post-processor (TemplateProcessing's special tokens,
    BERT/RoBERTa processors' sep and cls, and Sequences of them)."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            if key == "ids" and isinstance(value, list):
                obj[key] = [old_to_new[int(v)] for v in value]
            elif key in ("sep", "cls") and isinstance(value, list) and len(value) == 2:
                obj[key] = [value[0], old_to_new[int(value[1])]]
            else:
                remap_ids_in(value, old_to_new)
    elif isinstance(obj, list):
        for v in obj:
            remap_ids_in(v, old_to_new)


def token_bytes_or_text(vocab: TokenizerVocab, token: str, inverse_alphabet: Optional[dict] = None):
    """What a token stands for: bytes (byte-level BPE; None if it is not in the byte alphabet) or
    text (SentencePiece spaces '▁' read as spaces)."""
    if vocab.family == FAMILY_BYTE_LEVEL:
        try:
            return bytes(inverse_alphabet[c] for c in token)
        except KeyError:
            return None
    prefix = (vocab.data["model"].get("continuing_subword_prefix") or "") if vocab.family != FAMILY_UNIGRAM else ""
    suffix = (vocab.data["model"].get("end_of_word_suffix") or "") if vocab.family != FAMILY_UNIGRAM else ""
    if prefix and token.startswith(prefix):
        token = token[len(prefix):]
    if suffix and token.endswith(suffix):
        token = token[:-len(suffix)]
    return token.replace("\u2581", " ")


def ids_of(vocab: TokenizerVocab, tokens: Iterable[str]) -> set:
    wanted = set(tokens)
    return {i for i, t in enumerate(vocab.tokens) if t in wanted}
