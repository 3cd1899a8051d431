"""ModaVerseAgent: (instruction, media) -> meta-response -> dispatch to the zoo -> FinalResponse.

Each stage is isolated: a bad media file, an invalid meta-response, an unknown task, a generator that
raises or hangs all become entries in ``FinalResponse.errors``, and everything else still comes back.

Timeouts: an invocation that runs past ``timeout`` is cancelled (``GenerationRequest.cancel`` is set,
which diffusers generators check at every denoising step), the files it wrote are deleted and its
output directory refuses later writes; the agent then waits ``cancel_grace`` seconds for the thread to
stop. A generator that never checks ``request.cancelled`` cannot be stopped from outside: its thread
runs on, and at interpreter exit the process waits up to :data:`EXIT_GRACE_S` seconds for it, then ends
with :data:`EXIT_ABANDONED` (a clean ``os._exit``, never an abort from C++ code still running).
"""

from __future__ import annotations

import atexit
import contextlib
import math
import os
import random
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .artifacts import Artifact, OutputDir, clean_text, json_safe, manifest_record
from .errors import ModaVerseError
from .generators import ArtifactsRefused, GenerationRequest, Generator
from .llm_io import (
    ChatTurn,
    Completion,
    GenerationParams,
    LLMRequest,
    MetaResponder,
    OutputFormat,
    output_format,
    sees_media,
)
from .media import MediaItem, load_media
from .meta_response import Invocation, MetaResponse, parse_legacy_lenient, parse_lenient
from .zoo import Zoo

DEFAULT_TIMEOUT_S = 600.0
#: Seconds the agent waits for a cancelled invocation's thread to stop before it moves on.
CANCEL_GRACE_S = 2.0
#: Seconds the process waits at exit for cancelled invocations' threads that still run.
EXIT_GRACE_S = 30.0
#: Exit status when such a thread still runs after EXIT_GRACE_S (the response already reported the timeout).
EXIT_ABANDONED = 1
MediaSource = str | Path | bytes | MediaItem
#: Re-exported from :mod:`.llm_io` (where they live) for code that imports them from here.
__all__ = [
    "ChatTurn",
    "Completion",
    "FinalResponse",
    "GenerationParams",
    "LLMRequest",
    "MetaResponder",
    "ModaVerseAgent",
    "ResponseError",
    "assign_media_ids",
    "parse_output",
]


@dataclass
class ResponseError:
    """One thing that went wrong, where, and what to do about it."""

    stage: str  # "media" | "llm" | "meta-response" | "output" | "invocation"
    message: str
    task: str | None = None
    index: int | None = None

    def __post_init__(self) -> None:
        self.message = clean_text(str(self.message))
        self.task = clean_text(str(self.task)) if self.task is not None else None

    def __str__(self) -> str:
        where = f" [{self.task} #{self.index}]" if self.task else ""
        return f"{self.stage}{where}: {self.message}"


