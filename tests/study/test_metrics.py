"""Every metric on hand-checked cases."""

import math

import numpy as np
import pytest
import torch

from featprune_ext.study import metrics as M


# ------------------------------------------------------------------------------------ perplexity
def test_perplexity_of_uniform_distribution_is_its_size():
    # Every token has probability 1/4: nll per token = ln 4, so perplexity = 4.
    assert M.perplexity(10 * math.log(4), 10) == pytest.approx(4.0)


def test_perplexity_of_known_probabilities():
    # Tokens observed with probabilities 1/2 and 1/4: exp((ln 2 + ln 4) / 2) = 2 * sqrt(2).
    assert M.perplexity(-(math.log(0.5) + math.log(0.25)), 2) == pytest.approx(2 * math.sqrt(2))


def test_perplexity_needs_tokens():
    with pytest.raises(ValueError, match="at least one token"):
        M.perplexity(1.0, 0)


# ------------------------------------------------------------------------------- multiple choice
def test_argmax_choice_ties_and_nan():
    assert M.argmax_choice([-3.0, -1.0, -2.0]) == 1
    assert M.argmax_choice([-1.0, -1.0, -2.0]) == 0  # tie: lower index
    assert M.argmax_choice([float("nan"), -5.0]) == 1  # NaN never wins
    with pytest.raises(ValueError):
        M.argmax_choice([])


def test_ranking_is_stable_best_first():
    assert M.ranking([0.1, 0.5, 0.1, 0.9]) == [3, 1, 0, 2]


def test_accuracy_and_wilson():
    assert M.accuracy([True, False, True, True]) == 0.75
    lo, hi = M.wilson_interval(5, 10)
    assert (lo, hi) == pytest.approx((0.2366, 0.7634), abs=1e-4)  # textbook value
    assert M.wilson_interval(0, 20)[0] == pytest.approx(0.0, abs=1e-12)
    assert M.wilson_interval(20, 20)[1] == pytest.approx(1.0)
    with pytest.raises(ValueError):
        M.wilson_interval(3, 2)


# ------------------------------------------------------------------------------------- bootstrap
def test_bootstrap_ci_of_constant_and_of_half():
    assert M.bootstrap_ci(np.full(50, 0.7), n_boot=200) == pytest.approx((0.7, 0.7))
    lo, hi = M.bootstrap_ci(np.array([0, 1] * 100, dtype=float), n_boot=500, seed=1)
    assert lo < 0.5 < hi and hi - lo < 0.2
    assert M.bootstrap_ci(np.arange(30.0), n_boot=100, seed=3) == M.bootstrap_ci(np.arange(30.0), n_boot=100, seed=3)


def test_bootstrap_ppl_statistic_is_a_ratio():
    data = np.array([[2.0, 1.0], [6.0, 3.0]])  # 8 nats over 4 tokens
    lo, hi = M.bootstrap_ci(data, "ppl", n_boot=300)
    assert lo == pytest.approx(math.exp(2.0)) and hi == pytest.approx(math.exp(2.0))  # every resample: ratio 2
    assert M.bootstrap_ci(data, "nll", n_boot=50) == pytest.approx((2.0, 2.0))  # log perplexity
    # paired tests on perplexity run on nats per token: a model worse on every sentence is significant
    worse = data + np.array([[1.0, 0.0], [3.0, 0.0]])
    assert M.paired_bootstrap(worse, data, "nll", n_boot=99)["delta"] == pytest.approx(1.0)


def test_paired_bootstrap_constructed_cases():
    # a beats b everywhere: the smallest possible p-value.
    r = M.paired_bootstrap(np.ones(40), np.zeros(40), n_boot=199)
    assert r["delta"] == 1.0 and r["p_value"] == pytest.approx(1 / 200) and r["a_wins"] == 1.0
    # identical systems: no evidence at all.
    same = np.array([1, 0, 1, 1, 0] * 8, dtype=float)
    r = M.paired_bootstrap(same, same, n_boot=199)
    assert r["delta"] == 0.0 and r["p_value"] == 1.0
    # a is right on 30 more items out of 100 (b never better): clearly significant.
    a = np.array([1] * 60 + [0] * 40, dtype=float)
    b = np.array([1] * 30 + [0] * 70, dtype=float)
    r = M.paired_bootstrap(a, b, n_boot=999, seed=0)
    assert r["delta"] == pytest.approx(0.3) and r["p_value"] < 0.01 and r["ci"][0] > 0
    # one item of 100 differs: not significant.
    b2 = a.copy()
    b2[0] = 0
    assert M.paired_bootstrap(a, b2, n_boot=999)["p_value"] > 0.2
    with pytest.raises(ValueError, match="aligned"):
        M.paired_bootstrap(np.ones(3), np.ones(4))


