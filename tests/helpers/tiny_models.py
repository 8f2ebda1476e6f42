"""Tiny random models of every supported family, saved like real Hugging Face models.

Each model directory holds config.json, safetensors weights (one file, or several shards
with an index) and a tokenizer: a small byte-level BPE trained here, offline, so the tests
depend on no downloaded asset. Weights are random: these models cover architectures, not
quality. Sizes are chosen so a full prune takes well under a second.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "English: Open the file.\nFrench: Ouvrir le fichier.",
    "English: Save your changes before closing.\nGerman: Speichern Sie Ihre Änderungen vor dem Schließen.",
    "def add(a, b):\n    return a + b\n",
    "Pruning removes half of the weights of every linear layer.",
    "English: The printer is out of paper.\nSpanish: La impresora no tiene papel.",
    "import os\nprint(os.getcwd())\n",
    "Calibration texts are tokenized and truncated to the sequence length.",
    "English: Connection refused.\nRussian: Соединение отклонено.",
    "Short.",
    "A longer sentence about layers, activations, and the norms of their input features.",
    "English: Delete this item?\nJapanese: この項目を削除しますか?",
]

VOCAB = 384

# family -> (config class name, kwargs); all share hidden 32 and the tiny tokenizer's vocab.
FAMILIES: dict[str, tuple[str, dict]] = {
    "llama": ("LlamaConfig", dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)),
    "gemma3": ("Gemma3TextConfig", dict(hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                                        num_attention_heads=2, num_key_value_heads=1, head_dim=16, sliding_window=4,
                                        layer_types=["sliding_attention", "full_attention",
                                                     "sliding_attention", "full_attention"],
                                        max_position_embeddings=128)),
    "qwen2": ("Qwen2Config", dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                                  num_key_value_heads=2, max_position_embeddings=128)),
    "mistral": ("MistralConfig", dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                                      sliding_window=8)),
    "gpt2": ("GPT2Config", dict(n_embd=32, n_layer=3, n_head=4, n_positions=128)),
    "bloom": ("BloomConfig", dict(hidden_size=32, n_layer=3, n_head=4)),
    "xglm": ("XGLMConfig", dict(d_model=32, num_layers=3, attention_heads=4, ffn_dim=64,
                                max_position_embeddings=128)),
    "opt": ("OPTConfig", dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, ffn_dim=64,
                              word_embed_proj_dim=32, max_position_embeddings=128)),
    "gpt_neox": ("GPTNeoXConfig", dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                                       num_attention_heads=4, max_position_embeddings=128)),
    # Mixture-of-experts: 5 experts, top-2 routing. transformers 5 fuses the experts into 3-D
    # parameters in memory; save_pretrained writes them one matrix per expert (the Hub layout).
    "mixtral": ("MixtralConfig", dict(hidden_size=32, intermediate_size=32, num_hidden_layers=3,
                                      num_attention_heads=4, num_key_value_heads=2, num_local_experts=5,
                                      num_experts_per_tok=2, max_position_embeddings=128)),
    "qwen2_moe": ("Qwen2MoeConfig", dict(hidden_size=32, intermediate_size=64, moe_intermediate_size=16,
                                         shared_expert_intermediate_size=32, num_hidden_layers=3,
                                         num_attention_heads=4, num_key_value_heads=2, num_experts=5,
                                         num_experts_per_tok=2, max_position_embeddings=128)),
    "qwen3_moe": ("Qwen3MoeConfig", dict(hidden_size=32, intermediate_size=64, moe_intermediate_size=16,
                                         num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
                                         head_dim=8, num_experts=5, num_experts_per_tok=2,
                                         max_position_embeddings=128)),
}
MOE_FAMILIES = ("mixtral", "qwen2_moe", "qwen3_moe")
DENSE_FAMILIES = tuple(f for f in FAMILIES if f not in MOE_FAMILIES)


def build_tokenizer(out_dir: Path, vocab_size: int = VOCAB):
    """A byte-level BPE trained on TEXTS (any text encodes; ids < vocab_size)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<pad>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(TEXTS * 4, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>")
    fast.save_pretrained(out_dir)
    return fast


def build_tiny_model(family: str, out_dir: Path, *, seed: int = 0, max_shard_size: str | None = None,
                     tokenizer_dir: Path | None = None, dtype: torch.dtype = torch.float32,
                     overrides: dict | None = None) -> Path:
    """Write a random tiny `family` model + tokenizer to out_dir (safetensors in `dtype`, fp32 by default);
    `overrides` replace config values (e.g. more key/value heads)."""
    import transformers
    from transformers import AutoModelForCausalLM

    cls_name, kwargs = FAMILIES[family]
    kwargs = {**kwargs, **(overrides or {})}
    config = getattr(transformers, cls_name)(vocab_size=VOCAB, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                                             **kwargs)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    with torch.no_grad():  # larger-than-default weights so activations are not all near zero
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                p.normal_(0, 0.2)
            elif "norm" in name or "ln" in name:
                p.uniform_(0.5, 1.5) if family != "gemma3" else p.uniform_(-0.5, 0.5)
    model = model.to(dtype)
    out_dir = Path(out_dir)
    save = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.save_pretrained(out_dir, **save)
    if tokenizer_dir is not None:
        for f in Path(tokenizer_dir).iterdir():
            (out_dir / f.name).write_bytes(f.read_bytes())
    else:
        build_tokenizer(out_dir)
    return out_dir


def write_calibration_jsonl(path: Path, texts=TEXTS) -> Path:
    path = Path(path)
    path.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts), encoding="utf-8")
    return path


def edit_tensor(model_dir: Path, key: str, fn) -> None:
    """Replace tensor `key` of a single-file model directory by fn(tensor) (a test's damage)."""
    from safetensors.torch import load_file, save_file

    path = Path(model_dir) / "model.safetensors"
    tensors = load_file(path)
    tensors[key] = fn(tensors[key].clone())
    save_file(tensors, path, metadata={"format": "pt"})
