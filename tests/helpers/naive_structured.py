"""An independent naive structured pruner: the oracle of tests/structured.

Whole model in memory (from_pretrained) and its checkpoint tensors (safetensors); every statistic comes
from a full-model forward with hooks on the one module it needs, accumulated with plain torch; scores,
choices, cuts and refits are written out with explicit loops over features, heads and tokens. It imports
nothing from featprune_ext.structured or the engine, so agreement is evidence for both.

Definitions it implements (docs/structured.md):
- channel j of block i: sqrt(mean x_j^2) * ||W_down[:, j]|| (wanda) or ||W_down[:, j]|| (magnitude), x = down_proj's
  input; group g: sqrt of the sum over its o_proj inputs of the same per-feature score squared;
- removal: lowest scores first, ties to the lower index; the same count in every kept block;
- blocks: lowest mean (1 - cos(block input, block output)) over non-padding tokens on the dense model;
- experts: lowest mean over routed non-padding tokens of routing weight x ||expert output|| on the dense model;
- LS refit: W' = (W G[:, k] + lam W[:, k]) (G[k, k] + lam I)^-1, lam = damp * mean diag G[k, k];
- Adam: on at most `fit_tokens` of the N calibration tokens (all when N <= fit_tokens, else the rows
  `torch.randperm(N, generator seeded with seed)[:fit_tokens]`, in token order), per step
  `torch.randint(N, (min(B, N),), generator=gen)` tokens, MSE of post(MLP(x)) (post: Gemma 3's
  post_feedforward_layernorm, else identity) to post(dense MLP(x)) (target "block") or to that plus
  d - o (target "model"; d: the dense model's output of the block, a second copy of the model with the same
  blocks dropped; o: the cut model's output of the block with its MLP still dense), Adam with torch's default
  betas/eps written out by hand, each matrix's lr = lr x its RMS at the start, decaying as
  x (1 + cos(pi * (step - 1) / steps)) / 2.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

# family -> (gate, up, down) leaf names of one expert in the checkpoint
EXPERT_LEAVES = {"mixtral": ("w1", "w3", "w2"), "qwen2_moe": ("gate_proj", "up_proj", "down_proj"),
                 "qwen3_moe": ("gate_proj", "up_proj", "down_proj")}
EXPERT_MODULE = {"mixtral": "block_sparse_moe", "qwen2_moe": "mlp", "qwen3_moe": "mlp"}


class _Skip(nn.Module):
    """A dropped block: the hidden states pass through."""

    def forward(self, hidden_states, *args, **kwargs):
        return hidden_states


def _forward_all(model, batches):
    for ids, mask in batches:
        model(input_ids=ids, attention_mask=mask.long(), use_cache=False)


def _lowest(scores: list[float], remove: int) -> list[int]:
    order = sorted(range(len(scores)), key=lambda i: (scores[i], i))
    return sorted(order[:remove])


def _kept(n: int, removed: list[int]) -> list[int]:
    return [i for i in range(n) if i not in removed]


def _gram_of_input(model, module, batches):
    """(sum over counted tokens of x^T x in float64, token count) of `module`'s input."""
    state = {"g": None, "n": 0}
    mask_now = {}

    def hook(mod, args):
        x = args[0].reshape(-1, args[0].shape[-1])
        keep = mask_now["m"].reshape(-1)
        x = x[keep].double()
        state["g"] = x.t() @ x if state["g"] is None else state["g"] + x.t() @ x
        state["n"] += x.shape[0]

    h = module.register_forward_pre_hook(hook)
    try:
        for ids, mask in batches:
            mask_now["m"] = mask
            model(input_ids=ids, attention_mask=mask.long(), use_cache=False)
    finally:
        h.remove()
    return state["g"], state["n"]