# ---------------------------------------------------------------------------------------- RankC
def test_rankc_constructed_cases():
    assert M.rankc([["a", "b", "c"]], [["a", "b", "c"]]) == pytest.approx(1.0)
    # Two candidates swapped: P@1 = 0, P@2 = 1, weights softmax([1, 0]) -> 1 / (1 + e).
    assert M.rankc([[0, 1]], [[1, 0]]) == pytest.approx(1 / (1 + math.e))
    # Three candidates, top two swapped: P@1 = 0, P@2 = P@3 = 1; w = [e^2, e, 1] / (e^2 + e + 1).
    expected = (math.e + 1) / (math.e ** 2 + math.e + 1)
    assert M.rankc([["a", "b", "c"]], [["b", "a", "c"]]) == pytest.approx(expected)
    # Averaged over items.
    assert M.rankc([[0, 1], [0, 1]], [[0, 1], [1, 0]]) == pytest.approx((1 + 1 / (1 + math.e)) / 2)
    with pytest.raises(ValueError, match="different candidates"):
        M.rankc([["a", "b"]], [["a", "c"]])


# ----------------------------------------------------------------------------- feature analyses
def test_feature_l2_norms_exclude_padding():
    h = torch.tensor([[[3.0, 0.0], [4.0, 1.0], [100.0, 100.0]]])
    mask = torch.tensor([[1, 1, 0]])
    assert M.feature_l2_norms(h, mask).tolist() == [[5.0, 1.0]]
    assert M.feature_l2_norms(h).shape == (1, 2)


def test_top_bottom_overlap_of_known_sets():
    a = [10, 9, 8, 1, 2, 3]  # top-50%: features 0, 1, 2
    b = [1, 2, 3, 10, 9, 8]  # bottom-50%: features 0, 1, 2
    assert M.top_bottom_overlap(a, b, 0.5) == 1.0
    assert M.top_top_overlap(a, b, 0.5) == 0.0
    assert M.top_bottom_overlap(a, a, 0.5) == 0.0
    # k = round(10 * 0.3) = 3: a's top {9, 8, 7}; c's bottom {0, 8, 9} -> 2 of 3.
    a10 = np.arange(10.0)
    c10 = np.array([0.0, 5, 6, 7, 8, 9, 10, 11, 2, 1])
    assert M.top_bottom_overlap(a10, c10, 0.3) == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        M.top_bottom_overlap(a, b, 0.0)


# ---------------------------------------------------------------------------------- chrF, BLEU
def test_chrf_and_bleu_on_fixed_strings():
    assert M.chrf(["the cat sat"], ["the cat sat"]) == pytest.approx(100.0)
    assert M.bleu(["the cat sat on the mat"], ["the cat sat on the mat"]) == pytest.approx(100.0)
    assert M.chrf(["xyz"], ["abc"]) == 0.0
    # By hand (sacrebleu chrF: char 1..6-grams, whitespace dropped, beta 2, orders without n-grams
    # skipped): "abc" vs "abd": 1-grams P=R=2/3, 2-grams 1/2, 3-grams 0 -> F = mean = 7/18.
    assert M.chrf(["abc"], ["abd"]) == pytest.approx(100 * 7 / 18, abs=1e-6)
    assert M.sentence_chrf("abc", "abd") == pytest.approx(100 * 7 / 18, abs=1e-6)


def test_corpus_statistic_reproduces_corpus_scores():
    hyps = ["the cat sat on the mat", "hello there", "a b c d"]
    refs = ["the cat is on the mat", "hello world", "a b c e"]
    for name in ("chrf", "bleu"):
        stats, fn = M.corpus_statistic(name, hyps, refs)
        assert fn(stats, np.arange(3)[None])[0] == pytest.approx(getattr(M, name)(hyps, refs))
        lo, hi = M.bootstrap_ci(stats, fn, n_boot=50)
        assert lo <= hi


def test_format_p_marks_the_resolution_floor():
    assert M.format_p(1 / 1001, 1000) == "<=0.001"
    assert M.format_p(0.0213, 1000) == "0.021"


# -- exact McNemar and Holm: known answers ----------------------------------------------------------
def test_mcnemar_exact_known_answers():
    # the study's Hindi case: 5 discordant items, all favouring one system -> p = 2 * 0.5**5 = 0.0625
    a = [True] * 5 + [True] * 90 + [False] * 105
    b = [False] * 5 + [True] * 90 + [False] * 105
    r = M.mcnemar_exact(a, b)
    assert (r["a_only"], r["b_only"]) == (5, 0) and r["p_value"] == 0.0625 and r["delta"] == 5 / 200
    # 3 vs 1 discordant: p = 2 * (1 + 4) / 16 = 0.625; symmetric in a and b
    a, b = [1, 1, 1, 0, 1], [0, 0, 0, 1, 1]
    assert M.mcnemar_exact(a, b)["p_value"] == 0.625 == M.mcnemar_exact(b, a)["p_value"]
    assert M.mcnemar_exact([1, 0], [1, 0])["p_value"] == 1.0  # no discordant item
    with pytest.raises(ValueError, match="aligned"):
        M.mcnemar_exact([1, 0], [1])


def test_holm_known_answers():
    # sorted p: 0.01*3=0.03, 0.02*2=0.04, 0.04*1=0.04 (monotone); returned in the input order
    assert M.holm([0.04, 0.01, 0.02]) == pytest.approx([0.04, 0.03, 0.04])
    assert M.holm([0.0625, 0.5, 0.9]) == pytest.approx([0.1875, 1.0, 1.0])
    assert M.holm([]) == []
