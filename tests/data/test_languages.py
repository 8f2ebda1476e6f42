"""Language codes: every code system maps to one Language, and unknown codes list the known ones."""

from __future__ import annotations

import re

import pytest

from featprune_ext.data.languages import Language, known_codes, known_languages, resolve, try_resolve

# The paper's languages and every locale with >= 200 filtered gettext pairs on a Debian system.
PAPER = ["en", "fr", "es", "de", "ru", "zh", "ja", "hi", "sw", "ar", "ko", "tr", "vi", "it", "pt", "nl", "pl", "id",
         "th"]
GETTEXT_LOCALES = ["as", "ast", "be", "bg", "bn", "bs", "ca", "cs", "da", "de", "el", "eo", "es", "et", "eu", "fi",
                   "fr", "fur", "gl", "gu", "hi", "hr", "hu", "id", "it", "ja", "ka", "ko", "lt", "lv", "mr", "ms",
                   "nb", "ne", "nl", "oc", "or", "pa", "pl", "pt", "pt_BR", "ro", "ru", "sk", "sl", "sr", "sv", "tr",
                   "ug", "uk", "vi", "zh_CN", "zh_TW"]


@pytest.mark.parametrize("code", ["fr", "FR", "fra", "fra_Latn", "FRA_LATN", "French", "french", "fr-FR",
                                  "fr_CA", "fr_FR.UTF-8", "sentence_fra_Latn", " fr "])
def test_every_code_form_resolves_to_french(code):
    lang = resolve(code)
    assert lang == Language("fr", "fra_Latn", "fr", "fra", "French", ("fre",))
    assert lang.code == "fr"


@pytest.mark.parametrize("code,locale,flores,iso3,name", [
    ("zh", "zh_CN", "zho_Hans", "zho", "Chinese"),
    ("zh-CN", "zh_CN", "zho_Hans", "zho", "Chinese"),
    ("zh_Hans", "zh_CN", "zho_Hans", "zho", "Chinese"),
    ("zho_Hans", "zh_CN", "zho_Hans", "zho", "Chinese"),
    ("zh_TW", "zh_TW", "zho_Hant", "zho", "Traditional Chinese"),
    ("zho_Hant", "zh_TW", "zho_Hant", "zho", "Traditional Chinese"),
    ("pt", "pt", "por_Latn", "por", "Portuguese"),
    ("pt-BR", "pt_BR", "por_Latn", "por", "Brazilian Portuguese"),
    ("sw", "sw", "swh_Latn", "swa", "Swahili"),
    ("swh_Latn", "sw", "swh_Latn", "swa", "Swahili"),
    ("ar", "ar", "arb_Arab", "ara", "Arabic"),
    ("nor", "nb", "nob_Latn", "nob", "Norwegian"),
    ("ja", "ja", "jpn_Jpan", "jpn", "Japanese"),
    ("hin_Deva", "hi", "hin_Deva", "hin", "Hindi"),
])
def test_code_systems_map_to_one_another(code, locale, flores, iso3, name):
    lang = resolve(code)
    assert (lang.locale, lang.flores, lang.iso3, lang.name) == (locale, flores, iso3, name)


def test_paper_and_gettext_languages_are_covered():
    for code in PAPER + GETTEXT_LOCALES:
        assert try_resolve(code) is not None, code
    assert len({resolve(c).locale for c in GETTEXT_LOCALES}) == len(GETTEXT_LOCALES)
    assert len(known_languages()) >= 100


def test_table_is_consistent():
    flores = re.compile(r"^[a-z]{3}_[A-Z][a-z]{3}$")
    for lang in known_languages():
        assert flores.match(lang.flores), lang
        assert re.match(r"^[a-z]{3}$", lang.iso3), lang
        assert lang.iso1 is None or re.match(r"^[a-z]{2}$", lang.iso1), lang
        assert lang.name and lang.name[0].isupper()
        assert resolve(lang.locale) is lang  # the canonical code always comes back to its entry
        assert resolve(lang.flores).flores == lang.flores
        assert lang.codes()[0] == lang.locale and len(set(lang.codes())) == len(lang.codes())
    assert len({lang.locale for lang in known_languages()}) == len(known_languages())


def test_unknown_code_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown language code 'xx'.*known.*\bfr\b.*\bzh_CN\b"):
        resolve("xx")
    # A FLORES code with another script is a different language, not a regional variant.
    with pytest.raises(ValueError, match="unknown language code 'arb_Latn'"):
        resolve("arb_Latn")
    for bad in ["", "   ", "sr@latin"]:
        assert try_resolve(bad) is None
    assert "fr" in known_codes() and known_codes() == sorted(known_codes())
