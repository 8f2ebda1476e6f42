"""sha256 of every output safetensors of a set of prune runs: the check that a refactor leaves every
mask (and every kept weight) byte-identical.

    .venv/bin/python bench/mask_hashes.py WORK OUT.json      (from the repository root)

Builds (once) two tiny models in WORK/models (llama, qwen2_moe: dense and mixture-of-experts), prunes
them with wanda, wanda 2:4 + protection, sparsegpt, sparsegpt 2:4, OWL with wanda and with sparsegpt,
magnitude and random, and the real SmolLM2 135M (featprune_ext.data.zoo) with wanda, sparsegpt and OWL,
all through `featprune prune`, and writes {run: {file: sha256, overall_sparsity}} to OUT.json. Run it on
the code before and after a change with the same WORK and compare the two files."""
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, os.getcwd())
from featprune_ext.data.zoo import smollm2_dir  # noqa: E402
from tests.helpers.tiny_models import build_tiny_model, write_calibration_jsonl  # noqa: E402

work, out_json = Path(sys.argv[1]), Path(sys.argv[2])
models = work / "models"
models.mkdir(parents=True, exist_ok=True)
tiny = {}
for fam in ("llama", "qwen2_moe"):
    d = models / fam
    if not d.exists():
        build_tiny_model(fam, d)
    tiny[fam] = d
calib = work / "calib.jsonl"
if not calib.exists():
    write_calibration_jsonl(calib)
featprune = str(Path(sys.executable).parent / "featprune")
env = {**os.environ, "FEATPRUNE_TOKEN_CACHE": "0"}
runs = {}
settings = {
    "wanda": ["--sparsity", "0.5"],
    "wanda-2of4-protect": ["--pattern", "2:4", "--protect-top", "5"],
    "sparsegpt": ["--method", "sparsegpt", "--sparsity", "0.5"],
    "sparsegpt-2of4": ["--method", "sparsegpt", "--pattern", "2:4"],
    "owl-wanda": ["--sparsity", "0.5", "--layerwise", "owl"],
    "owl-sparsegpt": ["--method", "sparsegpt", "--sparsity", "0.6", "--layerwise", "owl", "--owl-lambda", "0.05"],
    "magnitude": ["--method", "magnitude", "--sparsity", "0.4"],
    "random": ["--method", "random", "--sparsity", "0.4", "--seed", "3"],
}
CALIB_FREE = ("magnitude", "random")  # read no calibration data: no calibration options (refused after the refactor)
jobs = [(f"{fam}-{name}", d, args + ([] if name in CALIB_FREE else ["--nsamples", "12", "--seqlen", "32"]))
        for fam, d in tiny.items() for name, args in settings.items()]
smol = smollm2_dir()
for name in ("wanda", "sparsegpt", "owl-wanda"):
    jobs.append((f"smollm2-{name}", smol, settings[name] + ["--nsamples", "8", "--seqlen", "64"]))
outs = work / "outs"
shutil.rmtree(outs, ignore_errors=True)
outs.mkdir()
for name, model, args in jobs:
    out = outs / name
    source = [] if name.split("-", 1)[1] in CALIB_FREE else ["--calib-texts", str(calib)]
    cmd = [featprune, "prune", str(model), "--out", str(out), *source, "--no-progress", "-q", *args]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"{name} failed: {r.stderr}")
    files = sorted(p for p in out.iterdir() if p.name.endswith(".safetensors") or p.name.endswith(".index.json"))
    runs[name] = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}
    rep = json.loads((out / "featprune.json").read_text())
    runs[name]["overall_sparsity"] = rep["overall_sparsity"]
    print(name, rep["overall_sparsity"], rep["timings"]["total_s"], flush=True)
    shutil.rmtree(out)
out_json.write_text(json.dumps(runs, indent=1, sort_keys=True))
