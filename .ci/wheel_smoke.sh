#!/usr/bin/env bash
# Wheel smoke test: install a built wheel as a user would and use it, with no compiler on PATH.
#   bash .ci/wheel_smoke.sh dist/featprune-*.whl
# 1. a fresh venv (no system site-packages) for the wheel's Python; torch, then the wheel with
#    its `models` extra (transformers, to build the tiny test model) and pytest;
# 2. PATH without any C/C++/CUDA compiler (so nothing can be built or JIT-compiled by us);
# 3. import featprune_ext from the venv (not from the checkout) and check build_info();
#    exactly one OpenMP runtime loaded (torch's libgomp);
# 4. the kernel tests (tests/native: reference comparisons; the CUDA emulation skips without
#    a compiler) against the installed wheel;
# 5. one tiny `featprune prune` of a random 3-layer Llama.
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
PIP=("$VPY" -m pip --disable-pip-version-check -q)
"${PIP[@]}" install "${TORCH_SPEC:-torch==2.13.0}" 2>&1 | grep -v '^WARNING: Location' || true
"${PIP[@]}" install "$WHEEL[models]" pytest 2>&1 | grep -v '^WARNING: Location' || true
"$VPY" -c "import featprune_ext" || { echo "wheel_smoke: the install failed" >&2; exit 1; }

step "PATH without compilers"
BIN="$WORK/bin"
mkdir -p "$BIN"
for f in /usr/local/bin/* /usr/bin/* /bin/*; do
  name="$(basename "$f")"
  case "$name" in
    gcc*|g++*|cc|c++|cpp|cpp-*|clang*|nvcc|*-gcc|*-gcc-*|*-g++|*-g++-*|ld|ld.*|as|*-ld|*-as|c89*|c99*) continue ;;
  esac
  [ -e "$BIN/$name" ] || ln -s "$f" "$BIN/$name"
done
export PATH="$WORK/venv/bin:$BIN"
unset CC CXX CUDACXX CUDAHOSTCXX
for c in gcc g++ cc c++ clang nvcc; do
  if command -v "$c" >/dev/null; then echo "wheel_smoke: $c is still on PATH" >&2; exit 1; fi
done

step "import and build_info()"
cd "$WORK"  # away from the checkout: python/ must not shadow the installed package
"$VPY" - "$WORK/venv" <<'EOF'
import sys
import featprune_ext
info = featprune_ext.build_info()
print(info)
assert featprune_ext.__file__.startswith(sys.argv[1]), f"imported {featprune_ext.__file__}, not the wheel"
assert info["native"], info.get("error")
assert info["version"] == featprune_ext.__version__
# one OpenMP runtime: the wheel's _C uses the libgomp torch loaded
gomp = sorted({line.split()[-1] for line in open("/proc/self/maps") if "libgomp" in line})
print("libgomp loaded:", gomp)
assert len(gomp) == 1 and "/torch/lib/" in gomp[0], gomp
EOF

step "kernel tests (tests/native) against the installed wheel"
cd "$REPO"
"$VPY" -m pytest -q -p no:cacheprovider tests/native -x 2>&1 | tail -4

step "one tiny featprune prune"
"$VPY" - "$WORK" <<'EOF'
import sys
from pathlib import Path
sys.path.insert(0, "tests/helpers")
from tiny_models import build_tiny_model, write_calibration_jsonl
work = Path(sys.argv[1])
build_tiny_model("llama", work / "tiny")
write_calibration_jsonl(work / "calib.jsonl")
EOF
"$WORK/venv/bin/featprune" prune "$WORK/tiny" --out "$WORK/pruned" --calib-texts "$WORK/calib.jsonl" \
  --nsamples 6 --seqlen 16 --sparsity 0.5 --no-progress
"$VPY" - "$WORK/pruned" <<'EOF'
import sys
from pathlib import Path
from safetensors.torch import load_file
out = Path(sys.argv[1])
weights = {}
for f in sorted(out.glob("*.safetensors")):
    weights.update(load_file(f))
q = [t for name, t in weights.items() if name.endswith("q_proj.weight")]
assert q, sorted(weights)[:5]
zeros = sum(int((t == 0).sum()) for t in q) / sum(t.numel() for t in q)
print(f"pruned q_proj sparsity {zeros:.3f}")
assert abs(zeros - 0.5) < 0.01, zeros
EOF
step "passed"
