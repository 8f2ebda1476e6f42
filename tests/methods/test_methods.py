"""The paper's method pieces: contrastive norm, outlier protection, bucket selection."""

from __future__ import annotations

import pytest
import torch

from featprune_ext import methods
from featprune_ext.errors import InputError
from featprune_ext.methods import LinearStats, OutlierProtection


def stats_from(rows_per_bucket: dict[str, torch.Tensor]) -> LinearStats:
    """LinearStats of explicit token rows per bucket ([tokens, features] each)."""
    names = list(rows_per_bucket)
    features = next(iter(rows_per_bucket.values())).shape[1]
    st = LinearStats.zeros(features, names, "cpu")
    for i, x in enumerate(rows_per_bucket.values()):
        st.sumsq[i] = x.pow(2).sum(0)
        st.count[i] = x.shape[0]
        st.absmax[i] = x.abs().amax(0)
    return st


def test_contrastive_formula_hand_computed():
    # base RMS = [2, 1, 3], contrast RMS = [1, 2, 3] -> base * base / contrast = [4, 0.5, 3]
    st = stats_from({"mt:fr-en": torch.tensor([[2.0, 1.0, 3.0], [-2.0, -1.0, 3.0]]),
                     "code": torch.tensor([[1.0, 2.0, 3.0]])})
    m = methods.Contrastive(base_buckets=["mt:fr-en"], contrast_buckets=["code"])
    m.prepare(st.bucket_names)
    torch.testing.assert_close(m.column_scale(st, torch.ones(1, 3)), torch.tensor([4.0, 0.5, 3.0]))


def test_contrastive_silent_feature_does_not_divide_by_zero():
    norm = methods.contrastive_norm(torch.tensor([1.0, 2.0]), torch.tensor([0.0, 4.0]), eps=1e-3)
    assert torch.isfinite(norm).all()
    torch.testing.assert_close(norm, torch.tensor([1.0 / 4e-3, 1.0]))
    assert torch.isfinite(methods.contrastive_norm(torch.ones(2), torch.zeros(2))).all()


def test_contrastive_needs_disjoint_existing_buckets():
    with pytest.raises(InputError, match="both base and contrast"):
        methods.Contrastive(base_buckets=["a"], contrast_buckets=["a"])
    m = methods.Contrastive(base_buckets=["mt:fr-en"], contrast_buckets=["code"])
    with pytest.raises(InputError, match="no contrast bucket named 'code'"):
        m.prepare(["mt:fr-en"])


def test_wanda_uses_only_base_buckets():
    st = stats_from({"mt": torch.tensor([[3.0, 4.0]]), "code": torch.tensor([[100.0, 0.0]])})
    torch.testing.assert_close(methods.Wanda(base_buckets=["mt"]).column_scale(st, None), torch.tensor([3.0, 4.0]))
    everything = methods.Wanda().column_scale(st, None)
    torch.testing.assert_close(everything, torch.tensor([(9 + 10000) / 2, 16 / 2]).sqrt())


@pytest.mark.parametrize("name,reads", [("model.layers.0.self_attn.q_proj.weight", True),
                                        ("mlp.up_proj", True), ("transformer.h.3.attn.c_attn.weight", True),
                                        ("self_attention.query_key_value", True), ("fc1", True),
                                        ("self_attn.o_proj.weight", False), ("mlp.down_proj", False),
                                        ("attn.c_proj", False), ("fc2", False)])
def test_reads_hidden_state(name, reads):
    assert methods.reads_hidden_state(name) is reads


def test_protection_top_percent_and_absmax():
    rms = torch.tensor([0.1, 5.0, 0.2, 3.0, 0.3, 0.1, 0.1, 0.1, 0.1, 0.1])
    absmax = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 7.0])
    assert OutlierProtection(top_percent=20).columns(rms, absmax).nonzero().flatten().tolist() == [1, 3]
    both = OutlierProtection(top_percent=10, absmax_threshold=6.0).columns(rms, absmax)
    assert both.nonzero().flatten().tolist() == [1, 9]


@pytest.mark.parametrize("bad", [dict(top_percent=-1), dict(top_percent=100), dict(absmax_threshold=0.0)])
def test_protection_rejects_bad_values(bad):
    with pytest.raises(InputError):
        OutlierProtection(**bad)


def test_protected_columns_dense_and_k_exact_per_row():
    torch.manual_seed(0)
    x = torch.randn(64, 40)
    x[:, [3, 17]] *= 50  # two outlier features
    st = stats_from({"mt:fr-en": x})
    m = methods.Wanda(protection=OutlierProtection(top_percent=5))
    w = torch.randn(30, 40)
    w[:, [3, 17]] = 1e-6  # tiny weights: plain Wanda would prune them despite the big feature
    w2 = w.clone()
    zeroed = m.prune_(w, st, sparsity=0.5, name="model.layers.0.mlp.up_proj.weight")
    assert zeroed == 30 * 20
    assert (w[:, [3, 17]] != 0).all()
    assert torch.all((w == 0).sum(dim=1) == 20)
    # the engine's call: the same mask, and what the report says about the matrix
    result = m.prune_matrix_(w2, st, sparsity=0.5, name="model.layers.0.mlp.up_proj.weight")
    assert result.pruned == zeroed and torch.equal(w2, w)
    assert result.notes == {"protected_columns": 2, "protected": [3, 17]}


def test_protection_skips_matrices_not_reading_the_hidden_state():
    st = stats_from({"mt": torch.randn(8, 12)})
    m = methods.Wanda(protection=OutlierProtection(top_percent=50))
    assert m.protected_columns(st, torch.ones(4, 12), "self_attn.o_proj.weight") is None
    assert m.protected_columns(st, torch.ones(4, 12), "self_attn.q_proj.weight").sum() == 6


def test_magnitude_with_protection_asks_for_calibration():
    assert not methods.Magnitude().needs_calibration
    assert methods.Magnitude(protection=OutlierProtection(top_percent=1)).needs_calibration
