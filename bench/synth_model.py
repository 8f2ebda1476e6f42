"""Random models of real shapes, written to disk one block per shard (never whole in memory).

Used by the benches where no real checkpoint of the size is available offline: a Qwen2-0.5B-shaped
model for the CPU floor bench (bench_engine.py) and a 7B-shaped Llama for the GPU check
(gpu_engine_check.py). Weights are N(0, 0.02) (norm weights 1, biases 0): fine for timing and memory,
meaningless as a language model. The tokenizer is the tests' tiny byte-level BPE (any text encodes;
ids stay far below every vocab here).

    python bench/synth_model.py qwen2-0.5b DIR [--dtype float32] [--device cpu]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "helpers"))  # tiny_models: an offline tokenizer

# name -> (transformers config class, config kwargs)
SHAPES: dict[str, tuple[str, dict]] = {
    # Qwen2.5-0.5B's blocks, with an untied output matrix (0.63B parameters; 0.36B of them in blocks)
    "qwen2-0.5b": ("Qwen2Config", dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                                       num_attention_heads=14, num_key_value_heads=2, vocab_size=151936,
                                       max_position_embeddings=32768, tie_word_embeddings=False)),
    # Llama-2-7B's shape: 6.7B parameters, 13.5 GB in bf16
    "llama-7b": ("LlamaConfig", dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                                     num_attention_heads=32, num_key_value_heads=32, vocab_size=32000,
                                     max_position_embeddings=4096, tie_word_embeddings=False)),
    # the same family and vocab at a size a CPU dry run handles in seconds
    "llama-7b-tiny": ("LlamaConfig", dict(hidden_size=128, intermediate_size=344, num_hidden_layers=4,
                                          num_attention_heads=4, num_key_value_heads=4, vocab_size=32000,
                                          max_position_embeddings=4096, tie_word_embeddings=False)),
}


def build_random_model(path: Path, shape: str | tuple[str, dict], dtype_name: str = "float32", seed: int = 0,
                       device: str = "cpu", layers: int | None = None, quiet: bool = False) -> Path:
    """Write a random model of `shape` (a SHAPES name or (config class, kwargs)) to `path`, cached:
    an existing complete directory is returned as is. Built in PATH.building and renamed at the end.
    `device` is only where the random numbers are drawn (cuda is much faster for 7B)."""
    import torch
    import transformers
    from tiny_models import build_tokenizer
    from transformers import AutoModelForCausalLM

    from featprune_ext.engine.checkpoint import write_index, write_safetensors

    path = Path(path)
    if (path / "config.json").exists():
        return path
    cls_name, kwargs = SHAPES[shape] if isinstance(shape, str) else shape
    kwargs = dict(kwargs)
    if layers is not None:
        kwargs["num_hidden_layers"] = layers
    tmp = path.with_name(path.name + ".building")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    dtype = getattr(torch, dtype_name)
    config = getattr(transformers, cls_name)(**kwargs, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    config.dtype = dtype_name
    with torch.device("meta"):
        meta = AutoModelForCausalLM.from_config(config, dtype=dtype)
    params = dict(meta.named_parameters())  # tied parameters appear once, as saved
    nblocks = config.num_hidden_layers
    block_of = {}
    for name in params:
        m = re.match(r"model\.layers\.(\d+)\.", name)
        block_of[name] = int(m.group(1)) + 1 if m else 0
    gen = torch.Generator(device).manual_seed(seed)

    def make(name: str, shape_) -> torch.Tensor:
        if name.endswith("norm.weight"):
            return torch.ones(shape_, dtype=dtype)
        if name.endswith(".bias"):
            return torch.zeros(shape_, dtype=dtype)
        return (torch.randn(*shape_, generator=gen, device=device) * 0.02).to(dtype).cpu()

    shard = "model-{:05d}-of-{:05d}.safetensors".format
    weight_map, total, t0 = {}, 0, time.perf_counter()
    for j in range(nblocks + 1):
        names = [n for n in params if block_of[n] == j]
        entries = [(n, make(n, tuple(params[n].shape))) for n in names]
        total += write_safetensors(tmp / shard(j + 1, nblocks + 1), entries)
        weight_map.update({n: shard(j + 1, nblocks + 1) for n in names})
        del entries
        if not quiet:
            print(f"  wrote shard {j + 1}/{nblocks + 1} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr,
                  flush=True)
    write_index(tmp, weight_map, total)
    config.save_pretrained(tmp)
    build_tokenizer(tmp)
    os.replace(tmp, path)
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("shape", choices=sorted(SHAPES))
    p.add_argument("out", type=Path)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--layers", type=int, default=None)
    args = p.parse_args(argv)
    print(build_random_model(args.out, args.shape, args.dtype, device=args.device, layers=args.layers))
    return 0


if __name__ == "__main__":
    sys.exit(main())
