"""Patched copies of the installed featprune_ext, for the experiment arms of bench/RESULTS.md.

    python bench/variants.py NAME DIR     # DIR/featprune_ext = the installed package with NAME's edit
    python bench/bench_engine.py --model gemma3-270m --nsamples 16 --no-write --src NAME=DIR

Each variant is a list of exact text replacements; a replacement whose text is not found stops with an
error (the code moved on since the experiment: check out the commit named in RESULTS.md).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

VARIANTS: dict[str, tuple[str, list[tuple[str, str, str]]]] = {
    "serial": ("reads and writes on the main thread, between the passes (no background threads)", [
        ("engine/resume.py",
         "        self.wait()\n        self.pending = self.pool.submit(fn, *args)",
         "        self.wait()\n        fn(*args)"),
        ("engine/run.py",
         "                        nxt = loader.submit(self._load, i + 1)  # prefetch while this block computes",
         "                        nxt = Future()\n                        nxt.set_result(self._load(i + 1))"),
        ("engine/run.py",
         "from concurrent.futures import ThreadPoolExecutor",
         "from concurrent.futures import Future, ThreadPoolExecutor"),
    ]),
    "nofsync": ("atomic writes without fsync", [
        ("files.py", "            fill(fd)\n            os.fsync(fd)", "            fill(fd)"),
    ]),
    "s0end": ("the unpruned tensors' shard written on the main thread after the last block", [
        ("engine/run.py",
         "            if not self.shard0_done and self.dist.is_writer:\n"
         "                writer.submit(self._write_shard0)",
         "            pass"),
        ("engine/run.py",
         "            with self.timer.phase(\"wait_write_s\"):\n                writer.wait()\n        finally:",
         "            with self.timer.phase(\"wait_write_s\"):\n                writer.wait()\n"
         "            if not self.shard0_done and self.dist.is_writer:\n"
         "                with self.timer.phase(\"finalize_s\"):\n                    self._write_shard0()\n"
         "        finally:"),
    ]),
    "noact": ("no resume points: the next block's inputs are never saved", [
        ("engine/resume.py", "    if run.dist.enabled or due:", "    if False:"),
    ]),
    "nocheck": ("no finiteness check of the weights read (code before commit 'check_finite: one fp32 sum')", [
        ("engine/skeleton.py", "    if not t.is_floating_point():\n        return\n", "    return\n"),
    ]),
}


def build(name: str, out: Path) -> Path:
    import featprune_ext

    _, edits = VARIANTS[name]
    src = Path(featprune_ext.__file__).parent
    dst = Path(out) / "featprune_ext"
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
    for rel, old, new in edits:
        path = dst / rel
        text = path.read_text()
        if old not in text:
            raise SystemExit(f"variant {name}: the text to replace is not in {rel}; the code has changed since")
        path.write_text(text.replace(old, new, 1))
    return dst


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", choices=sorted(VARIANTS), help="; ".join(f"{k}: {v[0]}" for k, v in VARIANTS.items()))
    p.add_argument("dir", type=Path)
    args = p.parse_args(argv)
    print(build(args.name, args.dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
