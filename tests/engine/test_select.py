"""--targets / --ignore (engine/select.py): pattern classification, validation before any work,
skipped matrices copied bit for bit and reported."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from featprune_ext import cli
from featprune_ext.api import prune
from featprune_ext.engine import ModelSkeleton
from featprune_ext.engine.checkpoint import Checkpoint
from featprune_ext.engine.select import Selection
from featprune_ext.errors import InputError

LLAMA_LINEARS = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
                 "mlp.up_proj", "mlp.down_proj"]


def resolve(model_dir, targets=None, ignore=None):
    ckpt = Checkpoint(model_dir)
    try:
        return Selection.of(targets, ignore).resolve(ModelSkeleton(ckpt))
    finally:
        ckpt.close()


def pruned_names(resolved, i=0) -> list[str]:
    return [pl.name for pl in resolved.pruned(i)]


def raw_tensors(model_dir) -> dict[str, tuple[str, bytes]]:
    """checkpoint key -> (dtype, raw bytes) over every shard."""
    out = {}
    for f in sorted(Path(model_dir).glob("*.safetensors")):
        with safe_open(str(f), "pt") as sf:
            for k in sf.keys():
                t = sf.get_tensor(k)
                out[k] = (str(t.dtype), t.contiguous().view(torch.uint8).numpy().tobytes())
    return out


def test_default_prunes_every_linear(tiny_model):
    r = resolve(tiny_model("llama"))
    assert pruned_names(r) == LLAMA_LINEARS and r.all_skipped() == []
    assert r.selection.is_default


def test_regex_is_a_fullmatch_on_the_checkpoint_name(tiny_model):
    r = resolve(tiny_model("llama"), ignore=[".*down_proj", r"model\.layers\.1\.self_attn\.q_proj"])
    assert pruned_names(r, 0) == LLAMA_LINEARS[:-1]
    assert "self_attn.q_proj" not in pruned_names(r, 1)
    assert r.skipped[1] == ["model.layers.1.self_attn.q_proj", "model.layers.1.mlp.down_proj"]
    assert r.reasons["model.layers.0.mlp.down_proj"] == "ignored"
    # fullmatch: a bare "down_proj" is not a substring search, so it matches nothing
    with pytest.raises(InputError, match="matches no prunable matrix"):
        resolve(tiny_model("llama"), ignore="down_proj")


def test_class_patterns_match_the_module_and_its_enclosing_modules(tiny_model):
    r = resolve(tiny_model("llama"), ignore="LlamaAttention")
    assert pruned_names(r) == ["mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]
    r = resolve(tiny_model("llama"), targets="Linear", ignore="LlamaMLP")
    assert pruned_names(r) == LLAMA_LINEARS[:4]
    r = resolve(tiny_model("gpt2"), targets="Conv1D", ignore=".*c_proj")
    assert pruned_names(r) == ["attn.c_attn", "mlp.c_fc"]


def test_targets_select_a_subset(tiny_model):
    r = resolve(tiny_model("llama"), targets=[".*q_proj", ".*up_proj"])
    for i in range(3):
        assert pruned_names(r, i) == ["self_attn.q_proj", "mlp.up_proj"]
    assert r.reasons["model.layers.2.mlp.down_proj"] == "not a target"
    assert r.describe()["skipped_by_reason"] == {"not a target": 15}


def test_a_pattern_matching_nothing_names_what_exists(tiny_model):
    with pytest.raises(InputError) as exc:
        resolve(tiny_model("llama"), targets=".*q_proj", ignore=".*w1")
    msg = str(exc.value)
    assert "--ignore '.*w1'" in msg and "re.fullmatch" in msg
    assert "model.layers.*.self_attn.q_proj" in msg and "model.layers.*.mlp.down_proj" in msg
    assert "Linear" in msg and "LlamaAttention" in msg
    assert "model.layers.0." not in msg  # layer numbers shown as *


@pytest.mark.parametrize("targets,ignore,message", [
    ("", None, "non-empty pattern"),
    (None, "([", "valid regular expression"),
    (".*q_proj", ".*q_proj", "leave no matrix"),
])
def test_bad_patterns(tiny_model, targets, ignore, message):
    with pytest.raises(InputError, match=message):
        resolve(tiny_model("llama"), targets, ignore)


def test_skipped_matrices_are_bit_identical_and_reported(tiny_model, calib_jsonl, tmp_path):
    src = tiny_model("llama")
    report = prune(src, tmp_path / "o", calib_texts=calib_jsonl, nsamples=6, seqlen=16, sparsity=0.5,
                   ignore=[".*down_proj", "LlamaAttention"], targets=["Linear"], progress=False)
    raw_in, raw_out = raw_tensors(src), raw_tensors(tmp_path / "o")
    assert set(raw_in) == set(raw_out)
    skipped = {f"model.layers.{i}.{n}.weight" for i in range(3) for n in LLAMA_LINEARS if n != "mlp.gate_proj"
               and n != "mlp.up_proj"}
    for key in skipped:
        assert raw_out[key] == raw_in[key], key  # same dtype, same bytes
    for i in range(3):
        for n in ("mlp.gate_proj", "mlp.up_proj"):
            assert raw_out[f"model.layers.{i}.{n}.weight"] != raw_in[f"model.layers.{i}.{n}.weight"]
    saved = json.loads((tmp_path / "o" / "featprune.json").read_text())
    assert sorted(saved["skipped"]) == sorted(k.removesuffix(".weight") for k in skipped)
    assert saved["selection"]["targets"] == ["Linear"] and saved["selection"]["ignore"] == [".*down_proj",
                                                                                          "LlamaAttention"]
    for layer in saved["layers"]:
        assert sorted(layer["matrices"]) == [f"model.layers.{layer['index']}.mlp.{n}.weight"
                                             for n in ("gate_proj", "up_proj")]
        assert len(layer["skipped"]) == 5
    assert saved["overall_sparsity"] == pytest.approx(0.5)
    assert report["skipped"] == saved["skipped"]


def test_patterns_are_checked_before_calibration(tiny_model, tmp_path):
    # the calibration file does not exist: the pattern error must come first
    with pytest.raises(InputError, match="matches no prunable matrix"):
        prune(tiny_model("llama"), tmp_path / "o", calib_texts=tmp_path / "missing.jsonl", sparsity=0.5,
              targets=".*nothing_here", progress=False)
    assert not (tmp_path / "o").exists() and not (tmp_path / "o.partial").exists()


def test_cli_repeatable_flags_and_one_line_error(tiny_model, calib_jsonl, tmp_path, capsys):
    base = ["prune", str(tiny_model("llama")), "--calib-texts", str(calib_jsonl), "--nsamples", "4",
            "--seqlen", "16", "--sparsity", "0.5", "--no-progress", "-q"]
    assert cli.main([*base, "--out", str(tmp_path / "a"), "--ignore", ".*q_proj", "--ignore", ".*k_proj"]) == 0
    saved = json.loads((tmp_path / "a" / "featprune.json").read_text())
    assert len(saved["skipped"]) == 6 and all(n.endswith(("q_proj", "k_proj")) for n in saved["skipped"])
    capsys.readouterr()
    assert cli.main([*base, "--out", str(tmp_path / "b"), "--targets", "qproj"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--targets 'qproj' matches no prunable matrix" in err[0]
