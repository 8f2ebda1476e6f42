"""Memory-cap bench: prune a model three times larger than the memory the process may use.

Builds (once, cached) a random Llama-shaped fp32 model of ~1.5B parameters (hidden 2048,
MLP 8192, 20 layers, untied 32k vocab: ~5.9 GB), written shard by shard so it is never
whole in memory. Then runs `featprune prune` inside a memory cgroup whose limit is a third
of the model's size (cgroup v1 memory.limit_in_bytes or v2 memory.max; needs root), and
reports success, wall time, the cgroup's peak usage and the process's peak RSS. With
--naive it also runs the naive in-memory reference under the same cap, which must fail.

    sudo python bench/bench_memory_cap.py [--dir /tmp/featprune_bench] [--fraction 0.333] [--naive]

Replaces the "Memory cap" subsection of the Engine section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# the naive in-memory oracle lives with the tests (not in the wheel); children run it as `-m naive`
HELPERS = HERE.parent / "tests" / "helpers"
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HELPERS), os.environ.get("PYTHONPATH")]))
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HELPERS))  # tiny_models: an offline tokenizer

SHAPE = dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=20, num_attention_heads=16,
             num_key_value_heads=16, vocab_size=32000, max_position_embeddings=2048, tie_word_embeddings=False)


def build_model(path: Path, shape: dict, dtype_name: str = "float32", seed: int = 0, device: str = "cpu") -> Path:
    """Write a random Llama-shaped model one layer per shard (never whole in memory);
    `device` only says where the random numbers are drawn (cuda is much faster)."""
    import torch
    from tiny_models import build_tokenizer
    from transformers import LlamaConfig

    from featprune_ext.engine.checkpoint import write_index, write_safetensors

    if (path / "config.json").exists():
        return path
    tmp = path.with_name(path.name + ".building")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    dtype = getattr(torch, dtype_name)
    config = LlamaConfig(**shape, bos_token_id=1, eos_token_id=2, pad_token_id=0, dtype=dtype_name)
    h, f, L, v = shape["hidden_size"], shape["intermediate_size"], shape["num_hidden_layers"], shape["vocab_size"]
    kv = h // shape["num_attention_heads"] * shape["num_key_value_heads"]
    gen = torch.Generator(device).manual_seed(seed)

    def rnd(*s):
        return (torch.randn(*s, generator=gen, device=device) * 0.02).to(dtype).cpu()

    weight_map, total, nshards = {}, 0, L + 1
    name = "model-{:05d}-of-{:05d}.safetensors".format
    outer = {"model.embed_tokens.weight": rnd(v, h), "model.norm.weight": torch.ones(h, dtype=dtype)}
    if not shape.get("tie_word_embeddings", False):
        outer["lm_head.weight"] = rnd(v, h)
    total += write_safetensors(tmp / name(1, nshards), outer.items())
    weight_map.update({k: name(1, nshards) for k in outer})
    del outer
    for i in range(L):
        p = f"model.layers.{i}."
        layer = {p + "self_attn.q_proj.weight": rnd(h, h), p + "self_attn.k_proj.weight": rnd(kv, h),
                 p + "self_attn.v_proj.weight": rnd(kv, h), p + "self_attn.o_proj.weight": rnd(h, h),
                 p + "mlp.gate_proj.weight": rnd(f, h), p + "mlp.up_proj.weight": rnd(f, h),
                 p + "mlp.down_proj.weight": rnd(h, f),
                 p + "input_layernorm.weight": torch.ones(h, dtype=dtype),
                 p + "post_attention_layernorm.weight": torch.ones(h, dtype=dtype)}
        total += write_safetensors(tmp / name(i + 2, nshards), layer.items())
        weight_map.update({k: name(i + 2, nshards) for k in layer})
        del layer
        print(f"  wrote layer {i + 1}/{L}", file=sys.stderr, flush=True)
    write_index(tmp, weight_map, total)
    config.save_pretrained(tmp)
    build_tokenizer(tmp)
    os.replace(tmp, path)
    return path


def calibration_file(path: Path, n: int) -> Path:
    from tiny_models import TEXTS

    texts = [" ".join(TEXTS[(i + j) % len(TEXTS)] for j in range(8)) for i in range(n)]
    path.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts), encoding="utf-8")
    return path


class MemoryCgroup:
    """A child memory cgroup of our own cgroup, v1 or v2, removed on exit."""

    def __init__(self, limit_bytes: int):
        self.limit = limit_bytes
        self.v2 = Path("/sys/fs/cgroup/cgroup.controllers").exists()
        if self.v2:
            own = _own_cgroup("")
            base = Path("/sys/fs/cgroup") / own.lstrip("/")
        else:
            own = _own_cgroup("memory")
            base = Path("/sys/fs/cgroup/memory") / own.lstrip("/")
        self.path = base / f"featprune-bench-{os.getpid()}"

    def __enter__(self):
        try:
            self.path.mkdir()
            if self.v2:
                (self.path / "memory.max").write_text(str(self.limit))
                if (self.path / "memory.swap.max").exists():  # no swapping our way under the cap
                    (self.path / "memory.swap.max").write_text("0")
            else:
                (self.path / "memory.limit_in_bytes").write_text(str(self.limit))
                swap = self.path / "memory.memsw.limit_in_bytes"
                if swap.exists():  # no swapping our way under the cap
                    swap.write_text(str(self.limit))
        except OSError as exc:
            raise SystemExit(f"cannot create a memory cgroup at {self.path} ({exc}); run as root "
                             "with a writable /sys/fs/cgroup") from None
        return self

    def procs_file(self) -> Path:
        return self.path / "cgroup.procs"

    def peak(self) -> int | None:
        for name in ("memory.peak", "memory.max_usage_in_bytes"):
            f = self.path / name
            if f.exists():
                return int(f.read_text().split()[0])
        return None

    def oom_kills(self) -> int:
        for name, key in (("memory.events", "oom_kill"), ("memory.oom_control", "oom_kill")):
            f = self.path / name
            if f.exists():
                for line in f.read_text().splitlines():
                    parts = line.split()
                    if len(parts) == 2 and parts[0] == key:
                        return int(parts[1])
        return 0

    def __exit__(self, *exc):
        for _ in range(50):
            try:
                self.path.rmdir()
                return False
            except OSError:
                time.sleep(0.1)
        return False


def _own_cgroup(controller: str) -> str:
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        hid, controllers, path = line.split(":", 2)
        if (controller and controller in controllers.split(",")) or (not controller and hid == "0"):
            return path
    raise SystemExit(f"no {controller or 'v2'} cgroup in /proc/self/cgroup")


def run_capped(cg: MemoryCgroup, cmd: list[str]) -> tuple[int, float, str]:
    # the child joins the cgroup before exec, so every byte it ever allocates is counted
    wrapped = ["sh", "-c", f'echo $$ > "{cg.procs_file()}" && exec "$@"', "sh", *cmd]
    t0 = time.perf_counter()
    proc = subprocess.run(wrapped, capture_output=True, text=True)
    return proc.returncode, time.perf_counter() - t0, proc.stderr


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dir", default="/tmp/featprune_bench", help="where the random model is cached")
    p.add_argument("--fraction", type=float, default=1 / 3, help="cap = fraction x model size (default 1/3)")
    p.add_argument("--nsamples", type=int, default=8)
    p.add_argument("--seqlen", type=int, default=128)
    p.add_argument("--naive", action="store_true", help="also run the naive reference under the cap")
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    from bench_engine import machine_line, update_results

    work = Path(args.dir)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    cached = (work / "llama-1.5b-fp32" / "config.json").exists()
    model = build_model(work / "llama-1.5b-fp32", SHAPE)
    built = "cached from an earlier run" if cached else f"built in {time.perf_counter() - t0:.0f} s"
    model_bytes = sum(f.stat().st_size for f in model.glob("*.safetensors"))
    limit = int(model_bytes * args.fraction)
    calib = calibration_file(work / "calib.jsonl", args.nsamples)
    out = work / "pruned"
    for d in (out, out.with_name(out.name + ".partial")):
        shutil.rmtree(d, ignore_errors=True)
    machine = machine_line()
    cmd = [sys.executable, "-m", "featprune_ext.cli", "prune", str(model), "--out", str(out), "--calib-texts",
           str(calib), "--nsamples", str(args.nsamples), "--seqlen", str(args.seqlen), "--sparsity", "0.5",
           "--no-progress"]
    with MemoryCgroup(limit) as cg:
        rc, wall, err = run_capped(cg, cmd)
        peak, ooms = cg.peak(), cg.oom_kills()
    gib = 2**30
    lines = [f"Random Llama-shaped model, {model_bytes / 1e9:.2f} GB fp32 ({model_bytes / 4 / 1e9:.2f}B parameters, "
             f"20 blocks), written shard by shard ({built}). {args.nsamples} samples x <= {args.seqlen} tokens, "
             f"50% Wanda, CPU. Cap: cgroup {'v2 memory.max' if cg.v2 else 'v1 memory.limit_in_bytes'} = "
             f"{limit / gib:.2f} GiB ({args.fraction:.2f} of the model). Measured {time.strftime('%Y-%m-%d %H:%M')} "
             f"on {machine}.", ""]
    lines += ["| run | result | wall s | cgroup peak GiB (incl. page cache) | process peak RSS GiB |",
              "|---|---|---:|---:|---:|"]
    if rc == 0:
        report = json.loads((out / "featprune.json").read_text())
        rss = f"{report['peak_rss_bytes'] / gib:.2f}"
        result = f"ok, sparsity {report['overall_sparsity']:.4f}"
    else:
        rss, result = "-", f"FAILED rc={rc}, oom kills {ooms}: {err.strip().splitlines()[-1] if err.strip() else ''}"
    lines.append(f"| streamed engine | {result} | {wall:.0f} | {(peak or 0) / gib:.2f} | {rss} |")
    if args.naive:
        ncmd = [sys.executable, "-m", "naive", str(model), "--calib-texts", str(calib), "--nsamples",
                str(args.nsamples), "--seqlen", str(args.seqlen), "--sparsity", "0.5"]
        with MemoryCgroup(limit) as cg:
            nrc, nwall, _ = run_capped(cg, ncmd)
            npeak, nooms = cg.peak(), cg.oom_kills()
        nres = "ok" if nrc == 0 else f"killed (rc={nrc}, oom kills {nooms})"
        lines.append(f"| naive in-memory | {nres} | {nwall:.0f} | {(npeak or 0) / gib:.2f} | - |")
    body = "\n".join(lines)
    print(body)
    shutil.rmtree(out, ignore_errors=True)
    if not args.no_write:
        update_results("Memory cap: 1.5B fp32 model under a cgroup of 1/3 its size", body)
    return 0 if rc == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
