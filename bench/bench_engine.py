"""Engine bench: featprune end to end against the floor, two plain forward passes, on CPU.

For one model and one calibration set, in the same run and interleaved (repeats alternate the order):
  floor      a fresh process loads the whole model in memory once, records each block's inputs, then
             runs every block twice over all calibration batches and nothing else (the same batches
             featprune used); only those two passes are timed.
  featprune  `python -m featprune_ext prune ...` in a fresh process; wall time from process start to
             exit (imports, tokenizer and output writing included), and the per-phase seconds of its
             featprune.json ("timings.phases": read, capture, stats, select, pruned pass, write, and
             the main thread's waits on the reader and the writer).
Medians over --repeats; the load average is printed (this VM's two cores are shared: timings are noisy).

    python bench/bench_engine.py --model gemma3-270m [--nsamples 24] [--shots 8] [--seqlen 512]
        [--batch-size auto] [--dtype float32] [--repeats 3] [--src NAME=PYTHONPATH ...] [--dtypes ...]
        [--env NAME=VAR=VALUE ...] [--option NAME=FLAG=VALUE ...] [--tuning NAME=FIELD=VALUE ...] [--naive]
        [--no-write]

Models: smollm2 and gemma3-270m (the real ones, from featprune_ext.data.zoo) and qwen2-0.5b (a random
Qwen2-0.5B-shaped model generated once by bench/synth_model.py under ~/.cache/featprune/bench).
--src adds a featprune arm run from another source tree (e.g. the code before a change), and its masks
are compared byte for byte with the first arm's; --env adds one run with an environment variable set
(e.g. avx2=FEATPRUNE_CPU_SIMD=avx2); --option adds one run with a prune option added (e.g.
hf=--model-code=transformers: transformers' model classes); --tuning adds one run with an engine lever
set through the API (bench/tuned_prune.py; e.g. nofork=fork=0, wholepass=stats_early_stop=0, noearly=early_shard=0,
nonice=background_nice=0, slowexit=fast_exit=0). --dtypes adds one featprune arm per compute dtype
(mask agreement vs the first arm). --naive adds the naive in-memory Wanda (tests/helpers/naive.py).
Replaces the "Floor: MODEL" subsection of the Engine section of bench/RESULTS.md.
Calibration texts: k-shot translation demonstrations built from the gettext catalogs under
/usr/share/locale (interface strings, human translations).
"""

from __future__ import annotations

import argparse
import gettext
import hashlib
import json
import os
import platform
import random
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# the naive in-memory oracle lives with the tests (not in the wheel); children run it as `-m naive`
HELPERS = HERE.parent / "tests" / "helpers"
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HELPERS), os.environ.get("PYTHONPATH")]))
RESULTS = HERE / "RESULTS.md"
SECTION = "## Engine"
LANGS = {"fr": "French", "de": "German", "es": "Spanish", "ru": "Russian", "zh_CN": "Chinese", "ja": "Japanese"}


# -- RESULTS.md: only the "## Engine" section is ours --------------------------------------------
def update_results(subsection: str, body: str, path: Path = RESULTS) -> None:
    """Replace (or add) `### subsection` inside `## Engine`, leaving every other section alone."""
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    block = f"### {subsection}\n\n{body.rstrip()}\n"
    start = text.find(f"\n{SECTION}\n") + 1 if f"\n{SECTION}\n" in text else (0 if text.startswith(SECTION + "\n")
                                                                             else -1)
    if start < 0:
        text = text.rstrip() + f"\n\n{SECTION}\n\n{block}"
    else:
        nxt = re.search(r"^## ", text[start + len(SECTION):], re.M)
        end = start + len(SECTION) + nxt.start() if nxt else len(text)
        section = text[start:end]
        sub = re.search(rf"^### {re.escape(subsection)}\n.*?(?=^### |\Z)", section, re.M | re.S)
        section = (section[:sub.start()] + block + "\n" + section[sub.end():] if sub
                   else section.rstrip() + "\n\n" + block + "\n")
        text = text[:start] + section.rstrip() + "\n" + ("\n" + text[end:] if end < len(text) else "")
    path.write_text(text.rstrip() + "\n")


def machine_line() -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{platform.node() or 'host'}: {os.cpu_count()} CPUs, Python {platform.python_version()}, "
            f"load average {load:.1f} at the start (other jobs share this machine: timings are noisy)")


