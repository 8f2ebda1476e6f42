"""A naive in-memory Wanda, written like the paper's code: the test oracle and bench baseline.

It loads the whole model with from_pretrained, captures every layer's inputs with forward
pre-hooks during real forward passes (per layer, so Gemma 2/3's sliding vs global layers
get their own masks and rotary embeddings), then for each block: hooks on every nn.Linear /
Conv1D keep Wanda's running mean of x^2 over non-padding tokens in fp32 (its add_batch),
overall and per calibration bucket, plus the running max |x| per bucket; scaler = sqrt of
the mean, reference.prune_mask per matrix, zero, rerun the block. It shares no code with the
engine's statistics, capture, methods or checkpoint paths, so agreement between the two is
evidence for both. `naive_prune` takes the column scale and protected columns as functions
of these statistics, so the contrastive method and outlier protection are checked the same way.

    PYTHONPATH=tests/helpers python -m naive MODEL_DIR --calib-texts F.jsonl --nsamples N --seqlen L \
        --sparsity S [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from featprune_ext import reference
from featprune_ext.data.calibration_set import CalibrationSet, read_jsonl_texts
from featprune_ext.engine import make_batches, pad_id_for, peak_rss_bytes
from featprune_ext.engine.families import find_blocks, prunable_linears

__all__ = ["NaiveStats", "naive_prune", "naive_wanda"]


class _Stop(Exception):
    pass


@dataclass
class NaiveStats:
    """One matrix's input statistics, kept the way Wanda's WrappedGPT keeps them (running means)."""

    mean_sq: torch.Tensor  # fp32 [F]: running mean of x^2 over every counted token (Wanda's scaler_row)
    bucket_mean_sq: torch.Tensor  # fp32 [K, F]: the same per calibration bucket
    bucket_tokens: list  # counted tokens per bucket
    absmax: torch.Tensor  # fp32 [K, F]: max |x| per bucket
    bucket_names: list

    def rms(self, buckets=None) -> torch.Tensor:
        """sqrt(mean x^2) over the named buckets (all tokens when None)."""
        if buckets is None:
            return self.mean_sq.sqrt()
        idx = [self.bucket_names.index(b) for b in buckets]
        n = sum(self.bucket_tokens[i] for i in idx)
        return (sum(self.bucket_mean_sq[i] * (self.bucket_tokens[i] / n) for i in idx)).sqrt()

    def max_abs(self, buckets=None) -> torch.Tensor:
        idx = range(len(self.bucket_names)) if buckets is None else [self.bucket_names.index(b) for b in buckets]
        return torch.stack([self.absmax[i] for i in idx]).amax(dim=0)


class _Wrapped:
    """Wanda's WrappedGPT for one matrix: running means of x^2 over the non-padding tokens
    (overall and per bucket) and the running max |x| per bucket."""

    def __init__(self, features: int, buckets: int, current: dict, device):
        self.current = current  # {"mask": this batch's token mask, "bucket": its bucket}
        self.scaler = torch.zeros(features, dtype=torch.float32, device=device)
        self.nsamples = 0
        self.b_scaler = torch.zeros(buckets, features, dtype=torch.float32, device=device)
        self.b_nsamples = [0] * buckets
        self.b_absmax = torch.zeros(buckets, features, dtype=torch.float32, device=device)

    def add_batch(self, module, args):  # Wanda's WrappedGPT.add_batch, minus the padding
        x = args[0].reshape(-1, args[0].shape[-1])
        keep = self.current["mask"].reshape(-1)
        if not bool(keep.all()):
            x = x[keep]  # padding never enters the statistics
        x = x.float()
        tmp = x.shape[0]
        self.scaler *= self.nsamples / (self.nsamples + tmp)
        self.nsamples += tmp
        self.scaler += torch.norm(x, p=2, dim=0) ** 2 / self.nsamples
        b = self.current["bucket"]
        if tmp:
            seen = self.b_nsamples[b]
            self.b_scaler[b] *= seen / (seen + tmp)
            self.b_nsamples[b] = seen + tmp
            self.b_scaler[b] += torch.norm(x, p=2, dim=0) ** 2 / self.b_nsamples[b]
            self.b_absmax[b] = torch.maximum(self.b_absmax[b], x.abs().amax(dim=0))

    def stats(self, bucket_names) -> NaiveStats:
        return NaiveStats(self.scaler, self.b_scaler, self.b_nsamples, self.b_absmax, bucket_names)


def run_layer(layer, call, x):
    """layer's output for input x and one captured call (args after the input, kwargs, input given as kwarg)."""
    args, kwargs, as_kw = call
    kwargs = dict(kwargs)
    if as_kw:
        kwargs.pop("hidden_states", None)
        out = layer(*args, hidden_states=x, **kwargs)
    else:
        out = layer(x, *args, **kwargs)
    return out[0] if isinstance(out, (tuple, list)) else out


