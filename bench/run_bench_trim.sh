#!/bin/bash
# The runs behind bench/results_trim.md, most important first. Each part caches its results under
# /tmp/featprune_bench_trim, so the last command only renders them. Over an hour on a loaded 2-core CPU.
set -e
cd "$(dirname "$0")/.."
B=".venv/bin/python bench/bench_trim.py --items 12 --ppl-items 20 --decode-tokens 16 --rounds 3"
$B --models gemma3 --only target                                  # Gemma 3 es+en: the issue's targets
$B --models gemma3 --only sweep                                   # --max-tokens sweep (quality only) + plot
$B --models gemma3,smollm2 --only grid --skip quality --skip speed   # sizes and trim cost of the grid
$B --models gemma3,smollm2 --only grid --skip quality --speed-modes scripts   # speed, scripts mode
$B --models gemma3 --only grid --skip speed                       # quality of the grid
$B --models smollm2 --only grid --skip speed
$B --render-only                                                  # bench/results_trim.md from the cache
