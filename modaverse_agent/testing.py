"""Test doubles: a scripted LLM that replays queued outputs and records what it was asked; and
:func:`interruptible_child` for tests that press Ctrl-C on a command in a child process."""

from __future__ import annotations

import json
import signal
from collections import deque
from collections.abc import Iterator, Mapping
from typing import Any

from .llm_io import LLMRequest, OutputFormat
from .meta_response import MetaResponse


class ScriptedLLM:
    """A fake LLM (like simonw/llm's MockModel): ``enqueue`` replies, read ``history`` afterwards."""

    def __init__(self, *replies: str | Mapping[str, Any] | MetaResponse) -> None:
        self._queue: deque[str] = deque()
        self.history: list[LLMRequest] = []
        #: Replies may be JSON or the release's legacy lines: the agent tells them apart.
        self.output_format: OutputFormat = "auto"
        for r in replies:
            self.enqueue(r)

    def enqueue(self, reply: str | Mapping[str, Any] | MetaResponse) -> None:
        """Queue one raw reply (text as is; a dict or MetaResponse as JSON)."""
        if isinstance(reply, MetaResponse):
            reply = reply.to_json()
        elif not isinstance(reply, str):
            reply = json.dumps(reply)
        self._queue.append(reply)

    def respond(self, request: LLMRequest) -> str:
        """Record the request and return the next queued reply."""
        self.history.append(request)
        if not self._queue:
            raise RuntimeError("ScriptedLLM has no reply queued; call enqueue() first")
        return self._queue.popleft()


class StreamingScriptedLLM(ScriptedLLM):
    """A :class:`ScriptedLLM` that also streams: each reply comes in pieces of ``piece`` characters."""

    def __init__(self, *replies: str | Mapping[str, Any] | MetaResponse, piece: int = 5) -> None:
        super().__init__(*replies)
        self.piece = piece

    def stream(self, request: LLMRequest) -> Iterator[str]:
        """Record the request and yield the next queued reply piece by piece."""
        text = self.respond(request)
        yield from (text[i : i + self.piece] for i in range(0, len(text), self.piece))


class FixedPlanLLM:
    """An LLM stand-in that always answers with one given meta-response (``modaverse run --meta-response``)."""

    def __init__(self, raw: str) -> None:
        self.raw = raw
        self.output_format: OutputFormat = "auto"

    def respond(self, request: LLMRequest) -> str:
        """Return the fixed plan."""
        return self.raw


def interruptible_child() -> None:
    """``preexec_fn`` for a child that a test interrupts: Ctrl-C reaches it as from a shell prompt, even when
    the test run itself ignores SIGINT (a job started with ``&`` from a script does, and an ignored signal
    stays ignored across exec)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
