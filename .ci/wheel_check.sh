#!/usr/bin/env bash
# Uses an installed featprune wheel as a user would, with no C/C++/CUDA compiler on PATH:
#   bash .ci/wheel_check.sh PYTHON REPO [WORK]
# PYTHON: the interpreter of the environment the wheel (with its `models` extra) and pytest are
# installed in; REPO: a checkout (for tests/); WORK: scratch (default: a temporary directory).
# 1. PATH without compilers; 2. import featprune_ext from that environment (not from the
# checkout), check build_info() and that one OpenMP runtime is loaded (torch's libgomp);
# 3. the kernel tests (tests/native: native kernels against reference.py; the CUDA emulation
# skips without a compiler); 4. one tiny `featprune prune` of a random 3-layer Llama.
# Run by .ci/wheel_smoke.sh (make wheel-smoke) and as cibuildwheel's test-command.
set -euo pipefail
VPY="$(command -v "${1:?usage: bash .ci/wheel_check.sh PYTHON REPO [WORK]}")"
REPO="$(realpath "${2:?usage: bash .ci/wheel_check.sh PYTHON REPO [WORK]}")"
WORK="${3:-$(mktemp -d /tmp/featprune-check.XXXXXX)}"
[ -n "${3:-}" ] || trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK"
ENV_BIN="$(dirname "$VPY")"
T0=$(date +%s)
step() { echo "== wheel check: $* ($(( $(date +%s) - T0 )) s)"; }

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
export PATH="$ENV_BIN:$BIN"
unset CC CXX CUDACXX CUDAHOSTCXX
for c in gcc g++ cc c++ clang nvcc; do
  if command -v "$c" >/dev/null; then echo "wheel_smoke: $c is still on PATH" >&2; exit 1; fi
done

step "import and build_info()"
cd "$WORK"  # away from the checkout: python/ must not shadow the installed package
"$VPY" - "$("$VPY" -c 'import sys; print(sys.prefix)')" <<'EOF'
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
"$ENV_BIN/featprune" prune "$WORK/tiny" --out "$WORK/pruned" --calib-texts "$WORK/calib.jsonl" \
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
