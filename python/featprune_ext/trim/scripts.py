"""Which Unicode scripts a language is written in, and whether a token belongs to them.

A token is kept in scripts mode when every character of it is in the kept languages' scripts or in
the characters every language shares (Unicode's Common and Inherited scripts: digits, punctuation,
symbols, spaces, combining marks). A byte-level token may hold a piece of a character (its first or
last bytes): that piece is kept when some character it could belong to is allowed, so any text in the
kept scripts still finds every token it was split into.

The script property comes from the `regex` package (a dependency of transformers), evaluated once
over every code point into a table.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Iterable

import numpy as np

from ..data.languages import Language, resolve
from ..errors import InputError

__all__ = ["SCRIPTS_BY_CODE", "ScriptFilter", "resolve_languages", "scripts_of"]

# FLORES-200 script code (the suffix of spa_Latn, jpn_Jpan) -> Unicode script names.
SCRIPTS_BY_CODE: dict[str, tuple[str, ...]] = {
    "Latn": ("Latin",), "Cyrl": ("Cyrillic",), "Grek": ("Greek",), "Armn": ("Armenian",),
    "Geor": ("Georgian",), "Hebr": ("Hebrew",), "Arab": ("Arabic",), "Ethi": ("Ethiopic",),
    "Deva": ("Devanagari",), "Beng": ("Bengali",), "Guru": ("Gurmukhi",), "Gujr": ("Gujarati",),
    "Orya": ("Oriya",), "Taml": ("Tamil",), "Telu": ("Telugu",), "Knda": ("Kannada",),
    "Mlym": ("Malayalam",), "Sinh": ("Sinhala",), "Thai": ("Thai",), "Laoo": ("Lao",),
    "Tibt": ("Tibetan",), "Mymr": ("Myanmar",), "Khmr": ("Khmer",), "Tfng": ("Tifinagh",),
    "Hans": ("Han",), "Hant": ("Han", "Bopomofo"), "Jpan": ("Han", "Hiragana", "Katakana"),
    "Hang": ("Hangul",), "Kore": ("Hangul", "Han"),
}
# Shared by every language: digits, punctuation, symbols, spaces, controls (Common); combining marks
# (Inherited).
SHARED_SCRIPTS = ("Common", "Inherited")
_MAX_CODE_POINT = 0x110000


def resolve_languages(codes: Iterable[str]) -> list[Language]:
    """Languages from codes in any form (InputError for an unknown one or none at all), duplicates dropped."""
    langs = list(dict.fromkeys(resolve(c.strip()) for c in codes if c and c.strip()))
    if not langs:
        raise InputError("no languages given: pass --langs, e.g. --langs es,en")
    return langs


def scripts_of(langs: Iterable[Language]) -> list[str]:
    """The Unicode scripts the languages are written in (sorted)."""
    out = set()
    for lang in langs:
        code = lang.flores.split("_")[-1]
        if code not in SCRIPTS_BY_CODE:
            raise InputError(f"no script table for {lang.name} ({lang.flores}); known scripts: "
                             f"{', '.join(sorted(SCRIPTS_BY_CODE))}")
        out.update(SCRIPTS_BY_CODE[code])
    return sorted(out)


@lru_cache(maxsize=8)
def _allowed_table(scripts: tuple[str, ...]) -> np.ndarray:
    """bool[0x110000]: code point -> in one of `scripts` or a shared script."""
    try:
        import regex
    except ImportError:
        raise ImportError("featprune trim needs the `regex` package (pip install regex; transformers "
                          "installs it)") from None
    cls = regex.compile("[" + "".join(rf"\p{{Script={s}}}" for s in (*scripts, *SHARED_SCRIPTS)) + "]+")
    # One string of every code point (surrogates stand in as U+FFFF, a noncharacter of no script).
    cps = np.arange(_MAX_CODE_POINT, dtype=np.uint32)
    cps[0xD800:0xE000] = 0xFFFF
    text = cps.tobytes().decode("utf-32-le")
    table = np.zeros(_MAX_CODE_POINT, dtype=bool)
    for m in cls.finditer(text):
        table[m.start():m.end()] = True
    table[0xD800:0xE000] = False
    return table


class ScriptFilter:
    """Tests tokens (text or raw UTF-8 bytes) against the scripts of the kept languages."""

    def __init__(self, scripts: Iterable[str]):
        self.scripts = tuple(sorted(set(scripts)))
        self.table = _allowed_table(self.scripts)

    def allows_text(self, text: str) -> bool:
        table = self.table
        return all(table[ord(c)] for c in text)

    def allows_bytes(self, data: bytes) -> bool:
        """True when `data` can occur inside the UTF-8 of a text written only with allowed characters."""
        n = len(data)
        head = 0  # leading continuation bytes: the end of a character that started before the token
        while head < n and 0x80 <= data[head] < 0xC0:
            head += 1
        if head == n:
            return head <= 3 and self._could_end(bytes(data))
        tail = n  # trailing incomplete sequence: the start of a character that ends after the token
        last = n - 1
        while last > head and 0x80 <= data[last] < 0xC0:
            last -= 1
        need = _sequence_length(data[last])
        if need and n - last < need:
            tail = last
        if head and (head > 3 or not self._could_end(bytes(data[:head]))):
            return False
        if tail < n and not self._could_start(bytes(data[tail:])):
            return False
        try:
            middle = bytes(data[head:tail]).decode("utf-8")
        except UnicodeDecodeError:  # no valid text contains it
            return False
        return self.allows_text(middle)

    @lru_cache(maxsize=65536)  # noqa: B019 -- one filter per run; pieces repeat across the vocabulary
    def _could_start(self, piece: bytes) -> bool:
        """Some allowed character's UTF-8 starts with `piece` (a lead byte and fewer continuations than it needs)."""
        need = _sequence_length(piece[0])
        if not need or len(piece) >= need:
            return False
        value = piece[0] & (0x7F >> need)
        for b in piece[1:]:
            value = (value << 6) | (b & 0x3F)
        free = 6 * (need - len(piece))
        lo = max(value << free, _MIN_FOR_LENGTH[need])
        hi = min(((value + 1) << free) - 1, _MAX_CODE_POINT - 1)
        return lo <= hi and bool(self.table[lo:hi + 1].any())

    @lru_cache(maxsize=65536)  # noqa: B019
    def _could_end(self, piece: bytes) -> bool:
        """Some allowed character's UTF-8 ends with `piece` (1-3 continuation bytes) after at least one more byte."""
        k = len(piece)
        known = 0
        for b in piece:
            known = (known << 6) | (b & 0x3F)
        for length in range(k + 1, 5):
            free_bits = (7 - length) + 6 * (length - 1 - k)  # the lead's payload and the unseen continuations
            prefix = np.arange(1 << free_bits, dtype=np.int64)
            cps = (prefix << (6 * k)) | known
            cps = cps[(cps >= _MIN_FOR_LENGTH[length]) & (cps < _MAX_CODE_POINT)]
            if cps.size and bool(self.table[cps].any()):
                return True
        return False


_MIN_FOR_LENGTH = {1: 0, 2: 0x80, 3: 0x800, 4: 0x10000}  # shorter forms are overlong, hence invalid


def _sequence_length(lead: int) -> int:
    """Bytes in the UTF-8 sequence a lead byte starts (0: not a valid lead)."""
    if lead < 0x80:
        return 1
    if 0xC2 <= lead < 0xE0:
        return 2
    if 0xE0 <= lead < 0xF0:
        return 3
    if 0xF0 <= lead < 0xF5:
        return 4
    return 0
