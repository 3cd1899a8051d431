"""One model, many requests: micro-batching of concurrent completions, and a per-request view of the LLM.

:class:`MicroBatcher` gathers the completions several requests ask for at the same time and decodes
them together with the engine's ``complete_batch`` (torch decodes a batch in one pass; engines take
turns under their own lock either way). A batch that fails is retried one request at a time, so one
bad request fails alone.

:class:`RequestLLM` is what one request's agent talks to: it records the request's :class:`Completion`
(token counts for ``usage``) and offers ``stream`` only when the client asked for a stream, so a
non-streamed answer goes through the batcher.

Both stop for a request whose client went away (its ``cancelled`` flag set): one waiting for a batch leaves
the queue at once, and a decode in progress ends at its next token where the LLM can stop one (its
``complete_batch`` takes ``should_stop``, as the engines' do: a batch stops when all its requests are
cancelled); a stream stops at its next piece. Any other LLM finishes the call it is in.
"""

from __future__ import annotations

import inspect
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ..llm_io import (
    BatchResponder,
    Completion,
    LLMRequest,
    MetaResponder,
    StreamingResponder,
    TextStream,
    WrappedLLM,
    as_text_stream,
    complete,
)

#: Seconds between looks at a waiting request's cancel flag.
_POLL_S = 0.05


class Cancelled(Exception):
    """The request's client went away: its completion was not waited for (or its decode was stopped)."""

    def __init__(self) -> None:
        super().__init__("the client went away, so the request was stopped")


def stoppable(llm: object) -> bool:
    """Whether ``llm.complete_batch`` takes ``should_stop`` (a decode it can end early)."""
    method = getattr(llm, "complete_batch", None)
    try:
        return method is not None and "should_stop" in inspect.signature(method).parameters
    except (TypeError, ValueError):  # no signature to read
        return False


@dataclass(eq=False)
class _Pending:
    request: LLMRequest
    cancelled: threading.Event | None = None
    done: threading.Event = field(default_factory=threading.Event)
    result: Completion | None = None
    error: BaseException | None = None


class MicroBatcher:
    """Decodes concurrent ``complete`` calls together, up to ``max_batch`` at a time.

    The first request of a batch waits ``window_s`` for company; while a batch decodes, new requests
    gather for the next one.
    """

    def __init__(self, llm: BatchResponder, *, max_batch: int = 8, window_s: float = 0.002) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self.llm = llm
        self.max_batch = max_batch
        self.window_s = window_s
        #: How many batches of each size ran (size -> count).
        self.sizes: dict[int, int] = {}
        self._pending: list[_Pending] = []
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._stoppable = stoppable(llm)

    def complete(self, request: LLMRequest, cancelled: threading.Event | None = None) -> Completion:
        """The completion of ``request``, decoded in a batch with whatever else is waiting; :class:`Cancelled`
        soon after ``cancelled`` is set (the batch's decode stops when all its requests are cancelled)."""
        job = _Pending(request, cancelled)
        with self._cond:
            if self._closed:
                raise RuntimeError("the server is shutting down")
            self._pending.append(job)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="modaverse-batcher", daemon=True)
                self._thread.start()
            self._cond.notify()
        while not job.done.wait(None if cancelled is None else _POLL_S):
            if cancelled is not None and cancelled.is_set():
                with self._cond:
                    if job in self._pending:  # not decoding yet: it never will
                        self._pending.remove(job)
                raise Cancelled()
        if job.error is not None:
            raise job.error
        assert job.result is not None
        return job.result

    def close(self) -> None:
        """Stop after the batches already asked for."""
        with self._cond:
            self._closed = True
            self._cond.notify()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if not self._pending:
                    return
                short = len(self._pending) < self.max_batch
            if short and self.window_s > 0:
                time.sleep(self.window_s)
            with self._cond:
                batch = [p for p in self._pending[: self.max_batch] if not _gone(p)]
                del self._pending[: self.max_batch]
            if batch:
                self.sizes[len(batch)] = self.sizes.get(len(batch), 0) + 1
                self._run(batch)

    def _run(self, batch: list[_Pending]) -> None:
        def should_stop() -> bool:
            return all(_gone(p) for p in batch)

        try:
            requests = [p.request for p in batch]
            kwargs: dict[str, Any] = {"should_stop": should_stop} if self._stoppable else {}
            results = self.llm.complete_batch(requests, **kwargs)
            if len(results) != len(batch):
                raise RuntimeError(f"complete_batch returned {len(results)} completions for {len(batch)} requests")
        except BaseException as e:
            if len(batch) == 1 or should_stop():  # stopped: nobody waits for an answer
                for p in batch:
                    p.error = e
                    p.done.set()
                return
            for p in batch:  # find the one that failed: the others still get their answers
                self._run([p])
            return
        for p, r in zip(batch, results, strict=True):
            p.result = r
            p.done.set()


