#!/usr/bin/env bash
# One-shot GPU check for a lent device (H100/H200): build for sm_90, run the
# CUDA tests and the kernel bench (and the engine check when present), print a
# short table. Keep it under ~5 minutes. Output also lands in $OUT if set.
#   bash bench/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${OUT:-bench/out}"
mkdir -p "$OUT_DIR"
log() { echo "== $*"; }

log "device"; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"

log "build (sm_90, CUDA required)"
start=$(date +%s)
FEATPRUNE_CUDA=ON FEATPRUNE_CUDA_ARCHS=90 pip install --no-build-isolation --no-deps . -q \
  > "$OUT_DIR/build.log" 2>&1 || { tail -40 "$OUT_DIR/build.log"; exit 1; }
echo "build took $(( $(date +%s) - start )) s"
python -c "import featprune_ext; print(featprune_ext.build_info())"

log "CUDA tests"
timeout 240 python -m pytest -q -m cuda tests/test_prune_rows.py tests/test_accumulate_stats.py \
  tests/test_validation.py -p no:cacheprovider 2>&1 | tail -15 | tee "$OUT_DIR/cuda_tests.txt"

log "kernel bench"
timeout 240 python bench/bench_kernels.py --device cuda --repeats 20 2>&1 | tee "$OUT_DIR/bench_kernels_cuda.md"

if [ -f bench/gpu_engine_check.py ]; then
  log "engine check (7B-shaped Llama under a device-memory cap)"
  timeout 330 python bench/gpu_engine_check.py --layers "${FEATPRUNE_GPU_LAYERS:-32}" 2>&1 | tail -20 | tee "$OUT_DIR/engine_cuda.txt"
fi
