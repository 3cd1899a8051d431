"""The llama.cpp engine's model: a trained ModaVerse directory decoded by llama.cpp on a GGUF base.

See :mod:`.llamacpp` for what the engine keeps of the torch engine and :mod:`.llamacpp_files` for what it
loads. Prompts reach llama.cpp as :func:`~.splice.lay_out_prompts` lays them out: runs of ordinary tokens as
token ids, the media markers and placeholders as embedding rows (the trained marker rows; the projected
encoder features, or the blind model's zero features, through the same projector). Rows are decoded one
after another (llama.cpp on a CPU gains little from batching single tokens), each step's logits through the
shared :class:`~.constrained.MetaResponseLogitsProcessor`, reusing the KV cache of the previous prompt's
longest shared token prefix (the system prompt). Between tokens the grammar takes the chosen token and fills
the next mask on a worker thread while llama.cpp runs that token (``advance``), and the logits are read in
place from llama.cpp's buffer.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from concurrent import futures
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ModelError
from .config import ModaVerseConfig
from .constrained import GrammarCache, MetaResponseLogitsProcessor
from .llamacpp_files import load_llama_parts, require_llama_cpp
from .placement import Placement, llama_offload
from .projector import MediaProjector
from .prompting import stop_token_ids
from .responder import MetaResponseEngine, Sampling, check_encoder
from .splice import EncodedMedia, Segment, lay_out_prompts

DEFAULT_CONTEXT = 4096


class LlamaCppModel(MetaResponseEngine):
    """A ModaVerse model (projectors + LoRA + media rows) run by llama.cpp; see the module docstring."""

    #: Fill the grammar's next mask on a worker while llama.cpp decodes (False: after it, one thread; the
    #: benchmark compares the two).
    overlap_grammar: bool = True

    def __init__(
        self,
        config: ModaVerseConfig,
        tokenizer: Any,
        projector: MediaProjector,
        rows: dict[int, torch.Tensor],
        llama: Any,
        *,
        encoder: Any | None = None,
        stop_ids: Sequence[int] | None = None,
        gguf_path: Path | None = None,
    ) -> None:
        self._lc = require_llama_cpp()
        self.config = config
        self.tokenizer = tokenizer
        self.projector = projector.eval()
        self.rows = rows
        self.llama = llama
        self.gguf_path = gguf_path
        check_encoder(config, encoder)
        self.encoder = encoder
        self._init_engine(config, tokenizer, stop_ids if stop_ids is not None else stop_token_ids(tokenizer))
        vocab = self._lc.llama_model_get_vocab(llama.model)
        self.n_vocab = int(self._lc.llama_vocab_n_tokens(vocab))
        self.n_embd = int(self._lc.llama_model_n_embd(llama.model))
        self.grammars = GrammarCache(tokenizer, max(len(tokenizer), self.n_vocab), self.stop_ids)
        unknown = sorted(set(self.token_ids.values()) - set(rows) - {self.placeholder_id})
        if unknown:
            raise ModelError(f"no embedding row for added token id(s) {unknown}; the model directory is incomplete")
        self._cached: list[int] = []  # token ids whose keys/values sit in llama.cpp's memory (sequence 0)
        self._grammar_thread: futures.ThreadPoolExecutor | None = None
        #: Where the layers run, for the load message ("on the CPU" / "every layer on the GPU").
        self.placement_note = "on the CPU"

    # -- construction ------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        directory: str | Path,
        *,
        gguf: str | Path | None = None,
        encoder: Any | None = None,
        n_ctx: int = DEFAULT_CONTEXT,
        n_threads: int | None = None,
        cache: Path | None = None,
        placement: Placement | None = None,
    ) -> LlamaCppModel:
        """Load a ModaVerse directory onto llama.cpp (``gguf``: the base LLM's GGUF when the config does
        not name one); the adapter GGUF is written to ``cache`` on first use. ``placement`` offloads layers
        (cpu: none; a GPU: all; see :func:`~.placement.llama_offload`) and puts the media encoder on that GPU
        (the projector stays on the CPU: one small matrix)."""
        offload = llama_offload(placement or Placement())
        parts = load_llama_parts(
            directory, gguf=gguf, encoder=encoder, n_ctx=n_ctx, n_threads=n_threads, cache=cache, offload=offload
        )
        if parts.encoder is not None and placement is not None and placement.device.strip().lower() != "cpu":
            from ..devices import resolve_device

            parts.encoder.to(device=resolve_device(placement.device))
        model = cls(
            parts.config,
            parts.tokenizer,
            parts.projector,
            parts.rows,
            parts.llama,
            encoder=parts.encoder,
            stop_ids=parts.stop_ids,
            gguf_path=parts.gguf_path,
        )
        layers = offload["n_gpu_layers"]
        model.placement_note = "every layer on the GPU" if layers else "on the CPU"
        return model

    # -- engine attributes ---------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        """Where the projector runs (the CPU)."""
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        """The projector's dtype."""
        return torch.float32

    @property
    def context_length(self) -> int:
        """llama.cpp's context size (``n_ctx``)."""
        return int(self.llama.n_ctx())

    @property
    def model_name(self) -> str:
        """The base GGUF's path."""
        return str(self.gguf_path or self.config.llm)

    # -- decoding --------------------------------------------------------------------------------------------
    def _media_rows(self, media_features: torch.Tensor | None, modalities: Sequence[str] | None) -> torch.Tensor | None:
        """The projected rows of the media features (what the placeholders take), or None without media."""
        media = EncodedMedia.of(media_features, modalities)
        if media is None:
            return None
        with torch.no_grad():
            return media.to(dtype=torch.float32).project(self.projector).reshape(-1, self.n_embd)

    def _lay_out(self, prompts: Sequence[Sequence[int]], media: torch.Tensor | None) -> list[list[Segment]]:
        """The prompts as runs of token ids and embedding rows (see :func:`~.splice.lay_out_prompts`)."""
        return lay_out_prompts(prompts, self.placeholder_id, media, self.rows, self.n_vocab)

    def _decode_batch(self, ids: Sequence[int], rows: torch.Tensor | None, start: int, want_logits: bool) -> None:
        lc = self._lc
        n = len(ids)
        batch = lc.llama_batch_init(n, self.n_embd if rows is not None else 0, 1)
        try:
            if rows is not None:
                flat = np.ascontiguousarray(rows.detach().float().numpy().reshape(-1))
                ctypes.memmove(batch.embd, flat.ctypes.data, flat.nbytes)
            for k in range(n):
                if rows is None:
                    batch.token[k] = ids[k]
                batch.pos[k] = start + k
                batch.n_seq_id[k] = 1
                batch.seq_id[k][0] = 0
                batch.logits[k] = 1 if (want_logits and k == n - 1) else 0
            batch.n_tokens = n
            code = lc.llama_decode(self.llama.ctx, batch)
        finally:
            lc.llama_batch_free(batch)
        if code != 0:
            raise ModelError(f"llama.cpp could not decode the batch (code {code}); is the prompt longer than n_ctx?")

    def _prefill(self, segments: Sequence[Segment]) -> None:
        """Feed a prompt laid out as ``segments`` after the longest cached token prefix; the logits of its last
        token are ready."""
        keep = 0
        if segments and segments[0].rows is None:
            first = segments[0].ids
            limit = min(len(self._cached), len(first) - (1 if len(segments) == 1 else 0))
            while keep < limit and self._cached[keep] == first[keep]:
                keep += 1
        mem = self._lc.llama_get_memory(self.llama.ctx)
        self._lc.llama_memory_seq_rm(mem, 0, keep, -1)
        self._cached = []  # set again once the whole prompt is in
        pos, skip = 0, keep
        chunk = 512
        for s, (ids, rows) in enumerate(segments):
            last_segment = s == len(segments) - 1
            for a in range(0, len(ids), chunk):
                b = min(a + chunk, len(ids))
                if b <= skip - pos:
                    continue
                lo = max(a, skip - pos)
                part = None if rows is None else rows[lo:b]
                self._decode_batch(ids[lo:b], part, pos + lo, last_segment and b == len(ids))
            pos += len(ids)
        self._cached = list(segments[0].ids) if segments and segments[0].rows is None else []

    def _logits(self, vocab: int) -> torch.Tensor:
        """The last token's logits as a ``(1, vocab)`` tensor: a view of llama.cpp's own buffer (valid until the
        next decode; the grammar masks it in place) unless the tokenizer has more ids than the model."""
        ptr = self._lc.llama_get_logits_ith(self.llama.ctx, -1)
        raw = np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))
        if vocab == self.n_vocab:
            return torch.from_numpy(raw).unsqueeze(0)
        scores = torch.full((1, vocab), float("-inf"))
        scores[0, : self.n_vocab] = torch.from_numpy(raw)
        return scores

    def _worker(self) -> futures.ThreadPoolExecutor:
        """One thread for the grammar's work between tokens (made on first use)."""
        if self._grammar_thread is None:
            self._grammar_thread = futures.ThreadPoolExecutor(1, thread_name_prefix="modaverse-grammar")
        return self._grammar_thread

    def _decode_rows(
        self,
        prompts: Sequence[Sequence[int]],
        media_features: torch.Tensor | None,
        media_modalities: Sequence[str] | None,
        processor: MetaResponseLogitsProcessor,
        sampling: Sampling,
        streamer: Any | None,
    ) -> list[list[int]]:
        """Each row: prefill (reusing the cached prefix), then one token at a time under ``processor``."""
        layouts = self._lay_out(prompts, self._media_rows(media_features, media_modalities))
        generator = torch.Generator().manual_seed(sampling.seed) if sampling.seed is not None else None
        out: list[list[int]] = []
        for i, (prompt, segments) in enumerate(zip(prompts, layouts, strict=True)):
            sub = processor.for_row(i)
            out.append(self._decode_one(prompt, segments, sub, sampling, streamer, generator))
            if sub.closed_rows:
                processor.closed_rows.add(i)
            if sub.looped_rows:
                processor.looped_rows.add(i)
        return out

    def _decode_one(
        self,
        prompt: Sequence[int],
        segments: Sequence[Segment],
        processor: MetaResponseLogitsProcessor,
        sampling: Sampling,
        streamer: Any | None,
        generator: torch.Generator | None,
    ) -> list[int]:
        if len(prompt) + sampling.max_new_tokens > self.context_length:
            raise ModelError(
                f"prompt ({len(prompt)} tokens) + max_new_tokens ({sampling.max_new_tokens}) exceed llama.cpp's "
                f"context of {self.context_length}; load with a larger n_ctx"
            )
        self._prefill(segments)
        if streamer is not None:
            streamer.put(torch.tensor([list(prompt)]))
        vocab, stops = self.grammars.vocab_size, set(self.stop_ids)
        last = torch.tensor([[prompt[-1]]], dtype=torch.long)  # the processor reads only the newest token
        new: list[int] = []
        stop_strings = [s for s in self.config.stop_strings if s]
        for step in range(sampling.max_new_tokens):
            if sampling.do_sample:
                token = _sample(processor(last, self._logits(vocab))[0], sampling, generator)
            else:  # greedy: the grammar's mask is applied only when the best token is one it refuses
                token = processor.pick_greedy(last, self._logits(vocab))
            new.append(token)
            last = torch.tensor([[token]], dtype=torch.long)
            if streamer is not None:
                streamer.put(torch.tensor([token]))
            if token in stops:
                break
            if stop_strings and any(self.tokenizer.decode(new[-16:]).endswith(s) for s in stop_strings):
                break
            if not self.overlap_grammar:
                self._decode_batch([token], None, len(prompt) + step, True)
                continue
            # the grammar takes the token and fills the next mask on a worker while llama.cpp runs the token
            pending = self._worker().submit(processor.advance, [token])
            try:
                self._decode_batch([token], None, len(prompt) + step, True)
            finally:
                futures.wait([pending])
            pending.result()
        if streamer is not None:
            streamer.end()
        return new


def _sample(scores: torch.Tensor, sampling: Sampling, generator: torch.Generator | None) -> int:
    """Temperature + top-p sampling over one row of processed scores."""
    probs = torch.softmax(scores.float() / max(sampling.temperature, 1e-5), dim=-1)
    if sampling.top_p < 1.0:
        sorted_p, order = probs.sort(descending=True)
        drop = sorted_p.cumsum(0) - sorted_p > sampling.top_p
        sorted_p[drop] = 0.0
        probs = torch.zeros_like(probs).scatter(0, order, sorted_p)
    return int(torch.multinomial(probs, 1, generator=generator))
