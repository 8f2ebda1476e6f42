#!/usr/bin/env bash
# Release-configuration wheels (CUDA 11.8 kernels, bench/cuda118_toolkit.sh) for CPython versions
# this machine has no torch for, each built with `make wheel`, installed into a fresh venv without
# its dependencies, and checked by .ci/wheel_native_check.py (the wheel's _C against numpy).
#   bash bench/wheels_other_pythons.sh [PYTHON ...]   # default: pyenv's 3.10, 3.12 and 3.13
# (CPython 3.11, the one with a torch here, is what `make wheel-smoke` checks in full.)
set -euo pipefail
cd "$(dirname "$0")/.."
CUDA118="${CUDA118:-/tmp/cuda118}"
NVCC118="$(bash bench/cuda118_toolkit.sh "$CUDA118")"
if [ $# -eq 0 ]; then
  set -- "$(ls -d /root/.pyenv/versions/3.10.*/bin/python3.10 | tail -1)" \
         "$(ls -d /root/.pyenv/versions/3.12.*/bin/python3.12 | tail -1)" \
         "$(ls -d /root/.pyenv/versions/3.13.*/bin/python3.13 | tail -1)"
fi
for py in "$@"; do
  tag="$("$py" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')"
  echo "== $py ($tag)"
  start=$(date +%s)
  CUDACXX="$NVCC118" CUDAHOSTCXX=g++-11 FEATPRUNE_CUDA=ON make -s wheel WHEEL_PYTHON="$py" 2>&1 \
    | grep -E '^(wheel|tag|CUDA|bundled|OpenMP|needs|PROBLEM):'
  echo "built in $(( $(date +%s) - start )) s"
  venv="$(mktemp -d /tmp/featprune-native.XXXXXX)"
  "$py" -m venv "$venv"
  "$venv/bin/python" -m pip --disable-pip-version-check -q install numpy 2>&1 | grep -v '^WARNING: Location' || true
  "$venv/bin/python" -m pip --disable-pip-version-check -q install --no-deps dist/featprune-*-"$tag"-"$tag"-manylinux*.whl
  (cd "$venv" && "$venv/bin/python" "$OLDPWD/.ci/wheel_native_check.py")
  rm -rf "$venv"
done
