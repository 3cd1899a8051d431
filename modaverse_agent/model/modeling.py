"""ModaVerseModel: encoder features -> projector -> spliced into the LoRA LLM -> meta-response text.

``forward`` trains on precomputed encoder features (the trainer caches them; raw media are not needed);
``generate`` decodes left-padded batches with transformers (greedy or sampling, constrained by a JSON
Schema or not) and the agent's interface (``respond``, ``complete``, ``stream``) comes from
:class:`~.responder.MetaResponseEngine`. The media encoder is optional: without one the model still
answers text-only requests, and a request with media raises :class:`~modaverse_agent.errors.ModelError`
saying how to attach an encoder (or, with ``blind_media``, marks them as present).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from .config import ModaVerseConfig
from .constrained import GrammarCache, MetaResponseLogitsProcessor
from .llm import TrainedRowsEmbedding, add_media_tokens, apply_lora, load_llm, prepare_tokenizer, torch_dtype
from .projector import MediaProjector
from .prompting import stop_token_ids
from .responder import (
    MetaResponseEngine,
    Sampling,
    check_encoder,
)
from .splice import EncodedMedia, splice_media

logger = logging.getLogger(__name__)

Schema = Mapping[str, Any] | None
#: The shortest common prompt start worth running once for a whole batch (the system prompt is ~300 tokens).
MIN_SHARED_PREFIX = 16


class GrowingLayer(DynamicLayer):
    """A KV-cache layer whose ``keys``/``values`` are views of preallocated buffers, filled in place.

    transformers' ``DynamicLayer`` grows by concatenation: every decoded token copies the whole cache
    of every layer (a ``torch.cat`` per layer, each a parallel region that stalls for milliseconds when
    the CPU is shared). Here a step writes its row into a buffer sized for the whole answer and
    attention reads a view of the filled part; a full buffer doubles. Used for every layer, sliding
    ones included: they keep their whole history and the sliding mask (built from positions) hides what
    lies outside the window, as for ``DynamicCache()`` built without a config.
    """

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity = max(1, capacity)
        self._k: torch.Tensor | None = None
        self._v: torch.Tensor | None = None

    def _reserve(self, key_states: torch.Tensor, value_states: torch.Tensor, needed: int) -> None:
        """New buffers for at least ``needed`` tokens, holding the cached keys/values so far."""
        n, old = self.get_seq_length(), 0 if self._k is None else self._k.shape[-2]
        size = max(self.capacity, needed, 2 * old if needed > old else 0)
        k = key_states.new_empty((*key_states.shape[:-2], size, key_states.shape[-1]))
        v = value_states.new_empty((*value_states.shape[:-2], size, value_states.shape[-1]))
        if n:
            k[..., :n, :] = self.keys
            v[..., :n, :] = self.values
        self._k, self._v = k, v

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write the new keys and values after the filled part; return views of everything so far."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        n, add = self.get_seq_length(), key_states.shape[-2]
        buf = self._k
        mine = buf is not None and (n == 0 or self.keys.data_ptr() == buf.data_ptr())  # not replaced (reorder)
        if not (mine and buf.shape[:-2] == key_states.shape[:-2] and n + add <= buf.shape[-2]):
            self._reserve(key_states, value_states, n + add)
        k, v = self._k, self._v
        k[..., n : n + add, :] = key_states
        v[..., n : n + add, :] = value_states
        self.keys, self.values = k[..., : n + add, :], v[..., : n + add, :]
        return self.keys, self.values

    def spread(self, shifts: Sequence[int]) -> None:
        """Turn this one-row cache into one row per shift, each row's cache moved right by its shift (the
        slots before it are zero: left padding, masked out)."""
        n = self.get_seq_length()
        keys, values = self.keys, self.values
        k = keys.new_zeros((len(shifts), *keys.shape[1:-2], max(self.capacity, n), keys.shape[-1]))
        v = values.new_zeros((len(shifts), *values.shape[1:-2], max(self.capacity, n), values.shape[-1]))
        for i, shift in enumerate(shifts):
            if shift < n:
                k[i, ..., shift:n, :] = keys[0, ..., : n - shift, :]
                v[i, ..., shift:n, :] = values[0, ..., : n - shift, :]
        self._k, self._v = k, v
        self.keys, self.values = k[..., :n, :], v[..., :n, :]


def growing_cache(capacity: int) -> DynamicCache:
    """A cache for ``generate`` whose layers are :class:`GrowingLayer` of ``capacity`` tokens."""
    cache = DynamicCache()
    cache.layer_class_to_replicate = lambda: GrowingLayer(capacity)
    return cache


class ModaVerseModel(MetaResponseEngine, nn.Module):
    """Projectors + LoRA LLM (+ an optional frozen media encoder), one trainable unit; the torch engine."""

    def __init__(
        self,
        config: ModaVerseConfig,
        llm: Any,
        tokenizer: Any,
        projector: MediaProjector,
        *,
        encoder: Any | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.llm = llm
        self.projector = projector
        self.tokenizer = tokenizer
        object.__setattr__(self, "_encoder", None)  # kept out of the module tree: it is frozen and saved apart
        self.encoder = encoder
        self._init_engine(config, tokenizer, stop_token_ids(tokenizer, getattr(llm, "generation_config", None)))
        #: Table rows saved in full beside the trained media rows: an imported release's, or every row when
        #: ``config.train_embeddings`` (re-saved by save_pretrained).
        self.frozen_rows: dict[str, torch.Tensor] = {}
        self.merged = False

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "encoder":  # an nn.Module encoder must not become a submodule (it is frozen, saved apart)
            type(self).encoder.fset(self, value)  # type: ignore[attr-defined]
            return
        super().__setattr__(name, value)

    # -- construction ------------------------------------------------------------------------------
    @classmethod
    def from_config(
        cls,
        config: ModaVerseConfig,
        *,
        llm: Any | None = None,
        tokenizer: Any | None = None,
        encoder: Any | None = None,
        device: torch.device | str | None = None,
        init_lora_weights: bool = True,
    ) -> ModaVerseModel:
        """A fresh, untrained model: the base LLM (loaded from ``config.llm`` unless given) with media
        tokens, trainable media rows, LoRA and new projectors. ``init_lora_weights=False`` makes LoRA B
        non-zero (tests)."""
        if (llm is None) != (tokenizer is None):
            raise ValueError("pass both `llm` and `tokenizer`, or neither (then `config.llm` is loaded)")
        if llm is None:
            from .builtin import resolve_llm

            source = resolve_llm(config.llm, Path.cwd())
            llm, tokenizer = load_llm(source, gguf_file=config.gguf_file, dtype=config.dtype, device=device)
        prepare_tokenizer(tokenizer)
        ids = add_media_tokens(llm, tokenizer, config)
        trainable = [ids[t] for t in config.added_tokens if t != config.media_placeholder_token]
        llm.set_input_embeddings(TrainedRowsEmbedding(llm.get_input_embeddings(), trainable))
        peft_llm = apply_lora(llm, config, init_lora_weights=init_lora_weights)
        ref = llm.get_input_embeddings().weight
        hidden = llm.config.get_text_config().hidden_size
        projector = MediaProjector.for_config(config, hidden).to(device=ref.device, dtype=ref.dtype)
        model = cls(config, peft_llm, tokenizer, projector, encoder=encoder)
        if config.train_embeddings:
            model._train_tables()
        return model

    def _train_tables(self) -> None:
        """Make the input table and an untied output layer trainable; save_pretrained then writes them whole."""
        embed, head = self.llm.get_input_embeddings(), self.llm.get_output_embeddings()
        embed.weight.requires_grad_(True)
        self.frozen_rows["embed"] = torch.arange(embed.weight.shape[0])
        if head is not None and head.weight.data_ptr() != embed.weight.data_ptr():
            head.weight.requires_grad_(True)
            self.frozen_rows["lm_head"] = torch.arange(head.weight.shape[0])

    @classmethod
    def from_pretrained(cls, directory: str | Path, **kwargs: Any) -> ModaVerseModel:
        """Load a directory written by :meth:`save_pretrained` (see :func:`.checkpoint.load_pretrained`)."""
        from .checkpoint import load_pretrained

        return load_pretrained(directory, model_class=cls, **kwargs)

    def save_pretrained(self, directory: str | Path, *, tokenizer: bool = True) -> Path:
        """Write config, projector, LoRA adapter, trained token rows and tokenizer (no pickles)."""
        from .checkpoint import save_pretrained

        return save_pretrained(self, directory, tokenizer=tokenizer)

    # -- parts ---------------------------------------------------------------------------------------
    @property
    def encoder(self) -> Any | None:
        """The media encoder (a :class:`~modaverse_agent.encoders.base.MediaEncoder`), or None."""
        return self._encoder

    @encoder.setter
    def encoder(self, encoder: Any | None) -> None:
        check_encoder(self.config, encoder)
        object.__setattr__(self, "_encoder", encoder)

    @property
    def device(self) -> torch.device:
        """Device of the LLM's input embeddings."""
        return self.llm.get_input_embeddings().weight.device

    @property
    def dtype(self) -> torch.dtype:
        """Dtype of the LLM's weights."""
        return self.llm.get_input_embeddings().weight.dtype

    @property
    def context_length(self) -> int:
        """The LLM's maximum sequence length."""
        return int(self.llm.config.get_text_config().max_position_embeddings)

    @cached_property
    def grammars(self) -> GrammarCache:
        """xgrammar state for this tokenizer (compiled grammars cached per schema)."""
        head = self.llm.get_output_embeddings()
        vocab = head.out_features if hasattr(head, "out_features") else head.weight.shape[0]
        return GrammarCache(self.tokenizer, vocab, self.stop_ids)

    def trainable_parameters(self) -> list[nn.Parameter]:
        """What training updates: projectors, LoRA and the media tokens' rows (all rows with ``train_embeddings``)."""
        return [p for p in self.parameters() if p.requires_grad]

    def embed_inputs(
        self,
        input_ids: torch.Tensor,
        media_features: torch.Tensor | None = None,
        media_modalities: Sequence[str] | str | None = None,
        labels: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Token embeddings with the projected media spliced in; labels masked at media positions."""
        embeds = self.llm.get_input_embeddings()(input_ids)
        media = EncodedMedia.of(media_features, media_modalities)
        rows = None if media is None else media.to(embeds.device).project(self.projector)
        return splice_media(embeds, input_ids, rows, self.placeholder_id, labels)

    # -- training --------------------------------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        media_features: torch.Tensor | None = None,
        media_modalities: Sequence[str] | str | None = None,
        **kwargs: Any,
    ) -> Any:
        """The LLM's output (``loss`` when ``labels`` are given) on text with media features spliced in.

        ``media_features`` are the *encoder's* embeddings ``(n_items, encoder_dim)`` in reading order
        (batch row, then position); the projectors run here so they train. Extra keyword arguments go
        to the LLM (``logits_to_keep``, ``past_key_values``, ...).
        """
        embeds, labels = self.embed_inputs(input_ids, media_features, media_modalities, labels)
        return self.llm(inputs_embeds=embeds, attention_mask=attention_mask, labels=labels, **kwargs)

    # -- generation ------------------------------------------------------------------------------------
    def _batch(self, prompts: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(p) for p in prompts)
        pad = self.tokenizer.pad_token_id
        ids = torch.full((len(prompts), width), pad, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for i, p in enumerate(prompts):
            ids[i, width - len(p) :] = torch.as_tensor(list(p), dtype=torch.long)
            mask[i, width - len(p) :] = 1
        return ids.to(self.device), mask.to(self.device)

    def _shared_prefix(self, prompts: Sequence[Sequence[int]]) -> int:
        """How many leading tokens every row shares (the system prompt), stopping before a media placeholder
        and leaving each row at least one token of its own; 0 for one row or a short common part."""
        if len(prompts) < 2:
            return 0
        first, limit = prompts[0], min(len(p) for p in prompts) - 1
        n = 0
        while n < limit and first[n] != self.placeholder_id and all(p[n] == first[n] for p in prompts):
            n += 1
        return n if n >= MIN_SHARED_PREFIX else 0

    def _decode_rows(
        self,
        prompts: Sequence[Sequence[int]],
        media_features: torch.Tensor | None,
        media_modalities: Sequence[str] | None,
        processor: MetaResponseLogitsProcessor,
        sampling: Sampling,
        streamer: Any | None,
    ) -> list[list[int]]:
        """transformers' ``generate`` on the spliced embeddings of a left-padded batch.

        The start every row shares (the system prompt) runs once, for one row; its keys and values are
        laid into each row's cache at that row's offset, and ``generate`` continues from there.
        """
        from transformers import GenerationConfig, LogitsProcessorList

        extra: dict[str, Any] = {"tokenizer": self.tokenizer} if self.config.stop_strings else {}
        width = max(len(p) for p in prompts)
        cache = self._cache_kwargs(width + sampling.max_new_tokens)
        input_ids, attention_mask = self._batch(prompts)
        embeds, _ = self.embed_inputs(input_ids, media_features, media_modalities)
        prefix = self._shared_prefix(prompts) if cache else 0
        if prefix:
            self._prefill_shared(embeds, [width - len(p) for p in prompts], prefix, cache)
        extra.update(cache)
        config = GenerationConfig(
            max_new_tokens=sampling.max_new_tokens,
            do_sample=sampling.do_sample,
            temperature=sampling.temperature if sampling.do_sample else None,
            top_p=sampling.top_p if sampling.do_sample else None,
            top_k=0 if sampling.do_sample else None,
            eos_token_id=self.stop_ids,
            pad_token_id=self.tokenizer.pad_token_id,
            bos_token_id=self.tokenizer.bos_token_id,
            stop_strings=list(self.config.stop_strings) or None,
        )
        with torch.random.fork_rng(devices=[] if self.device.type == "cpu" else [self.device]):
            if sampling.seed is not None:
                torch.manual_seed(sampling.seed)
            out = self.llm.generate(
                inputs_embeds=embeds,
                attention_mask=attention_mask,
                generation_config=config,
                logits_processor=LogitsProcessorList([processor]),
                streamer=streamer,
                **extra,
            )
        return out.tolist()

    def _prefill_shared(
        self, embeds: torch.Tensor, shifts: Sequence[int], prefix: int, cache_kwargs: dict[str, Any]
    ) -> None:
        """Run the ``prefix`` tokens all rows share once (from the longest row, where they start at slot 0)
        and lay their keys/values into every row's cache at its left padding (``shifts``): a row then holds
        what plain left-padded prefill would have put there, and ``generate`` runs only the slots after."""
        longest = min(range(len(shifts)), key=lambda i: shifts[i])
        self.llm(inputs_embeds=embeds[longest : longest + 1, :prefix], use_cache=True, logits_to_keep=1, **cache_kwargs)
        for layer in next(iter(cache_kwargs.values())).layers:
            layer.spread(shifts)

    def _cache_kwargs(self, capacity: int) -> dict[str, Any]:
        """``generate``'s cache argument: a :func:`growing_cache` under the name this transformers takes."""
        cache = growing_cache(capacity)
        if not hasattr(cache, "layer_class_to_replicate"):  # an older transformers: its own cache, grown by cat
            return {}
        causal = self.llm.get_base_model() if hasattr(self.llm, "get_base_model") else self.llm
        name = "cache" if "cache" in inspect.signature(causal.forward).parameters else "past_key_values"
        return {name: cache}

    # -- inference conveniences ----------------------------------------------------------------------------
    def merge_and_unload(self) -> ModaVerseModel:
        """Fold LoRA and the trained rows into the base weights (faster inference; cannot be saved after)."""
        if self.merged:
            return self
        embed = self.llm.get_input_embeddings()
        base = self.llm.merge_and_unload()
        if isinstance(embed, TrainedRowsEmbedding):
            base.set_input_embeddings(embed.materialize())
        self.llm = base
        self.merged = True
        return self

    def to_dtype(self, name: str) -> ModaVerseModel:
        """Cast LLM and projectors to ``float32``/``bfloat16``/``float16``."""
        self.to(torch_dtype(name))
        return self