@dataclass
class FinalResponse:
    """The agent's answer: text, the files made, the errors met, and the meta-response behind them."""

    text: str
    artifacts: list[Artifact] = field(default_factory=list)
    errors: list[ResponseError] = field(default_factory=list)
    meta_response: MetaResponse | None = None
    raw: str = ""
    manifest: Path | None = None
    media: list[tuple[str, MediaItem]] = field(default_factory=list)
    #: Things the user should know that are not errors (untrained generators, media the model can't see).
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing went wrong."""
        return not self.errors

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (for ``--json`` and manifests): strict JSON, writable as UTF-8 (see ``json_safe``)."""
        return json_safe(
            {
                "text": self.text,
                "artifacts": [a.to_dict() for a in self.artifacts],
                "errors": [e.__dict__ for e in self.errors],
                "meta_response": self.meta_response.to_dict() if self.meta_response else None,
                "raw": self.raw,
                "manifest": str(self.manifest) if self.manifest else None,
                "media": [{"id": i, "name": m.name, "mime_type": m.mime_type} for i, m in self.media],
                "notes": list(self.notes),
            }
        )


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
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not (0 < timeout < math.inf):
            raise ModaVerseError(f"timeout must be a finite number of seconds above 0, got {timeout!r}")
        self.timeout = float(timeout)
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
    ) -> FinalResponse:
        """Answer ``instruction`` about ``media`` with text and generated files.

        ``params`` are this request's decoding settings (None: the model's defaults); ``history`` holds
        earlier turns of a conversation.
        """
        named, errors = self.load_media(media)
        ids = [i for i, _ in named]
        schema = self.zoo.schema(media_ids=ids)
        request = LLMRequest(
            instruction, named, schema, self.zoo.task_specs(), list(history), None, params or GenerationParams()
        )
        try:
            raw = self.llm.respond(request)
        except Exception as e:  # the model failing must still give a response with the error
            errors.append(ResponseError("llm", f"the language model failed: {type(e).__name__}: {e}"))
            return FinalResponse(text="", errors=errors, media=named)
        if not isinstance(raw, str):
            errors.append(ResponseError("llm", f"the language model returned {type(raw).__name__}, not text"))
            return FinalResponse(text="", errors=errors, media=named)
        raw = clean_text(raw)
        try:
            meta, parse_errors = parse_output(raw, schema, output_format(self.llm))
        except Exception as e:  # the parser faces raw model output: a bug there must not lose the response
            reason = f"the model's output could not be read ({type(e).__name__}: {e})"[:300]
            meta, parse_errors = MetaResponse(text=""), [ResponseError("meta-response", reason)]
        errors += parse_errors
        response = self.dispatch(meta, named, errors=errors, raw=raw, output_dir=output_dir)
        if named and not sees_media(self.llm):
            response.notes.insert(
                0,
                f"this model has no media encoder, so it did not see or hear {', '.join(ids)}: it answered from "
                "your words alone (load a model trained with ImageBind weights to understand media)",
            )
        return response

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
        response = FinalResponse(text=clean_text(meta.text), errors=list(errors or []), meta_response=meta, raw=raw)
        response.media = list(media)
        if not meta.invocations:
            return response
        try:
            out = OutputDir(output_dir if output_dir is not None else self.output_dir)
        except ModaVerseError as e:
            response.errors.append(ResponseError("output", f"{e}; no invocation was run"))
            return response
        by_id = dict(media)
        untrained: set[str] = set()
        for kept, inv in enumerate(meta.invocations):
            index = inv.position if isinstance(inv.position, int) else kept  # where the model put it
            try:
                made, problem = self._invoke(index, inv, by_id, out)
                response.artifacts += made
                if problem:
                    response.errors.append(ResponseError("invocation", problem, task=inv.task, index=index))
                gen = self.zoo.generator_for(inv.task)
                if made and gen.untrained and gen.name not in untrained:
                    untrained.add(gen.name)
                    response.notes.append(
                        f"{inv.task} ran {gen.name} on untrained tiny weights, so its output is a placeholder; "
                        f"for real weights run: {gen.real_weights_hint()}"
                    )
            except _InvocationFailed as e:
                response.errors.append(ResponseError("invocation", str(e), task=inv.task, index=index))
            except Exception as e:  # a malformed invocation must not lose its siblings
                task = inv.task if isinstance(inv.task, str) else None
                response.errors.append(
                    ResponseError("invocation", f"could not be run ({type(e).__name__}: {e})"[:300], task, index)
                )
        if response.artifacts:
            try:
                record = manifest_record(response.artifacts, text=response.text, meta_response=meta.to_dict())
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
            raise _InvocationFailed(str(e)) from e
        inputs = _resolve_inputs(inv, gen, by_id)
        seed = inv.args.get("seed") if isinstance(inv.args.get("seed"), int) else None
        if seed is None:
            seed = self.seed + index if self.seed is not None else random.randrange(2**31)
        progress = None
        if self.on_progress is not None:
            cb = self.on_progress
            progress = lambda done, total: cb(inv.task, done, total)  # noqa: E731
        cancel = threading.Event()
        req = GenerationRequest(inv.prompt, out.for_invocation(cancel), dict(inv.args), inputs, seed, progress, cancel)
        return _run_with_timeout(gen, req, self.timeout, self.cancel_grace)


class _InvocationFailed(Exception):
    """Internal: one invocation failed; the message is user-facing."""


