"""ModaVerseAgent: (instruction, media) -> meta-response -> dispatch to the zoo -> FinalResponse.

Each stage is isolated: a bad media file, an invalid meta-response, an unknown task, a generator that
raises or hangs all become entries in ``FinalResponse.errors``, and everything else still comes back.
``run`` returns the final response; ``stream`` yields the answer text as it is decoded, then each
invocation's files as its generator finishes (see :mod:`.response`). Timeouts stop the work they end
(see :mod:`.invocation`).
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from .answer_stream import AnswerTextReader, StopHoldBack, cut_at_stop
from .artifacts import Artifact, OutputDir, clean_text, manifest_record
from .errors import ModaVerseError, RequestError
from .generators import GenerationRequest, ProgressCallback, no_progress
from .invocation import (
    CANCEL_GRACE_S,
    DEFAULT_TIMEOUT_S,
    EXIT_ABANDONED,
    EXIT_GRACE_S,
    InvocationFailed,
    abandoned_workers,
    check_timeout,
    resolve_inputs,
    run_with_timeout,
)
from .llm_io import (
    ChatTurn,
    Completion,
    GenerationParams,
    LLMRequest,
    MetaResponder,
    OutputFormat,
    StreamingResponder,
    as_text_stream,
    fit_history,
    output_format,
    sees_media,
    trained_tasks,
)
from .media import MediaItem, load_media
from .meta_response import Invocation, MetaResponse, build_schema, parse_legacy_lenient, parse_lenient
from .response import (
    AgentEvent,
    FinalResponse,
    InvocationDone,
    InvocationStarted,
    PlanReady,
    ResponseDone,
    ResponseError,
    TextDelta,
    last_response,
)
from .unoffered import narrow_meta, unserved
from .zoo import Zoo

MediaSource = str | Path | bytes | MediaItem
#: Re-exported from the modules where they live, for code that imports them from here.
__all__ = [
    "CANCEL_GRACE_S",
    "DEFAULT_TIMEOUT_S",
    "EXIT_ABANDONED",
    "EXIT_GRACE_S",
    "AgentEvent",
    "ChatTurn",
    "Completion",
    "FinalResponse",
    "GenerationParams",
    "LLMRequest",
    "MetaResponder",
    "ModaVerseAgent",
    "ResponseError",
    "abandoned_workers",
    "assign_media_ids",
    "parse_output",
]


def assign_media_ids(items: Sequence[MediaItem]) -> list[tuple[str, MediaItem]]:
    """Name media per modality in order: ``image_1``, ``image_2``, ``audio_1``, ..."""
    counts: dict[str, int] = {}
    out = []
    for item in items:
        counts[item.modality] = counts.get(item.modality, 0) + 1
        out.append((f"{item.modality}_{counts[item.modality]}", item))
    return out


def parse_output(
    raw: str, schema: dict[str, Any], fmt: OutputFormat = "json"
) -> tuple[MetaResponse, list[ResponseError]]:
    """Parse LLM output in the format the model writes: a JSON meta-response, or the release's legacy
    ``Modality:`` lines; "auto" (test doubles that replay either) tells them apart by the first word.

    Both parsers are lenient: a bad invocation (or ``Modality:`` entry) drops only itself, with an error.
    """
    legacy = fmt == "legacy" or (fmt == "auto" and raw.lstrip().startswith("Modality:"))
    if legacy:
        response, errors = parse_legacy_lenient(raw, schema)
    else:
        response, errors = parse_lenient(raw, schema)
    return response, [ResponseError("meta-response", str(e)) for e in errors]


class ModaVerseAgent:
    """Runs the three ModaVerse stages over an LLM (any :class:`MetaResponder`) and a :class:`Zoo`."""

    def __init__(
        self,
        llm: MetaResponder,
        zoo: Zoo | None = None,
        *,
        output_dir: str | Path = "outputs",
        timeout: float = DEFAULT_TIMEOUT_S,
        seed: int | None = None,
        on_progress: Callable[[str, int, int], None] | None = None,
    ) -> None:
        self.llm = llm
        self.zoo = zoo if zoo is not None else Zoo.from_plugins()
        self.output_dir = Path(output_dir)
        self.timeout = check_timeout(timeout)
        self.cancel_grace = CANCEL_GRACE_S
        self.seed = seed
        self.on_progress = on_progress

    def as_runnable(self) -> Any:
        """This agent as a LangChain Runnable (invoke, batch, stream, async; composes in LCEL)."""
        from .runnable import AgentRunnable

        return AgentRunnable(self)

    # -- stage 0: media --------------------------------------------------------------------------
    def load_media(self, sources: Sequence[MediaSource]) -> tuple[list[tuple[str, MediaItem]], list[ResponseError]]:
        """Load every source; a bad one becomes an error and the others are kept."""
        items, errors = [], []
        for n, src in enumerate(sources, 1):
            try:
                items.append(src if isinstance(src, MediaItem) else load_media(src))
            except ModaVerseError as e:
                errors.append(ResponseError("media", f"input {n} skipped: {e}"))
            except Exception as e:  # an unexpected failure of one file must not lose the others
                errors.append(ResponseError("media", f"input {n} skipped: it could not be read ({type(e).__name__})"))
        return assign_media_ids(items), errors

    # -- the pipeline ----------------------------------------------------------------------------
    def run(
        self,
        instruction: str,
        media: Sequence[MediaSource] = (),
        *,
        output_dir: str | Path | None = None,
        params: GenerationParams | None = None,
        history: Sequence[ChatTurn] = (),
        generated: Collection[str] = (),
    ) -> FinalResponse:
        """Answer ``instruction`` about ``media`` with text and generated files.

        ``params`` are this request's decoding settings (None: the model's defaults); ``history`` holds
        earlier turns of a conversation, and ``generated`` the ids of media in ``media`` that the agent made in
        them (a model without a media encoder says which media it could not read: only the user's).
        """
        events = self._events(instruction, media, output_dir, params, history, generated, stream_text=False)
        return last_response(events)

    def stream(
        self,
        instruction: str,
        media: Sequence[MediaSource] = (),
        *,
        output_dir: str | Path | None = None,
        params: GenerationParams | None = None,
        history: Sequence[ChatTurn] = (),
        generated: Collection[str] = (),
    ) -> Iterator[AgentEvent]:
        """Like :meth:`run`, as events: answer-text deltas as they are decoded, the plan, each invocation as
        it finishes, and the final response last. Closing the iterator early stops before the next
        invocation (the decode in progress finishes first)."""
        return self._events(instruction, media, output_dir, params, history, generated, stream_text=True)

    def _events(
        self,
        instruction: str,
        media: Sequence[MediaSource],
        output_dir: str | Path | None,
        params: GenerationParams | None,
        history: Sequence[ChatTurn],
        generated: Collection[str],
        *,
        stream_text: bool,
    ) -> Iterator[AgentEvent]:
        named, errors = self.load_media(media)
        ids = [i for i, _ in named]
        served = self.zoo.task_specs()
        # a task the model was trained on that no installed generator serves: the model is still asked with
        # it (the list it learned) and a call of it is answered in text (unoffered.py)
        missing = unserved(trained_tasks(self.llm), served)
        specs = served + missing
        schema = build_schema(specs, media_ids=ids) if missing else self.zoo.schema(media_ids=ids)
        params = params or GenerationParams()
        # stop strings end the answer text, not the raw JSON (cut there, that is never a meta-response)
        stops, params = params.stop, replace(params, stop=())
        request = LLMRequest(instruction, named, schema, specs, list(history), None, params)
        request, left_out = fit_history(self.llm, request)
        reader, shown = AnswerTextReader(), StopHoldBack(stops)
        live = stream_text and not missing  # with missing tasks the text may be rewritten: sent once known
        try:
            if stream_text and isinstance(self.llm, StreamingResponder):
                stream = as_text_stream(self.llm.stream(request))
                pieces = []
                for piece in stream:
                    pieces.append(piece)
                    delta = shown.feed(reader.feed(piece))
                    if delta and live:
                        yield TextDelta(clean_text(delta))
                raw = stream.completion.text if stream.completion is not None else "".join(pieces)
            else:
                raw = self.llm.respond(request)
        except RequestError as e:  # the caller must change the request: not the model failing
            errors.append(ResponseError("request", f"the request can't be answered as sent: {e}", code=e.code))
            yield ResponseDone(FinalResponse(text="", errors=errors, media=named))
            return
        except Exception as e:  # the model failing must still give a response with the error
            errors.append(ResponseError("llm", f"the language model failed: {type(e).__name__}: {e}"))
            response = FinalResponse(text=clean_text(shown.text), errors=errors, media=named)
            yield ResponseDone(self._with_manifest(response, output_dir))
            return
        if not isinstance(raw, str):
            errors.append(ResponseError("llm", f"the language model returned {type(raw).__name__}, not text"))
            yield ResponseDone(self._with_manifest(FinalResponse(text="", errors=errors, media=named), output_dir))
            return
        raw = clean_text(raw)
        try:
            meta, parse_errors = parse_output(raw, schema, output_format(self.llm))
        except Exception as e:  # the parser faces raw model output: a bug there must not lose the response
            reason = f"the model's output could not be read ({type(e).__name__}: {e})"[:300]
            meta, parse_errors = MetaResponse(text=""), [ResponseError("meta-response", reason)]
        errors += parse_errors
        notes = []
        if left_out:
            notes.append(
                f"the conversation is longer than the model's context: its {left_out} oldest of {len(history)} earlier "
                "turns were left out of this answer (they are still in the conversation)"
            )
        if missing:
            meta, unoffered = narrow_meta(meta, [s.task for s in served])
            notes += [f"the model asked for {t}, which no installed generator serves" for t in unoffered]
        meta = replace(meta, text=cut_at_stop(meta.text, stops)[0])
        streamed = clean_text(shown.text) if live else ""
        text = clean_text(meta.text)
        if stream_text and text.startswith(streamed) and len(text) > len(streamed):
            yield TextDelta(text[len(streamed) :])  # the rest (all of it when nothing could be streamed)
        yield PlanReady(meta, tuple(errors))
        unread = [i for i in ids if i not in generated]
        if unread and not sees_media(self.llm):
            notes.append(
                f"this model has no media encoder, so it did not see or hear {', '.join(unread)}: it answered from "
                "your words alone (load a model trained with ImageBind weights to understand media)"
            )
        for event in self._dispatch_events(meta, named, errors=errors, raw=raw, output_dir=output_dir):
            if isinstance(event, ResponseDone):
                event.response.notes[:0] = notes
            yield event

    def dispatch(
        self,
        meta: MetaResponse,
        media: Sequence[tuple[str, MediaItem]] = (),
        *,
        errors: list[ResponseError] | None = None,
        raw: str = "",
        output_dir: str | Path | None = None,
    ) -> FinalResponse:
        """Run every invocation of ``meta`` in isolation and collect the final response."""
        return last_response(self._dispatch_events(meta, media, errors=errors, raw=raw, output_dir=output_dir))

    def _dispatch_events(
        self,
        meta: MetaResponse,
        media: Sequence[tuple[str, MediaItem]] = (),
        *,
        errors: list[ResponseError] | None = None,
        raw: str = "",
        output_dir: str | Path | None = None,
    ) -> Iterator[AgentEvent]:
        response = FinalResponse(text=clean_text(meta.text), errors=list(errors or []), meta_response=meta, raw=raw)
        response.media = list(media)
        if not meta.invocations:
            yield ResponseDone(self._with_manifest(response, output_dir))
            return
        try:
            out = OutputDir(output_dir if output_dir is not None else self.output_dir)
        except ModaVerseError as e:
            response.errors.append(ResponseError("output", f"{e}; no invocation was run"))
            yield ResponseDone(response)
            return
        by_id = dict(media)
        untrained: set[str] = set()
        for kept, inv in enumerate(meta.invocations):
            index = inv.position if isinstance(inv.position, int) else kept  # where the model put it
            made: list[Artifact] = []
            error: ResponseError | None = None
            task = inv.task if isinstance(inv.task, str) else None
            served = self.zoo.generator_for(task).name if task in self.zoo.tasks() else None
            yield InvocationStarted(index, task, inv.prompt if isinstance(inv.prompt, str) else "", served)
            try:
                made, problem = self._invoke(index, inv, by_id, out)
                if problem:
                    error = ResponseError("invocation", problem, task=inv.task, index=index)
                gen = self.zoo.generator_for(inv.task)
                if made and gen.untrained and gen.name not in untrained:
                    untrained.add(gen.name)
                    response.notes.append(
                        f"{inv.task} ran {gen.name} on untrained tiny weights, so its output is a placeholder; "
                        f"for real weights run: {gen.real_weights_hint()}"
                    )
            except InvocationFailed as e:
                error = ResponseError("invocation", str(e), task=inv.task, index=index)
            except Exception as e:  # a malformed invocation must not lose its siblings
                task = inv.task if isinstance(inv.task, str) else None
                error = ResponseError("invocation", f"could not be run ({type(e).__name__}: {e})"[:300], task, index)
            response.artifacts += made
            if error is not None:
                response.errors.append(error)
            yield InvocationDone(index, inv.task if isinstance(inv.task, str) else None, tuple(made), error)
        yield ResponseDone(self._with_manifest(response, out))

    def _with_manifest(self, response: FinalResponse, out: OutputDir | str | Path | None) -> FinalResponse:
        """``response`` with its manifest written when it ran invocations or met errors (a text-only answer
        without errors gets none); a manifest that cannot be written becomes an "output" error."""
        meta = response.meta_response
        if not (response.errors or (meta is not None and meta.invocations)):
            return response
        try:
            if not isinstance(out, OutputDir):
                out = OutputDir(out if out is not None else self.output_dir)
            record = manifest_record(
                response.artifacts, text=response.text, meta_response=meta.to_dict() if meta is not None else None
            )
            record["errors"] = [e.__dict__ for e in response.errors]
            response.manifest = out.write_manifest(record)
        except Exception as e:
            response.errors.append(ResponseError("output", f"manifest not written: {type(e).__name__}: {e}"))
        return response

    def _invoke(
        self, index: int, inv: Invocation, by_id: dict[str, MediaItem], out: OutputDir
    ) -> tuple[list[Artifact], str | None]:
        """Run one invocation: its artifacts and a problem that dropped some of them (or None)."""
        try:
            gen = self.zoo.generator_for(inv.task)
        except ModaVerseError as e:
            raise InvocationFailed(str(e)) from e
        inputs = resolve_inputs(inv, gen, by_id)
        seed = inv.args.get("seed") if isinstance(inv.args.get("seed"), int) else None
        if seed is None:
            seed = self.seed + index if self.seed is not None else random.randrange(2**31)
        progress: ProgressCallback = no_progress
        if self.on_progress is not None:
            cb = self.on_progress
            progress = lambda done, total: cb(inv.task, done, total)  # noqa: E731
        cancel = threading.Event()
        req = GenerationRequest(inv.prompt, out.for_invocation(cancel), dict(inv.args), inputs, seed, progress, cancel)
        return run_with_timeout(gen, req, self.timeout, self.cancel_grace)
