"""The numbers featprune reports, as pure functions: no I/O, no model, seeded randomness only.

* perplexity from summed negative log-likelihoods,
* multiple-choice prediction by log-likelihood (ties go to the lower index),
* confidence intervals: Wilson for a proportion, percentile bootstrap for anything else,
* paired bootstrap significance between two systems' per-item results,
* RankC cross-lingual consistency (Qi, Fernández and Bisazza, EMNLP 2023),
* feature magnitudes (the paper's Figure 2) and top/bottom feature overlap (Figures 1 and 3),
* chrF and BLEU through sacrebleu, with per-sentence sufficient statistics so corpus scores can be
  bootstrapped exactly (resample sentences, sum their statistics, score the sum).

Bootstrap statistics are given by name ("mean", "ppl", or a sacrebleu metric wrapped by
:func:`corpus_statistic`) or as a function from resampled row indices to one value per resample.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence, Union

import numpy as np

__all__ = [
    "accuracy", "argmax_choice", "bootstrap_ci", "chrf", "bleu", "corpus_statistic", "feature_l2_norms", "format_p",
    "paired_bootstrap", "perplexity", "rankc", "ranking", "sentence_chrf", "stderr_of_mean",
    "top_bottom_overlap", "top_top_overlap", "wilson_interval",
]

Statistic = Union[str, Callable[[np.ndarray, np.ndarray], np.ndarray]]


# ------------------------------------------------------------------------------- language modelling
def perplexity(nll_sum: float, n_tokens: int) -> float:
    """exp(total negative log-likelihood / tokens), natural log."""
    if n_tokens <= 0:
        raise ValueError(f"perplexity needs at least one token, got {n_tokens}")
    return math.exp(nll_sum / n_tokens)


# ---------------------------------------------------------------------------------- multiple choice
def argmax_choice(scores: Sequence[float]) -> int:
    """Index of the highest score; ties go to the lowest index (like np.argmax), NaN never wins."""
    if len(scores) == 0:
        raise ValueError("no candidates to choose from")
    arr = np.asarray(scores, dtype=np.float64)
    arr = np.where(np.isnan(arr), -np.inf, arr)
    return int(np.argmax(arr))


def ranking(scores: Sequence[float]) -> list[int]:
    """Candidate indices from best to worst; equal scores keep index order (stable)."""
    arr = np.asarray(scores, dtype=np.float64)
    arr = np.where(np.isnan(arr), -np.inf, arr)
    return [int(i) for i in np.argsort(-arr, kind="stable")]


def accuracy(correct: Sequence[bool]) -> float:
    if len(correct) == 0:
        raise ValueError("accuracy of zero items is undefined")
    return float(np.mean(np.asarray(correct, dtype=np.float64)))


def stderr_of_mean(values: Sequence[float]) -> float:
    """Standard error of the mean (sample standard deviation / sqrt(n)); 0 for n < 2."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.size < 2:
        return 0.0
    return float(arr.std(ddof=1) / math.sqrt(arr.size))


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for k successes out of n (well-behaved at 0 and n, unlike +-1.96 se)."""
    if n <= 0:
        raise ValueError(f"Wilson interval needs n > 0, got {n}")
    if not 0 <= k <= n:
        raise ValueError(f"k must be in [0, n], got k={k}, n={n}")
    z = _z(confidence)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def _z(confidence: float) -> float:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    from statistics import NormalDist

    return NormalDist().inv_cdf(0.5 + confidence / 2)


# ---------------------------------------------------------------------------------------- bootstrap
def _stat_fn(statistic: Statistic) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """A function (data [n, ...], idx [B, n]) -> [B] values."""
    if callable(statistic):
        return statistic
    if statistic == "mean":
        return lambda data, idx: data[idx].mean(axis=1)
    if statistic == "ppl":
        # data[:, 0] = summed nll, data[:, 1] = tokens: a ratio, not a mean of per-item perplexities.
        return lambda data, idx: np.exp(data[idx, 0].sum(axis=1) / data[idx, 1].sum(axis=1))
    if statistic == "nll":
        # log perplexity (nats per token): the scale on which to test a difference, since
        # perplexity itself is so skewed that a broken model's resamples span orders of magnitude.
        return lambda data, idx: data[idx, 0].sum(axis=1) / data[idx, 1].sum(axis=1)
    raise ValueError(f"unknown bootstrap statistic {statistic!r}; use 'mean', 'ppl', 'nll' or a function")


def _indices(n: int, n_boot: int, seed: int) -> np.ndarray:
    if n <= 0:
        raise ValueError("bootstrap needs at least one item")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def bootstrap_ci(data, statistic: Statistic = "mean", *, n_boot: int = 1000, confidence: float = 0.95,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of `statistic` over items (rows of `data`)."""
    data = np.asarray(data, dtype=np.float64)
    idx = _indices(len(data), n_boot, seed)
    values = _stat_fn(statistic)(data, idx)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(values, [alpha, 1 - alpha])
    return float(low), float(high)