def _gone(pending: _Pending) -> bool:
    return pending.cancelled is not None and pending.cancelled.is_set()


class RequestLLM(WrappedLLM):
    """One request's view of the served LLM (``inner``): completions recorded, through the batcher when there
    is one; the LLM's capabilities forwarded (:class:`~..llm_io.WrappedLLM`). ``cancelled``: the request's
    flag, set when its client went away (:class:`Cancelled` then, see the module's docs)."""

    def __init__(
        self, llm: MetaResponder, batcher: MicroBatcher | None, cancelled: threading.Event | None = None
    ) -> None:
        super().__init__(llm)
        self.batcher = batcher
        self.cancelled = cancelled
        #: The completion of the last call (token counts for ``usage``); None until one ended.
        self.completion: Completion | None = None

    def complete(self, request: LLMRequest) -> Completion:
        """The completion of ``request`` (recorded)."""
        if self.cancelled is not None and self.cancelled.is_set():
            raise Cancelled()
        if self.batcher is not None:
            self.completion = self.batcher.complete(request, self.cancelled)
        elif self.cancelled is not None and stoppable(self.inner):
            self.completion = self.inner.complete_batch([request], should_stop=self.cancelled.is_set)[0]  # type: ignore[attr-defined]
        else:
            self.completion = complete(self.inner, request)
        return self.completion

    def respond(self, request: LLMRequest) -> str:
        """The raw output of ``request``."""
        return self.complete(request).text


class StreamingRequestLLM(RequestLLM):
    """A :class:`RequestLLM` that also streams (the served LLM must be a StreamingResponder)."""

    def stream(self, request: LLMRequest) -> TextStream:
        """The served LLM's stream of ``request``; its completion is recorded when it ends."""
        assert isinstance(self.inner, StreamingResponder)
        return _Recorded(as_text_stream(self.inner.stream(request)), self)


class _Recorded:
    """A TextStream that hands its completion to the request's view when it ends, and stops (closing the
    LLM's stream, which ends its decode) at the next piece once the request is cancelled."""

    def __init__(self, inner: TextStream, view: RequestLLM) -> None:
        self.inner, self.view = inner, view
        self.completion: Completion | None = None

    def __iter__(self) -> Iterator[str]:
        cancelled, pieces = self.view.cancelled, iter(self.inner)
        try:
            for piece in pieces:
                if cancelled is not None and cancelled.is_set():
                    raise Cancelled()
                yield piece
        finally:
            close: Callable[[], Any] | None = getattr(pieces, "close", None)
            if close is not None and self.inner.completion is None:  # stopped early: end the decode too
                close()
        self.completion = self.view.completion = self.inner.completion


def request_llm(
    llm: MetaResponder, batcher: MicroBatcher | None, *, stream: bool, cancelled: threading.Event | None = None
) -> RequestLLM:
    """The view one request's agent uses: streaming only when asked for and the LLM can; ``cancelled`` is the
    request's flag (set when its client went away)."""
    if stream and isinstance(llm, StreamingResponder):
        return StreamingRequestLLM(llm, batcher, cancelled)
    return RequestLLM(llm, batcher, cancelled)


__all__ = ["Cancelled", "MicroBatcher", "RequestLLM", "StreamingRequestLLM", "request_llm", "stoppable"]
