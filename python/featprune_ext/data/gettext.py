"""English -> X parallel text from gettext catalogs, for offline calibration and evaluation.

Every Debian system ships ``/usr/share/locale/<locale>/LC_MESSAGES/*.mo``: English msgids with human
translations. After a filter that keeps sentence-like strings (see :data:`FILTER_RULE`) they give a few
hundred to ~2000 pairs per language; ``libreoffice-l10n-<lang>`` .deb packages (downloaded, never
installed) add a few thousand more. These are interface strings, not prose, and the manifest says so.

The calibration/evaluation split is a function of the English sentence alone (a hash), so a sentence
falls in the same split for every language and in every run, and evaluation items can never leak into
calibration demonstrations, even when corpora for different languages are built separately.

Output (``out_dir``, written to a temporary sibling and renamed into place)::

    manifest.json            format, languages, counts per split, provenance, filter, caveat
    pairs/<locale>.jsonl     {"en", "<locale>", "split", "domain", "package", "source"} per line
"""

from __future__ import annotations

import gettext
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence, Union

from ..errors import InputError, MissingInputError
from .languages import Language, resolve

__all__ = [
    "CAVEAT", "DEFAULT_EVAL_FRACTION", "FILTER_RULE", "FORMAT", "SYSTEM_LOCALE_ROOT",
    "build_gettext_corpus", "extract_pairs", "keep_pair", "libreoffice_package", "read_catalog",
    "split_of", "is_gettext_corpus",
]

FORMAT = "featprune-gettext-corpus"
SYSTEM_LOCALE_ROOT = "/usr/share/locale"
DEFAULT_EVAL_FRACTION = 0.2
CAVEAT = ("interface strings, not prose: short UI messages and documentation sentences from software "
          "catalogs; translations are human but the register differs from FLORES-200 news/wiki text")
FILTER_RULE = ("English msgid has 5-60 whitespace-separated words, starts with an upper-case letter and "
               "ends in . ! or ?; neither side contains % { < \\ _ or a newline; the translation is "
               "non-empty and differs from the English")
# Where catalogs live inside an extracted .deb (LibreOffice keeps its own resource tree).
_DEB_ROOTS = ("usr/share/locale", "usr/lib/libreoffice/program/resource")
_FORBIDDEN = re.compile(r"[%{<\\_\n\r]")

PathLike = Union[str, os.PathLike]


# ----------------------------------------------------------------------------------------- pairs
def keep_pair(en: str, tgt: str) -> bool:
    """The sentence filter of real-models.md (see :data:`FILTER_RULE`)."""
    if not en or not tgt or en == tgt:
        return False
    if not 5 <= len(en.split()) <= 60:
        return False
    if not en[0].isupper() or en[-1] not in ".!?":
        return False
    # Placeholders (%s, {0}), markup (<b>), escapes and mnemonics (_File) make poor demonstrations.
    return not (_FORBIDDEN.search(en) or _FORBIDDEN.search(tgt))


def read_catalog(path: PathLike) -> Iterator[tuple[str, str]]:
    """(msgid, msgstr) of one .mo file: plural entries skipped, msgctxt prefixes stripped."""
    with open(path, "rb") as fh:
        catalog = gettext.GNUTranslations(fh)._catalog
    for key, value in catalog.items():
        if not isinstance(key, str) or not key or not isinstance(value, str):
            continue  # tuple keys are plural forms; "" is the header
        yield key.split("\x04", 1)[-1], value  # "context\x04msgid"


