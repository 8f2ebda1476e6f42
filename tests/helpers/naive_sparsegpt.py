"""Naive in-memory SparseGPT and OWL, written from the papers: the oracles of the engine's versions.

The whole model is loaded with from_pretrained; every layer's inputs are captured with forward
pre-hooks during real forward passes (tests/helpers/naive.py's load_and_capture), then layer by layer:

- SparseGPT (Frantar & Alistarh, 2023, Algorithm 1): one Hessian per matrix (no sharing between
  q/k/v), kept as the reference's running mean H *= n / (n + b); H += 2/n X^T X over the
  non-padding tokens, in float64 (the reference keeps it in fp32; its ~1e-6 order-dependent
  rounding would flip near-tie mask entries, so the oracle keeps the mean exact and rounds it
  to fp32 once, as the engine does with its float64 sum), then fp32 throughout; dead inputs,
  1% dampening, Cholesky of H^-1 (upper); per block of
  B columns the mask is the floor(rows * B * s) smallest w^2 / [H^-1]_cc^2 of the block (ties: lower
  flat index; N:M: the m - n smallest of each group of m, chosen when the loop reaches the group);
  column by column, the error (w - q) / [H^-1]_cc is spread over the remaining columns.
- OWL (Yin et al., 2024): on the dense model, per layer, Wanda's score |W| * sqrt(scaler_row)
  over the layer's matrices flattened together, outlier ratio = share of scores above M * mean;
  ratios scaled to [0, 2 lambda], shifted to mean (1 - s) of the keep ratios, weighted by the
  parameters of each layer (OWL's code uses the plain mean).

Nothing here is shared with the engine's statistics, capture, methods or checkpoint code (only
make_batches, to feed the same batches, and the family table that names the matrices).
"""

from __future__ import annotations

from pathlib import Path

import torch
from naive import load_and_capture, run_layer
from safetensors.torch import load_file

from featprune_ext.engine.families import prunable_linears

__all__ = ["assert_matches_naive", "naive_owl", "naive_sparsegpt", "obs_prune", "wanda_layerwise"]


def _masked_rows(x, mask):
    x = x.reshape(-1, x.shape[-1])
    return x[mask.reshape(-1)].float()


def _layer_inputs(layer, subset, calls, inps, batches, add):
    """Run the layer over every batch with add(name, non-padding rows of the input) hooks."""
    current = {}

    def hook_for(name):
        def hook(module, args):
            add(name, _masked_rows(args[0], current["mask"]))

        return hook

    handles = [pl.module.register_forward_pre_hook(hook_for(pl.name)) for pl in subset]
    for call, x, b in zip(calls, inps, batches):
        current["mask"] = b.mask
        run_layer(layer, call, x)
    for h in handles:
        h.remove()


def obs_prune(w: torch.Tensor, h: torch.Tensor, *, sparsity=None, n=0, m=0, blocksize=128, damp=0.01):
    """SparseGPT on one fp32 matrix [rows, cols] given its Hessian H: (pruned weights, mask)."""
    w = w.float().contiguous().clone()
    h = h.clone()
    rows, cols = w.shape
    dead = torch.diag(h) == 0
    h[dead, dead] = 1
    w[:, dead] = 0
    h += torch.eye(cols) * (damp * torch.mean(torch.diag(h)))
    hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    mask = torch.zeros(rows, cols, dtype=torch.bool)
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        w1 = w[:, i1:i2].clone()
        q1 = torch.zeros_like(w1)
        err1 = torch.zeros_like(w1)
        d = torch.diag(hinv)[i1:i2]
        mask1 = torch.zeros_like(w1, dtype=torch.bool)
        if not m:
            cost = (w1 ** 2 / d ** 2).flatten()
            k = int(round(cost.numel() * sparsity, 6))
            order = torch.sort(cost, stable=True).indices[:k]
            mask1.view(-1)[order] = True
        for i in range(i2 - i1):
            if m and i % m == 0:
                cost = w1[:, i:i + m] ** 2 / d[i:i + m] ** 2
                order = torch.sort(cost, dim=1, stable=True).indices[:, :m - n]
                mask1[:, i:i + m].scatter_(1, order, True)
            col = w1[:, i]
            q = col.clone()
            q[mask1[:, i]] = 0
            q1[:, i] = q
            err = (col - q) / hinv[i1 + i, i1 + i]
            w1[:, i:] -= err.unsqueeze(1) @ hinv[i1 + i, i1 + i:i2].unsqueeze(0)
            err1[:, i] = err
        w[:, i1:i2] = q1
        mask[:, i1:i2] = mask1
        w[:, i2:] -= err1 @ hinv[i1:i2, i2:]
    return w, mask


