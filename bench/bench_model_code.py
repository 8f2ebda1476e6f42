"""One block, built-in model code (models/) against transformers' classes: same inputs, interleaved.

    python bench/bench_model_code.py [MODEL_DIR] [--block 0] [--repeats 5]

Builds the engine's skeleton both ways, captures the block's calls on 3 batches of 4 x 512 random
tokens, times a forward pass of the block per arm, alternating which goes first, and checks the outputs are equal.
Default model: the random 0.63B Qwen2-shaped model bench_engine.py builds.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from featprune_ext.engine import Batch, ModelSkeleton, capture_block_calls
from featprune_ext.engine.checkpoint import Checkpoint

DEFAULT = Path.home() / ".cache" / "featprune" / "bench" / "qwen2-0.5b-random"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model_dir", nargs="?", default=str(DEFAULT))
    p.add_argument("--block", type=int, default=0)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    g = torch.Generator().manual_seed(0)
    arms = {}
    for code in ("auto", "transformers"):
        skel = ModelSkeleton(Checkpoint(args.model_dir), model_code=code)
        if not arms:
            ids = torch.randint(3, skel.config.vocab_size, (4, 512), generator=g)
            batches = [Batch(ids, torch.ones_like(ids, dtype=torch.bool), 0) for _ in range(3)]
        with torch.no_grad():
            skel.load_pre_block(torch.cat([b.ids.reshape(-1) for b in batches]), torch.device("cpu"), skel.dtype)
            calls, hidden = capture_block_calls(skel.model, skel.blocks, batches, torch.device("cpu"))
            block = skel.attach_block(args.block, skel.read_block(args.block), torch.device("cpu"), skel.dtype)
        arms[skel.model_code] = (calls[args.block], hidden, block)
    times = {name: [] for name in arms}
    outs = {}
    with torch.no_grad():
        for rep in range(args.repeats):
            order = list(arms.items())
            for name, (calls, hidden, block) in (order if rep % 2 == 0 else order[::-1]):  # each arm goes first
                t = time.perf_counter()
                outs[name] = [c.run(block, h) for c, h in zip(calls, hidden)]
                times[name].append(time.perf_counter() - t)
    a, b = outs.values()
    print("outputs equal:", all(torch.equal(x, y) for x, y in zip(a, b)))
    for name, ts in times.items():
        print(f"{name}: median {sorted(ts)[len(ts) // 2]:.3f} s a pass ({', '.join(f'{t:.3f}' for t in ts)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