def split_of(en: str, eval_fraction: float, seed: int = 0) -> str:
    """'eval' for a fixed fraction of English sentences, 'calib' for the rest: a hash, not a draw."""
    digest = hashlib.sha256(f"featprune-split:{seed}:{en}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2.0 ** 64
    return "eval" if u < eval_fraction else "calib"


def _dir_names(lang: Language) -> set[str]:
    # The locale and its aliases (zh_CN + zh_Hans, nb + nb_NO + no); iso1 only when it names this
    # variety, so pt_BR never reads European Portuguese from "pt".
    names = {lang.locale, *lang.aliases}
    if lang.iso1 and resolve(lang.iso1) is lang:
        names.add(lang.iso1)
    return {n.replace("-", "_").lower() for n in names}


def _catalogs(root: Path, lang: Language) -> list[Path]:
    """The .mo files for ``lang`` under a locale root (<root>/<dir>/LC_MESSAGES/*.mo), sorted."""
    if not root.is_dir():
        return []
    wanted = _dir_names(lang)
    dirs = sorted(d for d in root.iterdir()
                  if d.name.replace("-", "_").lower() in wanted and (d / "LC_MESSAGES").is_dir())
    # The canonical locale first, so its translation wins over an alias dir's.
    dirs.sort(key=lambda d: d.name.replace("-", "_").lower() != lang.locale.lower())
    return [f for d in dirs for f in sorted((d / "LC_MESSAGES").glob("*.mo")) if f.is_file()]


def extract_pairs(lang: Union[str, Language], roots: Sequence[tuple[str, PathLike]] = (("system", SYSTEM_LOCALE_ROOT),),
                  *, eval_fraction: float = DEFAULT_EVAL_FRACTION, seed: int = 0) -> dict:
    """Filtered, de-duplicated English->``lang`` pairs from every catalog under ``roots``.

    roots: (package label, locale root) in priority order. One pair per English sentence and one per
    translation (first seen wins, in root then sorted-path order), so no sentence appears twice with
    different partners. Returns {"language", "records", "catalogs", "skipped"}; each record is
    {"en", <locale>, "split", "domain", "package", "source"}.
    """
    lang = resolve(lang) if isinstance(lang, str) else lang
    if lang.iso1 == "en":
        raise InputError("English is the source side of every gettext pair; list only target languages")
    _check_fraction(eval_fraction)
    records: list[dict] = []
    seen_en: set[str] = set()
    seen_tgt: set[str] = set()
    catalogs: list[str] = []
    skipped: list[dict] = []
    for package, root in roots:
        for mo in _catalogs(Path(root), lang):
            try:
                entries = list(read_catalog(mo))
            except (OSError, UnicodeDecodeError, LookupError, ValueError) as exc:
                # A corrupt catalog or one with an unknown charset: note it rather than stop the build.
                skipped.append({"source": str(mo), "error": f"{type(exc).__name__}: {exc}"})
                continue
            catalogs.append(str(mo))
            for en, tgt in sorted(entries):  # dict order is the .mo hash order; sort for stability
                en, tgt = en.strip(), tgt.strip()
                if en in seen_en or tgt in seen_tgt or not keep_pair(en, tgt):
                    continue
                seen_en.add(en)
                seen_tgt.add(tgt)
                records.append({"en": en, lang.locale: tgt, "split": split_of(en, eval_fraction, seed),
                                "domain": mo.stem, "package": package, "source": str(mo)})
    return {"language": lang, "records": records, "catalogs": catalogs, "skipped": skipped}


def _check_fraction(eval_fraction: float) -> None:
    if not 0.0 <= float(eval_fraction) < 1.0:
        raise InputError(f"eval_fraction must be in [0, 1), got {eval_fraction}")


# ------------------------------------------------------------------------------------ .deb files
def libreoffice_package(lang: Union[str, Language]) -> str:
    """Debian's LibreOffice translation package for a language: zh_CN -> libreoffice-l10n-zh-cn."""
    lang = resolve(lang) if isinstance(lang, str) else lang
    return "libreoffice-l10n-" + lang.locale.replace("_", "-").lower()


def _download_deb(package: str, dest: Path) -> Path:
    try:
        proc = subprocess.run(["apt-get", "download", package], cwd=dest, capture_output=True, text=True,
                              timeout=600)
    except FileNotFoundError:
        raise RuntimeError(f"cannot download {package}: apt-get is not available on this system") from None
    debs = sorted(dest.glob(f"{package}_*.deb"))
    if proc.returncode != 0 or not debs:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"apt-get could not download {package} (exit {proc.returncode}): "
                           f"{' | '.join(tail) or 'no output'}. Check the package name and the apt sources "
                           f"(`apt-get update`), or pass the path of a .deb file you already have")
    return debs[-1]


def _unpack_deb(deb: Path, dest: Path) -> Path:
    try:
        proc = subprocess.run(["dpkg-deb", "-x", str(deb), str(dest)], capture_output=True, text=True)
    except FileNotFoundError:
        raise RuntimeError("unpacking .deb files needs dpkg-deb, which is not installed") from None
    if proc.returncode != 0:
        raise RuntimeError(f"dpkg-deb -x {deb} failed: {proc.stderr.strip()}")
    return dest


def _fetch_debs(debs: Iterable[PathLike], work: Path) -> list[tuple[str, Path, str]]:
    """(package label, unpacked dir, origin) per entry: an existing .deb path or a package to download."""
    out = []
    for i, item in enumerate(debs):
        item = str(item)
        slot = work / f"deb{i}"
        slot.mkdir()
        if item.endswith(".deb") or os.sep in item:
            deb = Path(item)
            if not deb.is_file():
                raise MissingInputError(f"extra .deb not found: {deb}")
        else:
            deb = _download_deb(item, slot)
        label = deb.name.split("_", 1)[0]
        out.append((label, _unpack_deb(deb, slot / "root"), deb.name))
    return out


# ----------------------------------------------------------------------------------- the corpus
def is_gettext_corpus(path: PathLike) -> bool:
    manifest = Path(path) / "manifest.json"
    if not manifest.is_file():
        return False
    try:
        return json.loads(manifest.read_text(encoding="utf-8")).get("format") == FORMAT
    except (ValueError, OSError):
        return False


