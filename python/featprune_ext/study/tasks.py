"""The evaluation tasks: their names, headline metrics and item loaders (no model involved).

Each loader turns a corpus (``--data``) into a list of items, dicts with an ``id`` plus what the
runner scores: ``text`` (ppl), ``src``/``candidates``/``gold`` (translation-choice),
``context``/``candidates``/``gold`` (xnli, marc), ``src``/``ref`` (translate).

Data: ``data`` is any corpus data/corpora.py reads (evaluation split; for translation-choice and
translate, None means this machine's gettext catalogs), or for xnli/marc a directory of
per-language JSONL files (``fr.jsonl``, ``xnli.fr.jsonl``, ``fr/test.jsonl``, also under ``xnli/``).
Items are a seeded subset ordered by a hash of their id, so ``limit=100`` is a prefix of
``limit=200`` and parallel languages pick the same items.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Optional

from ..data import corpora
from ..data.languages import Language
from ..errors import InputError
from ..files import read_jsonl_objects

__all__ = ["CHOICE_TASKS", "EvalError", "MARC_LABELS", "TASKS", "XNLI_LABELS", "XNLI_WORDS", "check_data", "marc_items",
           "ppl_items", "primary_metric", "translate_items", "translation_choice_items", "translation_choice_pairs",
           "xnli_items"]

TASKS = ("ppl", "translation-choice", "xnli", "marc", "translate")
CHOICE_TASKS = ("translation-choice", "xnli", "marc")
XNLI_LABELS = ("entailment", "neutral", "contradiction")
# lm-eval-harness (v0.3) XNLI words: question word, then entailment / neutral / contradiction.
XNLI_WORDS = {
    "en": ("right", "Yes", "Also", "No"), "de": ("richtig", "Ja", "Auch", "Nein"),
    "ar": ("صحيح", "نعم", "لذا", "رقم"), "bg": ("правилно", "да", "така", "не"),
    "el": ("σωστός", "Ναί", "Έτσι", "όχι"), "es": ("correcto", "Sí", "Asi que", "No"),
    "fr": ("correct", "Oui", "Aussi", "Non"), "hi": ("सही", "हाँ", "इसलिए", "नहीं"),
    "ru": ("правильно", "Да", "Так", "Нет"), "sw": ("sahihi", "Ndiyo", "Hivyo", "Hapana"),
    "th": ("ถูกต้อง", "ใช่", "ดังนั้น", "ไม่"), "tr": ("doğru", "Evet", "Böylece", "Hayır"),
    "ur": ("صحیح", "جی ہاں", "اس لئے", "نہیں"), "vi": ("đúng", "Vâng", "Vì vậy", "Không"),
    "zh": ("正确", "是的", "所以", "不是的"),
}
MARC_LABELS = ("negative", "positive")
MARC_WORDS = 128  # the paper keeps the first 128 whitespace-separated words of a review


class EvalError(InputError):
    """Bad input to an evaluation: missing data, unknown task or language, unusable model dir
    (an InputError, so `featprune` exits with status 2)."""


def primary_metric(task: str) -> tuple[str, str]:
    """(summary key, direction) of a task's headline number: 'higher' or 'lower' is better."""
    return {"ppl": ("ppl", "lower"), "translate": ("chrf", "higher")}.get(task, ("acc", "higher"))


# ------------------------------------------------------------------------------- ids and subsets
def _key(*parts: Any) -> str:
    return hashlib.sha256("\x1f".join(map(str, parts)).encode("utf-8")).hexdigest()


def _item_id(text: str) -> str:
    return _key("item", text)[:16]


def _select(items: list[dict], limit: Optional[int], seed: int) -> list[dict]:
    """A seeded subset, ordered by a hash of (seed, item id): languages that share item ids (parallel
    corpora) select the same items, so their results can be compared item by item."""
    ordered = sorted(items, key=lambda it: _key("select", seed, it["id"]))
    return ordered if limit is None else ordered[:limit]


