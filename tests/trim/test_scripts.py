"""The language -> scripts table and the per-token script test, on hand-checked characters."""

import pytest

from featprune_ext.errors import InputError
from featprune_ext.trim.scripts import ScriptFilter, resolve_languages, scripts_of


def test_languages_map_to_their_scripts():
    assert scripts_of(resolve_languages(["es", "en"])) == ["Latin"]
    assert scripts_of(resolve_languages("zh_CN,ja,en".split(","))) == ["Han", "Hiragana", "Katakana", "Latin"]
    assert scripts_of(resolve_languages(["ru", "hi", "ar"])) == ["Arabic", "Cyrillic", "Devanagari"]


def test_unknown_or_missing_language_is_an_input_error():
    with pytest.raises(InputError, match="klingon"):
        resolve_languages(["es", "klingon"])
    with pytest.raises(InputError, match="no languages"):
        resolve_languages([" ", ""])


def test_text_tokens():
    latin = ScriptFilter(["Latin"])
    for ok in ("año", "▁pingüino", " 3,5 €", "“¿?”", "e\u0301", "\n\t", "😀"):  # Common and Inherited count
        assert latin.allows_text(ok), ok
    for bad in ("中", "año中", "Соединение", "ά", "の"):
        assert not latin.allows_text(bad), bad
    han = ScriptFilter(["Han", "Hiragana", "Katakana"])
    assert han.allows_text("打印机。") and han.allows_text("ファイルを") and not han.allows_text("año")


def test_partial_utf8_bytes():
    latin, han = ScriptFilter(["Latin"]), ScriptFilter(["Han"])
    zhong = "中".encode()  # e4 b8 ad
    assert han.allows_bytes(zhong) and not latin.allows_bytes(zhong)
    # the first two bytes of a Han character, and its last byte after a complete Latin word
    assert han.allows_bytes(zhong[:2]) and not latin.allows_bytes(zhong[:2])
    assert latin.allows_bytes(b"ab" + "é".encode()[:1])  # 'é' starts with c3
    # an e6 lead starts U+6000..U+6FFF, all Han; e4 can start U+4DC0.. (Yijing hexagrams, Common)
    assert not latin.allows_bytes(b"ab\xe6") and latin.allows_bytes(b"ab\xe4")
    assert han.allows_bytes(zhong[2:] + b"1") and not han.allows_bytes(zhong[2:] + b"x")  # ad ends a Han char
    assert latin.allows_bytes("é".encode()[1:])  # a9 ends 'é'
    assert not latin.allows_bytes("é".encode()[1:] + "中".encode())
    assert not latin.allows_bytes(b"\xff") and not latin.allows_bytes(b"\xc0\x80")  # never valid UTF-8
