"""Hub ids (hub.py): ORG/NAME resolves through a Hugging Face cache the tests build (offline), the
commands take them, only the files a run reads are downloaded, and every failure names the id."""

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import huggingface_hub
import pytest
from hub_cache import COMMIT, add_to_hub_cache, tree_digest
from huggingface_hub import constants
from huggingface_hub.utils import filter_repo_objects
from safetensors.torch import load_file

from featprune_ext import cli
from featprune_ext.errors import InputError
from featprune_ext.hub import SIDE_FILES, is_hub_id, model_label, resolve_model, weight_files

REPO = "tiny-org/tiny-llama"


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty hub cache, offline, for in-process calls (huggingface_hub reads its constants at import,
    so they are patched; subprocesses get the environment variables instead)."""
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


def _weights(model_dir: Path) -> dict:
    out = {}
    for f in sorted(model_dir.glob("*.safetensors")):
        out.update(load_file(f))
    return out


@pytest.mark.parametrize("spec, hub", [
    ("Qwen/Qwen2.5-7B", True), ("Qwen/Qwen2.5-7B@main", True), (f"org/name@{COMMIT}", True),
    ("google/gemma-3-270m@refs/pr/1", True), ("/abs/org/name", False), ("./org/name", False), ("org", False),
    ("a/b/c", False), ("~/name", False), ("org/../name", False), ("org/", False)])
def test_hub_id_syntax(spec, hub):
    assert is_hub_id(spec) is hub


def test_labels_and_plain_paths(tmp_path):
    assert model_label("Qwen/Qwen2.5-7B") == "Qwen2.5-7B" and model_label("Qwen/Qwen2.5-7B@v1") == "Qwen2.5-7B@v1"
    assert model_label(tmp_path) == tmp_path.name
    missing = tmp_path / "missing"
    assert resolve_model(missing) == missing  # not a hub id: the caller's own "does not exist" error


def test_local_dir_does_not_import_huggingface_hub(tiny_model):
    code = ("import sys; from featprune_ext.hub import resolve_model; "
            f"assert resolve_model({str(tiny_model('llama'))!r}).is_dir(); "
            "print('huggingface_hub' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


def test_prune_hub_id_from_the_offline_cache(tiny_model, calib_jsonl, tmp_path):
    """`featprune prune ORG/NAME` with HF_HUB_OFFLINE=1: the same pruned weights as from the directory,
    the cache left untouched."""
    cache = tmp_path / "hf-cache"
    snapshot = add_to_hub_cache(cache, REPO, tiny_model("llama"))
    before = tree_digest(cache)
    args = ["--calib-texts", str(calib_jsonl), "--nsamples", "6", "--seqlen", "16", "--sparsity", "0.5",
            "--no-progress", "-q"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache)}
    proc = subprocess.run([sys.executable, "-m", "featprune_ext.cli", "prune", REPO, "--out", str(tmp_path / "hub"),
                           *args], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    assert cli.main(["prune", str(tiny_model("llama")), "--out", str(tmp_path / "local"), *args]) == 0
    report = json.loads((tmp_path / "hub" / "featprune.json").read_text())
    assert report["model"]["source"] == str(snapshot.resolve())
    hub_w, local_w = _weights(tmp_path / "hub"), _weights(tmp_path / "local")
    assert hub_w.keys() == local_w.keys()
    assert all(hub_w[k].equal(local_w[k]) for k in hub_w)
    assert tree_digest(cache) == before
    # a missing id: exit 2, one line naming it
    proc = subprocess.run([sys.executable, "-m", "featprune_ext.cli", "prune", "tiny-org/absent", "--out",
                           str(tmp_path / "x"), *args], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 2
    assert "tiny-org/absent" in proc.stderr and "HF_HUB_OFFLINE" in proc.stderr and str(cache) in proc.stderr
    assert not (tmp_path / "x").exists()


def test_revisions_and_offline_errors(tiny_model, hub_cache):
    snapshot = add_to_hub_cache(hub_cache, REPO, tiny_model("llama"))
    add_to_hub_cache(hub_cache, REPO, tiny_model("llama"), commit="f" * 40, ref="v2", only=("config.json",))
    assert resolve_model(REPO) == snapshot
    assert resolve_model(f"{REPO}@main") == snapshot and resolve_model(f"{REPO}@{COMMIT}") == snapshot
    with pytest.raises(InputError, match=r"tiny-org/tiny-llama@v2: .*incomplete.*no \*\.safetensors.*HF_HUB_OFFLINE"):
        resolve_model(f"{REPO}@v2")
    with pytest.raises(InputError, match=r"tiny-org/tiny-llama@v9: .*is not in the Hugging Face cache"):
        resolve_model(f"{REPO}@v9")
    with pytest.raises(InputError, match=r"nobody/nothing: no such local directory.*not in the Hugging Face cache"):
        resolve_model("nobody/nothing")


def test_an_existing_output_fails_before_any_hub_lookup(hub_cache, tmp_path):
    import featprune_ext as fp

    with pytest.raises(InputError, match="already exists"):  # not "nobody/nothing: ... not in the cache"
        fp.prune("nobody/nothing", tmp_path, calib_texts=tmp_path / "c.txt", sparsity=0.5)


def test_sharded_snapshot_needs_every_shard(tiny_model, hub_cache):
    model = tiny_model("llama", sharded=True)
    shards = sorted(f.name for f in model.glob("*.safetensors"))
    assert len(shards) > 1
    add_to_hub_cache(hub_cache, REPO, model, only=tuple(f.name for f in model.iterdir() if f.name != shards[-1]))
    with pytest.raises(InputError, match=f"incomplete.*no {shards[-1]}"):
        resolve_model(REPO)
    add_to_hub_cache(hub_cache, REPO, model)
    assert resolve_model(REPO).name == COMMIT


def test_eval_compare_analyze_take_hub_ids(tiny_model, hub_cache, tmp_path, capsys):
    from featprune_ext.study import runner

    add_to_hub_cache(hub_cache, REPO, tiny_model("llama"))
    corpus = tmp_path / "corpus.jsonl"
    pairs = [("Open the file.", "Ouvrir le fichier."), ("Save your changes.", "Enregistrez vos modifications."),
             ("Close the window.", "Fermez la fenêtre."), ("Print the page.", "Imprimer la page."),
             ("The disk is full.", "Le disque est plein."), ("Copy the text.", "Copier le texte.")]
    corpus.write_text("".join(json.dumps({"en": e, "fr": f, "split": "eval" if i % 2 else "calib"},
                                         ensure_ascii=False) + "\n" for i, (e, f) in enumerate(pairs)), "utf-8")
    hub = runner.evaluate(REPO, "ppl", ["fr"], corpus, n_boot=20, progress=False, threads=1)
    local = runner.evaluate(tiny_model("llama"), "ppl", ["fr"], corpus, n_boot=20, progress=False, threads=1)
    assert hub["name"] == "tiny-llama" and Path(hub["model"]).name == COMMIT
    assert hub["languages"]["fr"]["ppl"] == local["languages"]["fr"]["ppl"]
    assert cli.main(["compare", REPO, str(tiny_model("llama")), "--names", "hub,local", "--task", "ppl", "--langs",
                     "fr", "--data", str(corpus), "--out", str(tmp_path / "cmp"), "--bootstrap", "20",
                     "--no-progress"]) == 0
    assert "| hub " in capsys.readouterr().out
    assert cli.main(["analyze", REPO, "--calib", "mono:fr+mt:fr-en", "--data", str(corpus), "--out",
                     str(tmp_path / "an"), "--nsamples", "1", "--shots", "2", "--no-plots", "--no-progress"]) == 0
    assert (tmp_path / "an" / "magnitudes.csv").is_file()
    assert cli.main(["eval", "tiny-org/absent", "--task", "ppl", "--langs", "fr", "--data", str(corpus)]) == 2
    assert "tiny-org/absent" in capsys.readouterr().err


class FakeHub:
    """huggingface_hub's download calls over a local 'remote' folder: snapshot_download copies the
    files matching allow_patterns into the cache layout, list_repo_files lists the remote."""

    def __init__(self, remote: Path, cache: Path):
        self.remote, self.cache, self.calls = remote, cache, []

    def files(self):
        return sorted(str(p.relative_to(self.remote)) for p in self.remote.rglob("*") if p.is_file())

    def list_repo_files(self, repo_id, revision=None):
        self.calls.append(("list", revision))
        return self.files()

    def snapshot_download(self, repo_id, revision=None, allow_patterns=None, **kwargs):
        assert not kwargs.get("local_files_only")
        self.calls.append(("download", revision, list(allow_patterns)))
        chosen = list(filter_repo_objects(self.files(), allow_patterns=allow_patterns))
        staged = self.cache.parent / "staged"
        shutil.rmtree(staged, ignore_errors=True)
        for name in chosen:
            (staged / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self.remote / name, staged / name)
        return str(add_to_hub_cache(self.cache, REPO, staged) if chosen else
                   self.cache / f"models--{REPO.replace('/', '--')}" / "snapshots" / COMMIT)


@pytest.mark.parametrize("sharded", [True, False])
def test_download_fetches_only_what_a_run_reads(tiny_model, hub_cache, tmp_path, monkeypatch, sharded):
    remote = tmp_path / "remote"
    shutil.copytree(tiny_model("llama", sharded=sharded), remote)
    for extra in ("pytorch_model.bin", "README.md", "consolidated.safetensors", "onnx/model.safetensors"):
        (remote / extra).parent.mkdir(exist_ok=True)
        (remote / extra).write_bytes(b"not for featprune")
    if not sharded:
        (remote / "consolidated.safetensors").unlink()  # one top-level safetensors file, no index
    fake = FakeHub(remote, hub_cache)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake.snapshot_download)
    monkeypatch.setattr(huggingface_hub, "list_repo_files", fake.list_repo_files)
    folder = resolve_model(REPO)
    got = sorted(p.name for p in folder.iterdir())
    expected = sorted(f.name for f in tiny_model("llama", sharded=sharded).iterdir())
    assert got == expected  # config, tokenizer, index and shards; no .bin, README, consolidated, onnx/
    assert fake.calls[0] == ("download", None, SIDE_FILES)
    assert all(c[1] == COMMIT for c in fake.calls[1:])  # the rest pinned to the first call's commit
    assert [c[0] for c in fake.calls] == (["download", "download"] if sharded else ["download", "list", "download"])


def test_weight_files_prefers_the_index():
    listing = ["config.json", "consolidated.safetensors", "model-00001-of-00002.safetensors",
               "model-00002-of-00002.safetensors", "original/x.safetensors"]
    index = {"a": "model-00002-of-00002.safetensors", "b": "model-00001-of-00002.safetensors",
             "c": "model-00001-of-00002.safetensors"}
    assert weight_files(index, lambda: pytest.fail("listed")) == listing[2:4]
    assert weight_files(None, lambda: listing) == listing[1:4]


def test_unreachable_hub_names_the_id(hub_cache, monkeypatch):
    with socket.socket() as s:  # a local port with nothing listening: connection refused at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    with pytest.raises(InputError, match=r"nobody/nothing: .*not in the Hugging Face cache.*downloading it failed"):
        resolve_model("nobody/nothing")
