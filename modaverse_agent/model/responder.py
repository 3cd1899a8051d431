"""What every ModaVerse inference engine shares: requests -> prompt ids -> constrained decoding -> text.

:class:`MetaResponseEngine` turns agent requests (:class:`~modaverse_agent.llm_io.LLMRequest`) into
prompts, plans constrained decoding (budget, closing reserve, retries; see :mod:`.constrained`) and
decodes the answer; an engine supplies only ``_decode_rows``, the loop that runs its LLM one step at a
time under the :class:`~.constrained.MetaResponseLogitsProcessor`. The torch engine is
:class:`~.modeling.ModaVerseModel`; :class:`~.llamacpp.LlamaCppModel` runs the same model on llama.cpp.

Per request, ``request.params`` override :attr:`MetaResponseEngine.options` (``max_new_tokens``; a
``temperature`` above 0 samples, 0 decodes greedily; ``top_p``; ``seed``; ``stop`` strings cut the
decoded text at their first occurrence). ``request.system`` and ``request.history`` are folded into
the instruction text (see :func:`fold_conversation`); ``complete`` adds token accounting and
``stream`` yields text pieces as they are decoded.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import torch

from ..answer_stream import cut_at_stop
from ..errors import ModelError, RequestError
from ..llm_io import Completion, GenerationParams, LLMRequest, OutputFormat, fold_conversation
from ..meta_response import TaskSpec
from .constrained import GrammarCache, MetaResponseLogitsProcessor
from .prompting import Prompter, spec_from_dict, special_token_ids
from .splice import EncodedMedia
from .streaming import CompletionStream, DecodeCancelled, StopCheck

if TYPE_CHECKING:
    from ..media import MediaItem
    from .config import ModaVerseConfig

logger = logging.getLogger(__name__)

Schema = Mapping[str, Any] | None
#: How the engines' token-budget warnings begin (``modaverse eval`` counts them instead of printing them).
BUDGET_WARNING = "meta-response budget: "


@dataclass
class EngineOptions(GenerationParams):
    """An engine's defaults: the request's own settings type (a request's ``params`` override them field by
    field) plus whether answers are constrained to the request's schema."""

    constrained: bool = True


#: Decoding attempts when a constrained row ends unfinished (each doubles the closing reserve).
_CLOSING_ATTEMPTS = 3


def check_encoder(config: ModaVerseConfig, encoder: Any | None) -> None:
    """Refuse an encoder whose embedding width is not the projectors' input width."""
    if encoder is not None and encoder.embed_dim != config.encoder_dim:
        raise ModelError(
            f"the encoder's embeddings are {encoder.embed_dim} wide but this model's projectors take "
            f"{config.encoder_dim} (`encoder_dim`); use the encoder the model was trained with"
        )


@dataclass(frozen=True)
class Sampling:
    """One ``generate`` call's settings, resolved (request over engine defaults) and internal to the engines:
    the settings people set are :class:`~modaverse_agent.llm_io.GenerationParams`, per request or as defaults."""

    max_new_tokens: int
    min_new_tokens: int | None = None
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None