def build_gettext_corpus(langs: Iterable[Union[str, Language]], out_dir: PathLike, extra_debs: Iterable[PathLike] = (),
                         eval_fraction: float = DEFAULT_EVAL_FRACTION, seed: int = 0, *,
                         locale_root: PathLike = SYSTEM_LOCALE_ROOT) -> dict:
    """Extract English->X pairs for ``langs`` into ``out_dir``; returns the manifest.

    extra_debs: .deb files or Debian package names (downloaded with ``apt-get download`` into a
    temporary dir, unpacked with ``dpkg-deb -x``, never installed) whose catalogs are read after the
    system ones. A language with no catalogs, or none passing the filter, is an error; nothing is
    written unless every language succeeds. An existing ``out_dir`` is replaced only if it is empty or
    a previous corpus of this format.
    """
    languages = []
    for code in langs:
        lang = resolve(code) if isinstance(code, str) else code
        if lang not in languages:
            languages.append(lang)
    if not languages:
        raise InputError("no languages given")
    if any(lang.iso1 == "en" for lang in languages):
        raise InputError("English is the source side of every gettext pair; list only target languages")
    _check_fraction(eval_fraction)
    out = Path(out_dir)
    if out.exists() and not (out.is_dir() and (not any(out.iterdir()) or is_gettext_corpus(out))):
        raise FileExistsError(f"{out} exists and is not a featprune gettext corpus; refusing to overwrite it")

    with tempfile.TemporaryDirectory(prefix="featprune-debs-") as work:
        roots: list[tuple[str, PathLike]] = [("system", locale_root)]
        packages = [{"name": "system", "root": str(locale_root)}]
        for label, unpacked, origin in _fetch_debs(extra_debs, Path(work)):
            for sub in _DEB_ROOTS:
                roots.append((label, unpacked / sub))
            packages.append({"name": label, "deb": origin, "roots": list(_DEB_ROOTS)})
        results = [extract_pairs(lang, roots, eval_fraction=eval_fraction, seed=seed) for lang in languages]

    for res in results:
        lang = res["language"]
        if not res["catalogs"]:
            looked = ", ".join(sorted(_dir_names(lang)))
            raise InputError(f"no gettext catalogs for {lang.name} ({lang.locale}): looked for "
                             f"{{{looked}}}/LC_MESSAGES/*.mo under {', '.join(str(r) for _, r in roots)}")
        if not res["records"]:
            raise InputError(f"{len(res['catalogs'])} gettext catalogs for {lang.name} ({lang.locale}) but no "
                             f"pair passes the filter ({FILTER_RULE})")
    manifest = _manifest(results, packages, eval_fraction, seed)
    _write_atomically(out, results, manifest)
    return manifest


def _manifest(results: list[dict], packages: list[dict], eval_fraction: float, seed: int) -> dict:
    languages = {}
    english_sets = []
    for res in results:
        lang, records = res["language"], res["records"]
        counts = {"calib": 0, "eval": 0}
        domains: dict[str, int] = {}
        by_package: dict[str, int] = {}
        for r in records:
            counts[r["split"]] += 1
            domains[r["domain"]] = domains.get(r["domain"], 0) + 1
            by_package[r["package"]] = by_package.get(r["package"], 0) + 1
        english_sets.append({r["en"]: r["split"] for r in records})
        languages[lang.locale] = {
            "name": lang.name, "iso1": lang.iso1, "iso3": lang.iso3, "flores": lang.flores,
            "file": f"pairs/{lang.locale}.jsonl", "counts": {**counts, "total": len(records)},
            "packages": by_package, "domains": dict(sorted(domains.items())),
            "catalogs": len(res["catalogs"]), "skipped_catalogs": res["skipped"],
        }
    # English sentences translated into every listed language: a multi-way parallel subset.
    common = set.intersection(*(set(s) for s in english_sets))
    first = english_sets[0]
    multiway = {"calib": sum(first[e] == "calib" for e in common), "eval": sum(first[e] == "eval" for e in common)}
    return {
        "format": FORMAT, "version": 1, "caveat": CAVEAT, "source_language": "en",
        "languages": languages, "multiway": multiway, "packages": packages,
        "eval_fraction": eval_fraction, "seed": seed,
        "split_rule": "eval iff sha256('featprune-split:{seed}:{english}')[:8] / 2**64 < eval_fraction; "
                      "the same English sentence is in the same split for every language",
        "filter": FILTER_RULE,
    }


def _write_atomically(out: Path, results: list[dict], manifest: dict) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; the corpus is ordinary shared data
        (tmp / "pairs").mkdir()
        for res in results:
            locale = res["language"].locale
            with open(tmp / "pairs" / f"{locale}.jsonl", "w", encoding="utf-8") as fh:
                for r in res["records"]:
                    fh.write(json.dumps(r, ensure_ascii=False) + "\n")
        (tmp / "manifest.json").write_text(json.dumps(manifest, ensure_ascii=False, indent=2) + "\n",
                                           encoding="utf-8")
        old: Optional[Path] = None
        if out.exists():  # checked above: empty, or a corpus of ours
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.rename(out, old)
        os.rename(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