# -- calibration texts -------------------------------------------------------------------------
def _pairs(lang: str) -> list[tuple[str, str]]:
    out = []
    for mo in sorted(Path("/usr/share/locale", lang, "LC_MESSAGES").glob("*.mo")):
        try:
            catalog = gettext.GNUTranslations(open(mo, "rb"))._catalog
        except Exception:
            continue
        for src, tgt in catalog.items():
            if not isinstance(src, str) or not isinstance(tgt, str):
                continue
            src = src.split("\x04")[-1]
            if (5 <= len(src.split()) <= 60 and src[:1].isupper() and src.endswith((".", "!", "?"))
                    and not re.search(r"[%{<\\_\n]", src + tgt) and tgt.strip()):
                out.append((src, tgt))
    return out


def demonstration_texts(n: int, seed: int = 0, shots: int = 4) -> list[str]:
    rng = random.Random(seed)
    pools = {name: p for lang, name in LANGS.items() if len(p := _pairs(lang)) >= shots}
    if not pools:
        raise SystemExit("no gettext catalogs under /usr/share/locale to build calibration texts from")
    names = sorted(pools)
    texts = []
    for i in range(n):
        name = names[i % len(names)]
        shots_ = rng.sample(pools[name], shots)
        texts.append("".join(f"English: {s}\n{name}: {t}\n\n" for s, t in shots_))
    return texts


MODELS = ("smollm2", "gemma3-270m", "qwen2-0.5b")
PHASE_ORDER = ("startup_s", "setup_s", "capture_s", "read_s", "wait_read_s", "attach_s", "stats_s", "select_s",
               "pruned_pass_s", "write_s", "wait_write_s", "finalize_s")
BACKGROUND = ("read_s", "write_s")  # busy time on the prefetch and writer threads, overlapping the rest


def model_dir(name: str) -> Path:
    if name == "qwen2-0.5b":
        sys.path.insert(0, str(HERE))
        from synth_model import build_random_model

        root = Path(os.environ.get("FEATPRUNE_BENCH_CACHE", Path.home() / ".cache" / "featprune" / "bench"))
        return build_random_model(root / "qwen2-0.5b-random", "qwen2-0.5b")
    from featprune_ext.data import zoo

    return zoo.smollm2_dir() if name == "smollm2" else zoo.gemma3_270m_dir()


