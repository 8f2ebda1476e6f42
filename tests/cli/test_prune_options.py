"""`featprune prune`'s options come from featprune_ext.settings: grouped by concern in --help, the same
keywords in featprune_ext.prune, every --help example runs, and an option that does not apply to the
chosen method or mode is an error naming it."""

from __future__ import annotations

import dataclasses
import inspect
import json
import shlex

import pytest

import featprune_ext
from featprune_ext import cli
from featprune_ext.cli import prune as prune_cli
from featprune_ext.errors import InputError
from featprune_ext.settings import CONCERNS, CalibrationSettings, MethodSettings, PruneSettings, flag_of, options_of

FAMILY = "llama"


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps({"en": f"Open file {i}.", "fr": f"Ouvrez le fichier {i}.",
                                        "zh": f"打开文件 {i}。"}) + "\n" for i in range(24)))
    return path


def _argv(model, out, *extra):
    return ["prune", str(model), "--out", str(out), "--no-progress", *[str(a) for a in extra]]


@pytest.mark.parametrize("argv,message", [
    (["--calib-texts", "CALIB", "--sparsity", "0.5", "--sparsegpt-damp", "0.1"],
     "--sparsegpt-damp does not apply to --method wanda"),
    (["--calib-texts", "CALIB", "--sparsity", "0.5", "--sparsegpt-blocksize", "64", "--method", "contrastive",
      "--contrast", "code"], "--contrast needs --calib"),  # the contrast rule speaks first
    (["--calib-texts", "CALIB", "--sparsity", "0.5", "--method", "random", "--sparsegpt-blocksize", "64"],
     "--sparsegpt-blocksize does not apply to --method random"),
    (["--calib-texts", "CALIB", "--sparsity", "0.5", "--owl-m", "4"], "--owl-m does not apply without --layerwise owl"),
    (["--calib-texts", "CALIB", "--sparsity", "0.5", "--owl-lambda", "0.1"],
     "--owl-lambda does not apply without --layerwise owl"),
    (["--method", "magnitude", "--sparsity", "0.5", "--protect-top", "1"],
     "--protect-top does not apply to --method magnitude"),
    (["--method", "random", "--sparsity", "0.5", "--protect-absmax", "6"],
     "--protect-absmax does not apply to --method random"),
    (["--method", "sparsegpt", "--calib-texts", "CALIB", "--sparsity", "0.5", "--protect-top", "1"],
     "--protect-top does not apply to --method sparsegpt"),
    (["--method", "magnitude", "--sparsity", "0.5", "--calib-texts", "CALIB"],
     "--calib-texts does not apply to --method magnitude"),
    (["--method", "random", "--sparsity", "0.5", "--nsamples", "4"], "--nsamples does not apply to --method random"),
    (["--calib-texts", "CALIB", "--sparsity", "0.5", "--shots", "2"], "--shots does not apply to --calib-texts"),
    (["--calib-texts", "CALIB", "--sparsity", "0.5", "--model-code", "builtin", "--resume-interval", "-1"],
     "--resume-interval"),
])
def test_options_that_do_not_apply_exit_2_naming_them(tiny_model, calib_jsonl, tmp_path, capsys, argv, message):
    out = tmp_path / "o"
    argv = [calib_jsonl if a == "CALIB" else a for a in argv]
    with pytest.raises(SystemExit) if "-1" in argv else _no_raise() as caught:  # argparse refuses -1 itself
        code = cli.main(_argv(tiny_model(FAMILY), out, *argv))
    err = capsys.readouterr().err
    if caught is None:
        assert code == 2 and message in err, err
    else:
        assert caught.value.code == 2 and message in err
    assert not out.exists() and not (tmp_path / "o.partial").exists()


class _no_raise:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def test_the_api_refuses_the_same_and_unknown_keywords(tiny_model, calib_jsonl, tmp_path):
    src = tiny_model(FAMILY)
    with pytest.raises(InputError, match="--sparsegpt-damp does not apply to --method wanda"):
        featprune_ext.prune(src, tmp_path / "o", calib_texts=calib_jsonl, sparsity=0.5, sparsegpt_damp=0.1)
    with pytest.raises(InputError, match="--owl-m does not apply without --layerwise owl"):
        featprune_ext.prune(src, tmp_path / "o", calib_texts=calib_jsonl, sparsity=0.5, owl_m=4.0)
    with pytest.raises(TypeError, match="sparsgpt_damp"):
        featprune_ext.prune(src, tmp_path / "o", calib_texts=calib_jsonl, sparsity=0.5, sparsgpt_damp=0.1)
    assert not (tmp_path / "o").exists()


