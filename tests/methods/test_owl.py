"""OWL's arithmetic: outlier ratios and the per-block sparsities they map to."""

import numpy as np
import pytest
import torch

from featprune_ext.errors import InputError
from featprune_ext.methods import OWL, Magnitude, Random, SparseGPT, Wanda
from featprune_ext.methods.owl import layer_sparsities, outlier_ratio


def test_outlier_ratio_counts_above_m_times_the_joint_mean():
    a = torch.tensor([[1.0, 1.0], [1.0, 13.0]])  # together with b: mean 2, threshold 2 * 5 = 10
    b = torch.tensor([1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, -3.0])
    assert outlier_ratio([a, b], 5.0) == pytest.approx(1 / 12)
    assert outlier_ratio([a, b], 0.5) == pytest.approx(11 / 12)
    assert outlier_ratio([], 5.0) == 0.0


def owl_code(ratios, sparsity, lam):
    """OWL's own normalisation (lib/prune_all.py), unweighted mean: keep ratios -> sparsities."""
    r = np.array(ratios)
    r = (r - r.min()) * (1 / (r.max() - r.min()) * lam * 2)
    r = r - np.mean(r) + (1 - sparsity)
    return list(1 - r)


@pytest.mark.parametrize("sparsity, lam", [(0.5, 0.08), (0.7, 0.08), (0.3, 0.2), (0.5, 0.0)])
def test_equal_blocks_reproduce_owls_code(sparsity, lam):
    ratios = [0.011, 0.03, 0.02, 0.015, 0.05, 0.012]
    got = layer_sparsities(ratios, [1000] * 6, sparsity, lam)
    if lam:
        np.testing.assert_allclose(got, owl_code(ratios, sparsity, lam), rtol=0, atol=1e-12)
        assert max(got) - min(got) == pytest.approx(2 * lam)
    assert got[4] == min(got) and got[0] == max(got)  # the most outliers, the lowest sparsity
    assert sum(got) / 6 == pytest.approx(sparsity, abs=1e-12)


def test_the_mean_is_weighted_by_parameters():
    ratios, params = [0.01, 0.02, 0.04], [100, 300, 600]
    got = layer_sparsities(ratios, params, 0.5, 0.08)
    assert sum(s * p for s, p in zip(got, params)) / sum(params) == pytest.approx(0.5, abs=1e-12)
    assert max(got) - min(got) == pytest.approx(0.16)
    assert sum(got) / 3 != pytest.approx(0.5, abs=1e-3)  # not the unweighted mean


def test_equal_ratios_and_empty_blocks_keep_the_target():
    assert layer_sparsities([0.02, 0.02], [10, 10], 0.6, 0.08) == [0.6, 0.6]
    got = layer_sparsities([0.01, None, 0.03], [10, 0, 10], 0.5, 0.1)
    assert got[1] == 0.5 and got[0] == pytest.approx(0.6) and got[2] == pytest.approx(0.4)


def test_out_of_range_is_an_input_error():
    with pytest.raises(InputError, match="--owl-lambda"):
        layer_sparsities([0.01, 0.05], [10, 10], 0.95, 0.08)


@pytest.mark.parametrize("kwargs", [dict(m=0), dict(m=-1), dict(m=float("inf")), dict(lam=-0.01), dict(lam=0.5),
                                    dict(lam=float("nan"))])
def test_bad_settings(kwargs):
    with pytest.raises(InputError):
        OWL(**kwargs)


def test_check_refuses_patterns_and_methods_without_activations():
    owl = OWL()
    with pytest.raises(InputError, match="N:M"):
        owl.check(Wanda(), None, (2, 4))
    for method in (Magnitude(), Random(0)):
        with pytest.raises(InputError, match="reads none"):
            owl.check(method, 0.5, None)
    owl.check(Wanda(), 0.5, None)
    owl.check(SparseGPT(), 0.5, None)
    assert OWL(m=7, lam=0.1).fingerprint() != OWL().fingerprint()