# -- the floor (child process) -----------------------------------------------------------------
def floor_child(args) -> int:
    """Two plain forward passes of every block over the calibration batches; prints one JSON line."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from featprune_ext.data.calibration_set import CalibrationSet, read_jsonl_texts
    from featprune_ext.engine.batches import make_batches, pad_id_for
    from featprune_ext.engine.capture import capture_block_calls
    from featprune_ext.engine.families import find_blocks
    from featprune_ext.engine.report import peak_rss_bytes

    device = torch.device(args.device)
    texts, buckets = read_jsonl_texts(args.calib_texts)
    calib = CalibrationSet.from_texts(texts, AutoTokenizer.from_pretrained(args.model_dir), args.nsamples,
                                      args.seqlen, 0, buckets=buckets)
    t0 = time.perf_counter()
    dtype = getattr(torch, args.dtype) if args.dtype else "auto"
    model = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=dtype).to(device).eval()
    load_s = time.perf_counter() - t0
    _, blocks = find_blocks(model)
    batches = make_batches(calib, int(args.batch_size), pad_id_for(model.config, model.config.get_text_config()
                                                                       .vocab_size))

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    with torch.no_grad():
        calls, hidden = capture_block_calls(model, blocks, batches, device)
        sync()
        passes = [0.0, 0.0]
        cpu0 = time.process_time()
        for i, block in enumerate(blocks):
            for p in range(2):
                t = time.perf_counter()
                out = [c.run(block, h) for c, h in zip(calls[i], hidden)]
                sync()
                passes[p] += time.perf_counter() - t
            hidden = out
        cpu = time.process_time() - cpu0
    print(json.dumps({"floor_s": sum(passes), "floor_cpu_s": cpu, "pass_s": passes, "load_s": load_s,
                      "tokens": calib.num_tokens,
                      "batches": len(batches), "peak_rss_bytes": peak_rss_bytes(),
                      "peak_cuda_bytes": torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None}))
    return 0


# -- arms ----------------------------------------------------------------------------------------
def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_cmd(cmd: list[str], env: dict | None = None) -> tuple[float, str, float]:
    """(wall seconds, stdout, CPU seconds of the child: user + system, all its threads)."""
    t0, c0 = time.perf_counter(), _children_cpu()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall, cpu = time.perf_counter() - t0, _children_cpu() - c0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return wall, proc.stdout, cpu


def featprune_arm(model: Path, out: Path, common: list[str], batch_size: str, dtype: str | None,
                  src: str | None, extra_env: dict | None = None, levers: list[str] | None = None,
                  options: list[str] | None = None) -> dict:
    env = {**os.environ, **(extra_env or {})}
    if src:
        env["PYTHONPATH"] = os.pathsep.join([src, str(HELPERS)])
    launch = [str(HERE / "tuned_prune.py"), *levers, "--"] if levers else ["-m", "featprune_ext"]
    cmd = [sys.executable, *launch, "prune", str(model), "--out", str(out), *common,
           "--batch-size", str(batch_size), "--no-progress", "-q", *(options or [])]
    if dtype:
        cmd += ["--dtype", dtype]
    load = os.getloadavg()[0]
    try:
        wall, _, cpu = run_cmd(cmd, env)
    except SystemExit as exc:  # e.g. fp16 activations overflowing: report it in the table
        lines = str(exc).strip().splitlines()
        return {"error": " / ".join(lines[-3:])[:400], "load": load, "wall_s": float("nan")}
    report = json.loads((out / "featprune.json").read_text())
    t = report["timings"]
    phases = dict(t.get("phases", {}))
    phases["startup_s"] = wall - t["total_s"]  # interpreter, imports, tokenizer, calibration, arguments
    return {"wall_s": wall, "cpu_s": cpu, "inner_s": t["total_s"], "phases": phases, "batch_size": report["batch_size"],
            "tokens": report["calibration"]["tokens"], "peak_rss_bytes": report["peak_rss_bytes"], "load": load}


def floor_arm(model: Path, calib: Path, args, batch_size: int, dtype: str | None) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--floor-child", "--model-dir", str(model),
           "--calib-texts", str(calib), "--nsamples", str(args.nsamples), "--seqlen", str(args.seqlen),
           "--batch-size", str(batch_size), "--device", args.device]
    if dtype:
        cmd += ["--dtype", dtype]
    load = os.getloadavg()[0]
    wall, out, _ = run_cmd(cmd)
    res = json.loads(out.strip().splitlines()[-1])
    res.update(wall_s=wall, load=load)
    return res


def naive_arm(model: Path, out: Path, common: list[str]) -> dict:
    load = os.getloadavg()[0]
    wall, stdout, cpu = run_cmd([sys.executable, "-m", "naive", str(model), *common, "--out", str(out)])
    inner = json.loads(stdout.strip().splitlines()[-1])
    return {"wall_s": wall, "cpu_s": cpu, "inner_s": inner["wall_s"], "peak_rss_bytes": inner["peak_rss_bytes"],
            "load": load}


def token_cache_record(model: Path, texts: list[str], folder: Path) -> Path:
    """The token cache file a first run writes for `model` (ids, and the record of the tokenizer's
    pipeline the direct path checks), made here with transformers' tokenizer."""
    from transformers import AutoTokenizer

    from featprune_ext.data.token_cache import CachedTokenizer

    cached = CachedTokenizer(model, lambda: AutoTokenizer.from_pretrained(model), folder)
    for t in texts:
        cached(t)
    cached.save()
    (path,) = folder.iterdir()
    if "pipeline_sha256" not in json.loads(path.read_text(encoding="utf-8")):
        raise SystemExit(f"--new-texts: {model}'s tokenizer has no `tokenizers` pipeline: no direct path to time")
    return path


def fresh_token_cache(folder: Path, mode: str, record: Path) -> Path:
    """A token cache folder for one run on texts it has not seen: empty ("cold"), or holding only the
    tokenizer's record, its ids dropped ("direct")."""
    folder.mkdir(parents=True)
    if mode == "direct":
        data = json.loads(record.read_text(encoding="utf-8"))
        data["ids"] = {}
        (folder / record.name).write_text(json.dumps(data), encoding="utf-8")
    return folder


# -- masks -----------------------------------------------------------------------------------------
def _weight_map(d: Path) -> dict:
    from safetensors import safe_open

    index = d / "model.safetensors.index.json"
    if index.exists():
        return json.loads(index.read_text())["weight_map"]
    with safe_open(str(d / "model.safetensors"), "pt") as f:
        return {k: "model.safetensors" for k in f.keys()}