def _io_of(model, module, batches):
    """The module's (inputs, outputs) on every counted token, concatenated in batch order."""
    xs, ys, mask_now = [], [], {}

    def hook(mod, args, kwargs, out):
        keep = mask_now["m"].reshape(-1)
        x = args[0] if args else kwargs["hidden_states"]
        out = out[0] if isinstance(out, tuple) else out
        xs.append(x.reshape(-1, x.shape[-1])[keep].detach().clone())
        ys.append(out.reshape(-1, out.shape[-1])[keep].detach().clone())

    h = module.register_forward_hook(hook, with_kwargs=True)
    try:
        for ids, mask in batches:
            mask_now["m"] = mask
            model(input_ids=ids, attention_mask=mask.long(), use_cache=False)
    finally:
        h.remove()
    return torch.cat(xs), torch.cat(ys)


def _ls_refit(w: torch.Tensor, g: torch.Tensor, keep: list[int], damp: float) -> torch.Tensor:
    w = w.double()
    gkk = torch.zeros(len(keep), len(keep), dtype=torch.float64)
    for a, i in enumerate(keep):
        for b, j in enumerate(keep):
            gkk[a, b] = g[i, j]
    lam = damp * sum(float(gkk[a, a]) for a in range(len(keep))) / len(keep)
    rhs = w @ g[:, keep] + lam * w[:, keep]
    return torch.linalg.solve(gkk + lam * torch.eye(len(keep), dtype=torch.float64), rhs.t()).t().float()


def _adam_mlp(weights: dict, act, post, x: torch.Tensor, y: torch.Tensor, steps: int, lr: float, tokens: int,
              seed: int):
    """Hand-written Adam (beta 0.9/0.999, eps 1e-8, cosine-decayed lr) on gate/up/down, matching post(MLP(x)) to y."""
    params = {k: v.detach().clone().float().requires_grad_(True) for k, v in weights.items()}
    peak = {k: lr * math.sqrt(float((v.detach().double() ** 2).mean())) for k, v in params.items()}
    m = {k: torch.zeros_like(v) for k, v in params.items()}
    v2 = {k: torch.zeros_like(v) for k, v in params.items()}
    gen = torch.Generator().manual_seed(seed)
    for step in range(1, steps + 1):
        idx = torch.randint(x.shape[0], (min(tokens, x.shape[0]),), generator=gen)
        with torch.enable_grad():
            h = act(x[idx] @ params["gate"].t()) * (x[idx] @ params["up"].t())
            loss = ((post(h @ params["down"].t()) - y[idx]) ** 2).mean()
            grads = torch.autograd.grad(loss, list(params.values()))
        with torch.no_grad():
            for (k, p), gr in zip(params.items(), grads):
                m[k] = 0.9 * m[k] + 0.1 * gr
                v2[k] = 0.999 * v2[k] + 0.001 * gr * gr
                mhat = m[k] / (1 - 0.9 ** step)
                vhat = v2[k] / (1 - 0.999 ** step)
                p -= peak[k] * (1 + math.cos(math.pi * (step - 1) / steps)) / 2 * mhat / (vhat.sqrt() + 1e-8)
    return {k: p.detach() for k, p in params.items()}


def _set(module: nn.Module, name: str, tensor: torch.Tensor) -> None:
    setattr(module, name, nn.Parameter(tensor.clone(), requires_grad=False))


