"""Recovery without a training run: pull a cut block back toward what the dense block computes.

(a) `refit_consumer`: least squares on the consumer matrix (down_proj on the kept channels, o_proj on the
    kept heads) from the Gram matrix G = X^T X of its dense input over the calibration tokens:
        W' = argmin ||X_keep W'^T - X W^T||^2 + lam ||W' - W_keep||^2
           = (W G[:, keep] + lam W_keep) (G[keep, keep] + lam I)^-1,  lam = damp * mean diag G[keep, keep].
    The ridge pulls toward the kept weights rather than toward zero, so a large damp means "no refit";
    like SparseGPT's percdamp it also keeps the solve well-posed.
(b) `adam_refit`: Adam steps on the kept weights of a module (the MLP, or attention) to match a target on
    the calibration tokens, one block in memory, deterministic given a seed (the minibatches come from a
    seeded generator; CPU arithmetic is then the same run to run). The learning rate is relative: each
    tensor's step size is `lr` times its own RMS, since Adam's step is about lr per weight whatever the
    weight's scale, and checkpoints differ by more than 10x (SmolLM2's MLP weights have RMS ~0.19, Gemma 3
    270M's down_proj ~0.014: one absolute rate cannot suit both). It decays to zero on a cosine, so the last
    steps average out the minibatches' noise instead of adding to it.
    The weights are plugged in with torch.func.functional_call, so the cut tensors need no new module.
    The target is the dense module's output on the same inputs, or, for the MLP (steps.py, target
    "model"), what the MLP must add to the cut residual stream to put it where the dense model has it.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn
from torch.func import functional_call

__all__ = ["RECOVERIES", "adam_refit", "call_loss", "refit_consumer", "rows_loss", "token_loss"]

RECOVERIES = ("none", "ls", "adam")


def refit_consumer(weight: torch.Tensor, gram: torch.Tensor, keep, damp: float = 0.01) -> torch.Tensor:
    """The consumer [out, F] refit on its kept input features (ascending `keep`): [out, len(keep)], weight's dtype.
    `gram`: sum over the calibration tokens of x x^T of the consumer's dense input, [F, F]."""
    if damp <= 0:
        raise ValueError(f"damp must be > 0, got {damp}")
    keep = torch.as_tensor(keep, dtype=torch.int64, device=weight.device)
    g = gram.to(device=weight.device, dtype=torch.float64)
    g_kk = g.index_select(0, keep).index_select(1, keep)
    lam = damp * float(g_kk.diagonal().mean())
    if not lam > 0:
        raise RuntimeError("the Gram matrix of the kept inputs is zero: no calibration token reached them")
    w = weight.to(torch.float64)
    rhs = w @ g.index_select(1, keep) + lam * w.index_select(1, keep)  # [out, K]
    a = g_kk + lam * torch.eye(keep.numel(), dtype=torch.float64, device=weight.device)
    factor = torch.linalg.cholesky(a)
    refit = torch.cholesky_solve(rhs.t().contiguous(), factor).t()  # a is symmetric: (a^-1 rhs^T)^T
    return refit.to(weight.dtype).contiguous()


def token_loss(module: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, batch_tokens: int,
               post: Callable[[torch.Tensor], torch.Tensor] | None = None) \
        -> Callable[[dict, torch.Generator], torch.Tensor]:
    """Loss of a token-wise module (an MLP): mean squared error on `batch_tokens` tokens drawn at random
    from inputs/targets [N, hidden] (non-padding tokens only). `post`: a fixed function of the module's
    output before the comparison (Gemma 3's norm on the MLP output)."""
    return rows_loss(module, lambda idx: (inputs[idx.to(inputs.device)], targets[idx.to(targets.device)]),
                     inputs.shape[0], batch_tokens, post)