def check_data(data, task: str = "") -> Optional[Path]:
    """The corpus path; None (parallel-text tasks only) means this machine's gettext catalogs."""
    if data is None:
        if task in ("translation-choice", "translate"):
            return None
        raise EvalError(f"{task} needs --data DIR holding its JSONL files (see `featprune eval --help`)")
    p = Path(data)
    if not p.exists():
        raise EvalError(f"data path does not exist: {p}")
    return p


def _wrap_corpus_error(fn, *args, **kw):
    try:
        return fn(*args, **kw)
    except (FileNotFoundError, ValueError) as exc:
        raise EvalError(str(exc)) from None


# ------------------------------------------------------------------------- parallel-text tasks
def ppl_items(data, lang: Language, limit, seed) -> list[dict]:
    texts = _wrap_corpus_error(corpora.load_mono, check_data(data, "ppl"), lang, split="eval")
    return _select([{"id": _item_id(t), "text": t} for t in dict.fromkeys(texts)], limit, seed)


def translation_choice_pairs(data, lang: Language) -> dict[str, str]:
    """English sentence -> its `lang` translation, evaluation split."""
    if lang.iso1 == "en":
        raise EvalError("translation-choice: English is the source side of every item; list target languages only")
    return dict(_wrap_corpus_error(corpora.load_parallel, check_data(data, "translation-choice"), "en", lang,
                                   split="eval"))


def translation_choice_items(data, lang: Language, limit, seed, n_choices: int = 4,
                             pool: Optional[set] = None) -> list[dict]:
    """Items from evaluation-split English->lang pairs. Distractors are, for each item, the other
    pairs with the smallest hash(seed, item, candidate): deterministic, and languages with the same
    pool pick the same distractors. pool: restrict to these English sentences (the ones every
    evaluated language has), which makes items and candidates parallel across languages."""
    by_en = translation_choice_pairs(data, lang)
    if pool is not None:
        by_en = {en: x for en, x in by_en.items() if en in pool}
    if len(by_en) < n_choices:
        raise EvalError(f"translation-choice: only {len(by_en)} evaluation-split en-{lang.locale} pairs"
                        f"{' shared by all languages' if pool is not None else ''} in "
                        f"{corpora.describe_source(data)}; need at least {n_choices}")
    chosen = _select([{"id": _item_id(en), "en": en} for en in by_en], limit, seed)
    keys = list(by_en)
    items = []
    for it in chosen:
        en = it["en"]
        others = sorted((k for k in keys if k != en), key=lambda k: _key("distractor", seed, en, k))
        cands = [en] + others[: n_choices - 1]
        cands.sort(key=lambda k: _key("order", seed, en, k))  # the reference's position is random
        items.append({"id": it["id"], "src": en, "candidates": [by_en[k] for k in cands],
                      "candidate_ids": [_item_id(k) for k in cands], "gold": cands.index(en)})
    return items


def translate_items(data, lang: Language, limit, seed, shots: int) -> tuple[list[dict], list[tuple[str, str]]]:
    """X->English items (evaluation split) and `shots` fixed demonstrations (calibration split)."""
    if lang.iso1 == "en":
        raise EvalError("translate: translation is X->English; list source languages other than English")
    data = check_data(data, "translate")
    pairs = _wrap_corpus_error(corpora.load_parallel, data, lang, "en", split="eval")
    items = _select([{"id": _item_id(en), "src": x, "ref": en} for x, en in pairs], limit, seed)
    demos: list[tuple[str, str]] = []
    if shots > 0:
        pool = _wrap_corpus_error(corpora.load_parallel, data, lang, "en", split="calib")
        if len(pool) < shots:
            raise EvalError(f"translate: {len(pool)} calibration-split {lang.locale}-en pairs for demonstrations, "
                            f"need {shots}")
        demos = sorted(pool, key=lambda p: _key("demo", seed, p[1]))[:shots]
    return items, demos


