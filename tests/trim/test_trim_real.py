"""`trim` on the real models: held-out Spanish and English interface strings (Debian's gettext
catalogs, evaluation split) keep their pieces, their logits at the kept ids and their greedy text;
Chinese, Russian and Arabic text still round-trips."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from featprune_ext.data import corpora
from featprune_ext.errors import InputError
from featprune_ext.trim import trim

OTHER_SCRIPTS = ["无法更改 NIS 密码。", "Соединение отклонено.", "الطابعة ليس بها ورق.",
                 "パスワードを変更できません 😀"]


def heldout(n):
    try:
        pairs = corpora.load_parallel(None, "en", "es", split="eval")
    except InputError as exc:
        pytest.skip(f"no gettext catalogs here: {exc}")
    return [t for pair in pairs[:n] for t in pair]


def check_lossless(src, out, texts, generate_from):
    ta, tb = AutoTokenizer.from_pretrained(src), AutoTokenizer.from_pretrained(out)
    id_map = json.loads((out / "featprune_id_map.json").read_text())["old_to_new"]
    kept = torch.tensor([i for i, n in enumerate(id_map) if n >= 0])
    for text in texts:
        ia, ib = ta(text)["input_ids"], tb(text)["input_ids"]
        assert [id_map[i] for i in ia] == ib, text
    for text in OTHER_SCRIPTS:
        ib = tb(text)["input_ids"]
        assert tb.decode(ib, skip_special_tokens=True) == text
        assert tb.unk_token_id is None or tb.unk_token_id not in ib
    ma = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32).eval()
    mb = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    ia = ta(" ".join(texts[:4]), return_tensors="pt")["input_ids"]
    ib = tb(" ".join(texts[:4]), return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.equal(ma(ia).logits[0][:, kept], mb(ib).logits[0])
    prompt = f"English: {generate_from[0]}\nSpanish:"
    ga = ma.generate(**ta(prompt, return_tensors="pt"), max_new_tokens=12, do_sample=False)[0]
    gb = mb.generate(**tb(prompt, return_tensors="pt"), max_new_tokens=12, do_sample=False)[0]
    if all(id_map[i] >= 0 for i in ga.tolist()):  # the original chose kept tokens only: the same text
        assert [id_map[i] for i in ga.tolist()] == gb.tolist()


@pytest.mark.slow
def test_smollm2_scripts_trim_is_lossless(smollm2_dir, tmp_path):
    texts = heldout(10)
    report = trim(smollm2_dir, tmp_path / "out", langs="es,en", progress=False)
    assert report["trim"]["tokenizer_family"] == "byte-level BPE"
    assert report["trim"]["kept_tokens"] < report["trim"]["old_vocab_size"] == 49152
    check_lossless(smollm2_dir, tmp_path / "out", texts, texts)


@pytest.mark.slow
def test_gemma3_scripts_trim_is_lossless_and_small(gemma3_dir, tmp_path):
    texts = heldout(10)
    report = trim(gemma3_dir, tmp_path / "out", langs="es,en", progress=False)
    t, m = report["trim"], report["model"]
    assert t["tokenizer_family"] == "BPE with byte fallback" and t["kept_by_reason"]["closure"] == 0
    assert m["params_after"] <= 0.8 * m["params_before"]  # the target for es+en
    check_lossless(gemma3_dir, tmp_path / "out", texts, texts)