def _pruned_keys(d: Path) -> list[str]:
    report = d / "featprune.json"
    if report.exists():
        return sorted(k for layer in json.loads(report.read_text())["layers"] for k in layer["matrices"])
    return sorted(k for k in _weight_map(d) if ".layers." in k and k.endswith("proj.weight"))


def mask_digest(d: Path) -> str:
    """sha256 over every pruned matrix's zero mask (name, shape, bytes): equal digests = identical masks."""
    from safetensors import safe_open

    wm, h = _weight_map(d), hashlib.sha256()
    for key in _pruned_keys(d):
        with safe_open(str(d / wm[key]), "pt") as f:
            m = (f.get_tensor(key) == 0).contiguous()
        h.update(f"{key}{tuple(m.shape)}".encode())
        h.update(m.numpy().tobytes())
    return h.hexdigest()[:16]


def mask_agreement(a: Path, b: Path) -> float:
    from safetensors import safe_open

    wa, wb = _weight_map(a), _weight_map(b)
    same = total = 0
    for key in _pruned_keys(a):
        with safe_open(str(a / wa[key]), "pt") as fa, safe_open(str(b / wb[key]), "pt") as fb:
            x, y = fa.get_tensor(key) == 0, fb.get_tensor(key) == 0
        same += int((x == y).sum())
        total += x.numel()
    return same / total if total else float("nan")


