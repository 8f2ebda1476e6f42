"""Tiny tokenizers of the three families `featprune trim` supports, trained here on multilingual
text, and tiny random causal LMs that use them (tied or untied heads).

  byte_level:    GPT-2 / SmolLM2 / Qwen2 style byte-level BPE
  byte_fallback: Gemma / Llama 2 style BPE over '▁'-spaced text with <0x00>..<0xFF> pieces
  unigram:       XGLM / mT5 style unigram over Metaspace words
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

TEXTS = [
    "The printer is out of paper. Open the file and save your changes before closing.",
    "Delete this item? The connection was refused by the server at 10:45.",
    "La impresora no tiene papel. Abra el archivo y guarde los cambios antes de cerrar.",
    "¿Desea eliminar este elemento? La conexión fue rechazada por el servidor a las 10:45.",
    "L'imprimante n'a plus de papier. Ouvrez le fichier et enregistrez vos modifications.",
    "Voulez-vous supprimer cet élément ? La connexion a été refusée par le serveur.",
    "Der Drucker hat kein Papier. Öffnen Sie die Datei und speichern Sie Ihre Änderungen.",
    "Соединение отклонено сервером. Откройте файл и сохраните изменения перед закрытием.",
    "打印机没有纸了。打开文件并在关闭前保存更改。连接被服务器拒绝。",
    "プリンターの用紙がありません。ファイルを開いて、閉じる前に変更を保存してください。",
    "الطابعة ليس بها ورق. افتح الملف واحفظ التغييرات قبل الإغلاق.",
    "Ελληνικά: ο εκτυπωτής δεν έχει χαρτί. 😀 — “quotes” … 1234 $%&",
]
# Latin-script text the kept languages (es, en) write: every piece of it must survive a scripts trim.
LATIN_TEXTS = [
    "La impresora no tiene papel, ¿verdad? Ñandú, pingüino y acción: 3,5 € (50%).",
    "The quick brown fox jumps over the lazy dog — “quoted” text… 42!",
    "Guarde los cambios antes de cerrar el archivo.",
    "Open   the file\tand\nsave it.",
]
FAMILIES = ("byte_level", "byte_fallback", "unigram")
SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]


def _train_byte_level(vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS[:3],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(TEXTS * 4, trainer)
    return tok


def _train_byte_fallback(vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, normalizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Replace(" ", "\u2581")
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()])
    byte_pieces = [f"<0x{b:02X}>" for b in range(256)]
    # The byte pieces are ordinary vocabulary entries (after the specials), as in Gemma's and Llama 2's.
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS + byte_pieces, show_progress=False)
    tok.train_from_iterator(TEXTS * 4, trainer)
    # The trainer registers every special as an added token; the byte pieces must stay plain vocabulary.
    data = json.loads(tok.to_str())
    data["added_tokens"] = [a for a in data["added_tokens"] if a["content"] in SPECIALS]
    tok = Tokenizer.from_str(json.dumps(data))
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", bos)])
    return tok


def _train_unigram(vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    alphabet = sorted({c for t in TEXTS + LATIN_TEXTS for c in t if not c.isspace()})
    trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, unk_token="<unk>",
                                      initial_alphabet=alphabet, show_progress=False)
    tok.train_from_iterator(TEXTS * 4 + LATIN_TEXTS, trainer)
    return tok


def build_tokenizer(family: str, out_dir: Path, vocab_size: int = 700):
    """Train a `family` tokenizer and save it as a transformers fast tokenizer in out_dir."""
    from transformers import PreTrainedTokenizerFast

    tok = {"byte_level": _train_byte_level, "byte_fallback": _train_byte_fallback,
           "unigram": _train_unigram}[family](vocab_size)
    kwargs = dict(pad_token="<pad>", bos_token="<s>", eos_token="</s>")
    if family != "byte_level":
        kwargs["unk_token"] = "<unk>"
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **kwargs)
    fast.save_pretrained(out_dir)
    return fast


def build_model(family: str, out_dir: Path, *, tied: bool, arch: str = "llama", seed: int = 0,
                extra_config: dict | None = None) -> Path:
    """A random tiny causal LM (`arch`: llama or gemma3) with a `family` tokenizer, saved to out_dir."""
    import transformers
    from transformers import AutoModelForCausalLM

    out_dir = Path(out_dir)
    fast = build_tokenizer(family, out_dir)
    size = len(fast)
    ids = dict(pad_token_id=fast.pad_token_id, bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id)
    if arch == "gemma3":
        config = transformers.Gemma3TextConfig(
            vocab_size=size, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
            num_key_value_heads=1, head_dim=16, sliding_window=4, layer_types=["sliding_attention", "full_attention"],
            max_position_embeddings=128, tie_word_embeddings=tied, **ids)
    else:
        config = transformers.LlamaConfig(vocab_size=size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                                          tie_word_embeddings=tied, **ids)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0, 0.2)
    model.save_pretrained(out_dir)
    if extra_config:
        path = out_dir / "config.json"
        cfg = json.loads(path.read_text())
        cfg.update(extra_config)
        path.write_text(json.dumps(cfg, indent=2))
    return out_dir
