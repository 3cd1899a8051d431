"""One model, many requests: micro-batching of concurrent completions, and a per-request view of the LLM.

:class:`MicroBatcher` gathers the completions several requests ask for at the same time and decodes
them together with the engine's ``complete_batch`` (torch decodes a batch in one pass; engines take
turns under their own lock either way). A batch that fails is retried one request at a time, so one
bad request fails alone.

:class:`RequestLLM` is what one request's agent talks to: it records the request's :class:`Completion`
(token counts for ``usage``) and offers ``stream`` only when the client asked for a stream, so a
non-streamed answer goes through the batcher.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

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


@dataclass
class _Pending:
    request: LLMRequest
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

    def complete(self, request: LLMRequest) -> Completion:
        """The completion of ``request``, decoded in a batch with whatever else is waiting."""
        job = _Pending(request)
        with self._cond:
            if self._closed:
                raise RuntimeError("the server is shutting down")
            self._pending.append(job)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="modaverse-batcher", daemon=True)
                self._thread.start()
            self._cond.notify()
        job.done.wait()
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
                batch = self._pending[: self.max_batch]
                del self._pending[: self.max_batch]
            self.sizes[len(batch)] = self.sizes.get(len(batch), 0) + 1
            self._run(batch)

    def _run(self, batch: list[_Pending]) -> None:
        try:
            results = self.llm.complete_batch([p.request for p in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"complete_batch returned {len(results)} completions for {len(batch)} requests")
        except BaseException as e:
            if len(batch) == 1:
                batch[0].error = e
                batch[0].done.set()
                return
            for p in batch:  # find the one that failed: the others still get their answers
                self._run([p])
            return
        for p, r in zip(batch, results, strict=True):
            p.result = r
            p.done.set()


class RequestLLM(WrappedLLM):
    """One request's view of the served LLM (``inner``): completions recorded, through the batcher when there
    is one; the LLM's capabilities forwarded (:class:`~..llm_io.WrappedLLM`)."""

    def __init__(self, llm: MetaResponder, batcher: MicroBatcher | None) -> None:
        super().__init__(llm)
        self.batcher = batcher
        #: The completion of the last call (token counts for ``usage``); None until one ended.
        self.completion: Completion | None = None

    def complete(self, request: LLMRequest) -> Completion:
        """The completion of ``request`` (recorded)."""
        self.completion = self.batcher.complete(request) if self.batcher else complete(self.inner, request)
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
    """A TextStream that hands its completion to the request's view when it ends."""

    def __init__(self, inner: TextStream, view: RequestLLM) -> None:
        self.inner, self.view = inner, view
        self.completion: Completion | None = None

    def __iter__(self) -> Iterator[str]:
        yield from self.inner
        self.completion = self.view.completion = self.inner.completion


def request_llm(llm: MetaResponder, batcher: MicroBatcher | None, *, stream: bool) -> RequestLLM:
    """The view one request's agent uses: streaming only when asked for and the LLM can."""
    if stream and isinstance(llm, StreamingResponder):
        return StreamingRequestLLM(llm, batcher)
    return RequestLLM(llm, batcher)


__all__ = ["MicroBatcher", "RequestLLM", "StreamingRequestLLM", "request_llm"]
