"""What the agent answers: the final response, its errors, and the events of a streamed answer.

``ModaVerseAgent.stream`` yields, in order: :class:`TextDelta` pieces of the answer text as the model
decodes them, one :class:`PlanReady` with the parsed meta-response, for each invocation an
:class:`InvocationStarted` before its generator runs and an :class:`InvocationDone` when it finishes (its
files, or its error), and last :class:`ResponseDone` with the whole
:class:`FinalResponse` (what ``run`` returns).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .artifacts import Artifact, clean_text, json_safe
from .media import MediaItem
from .meta_response import MetaResponse


@dataclass
class ResponseError:
    """One thing that went wrong, where, and what to do about it."""

    stage: str  # "media" | "request" | "llm" | "meta-response" | "output" | "invocation" | "stopped"
    message: str
    task: str | None = None
    index: int | None = None
    code: str | None = None
    """A "request" error's OpenAI error code ("context_length_exceeded", "invalid_value")."""

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


@dataclass(frozen=True)
class TextDelta:
    """New characters of the answer text."""

    text: str
    kind: str = "text"


@dataclass(frozen=True)
class PlanReady:
    """The meta-response is parsed: its invocations are about to run (errors so far included)."""

    meta_response: MetaResponse
    errors: tuple[ResponseError, ...] = ()
    kind: str = "plan"


@dataclass(frozen=True)
class InvocationStarted:
    """One invocation is about to run on its generator."""

    index: int
    task: str | None
    prompt: str
    generator: str | None = None
    kind: str = "invocation-start"


@dataclass(frozen=True)
class InvocationDone:
    """One invocation finished: the files it made, and its error if it failed (or lost some files)."""

    index: int
    task: str | None
    artifacts: tuple[Artifact, ...] = ()
    error: ResponseError | None = None
    kind: str = "invocation"


@dataclass(frozen=True)
class ResponseDone:
    """The whole answer (the last event)."""

    response: FinalResponse
    kind: str = "done"


AgentEvent = TextDelta | PlanReady | InvocationStarted | InvocationDone | ResponseDone


def last_response(events: Iterable[AgentEvent]) -> FinalResponse:
    """Run an event stream to its end and return its final response (the last event's)."""
    last = None
    for last in events:  # noqa: B007 - every stage runs; the last event carries the response
        pass
    if not isinstance(last, ResponseDone):
        raise RuntimeError("the agent's event stream ended without a response")
    return last.response
