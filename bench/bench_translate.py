"""Generation speed of `featprune eval --task translate`: the same prompts generated with the
scoring batch budget (1024 padded tokens, what generation used before) and with generation's own
budget (Scorer.generate_batch_tokens, 8192), alternating, in one process; outputs must be equal.

    featprune data gettext --langs fr --out /tmp/corpus
    python bench/bench_translate.py --data /tmp/corpus [--model gemma3] [--limit 16] [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="`featprune data gettext` output")
    p.add_argument("--model", default="gemma3", choices=["gemma3", "smollm2"])
    p.add_argument("--lang", default="fr")
    p.add_argument("--limit", type=int, default=16)
    p.add_argument("--shots", type=int, default=4)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()

    from featprune_ext.data import zoo
    from featprune_ext.data.languages import resolve
    from featprune_ext.study import tasks
    from featprune_ext.study.scorer import Scorer

    model = zoo.gemma3_270m_dir() if args.model == "gemma3" else zoo.smollm2_dir()
    scorer = Scorer(model, threads=args.threads, progress=False)
    lang = resolve(args.lang)
    items, demos = tasks.translate_items(args.data, lang, args.limit, 0, args.shots)
    eos = scorer.tok.eos_token or "\n"  # the prompt format of study.runner's translate task
    prefix = "".join(f"{lang.name}: {s}{eos}English: {t}{eos}" for s, t in demos)
    prompts = [f"{prefix}{lang.name}: {it['src']}{eos}English:" for it in items]
    arms = {"scoring budget (1024)": 1024, f"generation budget ({scorer.generate_batch_tokens})":
            scorer.generate_batch_tokens}
    times: dict[str, list[float]] = {k: [] for k in arms}
    outputs = {}
    for _ in range(args.repeats):
        for name, budget in arms.items():
            scorer.generate_batch_tokens = budget
            t0 = time.perf_counter()
            outputs[name] = scorer.generate(prompts, max_new_tokens=64)
            times[name].append(time.perf_counter() - t0)
    same = len({tuple(o) for o in outputs.values()}) == 1
    print(f"{args.model}, {len(prompts)} {args.lang}->en items, {args.shots} shots, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f} at the end")
    base = min(times["scoring budget (1024)"])
    print("| generation batches | seconds per run | best / scoring budget's best |\n|---|---|---:|")
    for name, ts in times.items():
        print(f"| {name} | {' / '.join(f'{t:.1f}' for t in ts)} | {min(ts) / base:.2f} |")
    print(f"outputs identical: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
