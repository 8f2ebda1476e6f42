"""Zero-shot and few-shot evaluation of a (pruned) causal LM: the paper's tasks, offline.

Tasks (each item is scored per language; every per-item result is kept in the JSON so two runs
can be compared item by item):

* ``ppl``                 perplexity of held-out sentences (the evaluation split of ``--data``),
                          each scored on its own after the start token.
* ``translation-choice``  "pick the correct translation": ``English: {src}\\n{Language}:`` followed
                          by 4 candidates (the reference and 3 other evaluation-split translations),
                          ranked by summed log-likelihood; chance 0.25.
* ``xnli``                premise/hypothesis/label (0 entailment, 1 neutral, 2 contradiction) JSONL;
                          ``{premise} , right? {Yes|Also|No} , {hypothesis}`` ranked by mean token
                          log-probability of the whole sequence (the paper's code; ``template=
                          "harness"`` uses lm-eval-harness's per-language words instead).
* ``marc``                amazon_reviews_multi JSONL (review_body, stars 1-5), binary as in the
                          paper: 3 stars dropped, 1-2 negative, 4-5 positive; ``{first 128 words}
                          It is {negative|positive}`` ranked like xnli.
* ``translate``           few-shot X->English generation (greedy), chrF and BLEU via sacrebleu.

Data: ``--data`` is any corpus corpora.py reads (evaluation split; for translation-choice and
translate, omitting it means this machine's gettext catalogs), or for xnli/marc a directory of
per-language JSONL files (``fr.jsonl``, ``xnli.fr.jsonl``, ``fr/test.jsonl``, also under ``xnli/``).
Items are a seeded subset ordered by a hash of their id, so ``--limit 100`` is a prefix of
``--limit 200`` and parallel languages pick the same items. Each choice task also reports
``acc_alt`` (the other length convention: per-token mean for translation-choice, summed
continuation log-prob for xnli/marc). RankC consistency is computed against English (or the
first language) over items whose candidate sets match.

Speed: logits are computed only at the positions that are scored, by running the model body
and projecting those hidden states onto the output embedding ourselves (Gemma 3's vocabulary
is 262k, so full logits cost more than the body); checked against the model's own logits once
at load time, with a fallback to full logits if a family computes them differently.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

from . import __version__, corpora, metrics
from .checkpoint import InputError
from .languages import Language, resolve

__all__ = ["EvalError", "Scorer", "TASKS", "add_parser", "compare_results", "evaluate", "format_comparison", "format_table",
           "load_results", "markdown_table", "primary_metric", "write_json", "XNLI_WORDS"]

TASKS = ("ppl", "translation-choice", "xnli", "marc", "translate")
FORMAT = "featprune-eval"
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


def add_parser(subparsers):
    """`featprune eval` and `featprune compare` (defined in eval_cli.py)."""
    from .eval_cli import add_parser as _add

    return _add(subparsers)


# ===================================================================================== scoring
@dataclass
class _Encoded:
    ctx: list[int]
    cont: list[int]
    truncated: bool


class Scorer:
    """A causal LM that scores continuations and generates, batched and deterministic.

    The whole model is loaded (evaluation needs every layer at once; analysis streams instead).
    """

    def __init__(self, model_dir, *, device: str = "cpu", dtype: str = "float32", seqlen: int = 512,
                 batch_tokens: int = 1024, max_batch: int = 64, head_chunk: int = 512, threads: Optional[int] = None,
                 progress: bool = True):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model_dir = Path(model_dir)
        if not (model_dir / "config.json").is_file():
            raise EvalError(f"{model_dir} is not a model directory (no config.json)")
        if not isinstance(seqlen, int) or seqlen < 2:
            raise EvalError(f"seqlen must be an integer >= 2, got {seqlen!r}")
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise EvalError("device cuda was asked for, but torch sees no CUDA device")
        if threads is not None:
            if not isinstance(threads, int) or threads < 1:
                raise EvalError(f"threads must be a positive integer, got {threads!r}")
            torch.set_num_threads(threads)  # 1 is far faster than 2 on a CPU shared with other jobs
        dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
        if dtype not in dtypes:
            raise EvalError(f"dtype must be one of {', '.join(dtypes)}, got {dtype!r}")
        t0 = time.perf_counter()
        self.tok = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtypes[dtype]).to(self.device).eval()
        self.load_s = time.perf_counter() - t0
        self.seqlen, self.batch_tokens, self.max_batch, self.progress = seqlen, batch_tokens, max_batch, progress
        self.head_chunk = head_chunk
        self.body = self.model.base_model
        self.head = self.model.get_output_embeddings()
        cfg = self.model.config.get_text_config() if hasattr(self.model.config, "get_text_config") else self.model.config
        self.softcap = getattr(cfg, "final_logit_softcapping", None)
        self.vocab = self.head.weight.shape[0]
        probe = self.tok("a")["input_ids"]
        eos = self.tok.eos_token_id
        self._adds_eos = len(probe) > 1 and eos is not None and probe[-1] == eos
        start = self.tok.bos_token_id if self.tok.bos_token_id is not None else eos
        if start is None:
            raise EvalError(f"the tokenizer of {model_dir} has neither a BOS nor an EOS token to start a text with")
        self.start_id = int(start)
        pad = self.tok.pad_token_id
        self.pad_id = int(pad) if pad is not None else self.start_id
        self.fast_head = self._check_fast_head()

    # -- tokenization --
    def _ids(self, text: str, special: bool) -> list[int]:
        ids = list(self.tok(text, add_special_tokens=special)["input_ids"])
        if special and self._adds_eos and ids and ids[-1] == self.tok.eos_token_id:
            ids = ids[:-1]  # a context must not end with EOS
        return ids

    def encode(self, context: str, continuation: str) -> _Encoded:
        """Token ids of context and continuation. The continuation's ids are cut from the
        tokenization of the whole string where it extends the context's, so a word split
        across the boundary is tokenized as the model saw such text in training."""
        if context == "":
            ctx = [self.start_id]
            cont = self._ids(continuation, False)
        else:
            ctx = self._ids(context, True)
            whole = self._ids(context + continuation, True)
            if whole[:len(ctx)] == ctx and len(whole) > len(ctx):
                cont = whole[len(ctx):]
            else:
                cont = self._ids(continuation, False)
        if not cont:
            raise EvalError(f"continuation {continuation!r} has no tokens")
        truncated = False
        if len(cont) > self.seqlen - 1:
            cont, truncated = cont[: self.seqlen - 1], True
        if len(ctx) + len(cont) > self.seqlen:
            ctx, truncated = ctx[len(ctx) + len(cont) - self.seqlen:], True  # keep the context's end
        return _Encoded(ctx, cont, truncated)

    # -- logits at chosen positions --
    def _project(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = self.head(hidden).float()
        if self.softcap:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits

    def _check_fast_head(self) -> bool:
        """Our projection must match the model's own logits; otherwise use full logits."""
        ids = torch.tensor([self._ids("Hello world. Bonjour le monde.", True)], device=self.device)
        with torch.no_grad():
            ref = self.model(input_ids=ids, use_cache=False).logits.float()
            ours = self._project(self.body(input_ids=ids, use_cache=False).last_hidden_state)
        return bool(torch.allclose(ref, ours, rtol=1e-4, atol=1e-3 * max(1.0, float(ref.abs().max()))))

    def _target_logprobs(self, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """log P(target) at each hidden state: logit(target) - logsumexp(logits), in chunks so at
        most head_chunk x vocab floats exist at once."""
        out = []
        for s in range(0, hidden.shape[0], self.head_chunk):
            logits = self._project(hidden[s:s + self.head_chunk])
            tgt = targets[s:s + self.head_chunk, None]
            out.append((logits.gather(1, tgt) - torch.logsumexp(logits, dim=-1, keepdim=True)).squeeze(1))
            del logits
        return torch.cat(out) if out else hidden.new_zeros(0)

    def _batches(self, lengths: Sequence[int]) -> list[list[int]]:
        """Longest first (padding waste is lowest, the first batch shows peak memory), ties by index."""
        order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
        batches, cur = [], []
        for i in order:
            if cur and ((len(cur) + 1) * lengths[cur[0]] > self.batch_tokens or len(cur) >= self.max_batch):
                batches.append(cur)
                cur = []
            cur.append(i)
        if cur:
            batches.append(cur)
        return batches

    @torch.no_grad()
    def loglikelihood(self, requests: Sequence[tuple[str, str]], desc: str = "scoring") -> list[dict]:
        """For each (context, continuation): {"logprob": sum of log P(continuation tokens),
        "tokens": count, "context_tokens", "truncated"}. An empty context means the start token.

        The body runs in small batches (CPU caches like ~1k tokens); the hidden states of scored
        positions are pooled across batches and projected head_chunk at a time, since the output
        projection (vocab x hidden) dominates when the vocabulary is large."""
        from tqdm.auto import tqdm

        enc = [self.encode(c, x) for c, x in requests]
        lengths = [len(e.ctx) + len(e.cont) for e in enc]
        sums = np.zeros(len(enc), dtype=np.float64)
        pending: list[tuple[torch.Tensor, torch.Tensor, np.ndarray]] = []

        def flush():
            if not pending:
                return
            hidden = torch.cat([p[0] for p in pending])
            targets = torch.cat([p[1] for p in pending])
            owners = np.concatenate([p[2] for p in pending])
            pending.clear()
            np.add.at(sums, owners, self._target_logprobs(hidden, targets).double().cpu().numpy())

        bar = tqdm(total=len(enc), desc=desc, unit="seq", file=sys.stderr, disable=not self.progress,
                   dynamic_ncols=True, leave=False)
        try:
            for batch in self._batches(lengths):
                width = lengths[batch[0]]
                ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                rows, pos, tgt, owner = [], [], [], []
                for r, i in enumerate(batch):
                    seq = enc[i].ctx + enc[i].cont
                    ids[r, :len(seq)] = torch.tensor(seq)
                    mask[r, :len(seq)] = 1
                    first = len(enc[i].ctx)  # position p predicts token p + 1
                    rows += [r] * len(enc[i].cont)
                    pos += range(first - 1, len(seq) - 1)
                    tgt += enc[i].cont
                    owner += [i] * len(enc[i].cont)
                ids, mask = ids.to(self.device), mask.to(self.device)
                rows_t, pos_t = torch.tensor(rows, device=self.device), torch.tensor(pos, device=self.device)
                tgt_t = torch.tensor(tgt, device=self.device)
                if self.fast_head:
                    hidden = self.body(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
                    pending.append((hidden[rows_t, pos_t], tgt_t, np.asarray(owner)))
                    if sum(p[0].shape[0] for p in pending) >= self.head_chunk:
                        flush()
                else:
                    logits = self.model(input_ids=ids, attention_mask=mask, use_cache=False).logits.float()
                    lp = torch.log_softmax(logits[rows_t, pos_t], dim=-1).gather(1, tgt_t[:, None]).squeeze(1)
                    np.add.at(sums, np.asarray(owner), lp.double().cpu().numpy())
                bar.update(len(batch))
            flush()
        finally:
            bar.close()
        return [{"logprob": float(s), "tokens": len(e.cont), "context_tokens": len(e.ctx), "truncated": e.truncated}
                for s, e in zip(sums, enc)]

    @torch.no_grad()
    def generate(self, prompts: Sequence[str], *, max_new_tokens: int, desc: str = "generating") -> list[str]:
        """Greedy continuations, cut at the first newline or end of text; batched with left padding."""
        from tqdm.auto import tqdm
        from transformers import GenerationConfig

        enc = [self._ids(p, True) for p in prompts]
        enc = [e[-(self.seqlen - max_new_tokens):] if len(e) > self.seqlen - max_new_tokens else e for e in enc]
        eos = [t for t in {self.tok.eos_token_id, self.start_id} if t is not None]
        gen_cfg = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                                   pad_token_id=self.pad_id, eos_token_id=eos)
        outs: list[str] = [""] * len(enc)
        bar = tqdm(total=len(enc), desc=desc, unit="seq", file=sys.stderr, disable=not self.progress,
                   dynamic_ncols=True, leave=False)
        try:
            for batch in self._batches([len(e) + max_new_tokens for e in enc]):
                width = max(len(enc[i]) for i in batch)
                ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                for r, i in enumerate(batch):
                    ids[r, width - len(enc[i]):] = torch.tensor(enc[i])
                    mask[r, width - len(enc[i]):] = 1
                gen = self.model.generate(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                                          generation_config=gen_cfg)
                for r, i in enumerate(batch):
                    text = self.tok.decode(gen[r, width:], skip_special_tokens=True)
                    outs[i] = text.split("\n")[0].strip()
                bar.update(len(batch))
        finally:
            bar.close()
        return outs


# ================================================================================= task data
def _key(*parts: Any) -> str:
    return hashlib.sha256("\x1f".join(map(str, parts)).encode("utf-8")).hexdigest()


def _item_id(text: str) -> str:
    return _key("item", text)[:16]


def _select(items: list[dict], limit: Optional[int], seed: int) -> list[dict]:
    """A seeded subset, ordered by a hash of (seed, item id): languages that share item ids (parallel
    corpora) select the same items, so their results can be compared item by item."""
    ordered = sorted(items, key=lambda it: _key("select", seed, it["id"]))
    return ordered if limit is None else ordered[:limit]


def _check_data(data, task: str = "") -> Optional[Path]:
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


def ppl_items(data, lang: Language, limit, seed) -> list[dict]:
    texts = _wrap_corpus_error(corpora.load_mono, _check_data(data, "ppl"), lang, split="eval")
    return _select([{"id": _item_id(t), "text": t} for t in dict.fromkeys(texts)], limit, seed)


def _tc_pairs(data, lang: Language) -> dict[str, str]:
    if lang.iso1 == "en":
        raise EvalError("translation-choice: English is the source side of every item; list target languages only")
    return dict(_wrap_corpus_error(corpora.load_parallel, _check_data(data, "translation-choice"), "en", lang,
                                   split="eval"))


def translation_choice_items(data, lang: Language, limit, seed, n_choices: int = 4,
                             pool: Optional[set] = None) -> list[dict]:
    """Items from evaluation-split English->lang pairs. Distractors are, for each item, the other
    pairs with the smallest hash(seed, item, candidate): deterministic, and languages with the same
    pool pick the same distractors. pool: restrict to these English sentences (the ones every
    evaluated language has), which makes items and candidates parallel across languages."""
    by_en = _tc_pairs(data, lang)
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
    try:
        rows = corpora.read_jsonl_objects(path)
    except ValueError as exc:
        raise EvalError(str(exc)) from None
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
    path = _task_file(_check_data(data, "xnli"), "xnli", lang)
    if template == "paper":
        # The paper's code scores every language with the English template words.
        words, qword, sep = XNLI_WORDS["en"][1:], "right?", " , "
    else:
        code = lang.iso1 or lang.locale
        if code not in XNLI_WORDS:
            raise EvalError(f"xnli: no lm-eval-harness template words for {lang.name}; have: {', '.join(sorted(XNLI_WORDS))} "
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
    path = _task_file(_check_data(data, "marc"), "marc", lang)
    items = []
    for index, (lineno, row) in enumerate(_read_jsonl(path)):
        body, stars = row.get("review_body"), row.get("stars")
        if not isinstance(body, str) or stars not in (1, 2, 3, 4, 5):
            raise EvalError(f"{path}:{lineno}: expected a string review_body and stars 1-5 (amazon_reviews_multi layout)")
        if stars == 3:
            continue  # neither negative nor positive: dropped, as in the paper's binary MARC
        text = " ".join(body.split()[:MARC_WORDS])
        items.append({"id": _row_id(row, index), "context": f"{text} It is",
                      "candidates": [f" {w}" for w in MARC_LABELS], "candidate_ids": list(MARC_LABELS),
                      "gold": int(stars > 3)})
    if not items:
        raise EvalError(f"{path}: no review with 1, 2, 4 or 5 stars")
    return _select(items, limit, seed)


def translate_items(data, lang: Language, limit, seed, shots: int) -> tuple[list[dict], list[tuple[str, str]]]:
    """X->English items (evaluation split) and `shots` fixed demonstrations (calibration split)."""
    if lang.iso1 == "en":
        raise EvalError("translate: translation is X->English; list source languages other than English")
    data = _check_data(data, "translate")
    pairs = _wrap_corpus_error(corpora.load_parallel, data, lang, "en", split="eval")
    items = _select([{"id": _item_id(en), "src": x, "ref": en} for x, en in pairs], limit, seed)
    demos: list[tuple[str, str]] = []
    if shots > 0:
        pool = _wrap_corpus_error(corpora.load_parallel, data, lang, "en", split="calib")
        if len(pool) < shots:
            raise EvalError(f"translate: {len(pool)} calibration-split {lang.locale}-en pairs for demonstrations, need {shots}")
        demos = sorted(pool, key=lambda p: _key("demo", seed, p[1]))[:shots]
    return items, demos


# ================================================================================ evaluation
def _chance(task: str, items: list[dict]) -> Optional[float]:
    if task in ("translation-choice", "xnli", "marc") and items:
        return float(np.mean([1 / len(it["candidates"]) for it in items]))
    return None


def _summary_choice(items: list[dict], n_boot: int, seed: int) -> dict:
    correct = np.array([it["correct"] for it in items], dtype=np.float64)
    alt = np.array([it["correct_alt"] for it in items], dtype=np.float64)
    k, n = int(correct.sum()), len(items)
    return {"n": n, "correct": k, "acc": k / n,
            "acc_ci": list(metrics.bootstrap_ci(correct, "mean", n_boot=n_boot, seed=seed)),
            "acc_wilson": list(metrics.wilson_interval(k, n)), "acc_stderr": metrics.stderr_of_mean(correct),
            "acc_alt": float(alt.mean()),
            "acc_alt_ci": list(metrics.bootstrap_ci(alt, "mean", n_boot=n_boot, seed=seed))}


def _score_choices(scorer: Scorer, task: str, items: list[dict], lang: str) -> None:
    """Fill pred / correct / scores / ranking in place.

    translation-choice: primary score = summed continuation log-prob; alt = per-token mean.
    xnli / marc: primary = mean log-prob per token of the whole sequence (the paper); alt = summed
    continuation log-prob (lm-eval-harness's acc).
    """
    reqs = []
    for it in items:
        ctx = it.get("context") or f"English: {it['src']}\n{resolve(lang).name}:"
        it["context"] = ctx
        reqs += [(ctx, c if task != "translation-choice" else " " + c) for c in it["candidates"]]
        if task != "translation-choice":
            reqs.append(("", ctx))  # the context's own log-prob, shared by all candidates
    res = scorer.loglikelihood(reqs, desc=f"{task} {lang}")
    pos = 0
    for it in items:
        k = len(it["candidates"])
        cand = res[pos:pos + k]
        pos += k
        sums = [r["logprob"] for r in cand]
        means = [r["logprob"] / r["tokens"] for r in cand]
        if task == "translation-choice":
            primary, alt = sums, means
        else:
            ctx = res[pos]
            pos += 1
            primary = [(ctx["logprob"] + r["logprob"]) / (ctx["tokens"] + r["tokens"]) for r in cand]
            alt = sums
        it["scores"] = [round(s, 6) for s in primary]
        it["scores_alt"] = [round(s, 6) for s in alt]
        it["pred"] = metrics.argmax_choice(primary)
        it["correct"] = bool(it["pred"] == it["gold"])
        it["correct_alt"] = bool(metrics.argmax_choice(alt) == it["gold"])
        it["ranking"] = [it["candidate_ids"][j] for j in metrics.ranking(primary)]
        it["truncated"] = any(r["truncated"] for r in cand)
        del it["context"]


def _evaluate_language(scorer: Scorer, task: str, lang: Language, data, *, limit, seed, shots, template,
                       max_new_tokens, n_boot, pool=None) -> dict:
    code = lang.locale
    if task == "ppl":
        items = ppl_items(data, lang, limit, seed)
        if not items:
            raise EvalError(f"ppl: no {lang.name} evaluation text in {data}")
        res = scorer.loglikelihood([("", it["text"]) for it in items], desc=f"ppl {code}")
        for it, r in zip(items, res):
            it.update(nll=round(-r["logprob"], 6), tokens=r["tokens"], truncated=r["truncated"])
        arr = np.array([[it["nll"], it["tokens"]] for it in items], dtype=np.float64)
        nll, tokens = float(arr[:, 0].sum()), int(arr[:, 1].sum())
        summary = {"n": len(items), "tokens": tokens, "ppl": metrics.perplexity(nll, tokens),
                   "ppl_ci": list(metrics.bootstrap_ci(arr, "ppl", n_boot=n_boot, seed=seed)),
                   "nll_per_token": nll / tokens}
        for it in items:
            it.pop("text")  # the id identifies the sentence; the texts are in --data
        return {**summary, "items": items}
    if task == "translate":
        items, demos = translate_items(data, lang, limit, seed, shots)
        if not items:
            raise EvalError(f"translate: no evaluation-split {code}-en pairs in {data}")
        eos = scorer.tok.eos_token or "\n"
        prefix = "".join(f"{lang.name}: {s}{eos}English: {t}{eos}" for s, t in demos)
        prompts = [f"{prefix}{lang.name}: {it['src']}{eos}English:" for it in items]
        hyps = scorer.generate(prompts, max_new_tokens=max_new_tokens, desc=f"translate {code}")
        refs = [it["ref"] for it in items]
        for it, h in zip(items, hyps):
            it["hyp"] = h
            it["chrf"] = round(metrics.sentence_chrf(h, it["ref"]), 4)
        summary = {"n": len(items), "shots": len(demos)}
        for name in ("chrf", "bleu"):
            stats, fn = metrics.corpus_statistic(name, hyps, refs)
            summary[name] = float(fn(stats, np.arange(len(items))[None, :])[0])
            summary[f"{name}_ci"] = list(metrics.bootstrap_ci(stats, fn, n_boot=n_boot, seed=seed))
        summary["demonstrations"] = [{"src": s, "ref": t} for s, t in demos]
        return {**summary, "items": items}
    if task == "translation-choice":
        items = translation_choice_items(data, lang, limit, seed, pool=pool)
    elif task == "xnli":
        items = xnli_items(data, lang, limit, seed, template)
    elif task == "marc":
        items = marc_items(data, lang, limit, seed)
    else:
        raise EvalError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    if not items:
        raise EvalError(f"{task}: no {lang.name} items in {data}")
    chance = _chance(task, items)
    _score_choices(scorer, task, items, code)
    for it in items:  # keep the JSON about results: texts can be rebuilt from --data and the seed
        for k in ("candidates", "src"):
            it.pop(k, None)
    return {**_summary_choice(items, n_boot, seed), "chance": chance, "items": items}


def _consistency(task: str, per_lang: dict[str, dict], reference: Optional[str]) -> Optional[dict]:
    """RankC between the reference language's and each other language's candidate rankings, over
    the items both have with the same candidate set (parallel items)."""
    if task not in ("translation-choice", "xnli", "marc") or len(per_lang) < 2:
        return None
    langs = list(per_lang)
    ref = reference or ("en" if "en" in per_lang else langs[0])
    if ref not in per_lang:
        raise EvalError(f"consistency reference {ref!r} is not among the evaluated languages {langs}")
    ref_items = {it["id"]: it for it in per_lang[ref]["items"]}
    out = {"reference": ref, "method": "RankC (Qi et al. 2023) over parallel items", "languages": {}}
    for lang in langs:
        if lang == ref:
            continue
        a, b = [], []
        for it in per_lang[lang]["items"]:
            other = ref_items.get(it["id"])
            if other is not None and sorted(other["candidate_ids"]) == sorted(it["candidate_ids"]):
                a.append(other["ranking"])
                b.append(it["ranking"])
        entry: dict[str, Any] = {"n": len(a)}
        if a:
            entry["rankc"] = metrics.rankc(a, b)
            entry["top1_agreement"] = float(np.mean([x[0] == y[0] for x, y in zip(a, b)]))
        else:
            entry["note"] = "no parallel items (different item ids or candidate sets)"
        out["languages"][lang] = entry
    return out


def _pruning_info(model_dir: Path) -> Optional[dict]:
    report = model_dir / "featprune.json"
    if not report.is_file():
        return None
    try:
        r = json.loads(report.read_text())
    except (OSError, ValueError):
        return None
    calib = r.get("calibration") or {}
    return {"method": r.get("method"), "sparsity": r.get("sparsity"), "pattern": r.get("pattern"),
            "overall_sparsity": r.get("overall_sparsity"), "calibration": calib.get("spec")}


def _versions() -> dict:
    import transformers

    return {"featprune": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "python": platform.python_version()}


def evaluate(model_dir, task: str, langs: Sequence[str], data=None, *, limit: Optional[int] = None, seed: int = 0,
             seqlen: int = 512, device: str = "cpu", dtype: str = "float32", shots: int = 4,
             template: str = "paper", max_new_tokens: int = 64, n_boot: int = 1000, batch_tokens: int = 1024,
             threads: Optional[int] = None, consistency_ref: Optional[str] = None, parallel: bool = False,
             progress: bool = True, scorer: Optional[Scorer] = None) -> dict:
    """Evaluate one model on one task in several languages; returns the JSON-ready result.

    parallel (translation-choice): use only English sentences translated into every language in
    `langs`, so all languages get the same items with the same candidates (full RankC coverage).
    """
    if task not in TASKS:
        raise EvalError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    if not langs:
        raise EvalError("no languages given (--langs fr,es,...)")
    try:
        languages = [resolve(code) for code in langs]
    except ValueError as exc:
        raise EvalError(str(exc)) from None
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise EvalError(f"limit must be a positive integer, got {limit!r}")
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise EvalError(f"model directory does not exist: {model_dir}")
    _check_data(data, task)  # before the (slow) model load
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    if scorer is None:
        scorer = Scorer(model_dir, device=device, dtype=dtype, seqlen=seqlen, batch_tokens=batch_tokens,
                        threads=threads, progress=progress)
    pool = None
    if parallel:
        if task != "translation-choice":
            raise EvalError(f"parallel applies to translation-choice (xnli items are parallel by line), not {task}")
        pool = set.intersection(*(set(_tc_pairs(data, lang)) for lang in languages))
    per_lang: dict[str, dict] = {}
    timings = {"load_s": round(scorer.load_s, 3)}
    for lang in languages:
        t = time.perf_counter()
        per_lang[lang.locale] = _evaluate_language(scorer, task, lang, data, limit=limit, seed=seed, shots=shots,
                                                   template=template, max_new_tokens=max_new_tokens, n_boot=n_boot,
                                                   pool=pool)
        timings[lang.locale] = round(time.perf_counter() - t, 3)
    timings["total_s"] = round(time.perf_counter() - t0, 3)
    return {
        "format": FORMAT, "version": 1, "task": task, "model": str(model_dir.resolve()), "name": model_dir.name,
        "pruning": _pruning_info(model_dir),
        "settings": {"langs": list(per_lang), "data": corpora.describe_source(data),
                     "limit": limit, "seed": seed, "seqlen": seqlen, "device": str(scorer.device), "dtype": dtype,
                     "shots": shots if task == "translate" else None,
                     "template": template if task == "xnli" else None, "bootstrap": n_boot,
                     "parallel_pool": None if pool is None else len(pool),
                     "fast_head": scorer.fast_head, "scoring": _scoring_note(task)},
        "languages": per_lang,
        "consistency": _consistency(task, per_lang, consistency_ref),
        "timings": timings, "versions": _versions(),
    }


def _scoring_note(task: str) -> str:
    return {
        "ppl": "exp(total nll / tokens) over evaluation-split sentences, each scored after the start token",
        "translation-choice": "acc: summed log-prob of each candidate after 'English: {src}\\n{Language}:'; "
                              "acc_alt: per-token mean",
        "xnli": "acc: mean token log-prob of the whole sequence (the paper's code); acc_alt: summed log-prob "
                "of the candidate continuation (lm-eval-harness)",
        "marc": "acc: mean token log-prob of the whole sequence (the paper's code); acc_alt: summed log-prob "
                "of ' negative'/' positive'",
        "translate": "greedy decoding after fixed calibration-split demonstrations; corpus chrF and BLEU (sacrebleu)",
    }[task]


# ============================================================================ tables, compare
def primary_metric(task: str) -> tuple[str, str]:
    """(summary key, direction) of a task's headline number: 'higher' or 'lower' is better."""
    return {"ppl": ("ppl", "lower"), "translate": ("chrf", "higher")}.get(task, ("acc", "higher"))


def _fmt_ci(summary: dict, key: str, pct: bool) -> str:
    v, ci = summary[key], summary.get(f"{key}_ci")
    scale = 100 if pct else 1
    digits = 1 if pct or key in ("chrf", "bleu") else 2
    if ci is None:
        return f"{v * scale:.{digits}f}"
    return f"{v * scale:.{digits}f} [{ci[0] * scale:.{digits}f}, {ci[1] * scale:.{digits}f}]"


def format_table(result: dict) -> str:
    """Markdown: one row per language with the task's numbers and 95% bootstrap intervals."""
    task = result["task"]
    if task == "ppl":
        head = ["lang", "n", "tokens", "ppl [95% CI]"]
        rows = [[l, s["n"], s["tokens"], _fmt_ci(s, "ppl", False)] for l, s in result["languages"].items()]
    elif task == "translate":
        head = ["lang", "n", "chrF [95% CI]", "BLEU [95% CI]"]
        rows = [[l, s["n"], _fmt_ci(s, "chrf", False), _fmt_ci(s, "bleu", False)]
                for l, s in result["languages"].items()]
    else:
        head = ["lang", "n", "acc % [95% CI]", "acc_alt %", "chance %"]
        rows = [[l, s["n"], _fmt_ci(s, "acc", True), f"{100 * s['acc_alt']:.1f}", f"{100 * (s['chance'] or 0):.0f}"]
                for l, s in result["languages"].items()]
        cons = result.get("consistency")
        if cons:
            head.append(f"RankC vs {cons['reference']}")
            for row in rows:
                c = cons["languages"].get(row[0])
                row.append("(reference)" if row[0] == cons["reference"] else
                           f"{c['rankc']:.3f} (n={c['n']})" if c and "rankc" in c else "n/a")
    return markdown_table(head, rows)


def markdown_table(head: list, rows: list[list]) -> str:
    cells = [[str(c) for c in head]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(head))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"
    return "\n".join([line(cells[0]), "| " + " | ".join("-" * w for w in widths) + " |"] + [line(r) for r in cells[1:]])


def load_results(path) -> dict:
    p = Path(path)
    try:
        obj = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EvalError(f"results file not found: {p}") from None
    except (OSError, ValueError) as exc:
        raise EvalError(f"cannot read results file {p}: {exc}") from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise EvalError(f"{p} is not a featprune eval JSON (format {FORMAT!r})")
    return obj


def _per_item(task: str, items: list[dict], key: str):
    if task == "ppl":  # tested as nats per token (log perplexity); see metrics._stat_fn
        return np.array([[it["nll"], it["tokens"]] for it in items], dtype=np.float64), "nll"
    if task == "translate":
        return None, None  # corpus metrics: handled with sacrebleu statistics
    return np.array([it["correct"] for it in items], dtype=np.float64), "mean"


def compare_results(a: dict, b: dict, *, n_boot: int = 1000, seed: int = 0) -> dict:
    """Paired bootstrap of a vs b on each language's items present in both (matched by id)."""
    if a["task"] != b["task"]:
        raise EvalError(f"cannot compare a {a['task']} result with a {b['task']} result")
    task = a["task"]
    key, direction = primary_metric(task)
    if task == "ppl":
        key = "nll_per_token"  # the paired test runs on log perplexity
    out = {"task": task, "metric": key, "better": direction, "a": a.get("name"), "b": b.get("name"),
           "languages": {}}
    for lang, sa in a["languages"].items():
        sb = b["languages"].get(lang)
        if sb is None:
            continue
        ib = {it["id"]: it for it in sb["items"]}
        pairs = [(it, ib[it["id"]]) for it in sa["items"] if it["id"] in ib]
        if not pairs:
            out["languages"][lang] = {"n": 0, "note": "no common items"}
            continue
        ia, ibb = [p[0] for p in pairs], [p[1] for p in pairs]
        if task == "translate":
            refs = [it["ref"] for it in ia]
            stats_a, fn = metrics.corpus_statistic("chrf", [it["hyp"] for it in ia], refs)
            stats_b, _ = metrics.corpus_statistic("chrf", [it["hyp"] for it in ibb], refs)
            res = metrics.paired_bootstrap(stats_a, stats_b, fn, n_boot=n_boot, seed=seed)
        else:
            xa, stat = _per_item(task, ia, key)
            xb, _ = _per_item(task, ibb, key)
            res = metrics.paired_bootstrap(xa, xb, stat, n_boot=n_boot, seed=seed)
        out["languages"][lang] = res
    if not out["languages"]:
        raise EvalError(f"the two results share no language ({list(a['languages'])} vs {list(b['languages'])})")
    return out


def format_comparison(cmp: dict) -> str:
    key = cmp["metric"]
    pct = key == "acc"
    scale = 100 if pct else 1
    if key == "nll_per_token":
        key = "nll/token (log ppl)"
    head = ["lang", "n", f"{key} A ({cmp['a']})", f"{key} B ({cmp['b']})", "A - B [95% CI]", "p (paired bootstrap)"]
    rows = []
    for lang, r in cmp["languages"].items():
        if not r.get("n"):
            rows.append([lang, 0, "", "", "", r.get("note", "")])
            continue
        rows.append([lang, r["n"], f"{r['a'] * scale:.2f}", f"{r['b'] * scale:.2f}",
                     f"{r['delta'] * scale:+.2f} [{r['ci'][0] * scale:+.2f}, {r['ci'][1] * scale:+.2f}]",
                     metrics.format_p(r["p_value"], r["n_boot"])])
    note = f"\n{cmp['better']} {key} is better; p is two-sided over {next(iter(cmp['languages'].values())).get('n_boot', '')} resamples"
    return markdown_table(head, rows) + note


def write_json(obj: dict, path) -> None:
    """Write atomically (a half-written results file would break a later comparison)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, ensure_ascii=False, indent=1), encoding="utf-8")
    os.replace(tmp, path)
