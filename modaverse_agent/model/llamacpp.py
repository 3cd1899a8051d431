"""The llama.cpp engine: a trained ModaVerse directory decoded by llama.cpp on a GGUF base.

On a CPU, llama.cpp on a quantised GGUF decodes several times faster than transformers (it reads a
quarter of the bytes per token and has no Python in its forward pass). :class:`LlamaCppModel` keeps
everything else of the torch engine:

* the LoRA adapter is converted once to a llama.cpp LoRA GGUF (:mod:`.gguf_export`, cached by content
  hash) and applied to the base GGUF at run time;
* prompts are built by the same :class:`~.prompting.Prompter` and HF tokenizer (ids are the GGUF's);
* the media splice holds: runs of ordinary tokens go to llama.cpp as token ids, and the media markers
  and placeholders go as embedding rows (the trained marker rows; the projected encoder features, or
  the blind model's zero features, through the same projector);
* every step's logits pass through the same :class:`~.constrained.MetaResponseLogitsProcessor`, so
  meta-responses are schema-valid and close within the budget exactly as with torch;
* the KV cache of the previous prompt's longest shared token prefix (the system prompt) is reused.

Rows are decoded one after another (llama.cpp on a CPU gains little from batching single tokens).
Needs ``llama-cpp-python`` (``pip install modaverse-agent[llamacpp]``, built from source).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import math
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ModelError
from .config import ModaVerseConfig
from .constrained import GrammarCache, MetaResponseLogitsProcessor
from .gguf_export import adapter_fingerprint, gguf_metadata, write_lora_gguf
from .llm import add_tokens, prepare_tokenizer
from .projector import MediaProjector
from .prompting import stop_token_ids
from .responder import MetaResponseEngine, Sampling, check_encoder

logger = logging.getLogger(__name__)

#: Architectures whose token embeddings are scaled by sqrt(width) inside the model (HF and llama.cpp
#: alike); rows given to llama.cpp as embeddings must already carry that scale.
_SCALED_EMBEDDINGS = {"gemma", "gemma2", "gemma3", "gemma3n"}
DEFAULT_CONTEXT = 4096


def llama_cpp_available() -> bool:
    """Whether ``llama_cpp`` (llama-cpp-python) can be imported."""
    import importlib.util

    return importlib.util.find_spec("llama_cpp") is not None


def _require_llama_cpp() -> Any:
    try:
        import llama_cpp
    except ImportError as e:
        raise ModelError(
            "the llama.cpp engine needs llama-cpp-python: `pip install modaverse-agent[llamacpp]` "
            "(it compiles llama.cpp, several minutes), or use the torch engine"
        ) from e
    return llama_cpp


def base_gguf(config: ModaVerseConfig, root: Path, gguf: str | Path | None = None) -> Path:
    """The base LLM as a GGUF file: ``gguf`` if given, the config's GGUF, or the built-in model's."""
    from .checkpoint import BUILTIN_LLM_PREFIX, _resolve_llm

    if gguf is not None:
        path = Path(gguf).expanduser()
    elif config.gguf_file:
        path = Path(_resolve_llm(config.llm, root)) / config.gguf_file
    elif config.llm.startswith(BUILTIN_LLM_PREFIX):
        from ..default_model import ensure_gguf

        path = ensure_gguf()
    else:
        raise ModelError(
            f"the llama.cpp engine needs the base LLM as a GGUF file, and {config.llm} is not one; "
            "pass the GGUF of the same model (`gguf=` / `--gguf`), or use the torch engine"
        )
    if not path.is_file():
        raise ModelError(f"base GGUF {path} does not exist")
    return path


def _not_plain_lora(peft_config: dict[str, Any]) -> str | None:
    """Why a peft LoRA config cannot become a llama.cpp adapter (None: it can)."""
    if peft_config.get("use_dora") or peft_config.get("use_rslora"):
        return "llama.cpp applies plain LoRA only and this adapter uses DoRA/rsLoRA"
    if peft_config.get("rank_pattern") or peft_config.get("alpha_pattern"):
        return "llama.cpp takes one LoRA rank and alpha per adapter"
    return None


def adapter_gguf(root: Path, meta: dict[str, Any], cache: Path | None = None) -> Path:
    """The model's LoRA as a llama.cpp adapter GGUF for a base described by ``meta`` (:func:`gguf_metadata`),
    converted once into the cache."""
    import json

    from safetensors.torch import load_file

    from .checkpoint import ADAPTER_CONFIG, ADAPTER_WEIGHTS

    files = [root / ADAPTER_CONFIG, root / ADAPTER_WEIGHTS]
    peft_config = json.loads(files[0].read_text(encoding="utf-8"))
    why = _not_plain_lora(peft_config)
    if why:
        raise ModelError(f"{why}; use the torch engine")
    if cache is None:
        from ..cache import cache_dir

        cache = cache_dir() / "llamacpp"
    arch, heads = meta["arch"], (int(meta["n_head"]), int(meta["n_head_kv"]))
    out = cache / f"adapter-{adapter_fingerprint(files, {'arch': arch, 'heads': heads, 'v': 1})}.gguf"
    if not out.is_file():
        logger.info("converting the LoRA adapter to GGUF: %s", out)
        write_lora_gguf(
            load_file(str(files[1])),
            out,
            arch=arch,
            n_blocks=int(meta["n_blocks"]),
            alpha=float(peft_config["lora_alpha"]),
            heads=heads,
        )
    return out


class LlamaCppModel(MetaResponseEngine):
    """A ModaVerse model (projectors + LoRA + media rows) run by llama.cpp; see the module docstring."""

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
        self._lc = _require_llama_cpp()
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
    ) -> LlamaCppModel:
        """Load a ModaVerse directory onto llama.cpp (``gguf``: the base LLM's GGUF when the config does
        not name one); the adapter GGUF is written to ``cache`` on first use."""
        from .checkpoint import ROWS_FILE, _check_files, _load_encoder, _read, load_projector

        lc = _require_llama_cpp()
        root = Path(directory)
        _check_files(root)
        config = ModaVerseConfig.load(root)
        if config.train_embeddings:
            raise ModelError(
                "this model trained its whole embedding table, which a llama.cpp adapter cannot carry; use the torch "
                "engine"
            )
        path = base_gguf(config, root, gguf)
        meta = gguf_metadata(path)
        if meta["type"] != "model":
            raise ModelError(f"{path} is a GGUF {meta['type']}, not a model")
        tokenizer = _tokenizer(config, root, path, meta["n_vocab"])
        if len(tokenizer) - len(config.added_tokens) > meta["n_vocab"]:
            raise ModelError(
                f"{path} has {meta['n_vocab']} tokens but the model's tokenizer has "
                f"{len(tokenizer) - len(config.added_tokens)} before its media tokens; it is not this model's base"
            )
        tensors = _read(root / ROWS_FILE, root)
        if set(tensors) != {"embed.indices", "embed.weight"}:
            raise ModelError(f"{ROWS_FILE}: only the media tokens' rows can go to llama.cpp; use the torch engine")
        scale = math.sqrt(meta["n_embd"]) if meta["arch"] in _SCALED_EMBEDDINGS else 1.0
        indices, weight = tensors["embed.indices"].tolist(), tensors["embed.weight"].float()
        added = {tokenizer.convert_tokens_to_ids(t) for t in config.added_tokens}
        if set(indices) - added:
            raise ModelError(f"{ROWS_FILE} changes rows of the base vocabulary; use the torch engine")
        if weight.shape[1] != meta["n_embd"]:
            raise ModelError(f"{ROWS_FILE}: rows are {weight.shape[1]} wide, {path} is {meta['n_embd']} wide")
        rows = {int(i): weight[k] * scale for k, i in enumerate(indices)}
        projector = MediaProjector.for_config(config, int(meta["n_embd"]))
        load_projector(projector, root)
        lora = adapter_gguf(root, meta, cache)
        with _captured_stderr() as said:
            try:
                llama = lc.Llama(
                    model_path=str(path),
                    lora_path=str(lora),
                    n_ctx=n_ctx,
                    n_batch=512,
                    n_threads=n_threads or torch.get_num_threads(),
                    logits_all=False,
                    verbose=False,
                )
            except (ValueError, RuntimeError) as e:
                raise ModelError(f"llama.cpp could not load {path} with adapter {lora}: {e}\n{said()}") from e
        return cls(
            config,
            tokenizer,
            projector,
            rows,
            llama,
            encoder=encoder if encoder is not None else _load_encoder(config, root),
            stop_ids=_stop_ids(config, root, tokenizer),
            gguf_path=path,
        )

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
    def _segments(
        self, prompt: Sequence[int], media: torch.Tensor | None
    ) -> list[tuple[list[int], torch.Tensor | None]]:
        """The prompt as runs: (token ids, None) for ordinary tokens, (ids, rows) for embedded ones."""
        out: list[tuple[list[int], torch.Tensor | None]] = []
        used = 0
        for t in prompt:
            if t < self.n_vocab and t not in self.rows and t != self.placeholder_id:
                if not out or out[-1][1] is not None:
                    out.append(([], None))
                out[-1][0].append(int(t))
                continue
            if t == self.placeholder_id:
                if media is None or used >= media.shape[0]:
                    raise ValueError("more media placeholders in the prompt than media features")
                row = media[used]
                used += 1
            elif t in self.rows:
                row = self.rows[t]
            else:
                raise ModelError(f"token id {t} is outside the GGUF's vocabulary and has no embedding row")
            if not out or out[-1][1] is None:
                out.append(([], torch.empty(0, self.n_embd)))
            ids, rows = out[-1]
            ids.append(int(t))
            out[-1] = (ids, torch.cat([rows, row.reshape(1, -1).float()]))
        if media is not None and used != media.shape[0]:
            raise ValueError(f"{media.shape[0]} media features for {used} placeholders in the prompt")
        return out

    def _media_rows(self, media_features: torch.Tensor | None, modalities: Sequence[str] | None) -> torch.Tensor | None:
        if media_features is None or not media_features.shape[0]:
            return None
        if modalities is None:
            raise ValueError("`media_modalities` is required with `media_features` (one modality per row)")
        with torch.no_grad():
            projected = self.projector.project_items(list(modalities), media_features.float())
        return projected.reshape(-1, self.n_embd)

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

    def _prefill(self, prompt: Sequence[int], media: torch.Tensor | None) -> None:
        """Feed ``prompt`` after the longest cached token prefix; the logits of its last token are ready."""
        segments = self._segments(prompt, media)
        keep = 0
        if segments and segments[0][1] is None:
            first = segments[0][0]
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
        self._cached = list(segments[0][0]) if segments and segments[0][1] is None else []

    def _logits(self, vocab: int) -> torch.Tensor:
        ptr = self._lc.llama_get_logits_ith(self.llama.ctx, -1)
        raw = np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))
        scores = torch.full((1, vocab), float("-inf"))
        scores[0, : self.n_vocab] = torch.from_numpy(raw)
        return scores

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
        media = self._media_rows(media_features, media_modalities)
        per_row = [sum(1 for t in p if t == self.placeholder_id) for p in prompts]
        if media is not None and sum(per_row) != media.shape[0]:
            raise ValueError(f"{media.shape[0]} media features for {sum(per_row)} placeholders in the prompts")
        generator = torch.Generator().manual_seed(sampling.seed) if sampling.seed is not None else None
        out: list[list[int]] = []
        offset = 0
        for i, prompt in enumerate(prompts):
            own = None if media is None or not per_row[i] else media[offset : offset + per_row[i]]
            offset += per_row[i]
            sub = processor.for_row(i)
            out.append(self._decode_one(prompt, own, sub, sampling, streamer, generator))
            if sub.closed_rows:
                processor.closed_rows.add(i)
        return out

    def _decode_one(
        self,
        prompt: Sequence[int],
        media: torch.Tensor | None,
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
        self._prefill(prompt, media)
        if streamer is not None:
            streamer.put(torch.tensor([list(prompt)]))
        vocab, stops = self.grammars.vocab_size, set(self.stop_ids)
        last = torch.tensor([[prompt[-1]]], dtype=torch.long)  # the processor reads only the newest token
        new: list[int] = []
        stop_strings = [s for s in self.config.stop_strings if s]
        for step in range(sampling.max_new_tokens):
            scores = processor(last, self._logits(vocab))
            if sampling.min_new_tokens and step < sampling.min_new_tokens:
                scores[0, list(stops)] = float("-inf")
            token = _choose(scores[0], sampling, generator)
            new.append(token)
            last = torch.tensor([[token]], dtype=torch.long)
            if streamer is not None:
                streamer.put(torch.tensor([token]))
            if token in stops:
                break
            if stop_strings and any(self.tokenizer.decode(new[-16:]).endswith(s) for s in stop_strings):
                break
            self._decode_batch([token], None, len(prompt) + step, True)
        if streamer is not None:
            streamer.end()
        return new


@contextlib.contextmanager
def _captured_stderr() -> Iterator[Callable[[], str]]:
    """Hold llama.cpp's load-time chatter (written to fd 2 from C) back; yields a reader of what it wrote."""
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)

        def said() -> str:
            sink.seek(0)
            return sink.read()[-4000:].decode("utf-8", "replace")

        try:
            yield said
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _choose(scores: torch.Tensor, sampling: Sampling, generator: torch.Generator | None) -> int:
    """Greedy, or temperature + top-p sampling, over one row of processed scores."""
    if not sampling.do_sample:
        return int(scores.argmax())
    probs = torch.softmax(scores.float() / max(sampling.temperature, 1e-5), dim=-1)
    if sampling.top_p < 1.0:
        sorted_p, order = probs.sort(descending=True)
        drop = sorted_p.cumsum(0) - sorted_p > sampling.top_p
        sorted_p[drop] = 0.0
        probs = torch.zeros_like(probs).scatter(0, order, sorted_p)
    return int(torch.multinomial(probs, 1, generator=generator))


