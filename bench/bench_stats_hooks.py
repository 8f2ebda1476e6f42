"""The statistics pass against a plain pass of the same block, in one process, nothing else running:
what the hooks (ops.accumulate_stats on every prunable linear's input) cost by themselves, without
the engine's background reader and writer threads; and the statistics pass as the engine runs it,
each batch stopped once the block's last linear has its input (engine/call_order.py).

    python bench/bench_stats_hooks.py --model gemma3-270m --nsamples 16 --blocks 0 8 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="gemma3-270m", choices=("smollm2", "gemma3-270m", "qwen2-0.5b"))
    p.add_argument("--nsamples", type=int, default=16)
    p.add_argument("--seqlen", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--blocks", type=int, nargs="+", default=[0, 8])
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from featprune_ext.data.calibration_set import CalibrationSet, read_jsonl_texts
    from featprune_ext.engine.batches import make_batches, pad_id_for
    from featprune_ext.engine.capture import capture_block_calls
    from featprune_ext.engine.families import find_blocks, prunable_linears
    from featprune_ext.engine.stats import collect_stats

    sys.path.insert(0, str(HERE))
    from bench_engine import demonstration_texts, model_dir

    d = model_dir(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "calib.jsonl"
        path.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n"
                                for t in demonstration_texts(args.nsamples, shots=8)), encoding="utf-8")
        texts, buckets = read_jsonl_texts(path)
    calib = CalibrationSet.from_texts(texts, AutoTokenizer.from_pretrained(d), args.nsamples, args.seqlen, 0,
                                      buckets=buckets)
    model = AutoModelForCausalLM.from_pretrained(d).eval()
    _, blocks = find_blocks(model)
    batches = make_batches(calib, args.batch_size, pad_id_for(model.config, model.config.get_text_config().vocab_size))
    cpu = torch.device("cpu")
    print(f"{args.model}: {calib.num_tokens} tokens in {len(batches)} batches; seconds per pass of one block")
    print("| block | repeat | plain pass | stats pass, whole | stats pass, stopped at the last linear "
          "| whole / plain | stopped / plain |\n|---:|---:|---:|---:|---:|---:|---:|")
    orders = {}  # learnt on the first stopped pass's first batch, as in the engine
    with torch.no_grad():
        calls, hidden = capture_block_calls(model, blocks, batches, cpu)
        for i in args.blocks:
            for rep in range(args.repeats):  # alternating, so both see the same conditions
                t = time.perf_counter()
                for c, h in zip(calls[i], hidden):
                    c.run(blocks[i], h)
                plain = time.perf_counter() - t
                linears = prunable_linears(blocks[i])
                t = time.perf_counter()
                collect_stats(blocks[i], linears, calls[i], hidden, batches, calib.bucket_names, cpu)
                whole = time.perf_counter() - t
                t = time.perf_counter()
                collect_stats(blocks[i], linears, calls[i], hidden, batches, calib.bucket_names, cpu,
                              call_orders=orders)
                stopped = time.perf_counter() - t
                print(f"| {i} | {rep} | {plain:.3f} | {whole:.3f} | {stopped:.3f} | {whole / plain:.2f} "
                      f"| {stopped / plain:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
