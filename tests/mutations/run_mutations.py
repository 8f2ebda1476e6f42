"""Mutation check: plant known bugs one at a time and make sure the tests catch each of them.

For every mutant below, the package (python/featprune_ext plus the built _C*.so) is copied to a
temporary directory, the bug is planted by exact text replacement (each pattern must occur exactly
once, so a refactor that moves the code fails this script loudly instead of silently planting
nothing), and the tests listed for it run with PYTHONPATH pointing at the copy. Every listed test
must FAIL. The untouched copy must PASS all of them (one run). The C++ mutant recompiles the
CPU kernel: only the mutated translation unit, relinked against the objects of the existing build
directory when that matches the installed module (about 30 s), else in a CPU-only build directory of
its own (build/mutations/: a full build the first time, one file after that).

    python tests/mutations/run_mutations.py [--only NAME ...] [--slow] [-j N] [--keep] [-v]

Exit status 0 when every mutant is caught and the untouched copy passes; 1 otherwise.
`make mutations` runs it (CI: after `make test`): about 2 minutes of CPU, 3.5 minutes of wall time on
2 cores shared with other work. `--slow` adds two mutants only the torchrun test sees (+3 minutes).
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "python" / "featprune_ext"

ENGINE_EQUIV = "tests/engine/test_engine.py::test_every_family_prunes_loads_and_matches_naive[llama]"
DIST_2_RANKS = "tests/engine/test_distributed.py::test_two_gloo_ranks_match_single_process"


@dataclass
class Mutant:
    name: str
    bug: str  # what goes wrong, in words
    file: str  # relative to the package (Python) or the repository (csrc/...)
    edits: list  # [(exact old text, new text)], each old text must occur exactly once
    tests: list  # pytest node ids that must each fail
    native: bool = False  # the file is C++: rebuild _C
    slow: bool = False  # only with --slow (torchrun: minutes)
    cpu_path: str = ""  # "avx2" / "avx512": the CPU kernel path the tests run; skipped on a CPU without it


# CPU flags each path needs (csrc/cpu/prune_rows*.cpp check the same ones at run time).
CPU_PATH_FLAGS = {"avx2": {"avx2", "f16c", "popcnt"},
                  "avx512": {"avx2", "f16c", "popcnt", "avx512f", "avx512bw", "avx512vl", "avx512dq"}}


def cpu_has_path(path: str) -> bool:
    """True when this CPU has the flags of the kernel path `path` ("" = any CPU)."""
    if not path:
        return True
    try:
        flags = {f for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")
                 for f in line.split(":", 1)[1].split()}
    except OSError:
        return False
    return CPU_PATH_FLAGS[path] <= flags


MUTANTS = [
    Mutant("token-cache-direct-unverified", "the token cache encodes misses with tokenizer.json without checking "
           "that transformers' tokenizer runs the same pipeline", "data/token_cache.py",
           [("self._direct = backend if _pipeline_sha(backend) == sha else None", "self._direct = backend")],
           ["tests/data/test_token_cache.py::test_direct_path_refused_when_transformers_changes_the_pipeline"]),
    Mutant("builtin-gemma-norm-cast", "the built-in Gemma RMSNorm scales after casting back, not in fp32",
           "models/decoder.py",
           [("return (y * (1.0 + self.weight.float())).type_as(x)",
             "return y.type_as(x) * (1.0 + self.weight.float()).type_as(x)")],
           ["tests/models/test_builtin_models.py::test_blocks_bit_identical_to_transformers[gemma3-bf16-cpu]"]),
    Mutant("builtin-window-mask-skipped", "the built-in code lets is_causal stand in for a sliding window as long "
           "as the sequence", "models/masks.py",
           [("if (window is None or length < window)", "if (window is None or length <= window)")],
           ["tests/models/test_builtin_models.py::test_masks_match_transformers[4]"]),
    Mutant("padding-counted", "padding tokens enter the statistics (the token mask is dropped)",
           "engine/stats.py",
           [("token_mask=mask, absmax=absmax)", "token_mask=None, absmax=absmax)")],
           [ENGINE_EQUIV]),
    Mutant("no-sqrt", "Wanda's column scale is the mean of x^2, not its square root",
           "methods/base.py",
           [("return (total / tokens).sqrt().float()", "return (total / tokens).float()")],
           ["tests/methods/test_methods.py::test_wanda_uses_only_base_buckets", ENGINE_EQUIV]),
    Mutant("contrast-swapped", "the contrastive method swaps the base and contrast buckets",
           "methods/wanda.py",
           [("base = stats.rms(self.base_buckets)\n        contrast = stats.rms(self.contrast_buckets)",
             "base = stats.rms(self.contrast_buckets)\n        contrast = stats.rms(self.base_buckets)")],
           ["tests/methods/test_methods.py::test_contrastive_formula_hand_computed",
            "tests/cli/test_paper_cli.py::test_contrast_buckets_decide_the_masks"]),
    Mutant("every-rank-every-batch", "under torchrun every rank processes every calibration batch",
           "engine/run.py",
           [("batches = [batches[j] for j in self.dist.batch_indices(len(batches))]", "batches = list(batches)")],
           ["tests/engine/test_rank_share.py::test_each_rank_runs_exactly_its_round_robin_share[0]"]),
    Mutant("tie-rule-reversed", "the portable CPU kernel breaks score ties toward the higher column",
           "csrc/cpu/prune_rows.cpp",
           [("for (int64_t j = 0; j < cols && ties_left > 0; ++j) {  // lower column index first",
             "for (int64_t j = cols - 1; j >= 0 && ties_left > 0; --j) {  // MUTANT: higher index first")],
           ["tests/native/test_prune_rows.py::test_all_equal_scores_prune_the_lowest_columns[10-portable]",
            "tests/native/test_prune_rows.py::test_heavy_ties_follow_stable_order[portable-constant-ones-fp32-cpu]"],
           native=True),
    Mutant("bracket-off-by-one", "the AVX2 kernel miscounts the keys below a (predicted or sampled) bracket",
           "csrc/cpu/prune_rows.cpp",
           [("    hi = bhi;\n    before = below;", "    hi = bhi;\n    before = below + 1;  // MUTANT")],
           ["tests/native/test_prune_rows.py::test_predicted_bracket_hits_and_misses[0.5-fp32-avx2]"],
           native=True, cpu_path="avx2"),
    Mutant("nm-rotation-swapped", "the AVX2 N:M path rotates groups of 4 the wrong way (ties break toward "
           "the wrong column)",
           "csrc/cpu/prune_rows.cpp",
           [("(x, 0x39);  // lanes (1, 2, 3, 0)", "(x, 0x93);  // MUTANT"),
            ("(x, 0x93);              // lanes (3, 0, 1, 2)", "(x, 0x39);  // MUTANT")],
           ["tests/native/test_prune_rows.py::test_cpu_paths_match_reference[2:4-ties-fp32-avx2]"],
           native=True, cpu_path="avx2"),
    Mutant("avx512-nm-wrap-lost", "the AVX-512 path for groups of 4 forgets that the last lane of a group "
           "compares with lower columns (ties break toward the wrong column)",
           "csrc/cpu/prune_rows_avx512.cpp",
           [(": _mm512_setr_epi32(0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1);",
             ": _mm512_setr_epi32(0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0);  // MUTANT")],
           ["tests/native/test_prune_rows.py::test_cpu_paths_match_reference[2:4-ties-fp32-avx512]"],
           native=True, cpu_path="avx512"),
    Mutant("outputs-not-propagated", "block i+1 sees block i's dense (unpruned) outputs",
           "engine/run.py",
           [("entries, matrices = prune_block_matrices(self, i, linears, stats, originals, sparsity)",
             "self._dense = [c.run(block, h) for c, h in zip(calls[i], hidden)] if calls else hidden; "
             "entries, matrices = prune_block_matrices(self, i, linears, stats, originals, sparsity)"),
            ("hidden = [c.run(block, h) for c, h in zip(calls[i], hidden)]  # pruned outputs feed block i+1",
             "hidden = self._dense  # MUTANT: the unpruned outputs feed block i+1")],
           [ENGINE_EQUIV]),
    Mutant("early-stop-unchecked", "the statistics pass stops at the learnt last linear without checking that "
           "every other linear was called first in this batch",
           "engine/call_order.py",
           [("if self.order is not None and len(self.seen) == len(self.order) and self.seen == self.order:",
             "if self.order is not None and name == self.order[-1]:  # MUTANT")],
           ["tests/engine/test_stats_early_stop.py::test_a_batch_that_calls_the_last_linear_early_runs_whole"]),
    Mutant("token-cache-names-only", "the token cache's fingerprint hashes the tokenizer files' names, not "
           "their bytes (an edited tokenizer gets the old ids)",
           "data/token_cache.py",
           [('h.update(hashlib.file_digest(fh, "sha256").digest() if hasattr(hashlib, "file_digest")',
             'h.update(b"" if True else hashlib.file_digest(fh, "sha256").digest() if hasattr(hashlib, '
             '"file_digest")')],
           ["tests/data/test_token_cache.py::test_an_edited_tokenizer_misses_and_gives_its_own_ids",
            "tests/data/test_token_cache.py::test_anything_the_tokenizer_reads_changes_the_fingerprint"
            "[edit tokenizer_config.json]"]),
    Mutant("fast-exit-unflushed", "the fast exit drops what is still buffered on stdout",
           "cli/__init__.py",
           [("                stream.flush()", "                pass  # MUTANT")],
           ["tests/cli/test_console_exit.py::test_console_main_exit_keeps_code_output_and_handlers[fast-ok]"]),
    Mutant("early-shard-guess-unchecked", "the early copy of the unpruned tensors is linked in without checking "
           "that the name guess equals the skeleton's other_keys",
           "engine/early_shard.py",
           [("if self.error is not None or sorted(keys) != self.keys:", "if self.error is not None:  # MUTANT")],
           ["tests/engine/test_early_shard.py::test_a_wrong_guess_is_dropped_and_leaves_nothing"]),
    Mutant("finite-sum-trusted", "a non-finite sum of finite weights (an overflow) is reported as corrupt weights",
           "engine/skeleton.py",
           [("    if bad:\n        kind =", "    if True:  # MUTANT\n        kind =")],
           ["tests/engine/test_engine_units.py::test_check_finite_accepts_finite_values_whose_sum_overflows[fp32]"]),
    Mutant("trim-closure-skipped", "corpus-mode trim keeps the corpus's tokens without the merge closure (parts "
           "of kept tokens that the corpus never produced are dropped)",
           "trim/select.py",
           [("added = vocab.closure(kept, have=set(kept))", "added = set()  # MUTANT")],
           ["tests/trim/test_trim_corpus.py::test_closure_keeps_every_merge_path_of_kept_tokens"]),
    Mutant("trim-head-not-gathered", "an untied LM head is copied whole instead of gathered to the kept rows",
           "trim/write.py",
           [("RowGather(ckpt, name, kept) if name in vocab.names else",
             "RowGather(ckpt, name, kept) if name in vocab.embeddings else")],
           ["tests/trim/test_trim_models.py::test_scripts_trim_is_lossless[byte_level-untied-llama]"]),
    Mutant("trim-ids-out-of-order", "kept tokens are renumbered in the order of their strings, not of their ids",
           "trim/select.py",
           [("kept=sorted(i for i in kept if vocab.tokens[i] is not None)",
             "kept=sorted((i for i in kept if vocab.tokens[i] is not None), key=lambda i: vocab.tokens[i])")],
           ["tests/trim/test_trim_models.py::test_scripts_trim_is_lossless[byte_level-tied-llama]"]),
    Mutant("structured-ties-reversed", "structured pruning removes the higher index first among equal scores",
           "structured/scores.py",
           [("order = sorted(range(n), key=lambda i: (float(scores[i]), i))",
             "order = sorted(range(n), key=lambda i: (float(scores[i]), -i))  # MUTANT")],
           ["tests/structured/test_structured_units.py::test_ties_remove_the_lower_index_first"]),
    Mutant("structured-wanda-without-activations", "the wanda channel/group score forgets the input RMS "
           "(it becomes the magnitude score)",
           "structured/scores.py",
           [("    return norms * rms.double().to(norms.device)", "    return norms  # MUTANT")],
           ["tests/structured/test_structured_agreement.py::test_agrees_with_naive"
            "[llama-mlp=0.25,heads=0.5,blocks=1-wanda-ls]"]),
    Mutant("structured-dense-stream-stuck", "the dense stream (recovery target \"model\") is not advanced past "
           "the block: every MLP is fit toward the dense block's input instead of its output",
           "structured/steps.py",
           [("else advance_dense_stream(block, calls, dense_stream)", "else list(dense_stream)  # MUTANT")],
           ["tests/structured/test_structured_agreement.py::test_agrees_with_naive[llama-mlp=0.25-wanda-adam]"]),
    Mutant("structured-post-norm-skipped", "the MLP refit ignores Gemma 3's norm on the MLP output",
           "structured/steps.py",
           [("post = block.get_submodule(layout.mlp_output_norm) if layout.mlp_output_norm else None",
             "post = None  # MUTANT")],
           ["tests/structured/test_structured_agreement.py::test_agrees_with_naive[gemma3-mlp=0.25-wanda-adam]"]),
    # --slow: the same class of bug seen by the real 2-rank gloo run (tests/helpers/dist_probe.py)
    Mutant("absmax-summed", "absmax is all-reduced with SUM instead of MAX",
           "engine/distributed.py",
           [("(maxima, dist.ReduceOp.MAX)", "(maxima, dist.ReduceOp.SUM)")],
           [DIST_2_RANKS], slow=True),
    Mutant("every-rank-every-batch-torchrun", "under torchrun every rank processes every calibration batch",
           "engine/run.py",
           [("batches = [batches[j] for j in self.dist.batch_indices(len(batches))]", "batches = list(batches)")],
           [DIST_2_RANKS], slow=True),
]


def log(msg: str) -> None:
    print(f"[mutations] {msg}", flush=True)


def plant(text: str, edits: list, where: str) -> str:
    for old, new in edits:
        found = text.count(old)
        if found != 1:
            raise SystemExit(f"[mutations] pattern occurs {found} times in {where} (expected once); update "
                             f"tests/mutations/run_mutations.py to the refactored code:\n{old}")
        text = text.replace(old, new)
    return text


def installed_native() -> Path:
    """The built extension: next to the sources (python/featprune_ext) or in the installed package."""
    here = sorted(PACKAGE.glob("_C*.so"))
    if here:
        return here[0]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", "import featprune_ext._C as c; print(c.__file__)"], cwd="/",
                         env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"[mutations] no built featprune_ext._C found (build it first: make install):\n{out.stderr}")
    return Path(out.stdout.strip())


def copy_package(dest: Path, native: Path, source: Path = PACKAGE) -> Path:
    pkg = dest / "featprune_ext"
    shutil.copytree(source, pkg, ignore=shutil.ignore_patterns("__pycache__", "_C*.so"))
    shutil.copy2(native, pkg / native.name)
    return pkg


# -- the C++ mutant: rebuild _C ----------------------------------------------------------------
def _tool(name: str) -> str:
    local = Path(sys.executable).parent / name
    found = str(local) if local.exists() else shutil.which(name)
    if not found:
        raise SystemExit(f"[mutations] {name} not found (pip install {name})")
    return found


def _matching_build_dir(native: Path) -> Path | None:
    """The scikit-build directory whose _C*.so is byte-identical to the module in use (so its objects
    are current), or None."""
    for ninja_file in sorted((REPO / "build").glob("*/build.ninja")):
        build = ninja_file.parent
        built = sorted(build.glob("_C*.so"))
        if built and built[0].read_bytes() == native.read_bytes():
            return build
    return None


def build_native(source_rel: str, mutated: Path, native: Path, work: Path) -> Path:
    """_C built with `mutated` in place of REPO/source_rel; returns the new .so."""
    build = _matching_build_dir(native)
    out = work / native.name
    if build is not None:  # fast: recompile one file, relink with the existing objects
        original = str(REPO / source_rel)
        commands = subprocess.run([_tool("ninja"), "-C", str(build), "-t", "commands"], capture_output=True,
                                  text=True, check=True).stdout.splitlines()
        compile_cmd = next((c for c in commands if f" -c {original}" in c), None)
        link_cmd = next((c for c in commands if " -shared " in c and " -o _C" in c), None)
        if compile_cmd and link_cmd:
            obj = shlex.split(compile_cmd)
            obj_path = obj[obj.index("-o") + 1]
            new_obj = str(work / "mutant.o")
            args = []
            skip = 0
            for tok in obj:  # drop the dependency-file flags; point -c and -o at the mutant
                if skip:
                    skip -= 1
                    continue
                if tok in ("-MT", "-MF"):
                    skip = 1
                    continue
                if tok == "-MD":
                    continue
                args.append({original: str(mutated), obj_path: new_obj}.get(tok, tok))
            args.insert(1, f"-I{(REPO / source_rel).parent}")  # the mutant's own-directory includes (prune_rows_x86.h)
            link = link_cmd.strip()
            link = link[len(": && "):] if link.startswith(": && ") else link
            link = link.split(" && ")[0]  # the link itself; post-build steps (strip) are not needed
            link_args = [{obj_path: new_obj}.get(tok, tok) for tok in shlex.split(link)]
            link_args[link_args.index("-o") + 1] = str(out)
            subprocess.run(args, cwd=build, check=True)
            subprocess.run(link_args, cwd=build, check=True)
            return out
    # Otherwise a CPU-only build of our own, kept in build/mutations/ so later runs only recompile
    # what changed (the first one builds everything: a minute or two).
    log("no build directory matching the installed module: CPU-only build in build/mutations/")
    own = REPO / "build" / "mutations"
    src, bdir = own / "src", own / "build"
    for f in [REPO / "CMakeLists.txt", *sorted(p for p in (REPO / "csrc").rglob("*") if p.is_file())]:
        dst = src / f.relative_to(REPO)
        if not dst.exists() or dst.read_bytes() != f.read_bytes():  # unchanged files are left alone
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, dst)  # a fresh mtime: ninja rebuilds what depends on it
    (src / source_rel).write_text(mutated.read_text())
    if not (bdir / "build.ninja").exists():
        pybind = subprocess.run([sys.executable, "-m", "pybind11", "--cmakedir"], capture_output=True, text=True,
                                check=True).stdout.strip()
        read_version = f"import runpy; print(runpy.run_path({str(PACKAGE / '_version.py')!r})['__version__'])"
        version = subprocess.run([sys.executable, "-c", read_version], capture_output=True, text=True).stdout.strip()
        subprocess.run([_tool("cmake"), "-S", str(src), "-B", str(bdir), "-G", "Ninja", "-DFEATPRUNE_CUDA=OFF",
                        f"-DSKBUILD_PROJECT_VERSION={version or '0.0.0'}", f"-DPython_EXECUTABLE={sys.executable}",
                        f"-Dpybind11_DIR={pybind}", f"-DCMAKE_MAKE_PROGRAM={_tool('ninja')}"],
                       check=True, stdout=subprocess.DEVNULL)
    subprocess.run([_tool("ninja"), "-C", str(bdir)], check=True, stdout=subprocess.DEVNULL)
    shutil.copy2(next(bdir.glob("_C*.so")), out)
    return out


# -- running the tests -------------------------------------------------------------------------
def run_tests(pythonpath: Path, tests: list, work: Path, verbose: bool) -> dict:
    """{node id: "passed" | "failed" | "skipped" | "missing"} for the listed tests, run against `pythonpath`."""
    env = {**os.environ, "PYTHONPATH": str(pythonpath), "PYTHONDONTWRITEBYTECODE": "1",
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}  # tiny tensors: threads only contend
    where = subprocess.run([sys.executable, "-c", "import featprune_ext; print(featprune_ext.__file__)"],
                           env=env, cwd=REPO, capture_output=True, text=True)
    if not where.stdout.strip().startswith(str(pythonpath)):
        raise SystemExit(f"[mutations] featprune_ext does not resolve to the copy in {pythonpath}: "
                         f"{where.stdout.strip() or where.stderr}")
    junit = work / "junit.xml"
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
           f"--junitxml={junit}", *tests]
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=not verbose, text=True)
    status = {t: "missing" for t in tests}
    if junit.exists():
        for case in ET.parse(junit).getroot().iter("testcase"):
            path = case.get("file") or case.get("classname", "").replace(".", "/") + ".py"
            node = f"{path}::{case.get('name')}"
            if node not in status:  # classname form: tests.engine.test_engine -> tests/engine/test_engine.py
                node = next((t for t in tests if t.endswith("::" + case.get("name"))), node)
            failed = case.find("failure") is not None or case.find("error") is not None
            skipped = case.find("skipped") is not None
            status[node] = "failed" if failed else "skipped" if skipped else "passed"
    if any(v == "missing" for v in status.values()):  # not collected: an import error, a renamed test
        tail = (proc.stdout or "")[-3000:] + (proc.stderr or "")[-3000:]
        log(f"pytest exit {proc.returncode}; tests not run: {[k for k, v in status.items() if v == 'missing']}"
            f"\n{tail}")
    return status


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="run only these mutants (by name)")
    parser.add_argument("--slow", action="store_true", help="also the mutants only a torchrun test sees (minutes)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary copies")
    parser.add_argument("-v", "--verbose", action="store_true", help="show pytest's output")
    parser.add_argument("-j", "--jobs", type=int, default=min(2, os.cpu_count() or 1),
                        help="pytest runs at a time (default: 2, or 1 on one core); each uses one thread")
    args = parser.parse_args(argv)
    mutants = [m for m in MUTANTS if (m.name in args.only if args.only else args.slow or not m.slow)]
    if args.only and len(mutants) != len(args.only):
        raise SystemExit(f"[mutations] unknown mutant in {args.only}; have {[m.name for m in MUTANTS]}")
    for m in [m for m in mutants if not cpu_has_path(m.cpu_path)]:  # its tests would skip, not fail
        log(f"skipped {m.name}: this CPU has no {m.cpu_path} path")
        mutants.remove(m)
    t0 = time.perf_counter()
    native = installed_native()
    root = Path(tempfile.mkdtemp(prefix="featprune-mutations-"))
    ok = True
    try:
        # One snapshot of the sources, so every run sees the same code even while someone edits the tree.
        snapshot = copy_package(root / "snapshot", native)
        # Plant every bug first: a pattern that no longer matches fails before any test runs.
        planted = []
        for m in mutants:
            text = (REPO / m.file).read_text() if m.native else (snapshot / m.file).read_text()
            planted.append(plant(text, m.edits, m.file))

        # Prepare every copy (the C++ mutant is compiled here), then run the tests, `--jobs` at a time.
        all_tests = list(dict.fromkeys(t for m in mutants for t in m.tests))
        clean = root / "untouched"
        copy_package(clean, native, snapshot)
        for m, text in zip(mutants, planted):
            t = time.perf_counter()
            pkg = copy_package(root / m.name, native, snapshot)
            if m.native:
                mutated = root / m.name / Path(m.file).name
                mutated.write_text(text)
                shutil.copy2(build_native(m.file, mutated, native, root / m.name), pkg / native.name)
                log(f"built _C with {m.name} ({time.perf_counter() - t:.0f} s)")
            else:
                (pkg / m.file).write_text(text)

        def job(name, tests):
            t = time.perf_counter()
            return name, run_tests(root / name, tests, root / name, args.verbose), time.perf_counter() - t

        runs = [("untouched", all_tests)] + [(m.name, m.tests) for m in mutants]
        by_name = {m.name: m for m in mutants}
        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            for name, status, took in (f.result() for f in as_completed([pool.submit(job, *r) for r in runs])):
                if name == "untouched":
                    bad = {k: v for k, v in status.items() if v != "passed"}
                    log(f"untouched copy: {len(all_tests) - len(bad)}/{len(all_tests)} tests pass ({took:.0f} s)")
                    for k, v in bad.items():
                        log(f"  NOT PASSING on the untouched copy: {k} ({v})")
                    ok &= not bad
                    continue
                m = by_name[name]
                survived = [k for k, v in status.items() if v != "failed"]
                if survived:
                    ok = False
                    log(f"SURVIVED {m.name} ({m.bug}) in {took:.0f} s; not caught by:")
                    for k in survived:
                        log(f"  {k} ({status[k]})")
                else:
                    log(f"caught {m.name}: {m.bug} ({len(m.tests)} test(s) fail, {took:.0f} s)")
    finally:
        if args.keep:
            log(f"copies kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    log(f"{'all mutants caught' if ok else 'FAILED'} in {time.perf_counter() - t0:.0f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