def _tokenizer(config: ModaVerseConfig, root: Path, gguf: Path, n_tokens: int | None) -> Any:
    """The model's tokenizer: the saved one, else the base LLM's (its folder, or read from ``gguf``, whose
    vocabulary holds ``n_tokens``)."""
    from transformers import AutoTokenizer

    from .checkpoint import TOKENIZER_DIR, _resolve_llm

    saved = root / TOKENIZER_DIR
    if (saved / "tokenizer_config.json").is_file():
        return AutoTokenizer.from_pretrained(str(saved))
    source = Path(_resolve_llm(config.llm, root, tokenizer_only=True))
    if source.is_dir() and (source / "tokenizer_config.json").is_file():
        tokenizer = AutoTokenizer.from_pretrained(str(source))
    else:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        _check_gguf_tokenizer(tokenizer, gguf, n_tokens)
    prepare_tokenizer(tokenizer)
    add_tokens(tokenizer, config)
    return tokenizer


def _check_gguf_tokenizer(tokenizer: Any, gguf: Path, count: int | None) -> None:
    """Refuse a tokenizer transformers read from ``gguf`` (``count`` tokens) with tokens the file does not have:
    the media tokens would then get other ids than in training (its GPT-2-style reader adds ``<|endoftext|>``
    when missing)."""
    if isinstance(count, int) and len(tokenizer) > count:
        extra = sorted(t for t, i in tokenizer.get_vocab().items() if i >= count)
        raise ModelError(
            f"transformers read {len(tokenizer)} tokens from {gguf.name}, which has {count} (it added {extra}), so "
            "the media tokens would not get their trained ids; keep the tokenizer beside the model (train without "
            "--no-tokenizer) or point the config's `llm` at the base model's folder"
        )