class MetaResponseEngine:
    """Mixin: the agent's interface (``respond``, ``complete``, ``stream``, batches) over ``_decode_rows``.

    The host class sets ``config`` (:class:`~.config.ModaVerseConfig`), ``tokenizer``, ``encoder`` and
    ``projector``, calls :meth:`_init_engine` (token ids, stop/banned ids, options, stats) and provides
    ``device``, ``dtype``, ``context_length``, ``grammars`` (:class:`~.constrained.GrammarCache`) and
    ``_decode_rows``.
    """

    config: ModaVerseConfig
    tokenizer: Any
    encoder: Any | None
    options: EngineOptions
    projector: Any
    token_ids: dict[str, int]
    placeholder_id: int
    stop_ids: list[int]
    banned_ids: list[int]
    _lock: threading.RLock
    device: torch.device
    dtype: torch.dtype
    grammars: GrammarCache

    def _init_engine(self, config: ModaVerseConfig, tokenizer: Any, stop_ids: Sequence[int]) -> None:
        """The state every engine keeps: media token ids, stop and banned ids, options, last stats."""
        self.token_ids = {t: tokenizer.convert_tokens_to_ids(t) for t in config.added_tokens}
        self.placeholder_id = self.token_ids[config.media_placeholder_token]
        self.stop_ids = list(stop_ids)
        media = (config.media_start_token, config.media_end_token, config.media_placeholder_token)
        self.banned_ids = sorted(set(special_token_ids(tokenizer)) | {self.token_ids[t] for t in media})
        self.options = EngineOptions()
        #: One decode at a time: llama.cpp's context is not thread-safe, and neither is a shared KV prefix.
        self._lock = threading.RLock()

    @property
    def context_length(self) -> int:
        """The longest sequence (prompt + answer) the engine takes."""
        raise NotImplementedError

    @property
    def prompter(self) -> Prompter:
        """Builds prompt ids; the prompt may use the context minus the current answer budget."""
        return self.prompter_for(None)

    def prompter_for(self, max_new_tokens: int | None) -> Prompter:
        """A Prompter whose prompt limit leaves room for ``max_new_tokens`` (None: the options' budget)."""
        budget = max_new_tokens or self.options.max_new_tokens or self.config.max_new_tokens
        limit = min(self.config.max_prompt_tokens or self.context_length, self.context_length - budget)
        if limit < 1:  # a request's own budget is the caller's to lower; the options' is the server's
            error = ModelError if max_new_tokens is None else RequestError
            raise error(
                f"`max_new_tokens` ({budget}) leaves no room for a prompt in the LLM's "
                f"context of {self.context_length} tokens"
            )
        return Prompter(self.tokenizer, self.config, limit, self.stop_ids)

    # -- media ---------------------------------------------------------------------------------------
    def encode_media(self, items: Sequence[MediaItem]) -> EncodedMedia | None:
        """Encoder features ``(len(items), encoder_dim)`` in item order with each item's modality (None: no items)."""
        if not items:
            return None
        if self.encoder is None and self.config.blind_media:
            return EncodedMedia(self.blind_features(len(items)), tuple(str(m.modality) for m in items))
        if self.encoder is None:
            raise ModelError(
                f"this model has no media encoder, so it cannot read the {len(items)} media item(s) given; "
                "load one with the model (`encoder=` or `encoder` in modaverse_config.json) or ask without media"
            )
        modalities: list[str] = [str(m.modality) for m in items]
        unsupported = sorted(set(modalities) - set(self.config.modalities))
        if unsupported:
            raise ModelError(f"this model reads {list(self.config.modalities)}, not {unsupported}")
        out = torch.empty(0)
        for k, modality in enumerate(dict.fromkeys(modalities)):
            rows = [i for i, m in enumerate(modalities) if m == modality]
            feats = self.encoder.encode(modality, [items[i] for i in rows])
            if tuple(feats.shape) != (len(rows), self.config.encoder_dim):
                raise ModelError(
                    f"the encoder returned {tuple(feats.shape)} for {len(rows)} {modality} item(s); "
                    f"expected ({len(rows)}, {self.config.encoder_dim})"
                )
            if k == 0:
                out = feats.new_empty((len(items), feats.shape[1]))
            out[rows] = feats
        return EncodedMedia(out, tuple(modalities))

    def blind_features(self, n: int) -> torch.Tensor:
        """Zero encoder features for ``n`` items whose content is unknown (``blind_media``)."""
        return torch.zeros(n, self.config.encoder_dim, device=self.device, dtype=self.dtype)

    @property
    def sees_media(self) -> bool:
        """Whether media content reaches the model (False: no encoder; media are only marked as present)."""
        return self.encoder is not None

    def _decode(self, row: Sequence[int]) -> str:
        stops = set(self.stop_ids)
        tokens = list(row)
        for i, t in enumerate(tokens):
            if t in stops:
                tokens = tokens[:i]
                break
        return self.tokenizer.decode(tokens, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    @torch.inference_mode()
    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        media_features: torch.Tensor | None = None,
        media_modalities: Sequence[str] | None = None,
        *,
        schemas: Sequence[Schema] | Schema = None,
        max_new_tokens: int | None = None,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seed: int | None = None,
        min_new_tokens: int | None = None,
        streamer: Any | None = None,
    ) -> list[str]:
        """Decode one answer per prompt. ``schemas`` (one per prompt, or one for all; None =
        unconstrained) constrain the answers with xgrammar. ``media_features`` are encoder features of
        every placeholder group, in reading order. ``streamer`` (a transformers streamer) receives each
        new token as it is chosen. Safe to call from several threads: calls take turns."""
        return self.generate_with_stats(
            prompts,
            media_features,
            media_modalities,
            schemas=schemas,
            max_new_tokens=max_new_tokens,
            do_sample=do_sample,
            temperature=temperature,
            top_p=top_p,
            seed=seed,
            min_new_tokens=min_new_tokens,
            streamer=streamer,
        )[0]

    @torch.inference_mode()
    def generate_with_stats(
        self,
        prompts: Sequence[Sequence[int]],
        media_features: torch.Tensor | None = None,
        media_modalities: Sequence[str] | None = None,
        *,
        schemas: Sequence[Schema] | Schema = None,
        max_new_tokens: int | None = None,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seed: int | None = None,
        min_new_tokens: int | None = None,
        streamer: Any | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> tuple[list[str], list[tuple[int, str]]]:
        """:meth:`generate`'s texts and, per row, (tokens generated, finish reason: "stop"/"length");
        :class:`DecodeCancelled` at the next token once ``should_stop()`` is true (a server's client left)."""
        with self._lock:
            if should_stop is not None and should_stop():  # stopped while it waited for the engine
                raise DecodeCancelled("stopped before decoding")
            return self._generate_locked(
                prompts,
                media_features,
                media_modalities,
                schemas,
                Sampling(max_new_tokens or 0, min_new_tokens, do_sample, temperature, top_p, seed),
                streamer,
                should_stop,
            )

    def _generate_locked(
        self,
        prompts: Sequence[Sequence[int]],
        media_features: torch.Tensor | None,
        media_modalities: Sequence[str] | None,
        schemas: Sequence[Schema] | Schema,
        asked: Sampling,
        streamer: Any | None,
        should_stop: Callable[[], bool] | None = None,
    ) -> tuple[list[str], list[tuple[int, str]]]:
        rows = len(prompts)
        if not prompts or any(len(p) == 0 for p in prompts):
            raise ValueError("every prompt needs at least one token")
        per_row = list(schemas) if isinstance(schemas, Sequence) else [schemas] * rows
        if len(per_row) != rows:
            raise ValueError(f"{len(per_row)} schemas for {rows} prompts")
        budget = asked.max_new_tokens or self.options.max_new_tokens or self.config.max_new_tokens
        constrained = any(s is not None for s in per_row)
        grammars = [None if s is None else self.grammars.compile(s) for s in per_row]
        reserve = self.config.closing_reserve
        if constrained:
            shortest = max(self.grammars.shortest(s) for s in per_row if s is not None)
            if budget < shortest:
                logger.warning(
                    "max_new_tokens=%d is below the shortest valid meta-response for this schema (%d tokens); using %d",
                    budget,
                    shortest,
                    shortest,
                )
                budget = shortest
            reserve += shortest  # room for the closing route, measured on the schema
        sampling = replace(asked, max_new_tokens=budget)
        for attempt in range(_CLOSING_ATTEMPTS):
            processor = MetaResponseLogitsProcessor(
                grammars,
                banned_ids=self.banned_ids,
                stop_ids=self.stop_ids,
                budget=budget,
                reserve=reserve,
                cache=self.grammars if constrained else None,
                min_new_tokens=sampling.min_new_tokens or 0,  # held by the processor, after the grammar
            )
            hook = streamer if should_stop is None else StopCheck(should_stop, streamer)  # both engines put each token
            rows_out = self._decode_rows(prompts, media_features, media_modalities, processor, sampling, hook)
            if not processor.unfinished_rows() or streamer is not None or attempt == _CLOSING_ATTEMPTS - 1:
                break
            reserve = min(budget, 2 * reserve)  # the closing route from where it stood was longer: start sooner
            logger.info("meta-response unfinished within %d tokens; decoding again with reserve %d", budget, reserve)
        texts = [self._decode(row) for row in rows_out]
        stats = [self._row_stats(row, budget, i in processor.closed_rows) for i, row in enumerate(rows_out)]
        looped = len(processor.looped_rows)
        closed, unfinished = len(processor.closed_rows - processor.looped_rows), len(processor.unfinished_rows())
        if looped:
            logger.warning(
                BUDGET_WARNING + "%d of %d answers began repeating themselves and were closed there", looped, rows
            )
        if closed:  # one line per call, however many rows (BUDGET_WARNING marks it for filters)
            logger.warning(
                BUDGET_WARNING + "%d of %d answers reached the token budget (%d) and were closed early",
                closed,
                rows,
                budget,
            )
        if unfinished:
            logger.warning(BUDGET_WARNING + "%d of %d answers are incomplete after %d tokens", unfinished, rows, budget)
        return texts, stats

    def _decode_rows(
        self,
        prompts: Sequence[Sequence[int]],
        media_features: torch.Tensor | None,
        media_modalities: Sequence[str] | None,
        processor: MetaResponseLogitsProcessor,
        sampling: Sampling,
        streamer: Any | None,
    ) -> list[list[int]]:
        """The new token ids of every row (the engine's part of :meth:`generate`); ``processor`` must see
        every step's scores."""
        raise NotImplementedError

    def _row_stats(self, row: Sequence[int], budget: int, closed: bool) -> tuple[int, str]:
        """(tokens generated, finish reason) of one output row: "length" when the budget ran out."""
        stops = set(self.stop_ids)
        pad = self.tokenizer.pad_token_id
        end = next((i for i, t in enumerate(row) if t in stops), None)
        if end is not None:
            return end + 1, "length" if closed else "stop"
        n = len(row)
        while n and row[n - 1] == pad and pad not in stops:
            n -= 1
        return n, "length"

    # -- the agent's interface ---------------------------------------------------------------------------
    def prepare(
        self, request: LLMRequest, *, max_new_tokens: int | None = None
    ) -> tuple[list[int], torch.Tensor | None, list[str]]:
        """Prompt ids, encoder features and modalities of one request (ModelError on bad input).

        ``system`` and ``history`` are folded into the instruction (:func:`fold_conversation`).
        """
        prompt = self._prompt_ids(request, max_new_tokens)
        media = self.encode_media([item for _, item in request.media])
        return prompt, None if media is None else media.features, [] if media is None else list(media.modalities)

    def _prompt_ids(self, request: LLMRequest, max_new_tokens: int | None) -> list[int]:
        """``request``'s prompt ids, its system text and history folded in (RequestError when it can't be answered)."""
        ids = [mid for mid, _ in request.media]
        return self.prompter_for(max_new_tokens).ids(fold_conversation(request), ids, request.tasks)

    def check_prompt(self, request: LLMRequest) -> None:
        """Build ``request``'s prompt without answering it (RequestError when it can't be answered as sent)."""
        self._prompt_ids(request, self.decoding(request)["max_new_tokens"])

    def decoding(self, request: LLMRequest) -> dict[str, Any]:
        """``generate`` keyword arguments for ``request``: its ``params`` over :attr:`options`, field by field
        (a temperature above 0 samples; None or 0 decodes greedily)."""
        opts, p = self.options, request.params
        temperature = p.temperature if p.temperature is not None else opts.temperature
        top_p = p.top_p if p.top_p is not None else opts.top_p
        return {
            "max_new_tokens": p.max_new_tokens or opts.max_new_tokens,
            "do_sample": bool(temperature and temperature > 0),
            "temperature": temperature or 1.0,
            "top_p": 1.0 if top_p is None else top_p,
            "seed": p.seed if p.seed is not None else opts.seed,
        }

    def complete_batch(
        self,
        requests: Sequence[LLMRequest],
        *,
        streamer: Any | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> list[Completion]:
        """Raw meta-responses with token counts and finish reasons, decoded together.

        Requests with the same decoding settings share one ``generate`` call; stop strings cut each
        text after decoding (``finish_reason`` "stop"); a reply that hit its token budget is "length".
        Once ``should_stop()`` is true the decode ends at its next token (:class:`DecodeCancelled`).
        """
        use_schema = self.options.constrained and self.config.output_format == "json"
        groups: dict[tuple[Any, ...], list[int]] = {}
        settings = [self.decoding(r) for r in requests]
        for i, kw in enumerate(settings):
            groups.setdefault(tuple(sorted(kw.items())), []).append(i)
        out: list[Completion | None] = [None] * len(requests)
        for members in groups.values():
            kw = settings[members[0]]
            prompts, feats, modalities = [], [], []
            for i in members:
                prompt, f, mods = self.prepare(requests[i], max_new_tokens=kw["max_new_tokens"])
                prompts.append(prompt)
                modalities += mods
                if f is not None:
                    feats.append(f.to(self.device))
            texts, stats = self.generate_with_stats(
                prompts,
                torch.cat(feats) if feats else None,
                modalities,
                schemas=[requests[i].schema if use_schema else None for i in members],
                streamer=streamer,
                should_stop=should_stop,
                **kw,
            )
            for i, prompt, text, (n, reason) in zip(members, prompts, texts, stats, strict=True):
                text, cut = cut_at_stop(text, requests[i].params.stop)
                out[i] = Completion(text, len(prompt), n, "stop" if cut else reason, self.model_name)
        return [c for c in out if c is not None]

    def respond_batch(self, requests: Sequence[LLMRequest]) -> list[str]:
        """Raw meta-responses for several requests, decoded together."""
        return [c.text for c in self.complete_batch(requests)]

    def respond(self, request: LLMRequest) -> str:
        """The raw meta-response to one request (the :class:`MetaResponder` protocol)."""
        return self.respond_batch([request])[0]

    def complete(self, request: LLMRequest) -> Completion:
        """The raw meta-response with input/output token counts and ``finish_reason`` ("stop"/"length")."""
        return self.complete_batch([request])[0]

    def stream(self, request: LLMRequest) -> CompletionStream:
        """The raw meta-response as decoded text pieces (iterate it); its ``completion`` is set when it ends.

        Decoding runs in a thread feeding a transformers ``TextIteratorStreamer``; text that could be the
        start of a stop string is held back until it is known not to be one, and nothing after a stop
        string is yielded. An error in decoding is raised here once the stream ends.
        """
        return CompletionStream(self, request)

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` in this model's tokenizer (no special tokens added)."""
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    @property
    def trained_tasks(self) -> list[TaskSpec]:
        """The tasks this model was trained to choose among (``config.trained_tasks``; [] when not recorded)."""
        return [spec_from_dict(d) for d in self.config.trained_tasks or ()]

    @property
    def output_format(self) -> OutputFormat:
        """What this model writes: "json" meta-responses, or the release's "legacy" ``Modality:`` lines."""
        return "legacy" if self.config.output_format == "legacy" else "json"

    @property
    def model_name(self) -> str:
        """A name for responses: the base LLM's path or id."""
        return str(self.config.llm)
