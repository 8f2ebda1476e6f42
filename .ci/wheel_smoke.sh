#!/usr/bin/env bash
# Wheel smoke test: install a built wheel as a user would, then .ci/wheel_check.sh uses it with
# no compiler on PATH.
#   bash .ci/wheel_smoke.sh dist/featprune-*.whl
# A fresh venv (no system site-packages) for the wheel's Python; torch, then the wheel with its
# `models` extra (transformers, to build the tiny test model) and pytest.
# Environment: SMOKE_DIR (default: a new temporary directory, removed at the end),
# TORCH_SPEC (default torch==2.13.0: the CPU wheel on this machine's disk for Python 3.11).
set -euo pipefail
cd "$(dirname "$0")/.."
WHEEL="$(realpath "${1:?usage: bash .ci/wheel_smoke.sh WHEEL}")"
REPO="$PWD"
TAG="$(basename "$WHEEL" .whl | cut -d- -f3)"  # cp311
PYVER="${TAG#cp}"; PYVER="${PYVER:0:1}.${PYVER:1}"
PYTHON_BIN="$(command -v "python$PYVER" || true)"
[ -n "$PYTHON_BIN" ] || { echo "wheel_smoke: python$PYVER not found for $WHEEL" >&2; exit 1; }
WORK="${SMOKE_DIR:-$(mktemp -d /tmp/featprune-smoke.XXXXXX)}"
[ -n "${SMOKE_DIR:-}" ] || trap 'rm -rf "$WORK"' EXIT
T0=$(date +%s)
step() { echo "== wheel smoke: $* ($(( $(date +%s) - T0 )) s)"; }

step "fresh venv (python$PYVER) and install of $(basename "$WHEEL")"
"$PYTHON_BIN" -m venv "$WORK/venv"
VPY="$WORK/venv/bin/python"
# --no-compile: no .pyc for every file of torch and transformers (Python compiles what it imports)
PIP=("$VPY" -m pip --disable-pip-version-check -q install --no-compile)
"${PIP[@]}" "${TORCH_SPEC:-torch==2.13.0}" 2>&1 | grep -v '^WARNING: Location' || true
"${PIP[@]}" "$WHEEL[models]" pytest 2>&1 | grep -v '^WARNING: Location' || true
"$VPY" -c "import featprune_ext" || { echo "wheel_smoke: the install failed" >&2; exit 1; }

"$REPO/.ci/wheel_check.sh" "$VPY" "$REPO" "$WORK/check"