def _stop_ids(config: ModaVerseConfig, root: Path, tokenizer: Any) -> list[int]:
    """The same stop ids the torch engine uses: the base LLM's generation config and the tokenizer's EOS."""
    from transformers import GenerationConfig

    from .checkpoint import _resolve_llm

    source = Path(_resolve_llm(config.llm, root, tokenizer_only=True))
    generation = None
    if (source / "generation_config.json").is_file():
        generation = GenerationConfig.from_pretrained(str(source))
    return stop_token_ids(tokenizer, generation)


def load_engine(
    directory: str | Path,
    engine: str = "auto",
    *,
    gguf: str | Path | None = None,
    n_threads: int | None = None,
    log: Callable[[str], None] | None = None,
    **torch_kwargs: Any,
) -> Any:
    """Load a ModaVerse directory on ``engine``: "torch", "llama.cpp", or "auto" (llama.cpp when
    llama-cpp-python is installed and the model can run on it, else torch). ``torch_kwargs`` go to
    :meth:`ModaVerseModel.from_pretrained` (``merge``, ``dtype``, ...)."""
    from .modeling import ModaVerseModel

    if resolve_engine(directory, engine, gguf) == "llama.cpp":
        model = LlamaCppModel.from_pretrained(
            directory, gguf=gguf, encoder=torch_kwargs.get("encoder"), n_threads=n_threads
        )
        if log:
            log(f"engine: llama.cpp on {model.gguf_path}")
        return model
    if log:
        log("engine: torch")
    return ModaVerseModel.from_pretrained(directory, **torch_kwargs)