def paired_bootstrap(a, b, statistic: Statistic = "mean", *, n_boot: int = 1000, confidence: float = 0.95,
                     seed: int = 0) -> dict:
    """Paired bootstrap test of statistic(a) - statistic(b) over the same items.

    Each resample draws the same item indices for both systems. The p-value is two-sided, with
    the bootstrap distribution of the difference shifted to mean zero as the null (the form
    sacrebleu uses): p = (1 + #{|d_b - mean(d)| >= |d_obs|}) / (n_boot + 1). Also returns the
    percentile interval of the difference and the share of resamples where a beats b.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired bootstrap needs aligned per-item results, got shapes {a.shape} and {b.shape}")
    fn = _stat_fn(statistic)
    n = len(a)
    full = np.arange(n)[None, :]
    observed = float(fn(a, full)[0] - fn(b, full)[0])
    idx = _indices(n, n_boot, seed)
    deltas = fn(a, idx) - fn(b, idx)
    centred = deltas - deltas.mean()
    p = (1 + int(np.sum(np.abs(centred) >= abs(observed) - 1e-12))) / (n_boot + 1)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(deltas, [alpha, 1 - alpha])
    return {"n": n, "a": float(fn(a, full)[0]), "b": float(fn(b, full)[0]), "delta": observed,
            "ci": [float(low), float(high)], "p_value": float(min(1.0, p)),
            "a_wins": float(np.mean(deltas > 0)), "n_boot": n_boot}


def mcnemar_exact(a_correct, b_correct) -> dict:
    """Exact (binomial) two-sided McNemar test of two systems' per-item correctness on the same items.

    Only discordant items count: b10 = a right and b wrong, b01 = the reverse. Under the null each
    discordant item goes either way with probability 1/2, so p = min(1, 2 * P(X <= min(b10, b01)))
    with X ~ Binomial(b10 + b01, 1/2). With no discordant item p = 1.
    """
    a = np.asarray(a_correct, dtype=bool)
    b = np.asarray(b_correct, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"McNemar needs aligned per-item results, got shapes {a.shape} and {b.shape}")
    b10, b01 = int(np.sum(a & ~b)), int(np.sum(~a & b))
    n = b10 + b01
    tail = sum(math.comb(n, i) for i in range(min(b10, b01) + 1)) / 2.0 ** n if n else 1.0
    return {"n": int(a.size), "a_only": b10, "b_only": b01, "delta": (b10 - b01) / max(a.size, 1),
            "p_value": float(min(1.0, 2.0 * tail))}


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (same order as given): controls the family-wise error rate
    over a family of tests; reject H_i at level alpha when adjusted p_i < alpha."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted = [0.0] * len(p_values)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * float(p_values[i])))
        adjusted[i] = running
    return adjusted


def format_p(p: float, n_boot: int) -> str:
    """A bootstrap p-value as text; at the resolution floor 1/(n_boot+1) it reads '<=0.001' etc."""
    floor = 1 / (n_boot + 1)
    if p <= floor * (1 + 1e-9):
        return f"<={floor:.2g}" if floor < 0.001 else f"<={floor:.3f}"
    return f"{p:.3f}"


# ------------------------------------------------------------------------------------------ RankC
def rankc(rankings_a: Sequence[Sequence], rankings_b: Sequence[Sequence]) -> float:
    """RankC consistency of two systems' candidate rankings over the same items (Qi et al. 2023).

    For an item with N candidates, ranked best-first in each language:
        sum_{j=1..N} w_j * |top_j(a) & top_j(b)| / j,   w_j = exp(N - j) / sum_k exp(N - k)
    (softmax weights, so agreement at the top counts most), averaged over items. Candidates are
    identified by any hashable id, so the two rankings may list them in different orders.
    1.0 means identical rankings everywhere.
    """
    if len(rankings_a) != len(rankings_b):
        raise ValueError(f"RankC needs the same items: {len(rankings_a)} vs {len(rankings_b)} rankings")
    if not rankings_a:
        raise ValueError("RankC of zero items is undefined")
    total = 0.0
    for ra, rb in zip(rankings_a, rankings_b):
        if sorted(map(str, ra)) != sorted(map(str, rb)):
            raise ValueError(f"RankC: the two rankings rank different candidates: {list(ra)} vs {list(rb)}")
        n = len(ra)
        w = np.exp(np.arange(n, 0, -1, dtype=np.float64) - n)  # exp(N - j) for j = 1..N, shifted for range
        w /= w.sum()
        total += sum(w[j - 1] * len(set(ra[:j]) & set(rb[:j])) / j for j in range(1, n + 1))
    return total / len(rankings_a)


# ------------------------------------------------------------------------------ feature magnitudes
def feature_l2_norms(hidden, mask=None):
    """Per sample, each feature's L2 norm over that sample's real tokens: [B, T, F] -> [B, F].

    mask: [B, T], nonzero for real tokens (padding contributes nothing). Computed in float64
    so the very large features of some models do not lose the small ones' precision.
    """
    import torch

    h = hidden.detach().to(torch.float64)
    if mask is not None:
        m = mask.to(device=h.device, dtype=torch.float64)
        if m.shape != h.shape[:-1]:
            raise ValueError(f"mask shape {tuple(m.shape)} does not match hidden states {tuple(h.shape)}")
        h = h * m.unsqueeze(-1)
    return h.pow(2).sum(dim=-2).sqrt()


def _top_k(values, k: int, largest: bool) -> set[int]:
    v = np.asarray(values, dtype=np.float64)
    order = np.argsort(-v if largest else v, kind="stable")  # ties: lower feature index first
    return set(int(i) for i in order[:k])


def _k_of(n: int, ratio: float) -> int:
    if not 0 < ratio <= 1:
        raise ValueError(f"ratio must be in (0, 1], got {ratio}")
    k = int(round(n * ratio))
    if k < 1:
        raise ValueError(f"ratio {ratio} of {n} features selects no feature")
    return k


def top_bottom_overlap(a, b, ratio: float) -> float:
    """Share of a's top-ratio features (by magnitude) that are among b's bottom-ratio features.

    k = round(F * ratio) on both sides; 0 means a's large features are never b's small ones, 1 means
    all of them are. The authors' overlap_analysis.py rounds the same way but with a hard-coded 0.4,
    whatever its --ratio (which only labels the figures); featprune uses the ratio it is given
    (docs/study-gemma3-270m.md, "Differences from the authors' code").
    """
    if len(a) != len(b):
        raise ValueError(f"feature vectors differ in length: {len(a)} vs {len(b)}")
    k = _k_of(len(a), ratio)
    return len(_top_k(a, k, True) & _top_k(b, k, False)) / k


def top_top_overlap(a, b, ratio: float) -> float:
    """Share of a's top-ratio features that are also among b's top-ratio features."""
    if len(a) != len(b):
        raise ValueError(f"feature vectors differ in length: {len(a)} vs {len(b)}")
    k = _k_of(len(a), ratio)
    return len(_top_k(a, k, True) & _top_k(b, k, True)) / k


# ----------------------------------------------------------------------------------- chrF and BLEU
def _check_pairs(hyps: Sequence[str], refs: Sequence[str]) -> None:
    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} hypotheses but {len(refs)} references")
    if not hyps:
        raise ValueError("no sentences to score")


def _metric(name: str):
    import sacrebleu

    if name == "chrf":
        return sacrebleu.metrics.CHRF()
    if name == "bleu":
        return sacrebleu.metrics.BLEU()
    raise ValueError(f"unknown metric {name!r}; use 'chrf' or 'bleu'")


def chrf(hyps: Sequence[str], refs: Sequence[str]) -> float:
    """Corpus chrF (sacrebleu defaults: character 6-grams, beta 2), 0-100."""
    _check_pairs(hyps, refs)
    return float(_metric("chrf").corpus_score(list(hyps), [list(refs)]).score)


def bleu(hyps: Sequence[str], refs: Sequence[str]) -> float:
    """Corpus BLEU (sacrebleu defaults: 13a tokenization), 0-100."""
    _check_pairs(hyps, refs)
    return float(_metric("bleu").corpus_score(list(hyps), [list(refs)]).score)


def sentence_chrf(hyp: str, ref: str) -> float:
    return float(_metric("chrf").sentence_score(hyp, [ref]).score)


def corpus_statistic(name: str, hyps: Sequence[str], refs: Sequence[str]):
    """(per-sentence sufficient statistics [n, d], statistic function) for bootstrapping a corpus
    chrF/BLEU: the function sums the resampled sentences' statistics and scores the sum, which is
    exactly how sacrebleu scores a corpus (and how its own paired bootstrap works)."""
    _check_pairs(hyps, refs)
    metric = _metric(name)
    stats = np.asarray(metric._extract_corpus_statistics(list(hyps), [list(refs)]), dtype=np.float64)

    def fn(data: np.ndarray, idx: np.ndarray) -> np.ndarray:
        sums = data[idx].sum(axis=1)
        return np.array([metric._compute_score_from_stats(list(row)).score for row in sums])

    return stats, fn