def test_prune_signature_and_cli_come_from_the_settings():
    """One declaration per option: featprune_ext.prune's keywords and the CLI's flags are the settings' fields."""
    params = inspect.signature(featprune_ext.prune).parameters
    parser = cli.build_parser()
    prune_parser = parser._subparsers._group_actions[0].choices["prune"]
    flags = {s for a in prune_parser._actions for s in a.option_strings}
    for _, cls in CONCERNS:
        for f, opt in options_of(cls):
            assert f.name in params and params[f.name].default == f.default, f.name
            assert (flag_of(f.name) in flags) == opt.cli, f.name
            assert f.name in (featprune_ext.prune.__doc__ or ""), f.name
    # flat keywords land in their concern
    assert PruneSettings.of(sparsity=0.5, calib_texts="x.jsonl", device="cpu") == PruneSettings(
        CalibrationSettings(calib_texts="x.jsonl"), MethodSettings(sparsity=0.5))


def test_help_is_grouped_by_concern(capsys):
    with pytest.raises(SystemExit):
        cli.main(["prune", "--help"])
    text = capsys.readouterr().out
    positions = [text.index(f"\n{cls.TITLE}:\n") for _, cls in CONCERNS]
    assert positions == sorted(positions)
    for (_, cls), start, end in zip(CONCERNS, positions, [*positions[1:], len(text)]):
        for f, opt in options_of(cls):
            if opt.cli:
                assert f"  {flag_of(f.name)}" in text[start:end], (cls.TITLE, f.name)


def _examples() -> list[list[str]]:
    """The --help examples as argument lists: a line ending in a backslash continues on the next."""
    lines = prune_cli.PRUNE_EXAMPLES.splitlines()[1:]
    commands, current = [], ""
    for line in lines:
        assert line.startswith("      ") == bool(current), f"a continuation without a backslash before it: {line!r}"
        current += " " + line.strip().rstrip("\\").strip()
        if not line.rstrip().endswith("\\"):
            commands.append(shlex.split(current))
            current = ""
    assert not current
    return commands


def test_every_help_example_runs(tiny_model, calib_jsonl, corpus, tmp_path, monkeypatch):
    """Each example, with MODEL, the calibration file and the corpus replaced by test data, and small
    sample counts: `featprune prune` examples run (on CPU; torchrun's as one process), others parse."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my.jsonl").write_text(calib_jsonl.read_text())
    examples = _examples()
    assert len(examples) >= 8
    ran = 0
    for k, words in enumerate(examples):
        if words[0] == "torchrun":  # the rank's command line: one process here
            words = ["featprune", *words[words.index("prune"):]]
        assert words[0] == "featprune", words
        argv = [str(tiny_model(FAMILY)) if w == "MODEL" else str(corpus) if w in ("corpus/", "flores200_dataset/")
                else f"out{k}" if w == "pruned/" else "cpu" if w == "cuda" else w for w in words[1:]]
        args = cli.build_parser().parse_args(argv)  # every example parses
        if args.command != "prune":
            continue
        if args.calib or args.calib_texts:
            argv += ["--nsamples", "4", "--seqlen", "48"]
        with pytest.warns(UserWarning) if args.preset else _no_raise():  # the preset says our corpus is not FLORES
            assert cli.main(argv) == 0, argv
        report = json.loads((tmp_path / f"out{k}" / "featprune.json").read_text())
        assert report["overall_sparsity"] > 0
        ran += 1
    assert ran == len(examples) - 1  # all but `featprune data gettext`


def test_settings_are_frozen_and_validated_once():
    s = PruneSettings.of(calib_texts="x.jsonl", method="sparsegpt", sparsity=0.5, sparsegpt_damp=0.05,
                         layerwise="owl", owl_lambda=0.05)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.method.sparsity = 0.6
    assert s.owl().lam == 0.05 and s.build_method().damp == 0.05
    with pytest.raises(InputError, match="--owl-lambda must be in"):
        PruneSettings.of(calib_texts="x.jsonl", sparsity=0.5, layerwise="owl", owl_lambda=0.7)