@torch.no_grad()
def load_and_capture(model_dir, calibration: CalibrationSet, batch_size: int, device: str):
    """The whole model loaded with from_pretrained, and from real forward passes with pre-hooks: the
    inputs of layer 0 per batch and every layer's call arguments per batch. Returns
    (model, blocks path, layers, batches, layer-0 inputs, calls per layer)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype="auto").to(device).eval()
    path, layers = find_blocks(model)
    vocab = model.get_input_embeddings().weight.shape[0]
    batches = make_batches(calibration, batch_size, pad_id_for(model.config, vocab))
    inps, calls = [], [[] for _ in layers]

    def pre_hook(idx):
        def hook(module, args, kwargs):
            calls[idx].append((args[1:], dict(kwargs), not args))
            if idx == 0:
                inps.append(args[0] if args else kwargs["hidden_states"])
            if idx == len(layers) - 1:
                raise _Stop

        return hook

    handles = [layer.register_forward_pre_hook(pre_hook(i), with_kwargs=True) for i, layer in enumerate(layers)]
    for b in batches:
        try:
            model(input_ids=b.ids.to(device), attention_mask=b.mask.long().to(device), use_cache=False)
        except _Stop:
            pass
    for h in handles:
        h.remove()
    return model, path, layers, batches, inps, calls


def naive_wanda(model_dir, calibration: CalibrationSet, **kwargs):
    """Wanda: col_scale = sqrt(mean over all counted tokens of x^2). See naive_prune."""
    return naive_prune(model_dir, calibration, **kwargs)


@torch.no_grad()
def naive_prune(model_dir, calibration: CalibrationSet, *, sparsity: float | None = None, pattern=None,
                batch_size: int = 1, device: str = "cpu", out_dir=None, return_masks: bool = True,
                scale: Optional[Callable[[NaiveStats, str], torch.Tensor]] = None,
                protect: Optional[Callable[[NaiveStats, str], Optional[torch.Tensor]]] = None,
                protected_out: Optional[dict] = None):
    """Prune in memory. Returns {checkpoint-style weight name: bool mask (True = zero) in the
    stored orientation} when return_masks; saves the model to out_dir when given.

    scale(stats, name) -> fp32 [in_features] column scale (default: Wanda's stats.rms());
    protect(stats, name) -> bool [in_features] columns never pruned, or None; the protected
    column indices per matrix go into `protected_out` when given."""
    scale = scale or (lambda st, name: st.rms())
    model, path, layers, batches, inps, calls = load_and_capture(model_dir, calibration, batch_size, device)
    n, m = pattern or (0, 0)

    masks = {}
    for i, layer in enumerate(layers):
        subset = prunable_linears(layer)
        current = {}
        wrapped = {pl.name: _Wrapped(pl.in_features, len(calibration.bucket_names), current, device) for pl in subset}
        handles = [pl.module.register_forward_pre_hook(wrapped[pl.name].add_batch) for pl in subset]
        for call, x, b in zip(calls[i], inps, batches):
            current["mask"] = b.mask.to(device)
            current["bucket"] = b.bucket
            run_layer(layer, call, x)
        for h in handles:
            h.remove()
        for pl in subset:
            key = f"{path}.{i}.{pl.param_name}"
            stats = wrapped[pl.name].stats(list(calibration.bucket_names))
            col_scale = scale(stats, key).float()  # Wanda: sqrt(mean over tokens of x^2)
            protected = protect(stats, key) if protect is not None else None
            if protected_out is not None and protect is not None:
                protected_out[key] = [] if protected is None else torch.nonzero(protected).flatten().tolist()
            w = pl.weight_rows()
            mask = reference.prune_mask(w, col_scale, sparsity=sparsity, n=n, m=m, protect=protected)
            w[mask] = 0
            if return_masks:
                stored = mask.t() if pl.transposed else mask
                masks[key] = stored.cpu().clone()
        inps = [run_layer(layer, call, x) for call, x in zip(calls[i], inps)]
    if out_dir is not None:
        model.save_pretrained(out_dir)
    return masks if return_masks else None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m featprune_ext.naive", description=__doc__.splitlines()[0])
    p.add_argument("model_dir")
    p.add_argument("--calib-texts", required=True)
    p.add_argument("--nsamples", type=int, default=128)
    p.add_argument("--seqlen", type=int, default=2048)
    p.add_argument("--sparsity", type=float, default=0.5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    from transformers import AutoTokenizer

    t0 = time.perf_counter()
    texts, buckets = read_jsonl_texts(args.calib_texts)
    tok = AutoTokenizer.from_pretrained(args.model_dir)
    calib = CalibrationSet.from_texts(texts, tok, args.nsamples, args.seqlen, args.seed, buckets=buckets)
    naive_wanda(args.model_dir, calib, sparsity=args.sparsity, batch_size=args.batch_size, out_dir=args.out,
                return_masks=False)
    print(json.dumps({"wall_s": time.perf_counter() - t0, "peak_rss_bytes": peak_rss_bytes()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