def rows_loss(module: nn.Module, rows: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]], n: int,
              batch_tokens: int, post: Callable[[torch.Tensor], torch.Tensor] | None = None) \
        -> Callable[[dict, torch.Generator], torch.Tensor]:
    """As token_loss, with the (inputs, targets) rows of token indices [k] (of n) given by `rows`: so that
    they can be computed per minibatch instead of kept for every token."""

    def loss(params: dict, gen: torch.Generator) -> torch.Tensor:
        x, y = rows(torch.randint(n, (min(batch_tokens, n),), generator=gen))
        pred = functional_call(module, params, (x.float(),), strict=False)  # fp32, as the params
        if post is not None:
            pred = post(pred)
        return torch.nn.functional.mse_loss(pred.float(), y.float())

    return loss


def _fp32(value):
    """value with its floating tensors (in tuples, lists and dicts too) as fp32."""
    if torch.is_tensor(value):
        return value.float() if value.is_floating_point() else value
    if isinstance(value, (tuple, list)):
        return type(value)(_fp32(v) for v in value)
    if isinstance(value, dict):
        return {k: _fp32(v) for k, v in value.items()}
    return value


def call_loss(module: nn.Module, calls: list[tuple[tuple, dict]], targets: list[torch.Tensor],
              masks: list[torch.Tensor]) -> Callable[[dict, torch.Generator], torch.Tensor]:
    """Loss of a sequence module (attention) called as module(*args, **kwargs) per batch: mean squared error
    on one randomly drawn batch's non-padding tokens. The module runs in fp32 whatever the checkpoint's
    dtype, as the trained copies are fp32: its other parameters (Gemma 3's q_norm, k_norm) and the call's
    floating tensors (hidden states, rotary embeddings, mask) are cast for the replay."""
    frozen = {name: p.detach().float() for name, p in module.named_parameters()}

    def loss(params: dict, gen: torch.Generator) -> torch.Tensor:
        b = int(torch.randint(len(calls), (1,), generator=gen))
        args, kwargs = calls[b]
        out = functional_call(module, {**frozen, **params}, _fp32(args), _fp32(kwargs), strict=False)
        out = out[0] if isinstance(out, (tuple, list)) else out
        keep = masks[b].reshape(-1).to(out.device)
        pred = out.reshape(-1, out.shape[-1])[keep].float()
        return torch.nn.functional.mse_loss(pred, targets[b].reshape(-1, out.shape[-1])[keep].float())

    return loss


def adam_refit(params: dict[str, torch.Tensor], loss_of: Callable[[dict, torch.Generator], torch.Tensor], *,
               steps: int = 200, lr: float = 1e-3, seed: int = 0) -> dict[str, torch.Tensor]:
    """`steps` Adam steps on copies of `params` (fp32) minimising loss_of(params, generator); each tensor's
    learning rate is `lr` x its RMS (a zero tensor stays put), decaying to 0 on a cosine. Returns them in
    their original dtypes. The generator is seeded: the same inputs give the same weights."""
    if steps < 0 or lr <= 0:
        raise ValueError(f"steps must be >= 0 and lr > 0, got {steps}, {lr}")
    dtypes = {k: v.dtype for k, v in params.items()}
    trained = {k: v.detach().float().clone().requires_grad_(True) for k, v in params.items()}
    gen = torch.Generator().manual_seed(seed)
    peaks = [lr * float(t.detach().pow(2).mean().sqrt()) for t in trained.values()]
    opt = torch.optim.Adam([{"params": [t], "lr": peak} for t, peak in zip(trained.values(), peaks)])
    with torch.enable_grad():
        for step in range(steps):
            for group, peak in zip(opt.param_groups, peaks):
                group["lr"] = peak * 0.5 * (1 + math.cos(math.pi * step / steps))
            opt.zero_grad(set_to_none=True)
            loss = loss_of(trained, gen)
            loss.backward()
            opt.step()
    return {k: v.detach().to(dtypes[k]) for k, v in trained.items()}