def _resolve_inputs(inv: Invocation, gen: Generator, by_id: dict[str, MediaItem]) -> list[MediaItem]:
    missing = [ref for ref in inv.inputs if ref not in by_id]
    if missing:
        have = sorted(by_id) or "none"
        raise _InvocationFailed(f"refers to input media {missing} that were not given (given: {have})")
    items = [by_id[ref] for ref in inv.inputs]  # their modality is checked by Generator.check
    if gen.input_modalities and not items:
        raise _InvocationFailed(
            f"generator {gen.name!r} needs an input {'/'.join(gen.input_modalities)}; attach one and refer to it"
        )
    return items


def _run_with_timeout(
    gen: Generator, req: GenerationRequest, timeout: float, grace: float
) -> tuple[list[Artifact], str | None]:
    """Run ``gen`` on ``req`` in a worker thread; past ``timeout`` cancel it and discard what it wrote."""
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["artifacts"] = gen.generate(req)
        except BaseException as e:
            result["error"] = e

    t0 = time.perf_counter()
    worker = threading.Thread(target=target, name=f"modaverse-{gen.name}", daemon=True)
    worker.start()
    worker.join(min(timeout, threading.TIMEOUT_MAX))
    if worker.is_alive():
        was_loading = gen.loading
        gen.note_timeout()
        req.output.revoke()  # sets req.cancel: the generator stops at its next check, no later file lands
        worker.join(max(0.0, grace))
        still = ""
        if worker.is_alive():
            _abandon(worker)
            still = "; it is still running, since it does not check request.cancelled (its files are discarded)"
        loading = "; its model was still loading, so later calls fail at once until that ends" if was_loading else ""
        raise _InvocationFailed(
            f"generator {gen.name!r} did not finish within {timeout:g} s and was cancelled{loading}{still}; "
            "raise the timeout (--timeout) or ask for less work (fewer steps, a smaller size)"
        )
    problem = None
    if isinstance(result.get("error"), ArtifactsRefused):
        refused: ArtifactsRefused = result.pop("error")
        result["artifacts"], problem = refused.kept, str(refused)
    if "error" in result:
        e = result["error"]
        raise _InvocationFailed(f"generator {gen.name!r} failed: {type(e).__name__}: {e}") from e
    artifacts: list[Artifact] = result["artifacts"]
    for a in artifacts:
        a.timings.setdefault("wall_s", round(time.perf_counter() - t0, 6))
    return artifacts, problem


_abandoned: list[threading.Thread] = []
_abandoned_lock = threading.Lock()
_exit_hook: list[bool] = []


def _abandon(worker: threading.Thread) -> None:
    """Remember a cancelled worker that still runs, so that interpreter exit waits for it."""
    with _abandoned_lock:
        _abandoned[:] = [t for t in _abandoned if t.is_alive()]
        _abandoned.append(worker)
        if not _exit_hook:  # registered now, after torch & co. registered theirs: it runs before them
            atexit.register(_wait_for_abandoned_workers)
            _exit_hook.append(True)


def abandoned_workers() -> list[threading.Thread]:
    """Worker threads of cancelled invocations that are still running."""
    with _abandoned_lock:
        return [t for t in _abandoned if t.is_alive()]


def _wait_for_abandoned_workers() -> None:
    """At exit: give cancelled workers EXIT_GRACE_S to stop, else end the process before finalisation.

    A daemon thread still inside torch or another native library while the interpreter finalises can
    abort the process (``terminate called without an active exception``, exit status 134).
    """
    deadline = time.monotonic() + EXIT_GRACE_S
    for t in abandoned_workers():
        t.join(max(0.0, deadline - time.monotonic()))
    alive = abandoned_workers()
    if not alive:
        return
    names = ", ".join(sorted({t.name for t in alive}))
    with contextlib.suppress(OSError, ValueError, AttributeError):
        sys.stdout.flush()
    with contextlib.suppress(OSError, ValueError, AttributeError):
        sys.stderr.write(
            f"modaverse: {names} ignored cancellation and still ran {EXIT_GRACE_S:g} s after exit began; "
            f"ending the process (exit status {EXIT_ABANDONED})\n"
        )
        sys.stderr.flush()
    os._exit(EXIT_ABANDONED)