@torch.no_grad()
def naive_structured(model_dir: Path, batches: list[tuple[torch.Tensor, torch.Tensor]], *, mlp: int = 0,
                     kv: int = 0, blocks: int = 0, experts: int = 0, score: str = "wanda", recovery: str = "none",
                     damp: float = 0.01, adam_steps: int = 0, adam_lr: float = 1e-3, adam_tokens: int = 2048,
                     target: str = "model", seed: int = 0, fit_tokens: int = 8192):
    """Counts to remove per block (mlp channels, kv groups, experts) and in all (blocks).
    Returns (cut checkpoint tensors by key, choices)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    cfg = model.config
    ckpt = {}
    for f in sorted(Path(model_dir).glob("*.safetensors")):
        ckpt.update(load_file(f))
    layers = model.model.layers
    n_layers = len(layers)
    choices: dict = {"dropped": [], "kept_groups": {}, "removed_channels": {}, "kept_experts": {}}

    # ---- dense pass: block influence, expert saliency
    if blocks:
        sums, counts, mask_now, inputs = [0.0] * n_layers, [0] * n_layers, {}, {}
        hooks = []
        for i, layer in enumerate(layers):
            def pre(mod, args, kwargs, i=i):
                inputs[i] = args[0] if args else kwargs["hidden_states"]

            def post(mod, args, kwargs, out, i=i):
                out = out[0] if isinstance(out, tuple) else out
                x = inputs[i].reshape(-1, out.shape[-1]).double()
                y = out.reshape(-1, out.shape[-1]).double()
                for t, keep in enumerate(mask_now["m"].reshape(-1).tolist()):
                    if keep:
                        cos = float(x[t] @ y[t]) / (float(x[t].norm()) * float(y[t].norm()))
                        sums[i] += 1.0 - cos
                        counts[i] += 1
            hooks += [layer.register_forward_pre_hook(pre, with_kwargs=True),
                      layer.register_forward_hook(post, with_kwargs=True)]
        for ids, mask in batches:
            mask_now["m"] = mask
            model(input_ids=ids, attention_mask=mask.long(), use_cache=False)
        for h in hooks:
            h.remove()
        choices["dropped"] = _lowest([s / c for s, c in zip(sums, counts)], blocks)
    if experts:
        family = cfg.model_type
        gate_leaf, up_leaf, down_leaf = EXPERT_LEAVES[family]
        moe_name = EXPERT_MODULE[family]
        act = {"silu": F.silu}[cfg.hidden_act]
        n_exp = getattr(cfg, "num_local_experts", None) or cfg.num_experts
        sal_sum = [[0.0] * n_exp for _ in range(n_layers)]
        sal_n = [[0] * n_exp for _ in range(n_layers)]
        mask_now, hooks = {}, []
        for i, layer in enumerate(layers):
            def on_router(mod, args, out, i=i):
                x = args[0].reshape(-1, args[0].shape[-1])
                _, weights, index = out
                for t, keep in enumerate(mask_now["m"].reshape(-1).tolist()):
                    if not keep:
                        continue
                    for slot in range(index.shape[1]):
                        e = int(index[t, slot])
                        key = f"model.layers.{i}.{moe_name}.experts.{e}."
                        hdn = act(ckpt[key + f"{gate_leaf}.weight"] @ x[t]) * (ckpt[key + f"{up_leaf}.weight"] @ x[t])
                        y = ckpt[key + f"{down_leaf}.weight"] @ hdn
                        sal_sum[i][e] += float(weights[t, slot]) * float(y.double().norm())
                        sal_n[i][e] += 1
            hooks.append(layer.mlp.gate.register_forward_hook(on_router))
        for ids, mask in batches:
            mask_now["m"] = mask
            model(input_ids=ids, attention_mask=mask.long(), use_cache=False)
        for h in hooks:
            h.remove()
        for i in range(n_layers):
            sal = [s / n if n else 0.0 for s, n in zip(sal_sum[i], sal_n[i])]
            choices["kept_experts"][i] = _kept(n_exp, _lowest(sal, experts))

    # ---- block by block on the cut model
    for d in choices["dropped"]:
        layers[d] = _Skip()
    dense = None
    if recovery == "adam" and target == "model" and mlp:  # the reference: the dense model, same blocks dropped
        dense = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
        for d in choices["dropped"]:
            dense.model.layers[d] = _Skip()
    heads, n_kv = cfg.num_attention_heads, cfg.num_key_value_heads
    hd = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    hpg = heads // n_kv
    for i in range(n_layers):
        if i in choices["dropped"] or not (mlp or kv):
            continue
        layer, pre = layers[i], f"model.layers.{i}."
        if kv:
            attn = layer.self_attn
            g, n = _gram_of_input(model, attn.o_proj, batches)
            wo = ckpt[pre + "self_attn.o_proj.weight"]
            scores = []
            for grp in range(n_kv):
                total = 0.0
                for f in range(grp * hpg * hd, (grp + 1) * hpg * hd):
                    s = float(wo[:, f].double().norm())
                    if score == "wanda":
                        s *= math.sqrt(float(g[f, f]) / n)
                    total += s * s
                scores.append(math.sqrt(total))
            keep = _kept(n_kv, _lowest(scores, kv))
            choices["kept_groups"][i] = keep
            q_rows = [(grp * hpg + h) * hd + d for grp in keep for h in range(hpg) for d in range(hd)]
            kv_rows = [grp * hd + d for grp in keep for d in range(hd)]
            for proj, rows in (("q_proj", q_rows), ("k_proj", kv_rows), ("v_proj", kv_rows)):
                for p in ("weight", "bias"):
                    key = pre + f"self_attn.{proj}.{p}"
                    if key in ckpt:
                        ckpt[key] = ckpt[key][rows].clone()
                        _set(getattr(attn, proj), p, ckpt[key])
            new_o = _ls_refit(wo, g, q_rows, damp) if recovery == "ls" else wo[:, q_rows].clone()
            ckpt[pre + "self_attn.o_proj.weight"] = new_o
            _set(attn.o_proj, "weight", new_o)
        if mlp:
            mod = layer.mlp
            g, n = _gram_of_input(model, mod.down_proj, batches)
            wd = ckpt[pre + "mlp.down_proj.weight"]
            scores = []
            for j in range(wd.shape[1]):
                s = float(wd[:, j].double().norm())
                scores.append(s * math.sqrt(float(g[j, j]) / n) if score == "wanda" else s)
            removed = _lowest(scores, mlp)
            choices["removed_channels"][i] = removed
            keep = _kept(wd.shape[1], removed)
            x = y = None
            post = getattr(layer, "post_feedforward_layernorm", None) or (lambda t: t)
            if recovery == "adam":
                if dense is not None:  # before _io_of: the two passes must see the same block
                    drift = _io_of(dense, dense.model.layers[i], batches)[1] - _io_of(model, layer, batches)[1]
                x, y = _io_of(model, mod, batches)  # dense MLP, current inputs
                y = post(y) + (drift if dense is not None else 0)
                if x.shape[0] > fit_tokens:
                    rows = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))[:fit_tokens]
                    rows = torch.tensor(sorted(rows.tolist()))
                    x, y = x[rows], y[rows]
            gate = ckpt[pre + "mlp.gate_proj.weight"][keep].clone()
            up = ckpt[pre + "mlp.up_proj.weight"][keep].clone()
            down = _ls_refit(wd, g, keep, damp) if recovery == "ls" else wd[:, keep].clone()
            if recovery == "adam":
                act_name = getattr(cfg, "hidden_activation", None) or cfg.hidden_act  # Gemma 3 names it apart
                act = {"silu": F.silu, "gelu_pytorch_tanh": lambda t: F.gelu(t, approximate="tanh")}[act_name]
                out = _adam_mlp({"gate": gate, "up": up, "down": down}, act, post, x, y, adam_steps, adam_lr,
                                adam_tokens, seed)
                gate, up, down = out["gate"], out["up"], out["down"]
            for name, t in (("gate_proj", gate), ("up_proj", up), ("down_proj", down)):
                ckpt[pre + f"mlp.{name}.weight"] = t
                _set(getattr(mod, name), "weight", t)

    # ---- experts, blocks: the checkpoint keys
    for i, keep in choices["kept_experts"].items():
        moe_name = EXPERT_MODULE[cfg.model_type]
        base = f"model.layers.{i}.{moe_name}."
        old = {k: v for k, v in ckpt.items() if k.startswith(base + "experts.")}
        for k in old:
            del ckpt[k]
        for new, e in enumerate(keep):
            for leaf in EXPERT_LEAVES[cfg.model_type]:
                ckpt[base + f"experts.{new}.{leaf}.weight"] = old[base + f"experts.{e}.{leaf}.weight"]
        ckpt[base + "gate.weight"] = ckpt[base + "gate.weight"][keep].clone()
    if choices["dropped"]:
        kept_layers = _kept(n_layers, choices["dropped"])
        out = {}
        for k, v in ckpt.items():
            if k.startswith("model.layers."):
                idx, rest = k[len("model.layers."):].split(".", 1)
                if int(idx) in choices["dropped"]:
                    continue
                k = f"model.layers.{kept_layers.index(int(idx))}.{rest}"
            out[k] = v
        ckpt = out
    return ckpt, choices