def resolve_engine(directory: str | Path, engine: str = "auto", gguf: str | Path | None = None) -> str:
    """The engine ``engine`` means for the ModaVerse directory ``directory``: "torch" or "llama.cpp"."""
    if engine not in ("auto", "torch", "llama.cpp"):
        raise ValueError(f"engine must be auto, torch or llama.cpp, got {engine!r}")
    if engine == "auto":
        return "llama.cpp" if llama_cpp_available() and _suits_llama_cpp(directory, gguf) else "torch"
    return engine


#: LoRA targets a llama.cpp adapter carries on every architecture (the output layer of a tied model has no
#: tensor of its own in the GGUF, so ``lm_head`` is left to an explicit ``--engine llama.cpp``).
_LINEAR_TARGETS = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


def _suits_llama_cpp(directory: str | Path, gguf: str | Path | None) -> bool:
    """Whether ``auto`` should pick llama.cpp: a GGUF base to be had, plain LoRA on the linear layers, media
    rows only (no whole trained tables)."""
    import json

    from .checkpoint import ADAPTER_CONFIG, BUILTIN_LLM_PREFIX, _check_files

    root = Path(directory)
    _check_files(root)  # the same errors as loading it
    config = ModaVerseConfig.load(root)
    has_gguf = gguf is not None or bool(config.gguf_file) or config.llm.startswith(BUILTIN_LLM_PREFIX)
    plain = _not_plain_lora(json.loads((root / ADAPTER_CONFIG).read_text(encoding="utf-8"))) is None
    linear = set(config.lora_targets) <= _LINEAR_TARGETS
    return has_gguf and plain and linear and not config.train_embeddings
