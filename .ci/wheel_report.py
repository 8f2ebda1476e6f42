"""Print what a featprune wheel is and what it needs from the machine that installs it.

    python .ci/wheel_report.py dist/featprune-0.1.0-cp311-cp311-manylinux_2_34_x86_64.whl

Reads only the wheel (its file name, its _build_facts.json written by CMakeLists.txt, the
files it bundles), so it works for a wheel of any Python version. Exit status 1 when the
wheel has no manylinux tag or bundles a second OpenMP runtime.
"""

from __future__ import annotations

import json
import re
import sys
import zipfile
from pathlib import Path

# The oldest Linux driver of each CUDA version a statically linked runtime of that major
# version needs (NVIDIA's toolkit release notes). CUDA 11 builds need the 11.2 driver:
# minor version compatibility covers 11.0, but cudaMallocAsync came with 11.2 (ops.py: _MIN_DRIVER).
DRIVER_FOR_RUNTIME_MAJOR = {11: ("11.2", "460.27.03"), 12: ("12.0", "525.60.13"), 13: ("13.0", "580.65.06")}


def describe(path: Path) -> tuple[list[str], list[str]]:
    """(lines to print, problems)."""
    name = path.name
    parts = name[:-len(".whl")].split("-")
    python_tag, _abi, platform = parts[-3], parts[-2], parts[-1]
    lines = [f"wheel:    {name} ({path.stat().st_size / 1e6:.1f} MB)"]
    problems = []
    glibc = re.search(r"manylinux_(\d+)_(\d+)_(\w+)", platform)
    if glibc:
        lines.append(f"tag:      {python_tag}-{platform}: CPython {python_tag[2]}.{python_tag[3:]}, "
                     f"{glibc.group(3)}, glibc >= {glibc.group(1)}.{glibc.group(2)}")
    else:
        lines.append(f"tag:      {python_tag}-{platform}")
        problems.append(f"platform tag {platform} is not manylinux: PyPI refuses it (run auditwheel repair)")
    with zipfile.ZipFile(path) as wheel:
        names = wheel.namelist()
        facts = json.loads(wheel.read("featprune_ext/_build_facts.json")) if (
            "featprune_ext/_build_facts.json" in names) else {}
    runtime = facts.get("cuda_runtime") or ""
    if runtime:
        major = int(runtime.split(".")[0])
        cuda, driver = DRIVER_FOR_RUNTIME_MAJOR.get(major, (f"{major}.0", "?"))
        lines.append(f"CUDA:     kernels for {facts.get('cuda_archs')} (CUDA {runtime} runtime, linked statically); "
                     f"needs an NVIDIA driver for CUDA >= {cuda} (Linux >= {driver}); with an older driver or "
                     "another GPU, the PyTorch reference kernels run on the GPU after one warning")
    else:
        lines.append("CUDA:     no CUDA kernels (CPU build): CUDA tensors use the PyTorch reference kernels")
    bundled = sorted(n for n in names if re.search(r"\.libs/.+\.so", n))
    gomp = [n for n in bundled if "gomp" in n or "libomp" in n or "iomp" in n]
    lines.append(f"bundled:  {', '.join(Path(n).name for n in bundled) or 'no shared libraries'}")
    if gomp:
        problems.append(f"bundles an OpenMP runtime ({', '.join(gomp)}): a second one next to torch's")
    else:
        lines.append("OpenMP:   torch's libgomp.so.1 (loaded by `import torch`, which featprune_ext does first)")
    lines.append("needs:    torch >= 2.1 (pip installs it), Python " + python_tag[2] + "." + python_tag[3:])
    return lines, problems


def main(argv: list[str]) -> int:
    status = 0
    for arg in argv:
        lines, problems = describe(Path(arg))
        print("\n".join(lines))
        for problem in problems:
            print(f"PROBLEM:  {problem}")
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