# -- main --------------------------------------------------------------------------------------------
def _median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else float("nan")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="gemma3-270m", choices=MODELS)
    p.add_argument("--nsamples", type=int, default=None, help="default: 24 (smollm2, gemma3-270m), 12 (qwen2-0.5b)")
    p.add_argument("--shots", type=int, default=8, help="demonstrations per calibration text (default 8)")
    p.add_argument("--seqlen", type=int, default=512)
    p.add_argument("--sparsity", type=float, default=0.5)
    p.add_argument("--batch-size", default="auto", help="featprune's --batch-size (default auto); the floor "
                                                         "uses the batch size featprune resolved")
    p.add_argument("--dtype", default=None, help="featprune's --dtype for the main arm (default: storage)")
    p.add_argument("--dtypes", default="", help="extra featprune arms, one per compute dtype (comma-separated)")
    p.add_argument("--src", action="append", default=[], metavar="NAME=DIR",
                   help="extra featprune arm run with PYTHONPATH=DIR (e.g. a copy of the code before a change)")
    p.add_argument("--env", action="append", default=[], metavar="NAME=VAR=VALUE",
                   help="extra featprune arm run with the environment variable VAR=VALUE (e.g. "
                        "avx2=FEATPRUNE_CPU_SIMD=avx2: the AVX2 kernel path)")
    p.add_argument("--option", action="append", default=[], metavar="NAME=FLAG=VALUE",
                   help="one more featprune arm with a prune option added (e.g. hf=--model-code=transformers)")
    p.add_argument("--tuning", action="append", default=[], metavar="NAME=FIELD=VALUE",
                   help="extra featprune arm run with an engine lever set (bench/tuned_prune.py; e.g. "
                        "nofork=fork=0: the calibration built in-process)")
    p.add_argument("--new-texts", action="store_true",
                   help="two more featprune arms for texts the token cache has not seen: 'cold' (a fresh empty "
                        "cache: transformers' tokenizer is loaded) and 'direct' (a fresh cache holding only the "
                        "tokenizer's verified pipeline record: tokenizer.json is loaded by `tokenizers` alone)")
    p.add_argument("--src-batch-size", default=None, help="--batch-size of the --src arms (default: --batch-size)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--naive", action="store_true", help="also run the naive in-memory Wanda")
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-write", action="store_true", help="do not update bench/RESULTS.md")
    p.add_argument("--section", default=None, help="RESULTS.md subsection (default: 'Floor: MODEL on DEVICE')")
    p.add_argument("--floor-child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--model-dir", help=argparse.SUPPRESS)
    p.add_argument("--calib-texts", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.floor_child:
        return floor_child(args)
    if args.nsamples is None:
        args.nsamples = 12 if args.model == "qwen2-0.5b" else 24

    model = model_dir(args.model)
    machine = machine_line()
    loads = [os.getloadavg()[0]]
    arms = [{"name": "featprune", "src": None, "dtype": args.dtype}]
    for spec in args.src:
        name, _, src = spec.partition("=")
        arms.append({"name": f"featprune ({name})", "src": str(Path(src).resolve()), "dtype": args.dtype,
                     "batch_size": args.src_batch_size or args.batch_size})
    for spec in args.env:
        name, _, assignment = spec.partition("=")
        var, _, value = assignment.partition("=")
        arms.append({"name": f"featprune ({name})", "src": None, "dtype": args.dtype, "env": {var: value}})
    for spec in args.option:
        name, _, option = spec.partition("=")
        flag, _, value = option.partition("=")
        arms.append({"name": f"featprune ({name})", "src": None, "dtype": args.dtype, "options": [flag, value]})
    for spec in args.tuning:
        name, _, lever = spec.partition("=")
        arms.append({"name": f"featprune ({name})", "src": None, "dtype": args.dtype, "levers": [lever]})
    if args.new_texts:
        arms += [{"name": f"featprune (new texts, {mode})", "src": None, "dtype": args.dtype, "cache": mode}
                 for mode in ("cold", "direct")]
    for dt in filter(None, args.dtypes.split(",")):
        arms.append({"name": f"featprune --dtype {dt}", "src": None, "dtype": dt})
    results: dict[str, list[dict]] = {a["name"]: [] for a in arms}
    results["floor"], results["naive"] = [], []
    digests, agreement = {}, {}
    with tempfile.TemporaryDirectory(prefix="featprune_bench_") as tmp:
        tmp = Path(tmp)
        calib = tmp / "calib.jsonl"
        calib.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n"
                                 for t in demonstration_texts(args.nsamples, shots=args.shots)), encoding="utf-8")
        common = ["--calib-texts", str(calib), "--nsamples", str(args.nsamples), "--seqlen", str(args.seqlen),
                  "--sparsity", str(args.sparsity)]
        first_out = tmp / "keep-0"
        record = token_cache_record(model, [json.loads(line)["text"] for line in calib.read_text().splitlines()],
                                    tmp / "record") if args.new_texts else None
        for r in range(args.repeats):
            order = [*arms, "floor"] + (["naive"] if args.naive else [])
            if r % 2:
                order.reverse()
            batch_size = results["featprune"][-1]["batch_size"] if results["featprune"] else None
            if batch_size is None and order[0] == "floor":  # the floor needs featprune's resolved batch size
                order = [*arms, "floor"] + (["naive"] if args.naive else [])
            for arm in order:
                if arm == "floor":
                    batch_size = results["featprune"][-1]["batch_size"]
                    res = floor_arm(model, calib, args, batch_size, args.dtype)
                    results["floor"].append(res)
                elif arm == "naive":
                    out = tmp / f"naive-{r}"
                    res = naive_arm(model, out, common)
                    results["naive"].append(res)
                    if r == 0:
                        agreement["naive"] = mask_agreement(first_out, out)
                    shutil.rmtree(out, ignore_errors=True)
                else:
                    k = arms.index(arm)
                    out = tmp / (f"keep-{k}" if r == 0 else f"run-{k}-{r}")
                    env = arm.get("env")
                    if arm.get("cache"):
                        env = {"FEATPRUNE_TOKEN_CACHE": str(fresh_token_cache(tmp / f"cache-{k}-{r}", arm["cache"],
                                                                              record))}
                    res = featprune_arm(model, out, common, arm.get("batch_size", args.batch_size), arm["dtype"],
                                        arm["src"], env, arm.get("levers"), arm.get("options"))
                    results[arm["name"]].append(res)
                    if r == 0:
                        digests[arm["name"]] = mask_digest(out) if "error" not in res else None
                    else:
                        shutil.rmtree(out, ignore_errors=True)
                name = arm if isinstance(arm, str) else arm["name"]
                print(f"[{r}] {name}: {res['wall_s']:.1f} s (load {res['load']:.1f}) {res.get('error', '')}",
                      file=sys.stderr, flush=True)
                if name == "featprune" and "error" in res:
                    raise SystemExit(f"the reference featprune arm failed: {res['error']}")
            loads.append(os.getloadavg()[0])
        for k, arm in enumerate(arms[1:], 1):
            if digests[arm["name"]] not in (None, digests["featprune"]):
                agreement[arm["name"]] = mask_agreement(first_out, tmp / f"keep-{k}")

    gib = 2**30
    fp = results["featprune"]
    floor = _median([x["floor_s"] for x in results["floor"]])
    floor_cpu = _median([x["floor_cpu_s"] for x in results["floor"]])
    tokens = fp[0]["tokens"]
    cmd = " ".join(["python bench/bench_engine.py", *(argv if argv is not None else sys.argv[1:])])
    lines = [
        f"Command: `{cmd}`.",
        f"{args.model} ({model.name}), {args.device}, {args.nsamples} gettext {args.shots}-shot translation "
        f"demonstrations cut to <= {args.seqlen} tokens ({tokens} tokens), {args.sparsity:.0%} unstructured Wanda, "
        f"--batch-size {args.batch_size} (resolved: {fp[0]['batch_size']}), compute dtype "
        f"{args.dtype or 'storage'}. Medians of {args.repeats} interleaved repeats (CPU s: user + system time of the "
        f"featprune process, and of the floor's two timed passes; less sensitive than wall time to the other jobs "
        f"on this machine). Measured "
        f"{time.strftime('%Y-%m-%d %H:%M')} on {machine}; load average during the runs "
        f"{min(loads):.1f}-{max(loads):.1f}.",
        "",
        "| arm | wall s | x floor | CPU s | x floor CPU | masks vs featprune | peak RSS GiB |",
        "|---|---:|---:|---:|---:|---|---:|",
        f"| floor: 2 plain forward passes of every block (model in memory; pass 1 / pass 2 "
        f"{_median([x['pass_s'][0] for x in results['floor']]):.1f} / "
        f"{_median([x['pass_s'][1] for x in results['floor']]):.1f} s) | {floor:.1f} | 1.00 | {floor_cpu:.1f} | "
        f"1.00 | | "
        f"{_median([x['peak_rss_bytes'] for x in results['floor']]) / gib:.2f} |",
    ]
    for arm in arms:
        rs = [x for x in results[arm["name"]] if "error" not in x]
        if not rs:
            lines.append(f"| {arm['name']} | failed: {results[arm['name']][0]['error']} | | | | | |")
            continue
        wall = _median([x["wall_s"] for x in rs])
        masks = ("(reference)" if arm["name"] == "featprune" else
                 "identical (same digest)" if digests[arm["name"]] == digests["featprune"] else
                 f"{agreement[arm['name']] * 100:.3f}% of entries agree")
        cpu = _median([x["cpu_s"] for x in rs])
        lines.append(f"| {arm['name']} end to end (process) | {wall:.1f} | {wall / floor:.2f} | {cpu:.1f} | "
                     f"{cpu / floor_cpu:.2f} | {masks} | "
                     f"{_median([x['peak_rss_bytes'] for x in rs]) / gib:.2f} |")
    if results["naive"]:
        wall = _median([x["wall_s"] for x in results["naive"]])
        cpu = _median([x["cpu_s"] for x in results["naive"]])
        lines.append(f"| naive in-memory Wanda (process) | {wall:.1f} | {wall / floor:.2f} | {cpu:.1f} | "
                     f"{cpu / floor_cpu:.2f} | "
                     f"{agreement['naive'] * 100:.3f}% of entries agree | "
                     f"{_median([x['peak_rss_bytes'] for x in results['naive']]) / gib:.2f} |")
    lines += ["", "Per phase (median seconds; read and write are busy time on the prefetch and writer threads, "
                  "overlapping the main thread, whose waits on them are wait_read and wait_write; startup = "
                  "process wall minus featprune's own total: interpreter, imports, tokenizer, calibration):", ""]
    header = "| phase | " + " | ".join(a["name"] for a in arms) + " |"
    lines += [header, "|---|" + "---:|" * len(arms)]
    for ph in PHASE_ORDER:
        vals = [_median([x["phases"].get(ph) for x in results[a["name"]] if "error" not in x]) for a in arms]
        label = ph[:-2] + (" (background)" if ph in BACKGROUND else "")
        lines.append(f"| {label} | " + " | ".join(f"{v:.2f}" for v in vals) + " |")
    main_sum = [_median([sum(v for k, v in x["phases"].items() if k not in BACKGROUND) for x in results[a["name"]]
                         if "error" not in x]) for a in arms]
    lines.append("| main thread + startup (sum) | " + " | ".join(f"{v:.2f}" for v in main_sum) + " |")
    body = "\n".join(lines)
    print(body)
    print(json.dumps({"digests": digests, "agreement": agreement}), file=sys.stderr)
    if not args.no_write:
        update_results(args.section or f"Floor: {args.model} on {args.device}", body)
        print(f"\nupdated {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
