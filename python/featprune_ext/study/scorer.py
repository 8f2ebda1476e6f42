"""The Scorer: a whole causal LM that scores continuations and generates, batched and deterministic.

Speed: logits are computed only at the positions that are scored, by running the model body
and projecting those hidden states onto the output embedding ourselves (Gemma 3's vocabulary
is 262k, so full logits cost more than the body); checked against the model's own logits once
at load time, with a fallback to full logits if a family computes them differently.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from .tasks import EvalError

__all__ = ["Scorer"]


@dataclass
class _Encoded:
    ctx: list[int]
    cont: list[int]
    truncated: bool


class Scorer:
    """A causal LM that scores continuations and generates, batched and deterministic.

    The whole model is loaded (evaluation needs every layer at once; analysis streams instead).
    """

    def __init__(self, model_dir, *, device: str = "cpu", dtype: str = "float32", seqlen: int = 512,
                 batch_tokens: int = 1024, max_batch: int = 64, head_chunk: int = 512, threads: Optional[int] = None,
                 progress: bool = True, generate_batch_tokens: int = 8192):
        """batch_tokens: padded tokens per scoring batch (CPU caches like ~1k). generate_batch_tokens:
        the same budget for generation, larger because each decoding step reads every weight once
        for the whole batch (memory-bound), so fewer, larger batches take fewer steps in all."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model_dir = Path(model_dir)
        if not (model_dir / "config.json").is_file():
            raise EvalError(f"{model_dir} is not a model directory (no config.json)")
        if not isinstance(seqlen, int) or seqlen < 2:
            raise EvalError(f"seqlen must be an integer >= 2, got {seqlen!r}")
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise EvalError("device cuda was asked for, but torch sees no CUDA device")
        if threads is not None:
            if not isinstance(threads, int) or threads < 1:
                raise EvalError(f"threads must be a positive integer, got {threads!r}")
            torch.set_num_threads(threads)  # 1 is far faster than 2 on a CPU shared with other jobs
        dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
        if dtype not in dtypes:
            raise EvalError(f"dtype must be one of {', '.join(dtypes)}, got {dtype!r}")
        t0 = time.perf_counter()
        self.tok = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtypes[dtype]).to(self.device).eval()
        self.load_s = time.perf_counter() - t0
        self.seqlen, self.batch_tokens, self.max_batch, self.progress = seqlen, batch_tokens, max_batch, progress
        self.head_chunk = head_chunk
        self.generate_batch_tokens = generate_batch_tokens
        self.body = self.model.base_model
        self.head = self.model.get_output_embeddings()
        cfg = self.model.config
        cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
        self.softcap = getattr(cfg, "final_logit_softcapping", None)
        self.vocab = self.head.weight.shape[0]
        probe = self.tok("a")["input_ids"]
        eos = self.tok.eos_token_id
        self._adds_eos = len(probe) > 1 and eos is not None and probe[-1] == eos
        start = self._start_token(probe)
        if start is None:
            raise EvalError(f"the tokenizer of {model_dir} has neither a BOS nor an EOS token to start a text with")
        self.start_id = int(start)
        pad = self.tok.pad_token_id
        self.pad_id = int(pad) if pad is not None else self.start_id
        self.fast_head = self._check_fast_head()

    # -- tokenization --
    def _start_token(self, probe: list[int]):
        """The token this tokenizer itself puts before a text (XGLM: </s>, Llama: <s>); else BOS or EOS.
        Scoring a text from its start must condition on what the model saw in training."""
        plain = list(self.tok("a", add_special_tokens=False)["input_ids"])
        for i in range(1, len(probe) - len(plain) + 1):
            if probe[i:i + len(plain)] == plain:
                return probe[0]  # special tokens come before the text
        bos, eos = self.tok.bos_token_id, self.tok.eos_token_id
        return bos if bos is not None else eos

    def _ids(self, text: str, special: bool) -> list[int]:
        ids = list(self.tok(text, add_special_tokens=special)["input_ids"])
        if special and self._adds_eos and ids and ids[-1] == self.tok.eos_token_id:
            ids = ids[:-1]  # a context must not end with EOS
        return ids

    def encode(self, context: str, continuation: str) -> _Encoded:
        """Token ids of context and continuation. The continuation's ids are cut from the
        tokenization of the whole string where it extends the context's, so a word split
        across the boundary is tokenized as the model saw such text in training."""
        if context == "":
            ctx = [self.start_id]
            cont = self._ids(continuation, False)
        else:
            ctx = self._ids(context, True)
            whole = self._ids(context + continuation, True)
            if whole[:len(ctx)] == ctx and len(whole) > len(ctx):
                cont = whole[len(ctx):]
            else:
                cont = self._ids(continuation, False)
        if not cont:
            raise EvalError(f"continuation {continuation!r} has no tokens")
        truncated = False
        if len(cont) > self.seqlen - 1:
            cont, truncated = cont[: self.seqlen - 1], True
        if len(ctx) + len(cont) > self.seqlen:
            ctx, truncated = ctx[len(ctx) + len(cont) - self.seqlen:], True  # keep the context's end
        return _Encoded(ctx, cont, truncated)

    # -- logits at chosen positions --
    def _project(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = self.head(hidden).float()
        if self.softcap:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits

    def _check_fast_head(self) -> bool:
        """Our projection must match the model's own logits; otherwise use full logits."""
        ids = torch.tensor([self._ids("Hello world. Bonjour le monde.", True)], device=self.device)
        with torch.no_grad():
            ref = self.model(input_ids=ids, use_cache=False).logits.float()
            ours = self._project(self.body(input_ids=ids, use_cache=False).last_hidden_state)
        return bool(torch.allclose(ref, ours, rtol=1e-4, atol=1e-3 * max(1.0, float(ref.abs().max()))))

    def _target_logprobs(self, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """log P(target) at each hidden state: logit(target) - logsumexp(logits), in chunks so at
        most head_chunk x vocab floats exist at once."""
        out = []
        for s in range(0, hidden.shape[0], self.head_chunk):
            logits = self._project(hidden[s:s + self.head_chunk])
            tgt = targets[s:s + self.head_chunk, None]
            out.append((logits.gather(1, tgt) - torch.logsumexp(logits, dim=-1, keepdim=True)).squeeze(1))
            del logits
        return torch.cat(out) if out else hidden.new_zeros(0)

    def _batches(self, lengths: Sequence[int], budget: Optional[int] = None) -> list[list[int]]:
        """Longest first (padding waste is lowest, the first batch shows peak memory), ties by index."""
        order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
        batches, cur = [], []
        for i in order:
            if cur and ((len(cur) + 1) * lengths[cur[0]] > (budget or self.batch_tokens) or len(cur) >= self.max_batch):
                batches.append(cur)
                cur = []
            cur.append(i)
        if cur:
            batches.append(cur)
        return batches

    @torch.no_grad()
    def loglikelihood(self, requests: Sequence[tuple[str, str]], desc: str = "scoring") -> list[dict]:
        """For each (context, continuation): {"logprob": sum of log P(continuation tokens),
        "tokens": count, "context_tokens", "truncated"}. An empty context means the start token.

        The body runs in small batches (CPU caches like ~1k tokens); the hidden states of scored
        positions are pooled across batches and projected head_chunk at a time, since the output
        projection (vocab x hidden) dominates when the vocabulary is large."""
        from tqdm.auto import tqdm

        enc = [self.encode(c, x) for c, x in requests]
        lengths = [len(e.ctx) + len(e.cont) for e in enc]
        sums = np.zeros(len(enc), dtype=np.float64)
        pending: list[tuple[torch.Tensor, torch.Tensor, np.ndarray]] = []

        def flush():
            if not pending:
                return
            hidden = torch.cat([p[0] for p in pending])
            targets = torch.cat([p[1] for p in pending])
            owners = np.concatenate([p[2] for p in pending])
            pending.clear()
            np.add.at(sums, owners, self._target_logprobs(hidden, targets).double().cpu().numpy())

        bar = tqdm(total=len(enc), desc=desc, unit="seq", file=sys.stderr, disable=not self.progress,
                   dynamic_ncols=True, leave=False)
        try:
            for batch in self._batches(lengths):
                width = lengths[batch[0]]
                ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                rows, pos, tgt, owner = [], [], [], []
                for r, i in enumerate(batch):
                    seq = enc[i].ctx + enc[i].cont
                    ids[r, :len(seq)] = torch.tensor(seq)
                    mask[r, :len(seq)] = 1
                    first = len(enc[i].ctx)  # position p predicts token p + 1
                    rows += [r] * len(enc[i].cont)
                    pos += range(first - 1, len(seq) - 1)
                    tgt += enc[i].cont
                    owner += [i] * len(enc[i].cont)
                ids, mask = ids.to(self.device), mask.to(self.device)
                rows_t, pos_t = torch.tensor(rows, device=self.device), torch.tensor(pos, device=self.device)
                tgt_t = torch.tensor(tgt, device=self.device)
                if self.fast_head:
                    hidden = self.body(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
                    pending.append((hidden[rows_t, pos_t], tgt_t, np.asarray(owner)))
                    if sum(p[0].shape[0] for p in pending) >= self.head_chunk:
                        flush()
                else:
                    logits = self.model(input_ids=ids, attention_mask=mask, use_cache=False).logits.float()
                    lp = torch.log_softmax(logits[rows_t, pos_t], dim=-1).gather(1, tgt_t[:, None]).squeeze(1)
                    np.add.at(sums, np.asarray(owner), lp.double().cpu().numpy())
                bar.update(len(batch))
            flush()
        finally:
            bar.close()
        return [{"logprob": float(s), "tokens": len(e.cont), "context_tokens": len(e.ctx), "truncated": e.truncated}
                for s, e in zip(sums, enc)]

    def _stop_at_newline(self):
        """Stop each sequence at its first newline (the answer ends there) instead of always generating
        max_new_tokens; the batch ends when every sequence has stopped. Built once per scorer: its
        set-up scans the whole vocabulary (262k tokens for Gemma 3), too slow to repeat per batch."""
        from transformers import StoppingCriteriaList, StopStringCriteria

        if getattr(self, "_newline_stop", None) is None:
            self._newline_stop = StoppingCriteriaList([StopStringCriteria(tokenizer=self.tok, stop_strings=["\n"])])
        return self._newline_stop

    @torch.no_grad()
    def generate(self, prompts: Sequence[str], *, max_new_tokens: int, desc: str = "generating") -> list[str]:
        """Greedy continuations, cut at the first newline or end of text; batched with left padding."""
        from tqdm.auto import tqdm
        from transformers import GenerationConfig

        enc = [self._ids(p, True) for p in prompts]
        enc = [e[-(self.seqlen - max_new_tokens):] if len(e) > self.seqlen - max_new_tokens else e for e in enc]
        eos = [t for t in {self.tok.eos_token_id, self.start_id} if t is not None]
        gen_cfg = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                                   pad_token_id=self.pad_id, eos_token_id=eos)
        outs: list[str] = [""] * len(enc)
        bar = tqdm(total=len(enc), desc=desc, unit="seq", file=sys.stderr, disable=not self.progress,
                   dynamic_ncols=True, leave=False)
        try:
            for batch in self._batches([len(e) + max_new_tokens for e in enc], self.generate_batch_tokens):
                width = max(len(enc[i]) for i in batch)
                ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                for r, i in enumerate(batch):
                    ids[r, width - len(enc[i]):] = torch.tensor(enc[i])
                    mask[r, width - len(enc[i]):] = 1
                gen = self.model.generate(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                                          generation_config=gen_cfg, stopping_criteria=self._stop_at_newline())
                for r, i in enumerate(batch):
                    text = self.tok.decode(gen[r, width:], skip_special_tokens=True)
                    outs[i] = text.split("\n")[0].strip()
                bar.update(len(batch))
        finally:
            bar.close()
        return outs
