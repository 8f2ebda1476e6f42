#!/usr/bin/env bash
# Unpacks Debian bookworm's CUDA 11.8 toolkit (non-free: nvidia-cuda-toolkit, nvidia-cuda-dev)
# into a private prefix, without installing it system-wide or editing the apt sources: apt runs
# with its own source list and state directories. Needs g++-11 (Debian main: apt-get install
# g++-11), the newest host compiler CUDA 11.8 accepts.
#   bash bench/cuda118_toolkit.sh [PREFIX]       # default /tmp/cuda118; prints the nvcc path
# Then: CUDACXX=PREFIX/usr/lib/nvidia-cuda-toolkit/bin/nvcc CUDAHOSTCXX=g++-11 make wheel
set -euo pipefail
PREFIX="${1:-/tmp/cuda118}"
NVCC="$PREFIX/usr/lib/nvidia-cuda-toolkit/bin/nvcc"
if [ -x "$NVCC" ] && [ -f "$PREFIX/usr/lib/x86_64-linux-gnu/libcudart_static.a" ]; then echo "$NVCC"; exit 0; fi
APT_DIR="$PREFIX.apt"
mkdir -p "$APT_DIR/lists/partial" "$APT_DIR/cache/archives/partial" "$APT_DIR/debs" "$PREFIX"
echo "deb http://deb.debian.org/debian bookworm main contrib non-free" > "$APT_DIR/sources.list"
APT=(-o "Dir::Etc::SourceList=$APT_DIR/sources.list" -o Dir::Etc::SourceParts=/dev/null
     -o "Dir::State::Lists=$APT_DIR/lists" -o "Dir::Cache=$APT_DIR/cache")
apt-get "${APT[@]}" -qq update
(cd "$APT_DIR/debs" && apt-get "${APT[@]}" -qq download nvidia-cuda-toolkit libnvvm4 libcudart11.0 nvidia-cuda-dev)
for deb in "$APT_DIR"/debs/nvidia-cuda-toolkit_*.deb "$APT_DIR"/debs/libnvvm4_*.deb "$APT_DIR"/debs/libcudart11.0_*.deb; do
  dpkg -x "$deb" "$PREFIX"
done
# nvidia-cuda-dev is 2.8 GB unpacked (every CUDA library); the build needs the headers and cudart.
dpkg-deb --fsys-tarfile "$APT_DIR"/debs/nvidia-cuda-dev_*.deb | tar -x -C "$PREFIX" --wildcards \
  './usr/include/*' './usr/lib/x86_64-linux-gnu/libcudart_static.a' './usr/lib/x86_64-linux-gnu/libcudadevrt.a' \
  './usr/lib/x86_64-linux-gnu/libculibos.a' './usr/lib/x86_64-linux-gnu/libcudart.so'
# Debian's nvcc.profile is a link to /etc/nvcc.profile with /usr paths: point it at the prefix,
# with the nvvm/libdevice spelling CMake looks for.
rm -f "$PREFIX/usr/lib/nvidia-cuda-toolkit/bin/nvcc.profile"
cat > "$PREFIX/usr/lib/nvidia-cuda-toolkit/bin/nvcc.profile" <<'EOF'
TOP = $(_HERE_)/../../..
NVVMIR_LIBRARY_DIR = $(TOP)/lib/cuda/nvvm/libdevice
PATH += $(_HERE_):$(TOP)/bin:
INCLUDES += "-I$(TOP)/include" $(_SPACE_)
LIBRARIES =+ $(_SPACE_) -L$(TOP)/lib/x86_64-linux-gnu/stubs -L$(TOP)/lib/x86_64-linux-gnu
EOF
"$NVCC" --version | tail -2 >&2
echo "$NVCC"
