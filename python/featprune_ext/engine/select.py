"""Which matrices a run prunes: `--targets` and `--ignore` patterns, checked against the model
before any work.

Candidates are every nn.Linear and Conv1D inside the transformer blocks (MoE experts included, one
matrix per expert: see moe.py). A candidate's *name* is its checkpoint key without ".weight", e.g.
`model.layers.0.self_attn.q_proj` or `model.layers.0.block_sparse_moe.experts.3.w1`.

A pattern is classified once, against the model:
* a **class pattern** when it is exactly the name of a module class found in the blocks, or of a
  base class of one (`Linear` also covers the expert matrices; `MixtralExperts` still names experts
  that were unfused): it matches every candidate inside a module of that class, the candidate's
  own module or any module enclosing it in the block (`Linear`, `Conv1D`, `LlamaAttention`);
* otherwise a **regular expression**, matched with `re.fullmatch` against the whole name:
  `.*down_proj`, `model\\.layers\\.(0|1)\\..*`, `.*experts\\.[0-3]\\..*`.

A candidate is pruned when it matches some target (default: every candidate except MoE routers,
see families.ROUTER_NAMES) and no ignore pattern. Every pattern must match at least one candidate:
one that matches nothing is an InputError listing the candidates (layer and expert numbers shown
as *) and the class names. Skipped matrices are copied byte for byte, like norms, and listed in
featprune.json.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Iterable, Optional, Union

from torch import nn

from ..errors import InputError
from .families import PrunableLinear, is_router

__all__ = ["ResolvedSelection", "Selection"]

Patterns = Optional[Union[str, Iterable[str]]]


def _as_tuple(patterns: Patterns, flag: str) -> tuple[str, ...]:
    if patterns is None:
        return ()
    items = (patterns,) if isinstance(patterns, str) else tuple(patterns)
    for p in items:
        if not isinstance(p, str) or not p.strip():
            raise InputError(f"{flag} needs a non-empty pattern (a module class name or a regular expression), "
                             f"got {p!r}")
        try:
            re.compile(p)
        except re.error as exc:
            raise InputError(f"{flag} {p!r} is neither a class name nor a valid regular expression: {exc}") from None
    return items


def _class_names(module: nn.Module) -> list[str]:
    names = [c.__name__ for c in type(module).__mro__ if c not in (nn.Module, object)]
    fused = getattr(module, "fused_class_name", None)
    return names + ([fused] if fused else [])


def _template(name: str) -> str:
    return ".".join("*" if part.isdigit() else part for part in name.split("."))


@dataclass(frozen=True)
class Selection:
    """Target and ignore patterns (see the module docstring). Selection() prunes every candidate
    except MoE routers."""

    targets: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()

    @classmethod
    def of(cls, targets: Patterns = None, ignore: Patterns = None) -> Selection:
        """From a pattern, a list of them or None; InputError on an empty or malformed pattern."""
        return cls(_as_tuple(targets, "--targets"), _as_tuple(ignore, "--ignore"))

    @property
    def is_default(self) -> bool:
        return not self.targets and not self.ignore

    def describe(self) -> dict:
        return {"targets": list(self.targets) or "default (every Linear/Conv1D in the blocks except MoE routers)",
                "ignore": list(self.ignore)}

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps([self.targets, self.ignore]).encode()).hexdigest()[:16]

    def resolve(self, skel) -> ResolvedSelection:
        """Match the patterns against every block of `skel` (a ModelSkeleton); InputError when a
        pattern matches nothing or nothing is left to prune."""
        classes: set[str] = set()
        blocks: list[list[tuple[PrunableLinear, str, set[str]]]] = []
        for i in range(skel.num_blocks):
            block = skel.blocks[i]
            for _, m in block.named_modules():
                classes.update(_class_names(m))
            found = []
            for pl in skel.prunable(i):
                name = skel.block_key(i, pl.param_name).removesuffix(".weight")
                parts = pl.name.split(".")
                enclosing = {c for k in range(len(parts) + 1)
                             for c in _class_names(block.get_submodule(".".join(parts[:k])))}
                found.append((pl, name, enclosing))
            blocks.append(found)
        cands = [(name, pl, enc) for found in blocks for pl, name, enc in found]

        def matcher(pattern: str):
            if pattern in classes:
                return lambda name, enc: pattern in enc
            rx = re.compile(pattern)
            return lambda name, enc: rx.fullmatch(name) is not None

        def hits(pattern: str, flag: str):
            match = matcher(pattern)
            hit = {name for name, _, enc in cands if match(name, enc)}
            if not hit:
                raise InputError(self._nothing_matches(flag, pattern, cands))
            return hit

        target_hits = [hits(p, "--targets") for p in self.targets]
        ignore_hits = [hits(p, "--ignore") for p in self.ignore]
        targeted = set().union(*target_hits) if self.targets else {
            name for name, pl, _ in cands if not is_router(name, pl.module)}
        ignored = set().union(*ignore_hits) if ignore_hits else set()
        reasons = {}
        for name, _, _ in cands:
            if name in ignored:
                reasons[name] = "ignored"
            elif name not in targeted:
                reasons[name] = "not a target" if self.targets else "router"
        if len(reasons) == len(cands):
            raise InputError(f"--targets {list(self.targets)} and --ignore {list(self.ignore)} leave no matrix to "
                             f"prune (of {len(cands)})")
        return ResolvedSelection(self, blocks=[[pl for pl, name, _ in found if name not in reasons]
                                               for found in blocks],
                                 skipped=[[name for _, name, _ in found if name in reasons] for found in blocks],
                                 reasons=reasons)

    @staticmethod
    def _nothing_matches(flag: str, pattern: str, cands) -> str:
        templates = list(dict.fromkeys(_template(name) for name, _, _ in cands))
        shown = ", ".join(templates[:40]) + (f", ... ({len(templates)} in all)" if len(templates) > 40 else "")
        enclosing = sorted(set().union(*(enc for _, _, enc in cands))) if cands else []
        return (f"{flag} {pattern!r} matches no prunable matrix. A pattern is a module class name "
                f"({', '.join(enclosing)}) or a regular expression matched against the whole name with "
                f"re.fullmatch (e.g. '.*down_proj'); the prunable matrices are (* = any layer or expert "
                f"number): {shown}")


@dataclass
class ResolvedSelection:
    """A Selection applied to one model: per block, the matrices to prune and the names skipped."""

    selection: Selection
    blocks: list[list[PrunableLinear]]
    skipped: list[list[str]]
    reasons: dict[str, str] = field(default_factory=dict)

    def pruned(self, i: int) -> list[PrunableLinear]:
        return self.blocks[i]

    def describe(self) -> dict:
        counts: dict[str, int] = {}
        for reason in self.reasons.values():
            counts[reason] = counts.get(reason, 0) + 1
        return {**self.selection.describe(), "skipped_by_reason": counts}

    def all_skipped(self) -> list[str]:
        return [name for names in self.skipped for name in names]