# ------------------------------------------------------------------------ JSONL tasks: xnli, marc
def _task_file(data: Path, task: str, lang: Language) -> Path:
    codes = list(dict.fromkeys(c for c in (lang.iso1, *lang.codes()) if c))
    names = []
    for code in codes:
        names += [f"{code}.jsonl", f"{task}.{code}.jsonl", f"{task}_{code}.jsonl", f"{task}-{code}.jsonl",
                  f"{code}/test.jsonl", f"{code}/validation.jsonl"]
    for base in (data, data / task):
        for name in names:
            if (base / name).is_file():
                return base / name
    have = sorted(str(p.relative_to(data)) for p in data.rglob("*.jsonl"))[:30]
    raise EvalError(f"{task}: no {lang.name} file under {data}; looked for e.g. {names[0]}, {task}.{codes[0]}.jsonl, "
                    f"{codes[0]}/test.jsonl; JSONL files there: {', '.join(have) or 'none'}")


def _read_jsonl(path: Path) -> list[tuple[int, dict]]:
    rows = read_jsonl_objects(path)
    if not rows:
        raise EvalError(f"{path} has no rows")
    return rows


def _row_id(obj: dict, index: int) -> str:
    for k in ("id", "pairID", "idx", "review_id"):
        if obj.get(k) is not None:
            return str(obj[k])
    return str(index)  # XNLI's language files are line-aligned: the line number is the parallel id


def xnli_items(data, lang: Language, limit, seed, template: str = "paper") -> list[dict]:
    if template not in ("paper", "harness"):
        raise EvalError(f"unknown xnli template {template!r}; use 'paper' or 'harness'")
    path = _task_file(check_data(data, "xnli"), "xnli", lang)
    if template == "paper":
        # The paper's code scores every language with the English template words.
        words, qword, sep = XNLI_WORDS["en"][1:], "right?", " , "
    else:
        code = lang.iso1 or lang.locale
        if code not in XNLI_WORDS:
            raise EvalError(f"xnli: no lm-eval-harness template words for {lang.name}; have: "
                            f"{', '.join(sorted(XNLI_WORDS))} "
                            "(or use --template paper)")
        q, *words = XNLI_WORDS[code]
        qword, sep = f"{q}?", ", "
    items = []
    for index, (lineno, row) in enumerate(_read_jsonl(path)):
        prem, hyp, label = row.get("premise"), row.get("hypothesis"), row.get("label")
        if not isinstance(prem, str) or not isinstance(hyp, str) or label not in (0, 1, 2):
            raise EvalError(f"{path}:{lineno}: expected string premise/hypothesis and label 0-2 "
                            f"(0 entailment, 1 neutral, 2 contradiction)")
        ctx = f"{prem.strip()}{sep.rstrip()} {qword}" if template == "paper" else f"{prem.strip()}{sep}{qword}"
        conts = [f" {w}{sep}{hyp.strip()}" for w in words]
        items.append({"id": _row_id(row, index), "context": ctx, "candidates": conts,
                      "candidate_ids": list(XNLI_LABELS), "gold": label})
    return _select(items, limit, seed)


def marc_items(data, lang: Language, limit, seed) -> list[dict]:
    path = _task_file(check_data(data, "marc"), "marc", lang)
    items = []
    for index, (lineno, row) in enumerate(_read_jsonl(path)):
        body, stars = row.get("review_body"), row.get("stars")
        if not isinstance(body, str) or stars not in (1, 2, 3, 4, 5):
            raise EvalError(f"{path}:{lineno}: expected a string review_body and stars 1-5 "
                            "(amazon_reviews_multi layout)")
        if stars == 3:
            continue  # neither negative nor positive: dropped, as in the paper's binary MARC
        text = " ".join(body.split()[:MARC_WORDS])
        items.append({"id": _row_id(row, index), "context": f"{text} It is",
                      "candidates": [f" {w}" for w in MARC_LABELS], "candidate_ids": list(MARC_LABELS),
                      "gold": int(stars > 3)})
    if not items:
        raise EvalError(f"{path}: no review with 1, 2, 4 or 5 stars")
    return _select(items, limit, seed)
