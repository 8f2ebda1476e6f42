#!/usr/bin/env bash
# One-shot GPU check for a lent H100/H200, meant to finish in under 9.5 minutes:
#   1. build featprune for sm_90 only (CUDA required) into $WORK/site, which then comes first on PYTHONPATH
#   2. the CUDA tests (tests/native and tests/models -m cuda: kernels; built-in model code vs transformers)
#   3. the kernel bench (bench/bench_kernels.py --device cuda)
#   4. the structured check (bench/gpu_structured_check.py, at most 180 s): --structured on the device agrees
#      with CPU on a tiny Llama; decode and prefill tokens/s of a Qwen2-0.5B-shaped model cut mlp=0.25 / 0.5
#   5. the engine check (bench/gpu_engine_check.py): a 7B-shaped bf16 Llama generated on local disk, pruned
#      with 128 x 2048 calibration tokens under a 10 GiB device-memory cap (the model is 12.6 GiB), against
#      the two-forward-pass floor measured on the same device; prints a short table.
#
#   bash bench/gpu_check.sh                        # on the GPU machine
#   bash bench/gpu_check.sh --device cpu --tiny    # dry run of every step on CPU at a tiny shape (~2-3 min)
#
# Environment: OUT (logs; default bench/out), FEATPRUNE_GPU_WORK (model and build; default /tmp/featprune_gpu),
# PYTHON (default: .venv/bin/python if present, else python3), FEATPRUNE_GPU_LAYERS (blocks; default 32),
# FEATPRUNE_GPU_BUDGET_S (whole-script budget; default 560).
set -uo pipefail
cd "$(dirname "$0")/.."
DEVICE=cuda
TINY=0
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE="$2"; shift 2 ;;
    --tiny) TINY=1; shift ;;
    *) echo "usage: bash bench/gpu_check.sh [--device cuda|cpu] [--tiny]" >&2; exit 2 ;;
  esac
done
OUT_DIR="${OUT:-bench/out}"
WORK="${FEATPRUNE_GPU_WORK:-/tmp/featprune_gpu}"
PY="${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}"
BUDGET="${FEATPRUNE_GPU_BUDGET_S:-560}"
mkdir -p "$OUT_DIR" "$WORK"
T0=$(date +%s)
log() { echo "== $* ($(( $(date +%s) - T0 )) s)"; }
left() { local l=$(( BUDGET - ($(date +%s) - T0) )); [ "$l" -lt 20 ] && l=20; echo "$l"; }
STATUS=0
declare -A RESULT

log "device ($DEVICE$([ "$TINY" = 1 ] && echo ', tiny'))"
if [ "$DEVICE" = cuda ]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  nvcc --version 2>/dev/null | tail -1 || echo "nvcc not on PATH"
fi
"$PY" -c "import sys, torch, transformers; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, 'transformers', transformers.__version__)"

log "build ($([ "$DEVICE" = cuda ] && echo 'sm_90, CUDA required' || echo 'CPU only, dry run'))"
if [ "$DEVICE" = cuda ]; then export FEATPRUNE_CUDA=ON FEATPRUNE_CUDA_ARCHS="${FEATPRUNE_CUDA_ARCHS:-90-real}"
else export FEATPRUNE_CUDA=OFF; fi
start=$(date +%s)
if timeout "$(left)" "$PY" -m pip install --no-build-isolation --no-deps --upgrade --target "$WORK/site" . -q \
    > "$OUT_DIR/build.log" 2>&1; then
  RESULT[build]="ok, $(( $(date +%s) - start )) s"
else
  tail -40 "$OUT_DIR/build.log"; echo "build FAILED"; exit 1
fi
export PYTHONPATH="$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
"$PY" -c "import featprune_ext, sys; i = featprune_ext.build_info(); print(featprune_ext.__file__); print(i); \
sys.exit(0 if i.get('cuda') or '$DEVICE' != 'cuda' else 'built without CUDA kernels')" || exit 1
if [ "$DEVICE" = cuda ]; then  # the first-call probe ops uses: '' when this GPU loads the kernels
  "$PY" -c "import sys, featprune_ext._C as C; p = C.cuda_kernel_problem(0); print('kernel image probe:', p or 'ok'); \
sys.exit(1 if p else 0)" || exit 1
fi
echo "${RESULT[build]}"

log "CUDA tests (tests/native and tests/models, -m cuda)"
timeout "$(( $(left) < 150 ? $(left) : 150 ))" "$PY" -m pytest -q -m cuda tests/native tests/models -p no:cacheprovider -x \
  2>&1 | tail -15 | tee "$OUT_DIR/cuda_tests.txt"
rc=${PIPESTATUS[0]}
RESULT[tests]="$(grep -E 'passed|failed|skipped|error' "$OUT_DIR/cuda_tests.txt" | tail -1) (rc $rc)"
[ "$rc" = 0 ] || STATUS=1

log "kernel bench"
KB_ARGS=(--device "$DEVICE" --repeats 10)
[ "$TINY" = 1 ] && KB_ARGS=(--device "$DEVICE" --repeats 1 --quick --no-reference)
timeout "$(( $(left) < 100 ? $(left) : 100 ))" "$PY" bench/bench_kernels.py "${KB_ARGS[@]}" 2>&1 \
  | tee "$OUT_DIR/bench_kernels_$DEVICE.md" | tail -25
rc=${PIPESTATUS[0]}
RESULT[kernels]="rc $rc"
[ "$rc" = 0 ] || STATUS=1

log "structured check (device vs CPU choices; tokens/s dense vs cut)"
SC_ARGS=(--device "$DEVICE" --dir "$WORK/structured" --json "$OUT_DIR/structured_$DEVICE.json" --timeout 120)
[ "$TINY" = 1 ] && SC_ARGS+=(--tiny)
timeout "$(( $(left) < 180 ? $(left) : 180 ))" "$PY" bench/gpu_structured_check.py "${SC_ARGS[@]}" 2>&1 \
  | grep -v "Loading weights" | tee "$OUT_DIR/structured_$DEVICE.txt" | tail -8
rc=${PIPESTATUS[0]}
RESULT[structured]="$(grep -E '^gpu_structured_check:' "$OUT_DIR/structured_$DEVICE.txt" | tail -1) (rc $rc)"
[ "$rc" = 0 ] || STATUS=1

log "engine check (7B-shaped Llama under a device-memory cap, vs the floor)"
EC_ARGS=(--device "$DEVICE" --dir "$WORK/engine" --timeout "$(( $(left) - 15 ))")
[ "$TINY" = 1 ] && EC_ARGS+=(--tiny)
[ -n "${FEATPRUNE_GPU_LAYERS:-}" ] && EC_ARGS+=(--layers "$FEATPRUNE_GPU_LAYERS")
timeout "$(left)" "$PY" bench/gpu_engine_check.py "${EC_ARGS[@]}" 2>&1 | tee "$OUT_DIR/engine_$DEVICE.txt" | tail -25
rc=${PIPESTATUS[0]}
RESULT[engine]="$(grep -E '^gpu_engine_check:' "$OUT_DIR/engine_$DEVICE.txt" | tail -1) (rc $rc)"
[ "$rc" = 0 ] || STATUS=1

log "summary"
for k in build tests kernels structured engine; do printf '%-8s %s\n' "$k" "${RESULT[$k]:-not run}"; done
echo "total $(( $(date +%s) - T0 )) s; logs in $OUT_DIR"
exit $STATUS
