"""Language codes and the English names used in prompts.

Corpora name languages in different code systems: FLORES-200 files use ``fra_Latn``, gettext catalogs
use locales (``fr``, ``zh_CN``, ``pt_BR``), the dataset-build package uses ISO 639-3 (``fra``), and users
type ISO 639-1 (``fr``) or a name ("French"). :func:`resolve` maps any of these to one
:class:`Language`, so the rest of featprune never compares code strings itself.

When two entries share a code (``zh`` is both Simplified and Traditional Chinese, ``por_Latn`` both
European and Brazilian Portuguese) the entry listed first in the table wins; use the locale
(``zh_TW``, ``pt_BR``) to reach the other one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

from ..errors import InputError

__all__ = ["Language", "resolve", "known_languages", "known_codes", "try_resolve"]


@dataclass(frozen=True)
class Language:
    """One language variety.

    iso1 is None where ISO 639-1 has no code (Asturian, Central Kurdish, ...). ``locale`` is the canonical
    id featprune uses in file names; ``aliases`` are further codes that resolve here (macrolanguage codes,
    extra gettext locale directories such as ``zh_Hans`` or ``nb_NO``).
    """

    iso1: Optional[str]
    flores: str
    locale: str
    iso3: str
    name: str
    aliases: tuple[str, ...] = ()

    @property
    def code(self) -> str:
        return self.locale

    def codes(self) -> tuple[str, ...]:
        """Every code that names this language, canonical first (gettext looks in all these dirs)."""
        out = [self.locale]
        for c in (self.iso1, self.flores, self.iso3, *self.aliases):
            if c and c not in out:
                out.append(c)
        return tuple(out)


# (iso1, flores, locale, iso3, name, aliases). The paper's languages come first; then every locale
# with gettext catalogs on a Debian system that FLORES-200 also covers, alphabetically by locale.
_TABLE: tuple[tuple, ...] = (
    ("en", "eng_Latn", "en", "eng", "English", ("en_US", "en_GB")),
    ("fr", "fra_Latn", "fr", "fra", "French", ("fre",)),
    ("es", "spa_Latn", "es", "spa", "Spanish", ()),
    ("de", "deu_Latn", "de", "deu", "German", ("ger",)),
    ("ru", "rus_Cyrl", "ru", "rus", "Russian", ()),
    ("zh", "zho_Hans", "zh_CN", "zho", "Chinese", ("zh_Hans", "chi", "cmn")),
    ("ja", "jpn_Jpan", "ja", "jpn", "Japanese", ()),
    ("hi", "hin_Deva", "hi", "hin", "Hindi", ()),
    ("sw", "swh_Latn", "sw", "swa", "Swahili", ("swh",)),
    ("ar", "arb_Arab", "ar", "ara", "Arabic", ("arb",)),
    ("ko", "kor_Hang", "ko", "kor", "Korean", ()),
    ("tr", "tur_Latn", "tr", "tur", "Turkish", ()),
    ("vi", "vie_Latn", "vi", "vie", "Vietnamese", ()),
    ("it", "ita_Latn", "it", "ita", "Italian", ()),
    ("pt", "por_Latn", "pt", "por", "Portuguese", ("pt_PT",)),
    ("pt", "por_Latn", "pt_BR", "por", "Brazilian Portuguese", ()),
    ("nl", "nld_Latn", "nl", "nld", "Dutch", ("dut",)),
    ("pl", "pol_Latn", "pl", "pol", "Polish", ()),
    ("id", "ind_Latn", "id", "ind", "Indonesian", ()),
    ("th", "tha_Thai", "th", "tha", "Thai", ()),
    ("zh", "zho_Hant", "zh_TW", "zho", "Traditional Chinese", ("zh_Hant", "zh_HK")),
    ("af", "afr_Latn", "af", "afr", "Afrikaans", ()),
    ("ak", "aka_Latn", "ak", "aka", "Akan", ()),
    ("am", "amh_Ethi", "am", "amh", "Amharic", ()),
    ("as", "asm_Beng", "as", "asm", "Assamese", ()),
    (None, "ace_Latn", "ace", "ace", "Acehnese", ()),
    (None, "ast_Latn", "ast", "ast", "Asturian", ()),
    ("ay", "ayr_Latn", "ay", "aym", "Aymara", ("ayr",)),
    ("az", "azj_Latn", "az", "aze", "Azerbaijani", ("azj",)),
    ("ba", "bak_Cyrl", "ba", "bak", "Bashkir", ()),
    ("be", "bel_Cyrl", "be", "bel", "Belarusian", ()),
    ("bg", "bul_Cyrl", "bg", "bul", "Bulgarian", ()),
    ("bn", "ben_Beng", "bn", "ben", "Bengali", ("bn_BD", "bn_IN")),
    ("bo", "bod_Tibt", "bo", "bod", "Tibetan", ("tib",)),
    ("bs", "bos_Latn", "bs", "bos", "Bosnian", ()),
    ("ca", "cat_Latn", "ca", "cat", "Catalan", ()),
    (None, "ceb_Latn", "ceb", "ceb", "Cebuano", ()),
    (None, "ckb_Arab", "ckb", "ckb", "Central Kurdish", ()),
    (None, "crh_Latn", "crh", "crh", "Crimean Tatar", ()),
    ("cs", "ces_Latn", "cs", "ces", "Czech", ("cze",)),
    ("cy", "cym_Latn", "cy", "cym", "Welsh", ("wel",)),
    ("da", "dan_Latn", "da", "dan", "Danish", ()),
    ("dz", "dzo_Tibt", "dz", "dzo", "Dzongkha", ()),
    ("ee", "ewe_Latn", "ee", "ewe", "Ewe", ()),
    ("el", "ell_Grek", "el", "ell", "Greek", ("gre",)),
    ("eo", "epo_Latn", "eo", "epo", "Esperanto", ()),
    ("et", "est_Latn", "et", "est", "Estonian", ("ekk",)),
    ("eu", "eus_Latn", "eu", "eus", "Basque", ("baq",)),
    ("fa", "pes_Arab", "fa", "fas", "Persian", ("pes", "per")),
    ("fi", "fin_Latn", "fi", "fin", "Finnish", ()),
    ("fo", "fao_Latn", "fo", "fao", "Faroese", ()),
    (None, "fur_Latn", "fur", "fur", "Friulian", ()),
    ("ga", "gle_Latn", "ga", "gle", "Irish", ()),
    ("gd", "gla_Latn", "gd", "gla", "Scottish Gaelic", ()),
    ("gl", "glg_Latn", "gl", "glg", "Galician", ()),
    ("gn", "grn_Latn", "gn", "grn", "Guarani", ()),
    ("gu", "guj_Gujr", "gu", "guj", "Gujarati", ()),
    ("ha", "hau_Latn", "ha", "hau", "Hausa", ()),
    ("he", "heb_Hebr", "he", "heb", "Hebrew", ("iw",)),
    ("hr", "hrv_Latn", "hr", "hrv", "Croatian", ()),
    ("ht", "hat_Latn", "ht", "hat", "Haitian Creole", ()),
    ("hu", "hun_Latn", "hu", "hun", "Hungarian", ()),
    ("hy", "hye_Armn", "hy", "hye", "Armenian", ("arm",)),
    ("ig", "ibo_Latn", "ig", "ibo", "Igbo", ()),
    ("is", "isl_Latn", "is", "isl", "Icelandic", ("ice",)),
    ("jv", "jav_Latn", "jv", "jav", "Javanese", ()),
    ("ka", "kat_Geor", "ka", "kat", "Georgian", ("geo",)),
    (None, "kab_Latn", "kab", "kab", "Kabyle", ()),
    ("kk", "kaz_Cyrl", "kk", "kaz", "Kazakh", ()),
    ("km", "khm_Khmr", "km", "khm", "Khmer", ()),
    ("kn", "kan_Knda", "kn", "kan", "Kannada", ()),
    ("ku", "kmr_Latn", "kmr", "kmr", "Kurdish", ("ku", "kur")),
    ("ky", "kir_Cyrl", "ky", "kir", "Kyrgyz", ()),
    ("lb", "ltz_Latn", "lb", "ltz", "Luxembourgish", ()),
    ("lg", "lug_Latn", "lg", "lug", "Ganda", ()),
    ("li", "lim_Latn", "li", "lim", "Limburgish", ()),
    ("lo", "lao_Laoo", "lo", "lao", "Lao", ()),
    ("lt", "lit_Latn", "lt", "lit", "Lithuanian", ()),
    ("lv", "lvs_Latn", "lv", "lav", "Latvian", ("lvs",)),
    (None, "mai_Deva", "mai", "mai", "Maithili", ()),
    ("mg", "plt_Latn", "mg", "mlg", "Malagasy", ("plt",)),
    ("mi", "mri_Latn", "mi", "mri", "Maori", ("mao",)),
    ("mk", "mkd_Cyrl", "mk", "mkd", "Macedonian", ("mac",)),
    ("ml", "mal_Mlym", "ml", "mal", "Malayalam", ()),
    ("mn", "khk_Cyrl", "mn", "mon", "Mongolian", ("khk",)),
    ("mr", "mar_Deva", "mr", "mar", "Marathi", ()),
    ("ms", "zsm_Latn", "ms", "msa", "Malay", ("zsm", "may")),
    ("mt", "mlt_Latn", "mt", "mlt", "Maltese", ()),
    ("my", "mya_Mymr", "my", "mya", "Burmese", ("bur",)),
    ("nb", "nob_Latn", "nb", "nob", "Norwegian", ("no", "nor", "nb_NO")),
    ("ne", "npi_Deva", "ne", "nep", "Nepali", ("npi",)),
    ("nn", "nno_Latn", "nn", "nno", "Norwegian Nynorsk", ()),
    (None, "nso_Latn", "nso", "nso", "Northern Sotho", ()),
    ("ny", "nya_Latn", "ny", "nya", "Chichewa", ()),
    ("oc", "oci_Latn", "oc", "oci", "Occitan", ()),
    ("or", "ory_Orya", "or", "ori", "Odia", ("ory",)),
    ("pa", "pan_Guru", "pa", "pan", "Punjabi", ()),
    (None, "pap_Latn", "pap", "pap", "Papiamento", ()),
    ("ps", "pbt_Arab", "ps", "pus", "Pashto", ("pbt",)),
    ("qu", "quy_Latn", "qu", "que", "Quechua", ("quy",)),
    ("ro", "ron_Latn", "ro", "ron", "Romanian", ("rum", "ro_MD", "mo")),
    ("rw", "kin_Latn", "rw", "kin", "Kinyarwanda", ()),
    ("sa", "san_Deva", "sa", "san", "Sanskrit", ()),
    ("sc", "srd_Latn", "sc", "srd", "Sardinian", ()),
    ("sd", "snd_Arab", "sd", "snd", "Sindhi", ()),
    ("si", "sin_Sinh", "si", "sin", "Sinhala", ()),
    ("sk", "slk_Latn", "sk", "slk", "Slovak", ("slo",)),
    ("sl", "slv_Latn", "sl", "slv", "Slovenian", ()),
    ("sm", "smo_Latn", "sm", "smo", "Samoan", ()),
    ("sn", "sna_Latn", "sn", "sna", "Shona", ()),
    ("so", "som_Latn", "so", "som", "Somali", ()),
    ("sq", "als_Latn", "sq", "sqi", "Albanian", ("als", "alb")),
    ("sr", "srp_Cyrl", "sr", "srp", "Serbian", ()),
    ("st", "sot_Latn", "st", "sot", "Southern Sotho", ()),
    ("su", "sun_Latn", "su", "sun", "Sundanese", ()),
    ("sv", "swe_Latn", "sv", "swe", "Swedish", ()),
    ("ta", "tam_Taml", "ta", "tam", "Tamil", ()),
    ("te", "tel_Telu", "te", "tel", "Telugu", ()),
    ("tg", "tgk_Cyrl", "tg", "tgk", "Tajik", ()),
    ("ti", "tir_Ethi", "ti", "tir", "Tigrinya", ()),
    ("tk", "tuk_Latn", "tk", "tuk", "Turkmen", ()),
    ("tl", "tgl_Latn", "tl", "tgl", "Tagalog", ("fil",)),
    ("tn", "tsn_Latn", "tn", "tsn", "Tswana", ()),
    ("ts", "tso_Latn", "ts", "tso", "Tsonga", ()),
    ("tt", "tat_Cyrl", "tt", "tat", "Tatar", ()),
    (None, "tzm_Tfng", "tzm", "tzm", "Central Atlas Tamazight", ()),
    ("ug", "uig_Arab", "ug", "uig", "Uyghur", ()),
    ("uk", "ukr_Cyrl", "uk", "ukr", "Ukrainian", ()),
    ("ur", "urd_Arab", "ur", "urd", "Urdu", ()),
    ("uz", "uzn_Latn", "uz", "uzb", "Uzbek", ("uzn",)),
    ("wo", "wol_Latn", "wo", "wol", "Wolof", ()),
    ("xh", "xho_Latn", "xh", "xho", "Xhosa", ()),
    ("yi", "ydd_Hebr", "yi", "yid", "Yiddish", ("ydd",)),
    ("yo", "yor_Latn", "yo", "yor", "Yoruba", ()),
    ("zu", "zul_Latn", "zu", "zul", "Zulu", ()),
)

_LANGUAGES: tuple[Language, ...] = tuple(Language(*row) for row in _TABLE)


def _norm(code: str) -> str:
    # Case and '-' vs '_' carry no meaning across code systems ("zh-CN", "zh_cn", "ZH_CN").
    return code.strip().replace("-", "_").lower()


def _build_index() -> dict[str, Language]:
    index: dict[str, Language] = {}
    for lang in _LANGUAGES:
        for key in (*lang.codes(), lang.name):
            index.setdefault(_norm(key), lang)  # first entry wins on shared codes
    return index


_INDEX = _build_index()
# "fr_CA", "de_DE.UTF-8", "es_419": a region we do not list falls back to its language. A 4-letter
# suffix is a script (FLORES), which must match exactly: arb_Latn is not arb_Arab.
_REGIONAL = re.compile(r"^([a-z]{2,3})_([a-z]{2}|[0-9]{3})$")


def try_resolve(code: str) -> Optional[Language]:
    """Like :func:`resolve` but returns None for an unknown code."""
    if not isinstance(code, str) or not code.strip():
        return None
    key = _norm(code).split(".")[0]  # drop a locale's encoding suffix (".utf8")
    if key.startswith("sentence_"):  # the Hugging Face FLORES columns: sentence_fra_Latn
        key = key[len("sentence_"):]
    lang = _INDEX.get(key)
    if lang is None:
        m = _REGIONAL.match(key)
        if m:
            lang = _INDEX.get(m.group(1))
    return lang


def resolve(code: str) -> Language:
    """Map an ISO 639-1, ISO 639-3, FLORES-200, locale code or English name to its :class:`Language`."""
    lang = try_resolve(code)
    if lang is None:
        raise InputError(f"unknown language code {code!r}; known (any of ISO 639-1, ISO 639-3, FLORES-200, "
                         f"locale or English name): {', '.join(known_codes())}")
    return lang


def known_languages() -> tuple[Language, ...]:
    return _LANGUAGES


def known_codes() -> list[str]:
    """The canonical (locale) code of every known language, sorted."""
    return sorted(lang.locale for lang in _LANGUAGES)
