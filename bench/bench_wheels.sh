#!/usr/bin/env bash
# The CUDA build options of docs/install.md, measured on this machine (bench/results_wheels.md):
# build time (CPU seconds, user + sys, and wall), wheel size, and the compile work a GPU would do at
# first use when the wheel has no SASS for it (driver JIT of PTX; NVRTC of the sources).
#   bash bench/bench_wheels.sh [OUT_DIR]            # default bench/out/wheels; ~10 min on 2 cores
# Needs: .venv (make install), nvcc 13 on PATH, the CUDA 11.8 toolkit of bench/cuda118_toolkit.sh
# (CUDA118 = its prefix, default /tmp/cuda118) and g++-11.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-bench/out/wheels}"
CUDA118="${CUDA118:-/tmp/cuda118}"
NVCC118="$CUDA118/usr/lib/nvidia-cuda-toolkit/bin/nvcc"
PY=.venv/bin/python
mkdir -p "$OUT"
rm -f "$OUT"/*.whl
echo "| build | nvcc | archs | CPU s (user+sys) | wall s | wheel MB | _C.so MB |"
echo "| --- | --- | --- | --- | --- | --- | --- |"

build() {  # name, then env assignments
  local name="$1"; shift
  local dir="$OUT/$name"
  rm -rf "$dir" && mkdir -p "$dir"
  env "$@" /usr/bin/time -f "%U %S %e" -o "$dir/time.txt" \
    "$PY" -m pip --disable-pip-version-check -q wheel --no-deps --no-build-isolation -w "$dir" . > "$dir/log.txt" 2>&1
  local whl; whl="$(ls "$dir"/*.whl)"
  read -r user sys wall < "$dir/time.txt"
  local so_bytes; so_bytes="$(unzip -l "$whl" 'featprune_ext/_C*.so' | awk 'NR==4 {print $1}')"
  local facts; facts="$(unzip -p "$whl" featprune_ext/_build_facts.json)"
  local nvcc archs
  nvcc="$(echo "$facts" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["cuda_runtime"] or "-")')"
  archs="$(echo "$facts" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["cuda_archs"] or "-")')"
  printf '| %s | %s | %s | %.0f | %.0f | %.2f | %.2f |\n' "$name" "$nvcc" "$archs" \
    "$(echo "$user + $sys" | bc)" "$wall" "$(stat -c %s "$whl" | awk '{print $1 / 1e6}')" \
    "$(echo "$so_bytes" | awk '{print $1 / 1e6}')"
}

build cpu-only FEATPRUNE_CUDA=OFF
build cuda-11.8 FEATPRUNE_CUDA=ON CUDACXX="$NVCC118" CUDAHOSTCXX=g++-11
build cuda-13.0 FEATPRUNE_CUDA=ON CUDACXX="$(command -v nvcc)"

echo
echo "First use on a GPU the wheel has no SASS for (CPU seconds here; a GPU host does the same work):"
# Driver JIT: the CUDA 11.8 wheel's compute_90 PTX compiled for sm_100 (B200) and sm_120 by ptxas,
# which is what the driver's JIT runs (once per GPU model and driver; then ~/.nv/ComputeCache).
JIT="$OUT/jit"; rm -rf "$JIT" && mkdir -p "$JIT"
(cd "$JIT" && unzip -q -o "$(ls ../cuda-11.8/*.whl)" 'featprune_ext/_C*.so' && \
  "$CUDA118/usr/bin/cuobjdump" -xptx all featprune_ext/_C*.so > /dev/null)
for arch in sm_100 sm_120; do
  /usr/bin/time -f "%U %S" -o "$JIT/t.txt" bash -c "for p in '$JIT'/*.ptx; do ptxas -O3 -arch=$arch \"\$p\" -o /dev/null; done"
  read -r user sys < "$JIT/t.txt"
  printf '  driver JIT of the compute_90 PTX for %s (ptxas 13.0): %.1f s\n' "$arch" "$(echo "$user + $sys" | bc)"
done
# NVRTC at first use: the three .cu files compiled to a cubin for one GPU (front end + ptxas, which
# is NVRTC's work; nvcc adds a process per phase, so this bounds it from above).
/usr/bin/time -f "%U %S" -o "$JIT/t.txt" bash -c \
  "for f in csrc/cuda/*.cu; do nvcc -std=c++17 -O3 --expt-relaxed-constexpr -Icsrc/include -cubin -arch=sm_90 \"\$f\" -o /dev/null; done"
read -r user sys < "$JIT/t.txt"
printf '  nvcc -cubin of csrc/cuda/*.cu for sm_90 (the NVRTC estimate): %.1f s\n' "$(echo "$user + $sys" | bc)"