@torch.no_grad()
def naive_sparsegpt(model_dir, calibration, *, sparsity=None, pattern=None, targets=None, batch_size=1,
                    blocksize=128, damp=0.01):
    """({weight name: mask in the stored orientation}, {weight name: pruned weight, stored orientation and dtype})."""
    model, path, layers, batches, inps, calls = load_and_capture(model_dir, calibration, batch_size, "cpu")
    n, m = pattern or (0, 0)
    masks, weights = {}, {}
    for i, layer in enumerate(layers):
        subset = prunable_linears(layer)
        hess = {pl.name: torch.zeros(pl.in_features, pl.in_features, dtype=torch.float64) for pl in subset}
        seen = dict.fromkeys(hess, 0)

        def add(name, x, hess=hess, seen=seen):
            b = x.shape[0]
            hess[name] *= seen[name] / (seen[name] + b) if seen[name] + b else 1.0
            seen[name] += b
            if b:
                x = x.double()
                hess[name] += (2 / seen[name]) * (x.t() @ x)

        _layer_inputs(layer, subset, calls[i], inps, batches, add)
        s = targets[i] if targets is not None else sparsity
        for pl in subset:
            key = f"{path}.{i}.{pl.param_name}"
            w = pl.weight_rows()
            pruned, mask = obs_prune(w.float(), hess[pl.name].float(), sparsity=s, n=n, m=m, blocksize=blocksize,
                                     damp=damp)
            w.copy_(pruned)
            masks[key] = (mask.t() if pl.transposed else mask).clone()
            weights[key] = pl.module.weight.data.clone()
        inps = [run_layer(layer, call, x) for call, x in zip(calls[i], inps)]
    return masks, weights


def _wanda_scalers(layer, subset, calls, inps, batches):
    scaler = {pl.name: torch.zeros(pl.in_features) for pl in subset}
    seen = dict.fromkeys(scaler, 0)

    def add(name, x):  # Wanda's WrappedGPT.add_batch over non-padding tokens
        b = x.shape[0]
        if b:
            scaler[name] *= seen[name] / (seen[name] + b)
            seen[name] += b
            scaler[name] += torch.norm(x, p=2, dim=0) ** 2 / seen[name]

    _layer_inputs(layer, subset, calls, inps, batches, add)
    return scaler


@torch.no_grad()
def naive_owl(model_dir, calibration, *, sparsity, m=5.0, lam=0.08, batch_size=1):
    """(outlier ratios, per-layer sparsities, per-layer parameter counts) of OWL on the dense model."""
    model, path, layers, batches, inps, calls = load_and_capture(model_dir, calibration, batch_size, "cpu")
    ratios, params = [], []
    for i, layer in enumerate(layers):
        subset = prunable_linears(layer)
        scaler = _wanda_scalers(layer, subset, calls[i], inps, batches)
        metric = torch.cat([(pl.weight_rows().abs() * scaler[pl.name].sqrt().reshape(1, -1)).flatten()
                            for pl in subset])
        ratios.append(float((metric > torch.mean(metric) * m).sum()) / metric.numel())  # check_outlier_mean
        params.append(metric.numel())
        inps = [run_layer(layer, call, x) for call, x in zip(calls[i], inps)]  # dense outputs
    r = torch.tensor(ratios, dtype=torch.float64)
    p = torch.tensor(params, dtype=torch.float64)
    keep = (r - r.min()) * (1 / (r.max() - r.min()) * lam * 2)
    keep = keep - (keep * p).sum() / p.sum() + (1 - sparsity)
    return ratios, (1 - keep).tolist(), params


@torch.no_grad()
def wanda_layerwise(model_dir, calibration, targets, *, batch_size=1):
    """Wanda masks with a sparsity per layer: {weight name: mask in the stored orientation}."""
    model, path, layers, batches, inps, calls = load_and_capture(model_dir, calibration, batch_size, "cpu")
    masks = {}
    for i, layer in enumerate(layers):
        subset = prunable_linears(layer)
        scaler = _wanda_scalers(layer, subset, calls[i], inps, batches)
        for pl in subset:
            w = pl.weight_rows()
            score = w.abs() * scaler[pl.name].sqrt().reshape(1, -1)
            k = int(round(w.shape[1] * targets[i], 6))
            order = torch.sort(score, dim=1, stable=True).indices[:, :k]
            mask = torch.zeros_like(w, dtype=torch.bool).scatter_(1, order, True)
            w[mask] = 0
            masks[f"{path}.{i}.{pl.param_name}"] = (mask.t() if pl.transposed else mask).clone()
        inps = [run_layer(layer, call, x) for call, x in zip(calls[i], inps)]
    return masks


def assert_matches_naive(out, masks, weights, transposed=False, atol=1e-4):
    """The engine's output in `out` against naive_sparsegpt's masks and weights, with the tolerances
    stated in tests/engine/test_sparsegpt_engine.py (at most one near-tie swap per matrix, >= 99.99%
    of mask entries equal, weights to `atol` outside the rows holding a swap)."""
    sd = {}
    for f in sorted(Path(out).glob("*.safetensors")):
        sd.update(load_file(str(f)))
    differ = total = 0
    for key, mask in masks.items():
        got, want, w_got, w_want = sd[key] == 0, mask, sd[key], weights[key]
        if transposed:  # GPT-2 Conv1D stores [in, out]: compare rows of the [out, in] view
            got, want, w_got, w_want = got.t(), want.t(), w_got.t(), w_want.t()
        swapped = got != want
        assert int(swapped.sum()) <= 2, f"{key}: {int(swapped.sum())} mask entries differ"
        differ, total = differ + int(swapped.sum()), total + mask.numel()
        rows = ~swapped.any(dim=1)
        torch.testing.assert_close(w_got[rows], w_want[rows], rtol=0, atol=atol, msg=key)
    assert differ <= 1e-4 * total
