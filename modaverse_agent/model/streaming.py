"""Streaming an engine's answer: :class:`CompletionStream`, an iterator of text pieces that carries its
:class:`~modaverse_agent.llm_io.Completion` once it has ended, fed by a cancellable transformers streamer.

Decoding runs in a thread; both engines hand every new token to the streamer, so closing the stream ends
the decode at its next token and frees the engine.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from ..answer_stream import StopHoldBack
from ..llm_io import Completion, LLMRequest

if TYPE_CHECKING:
    from .responder import MetaResponseEngine


class CompletionStream:
    """An iterator of raw meta-response pieces that carries its :class:`Completion` once it has ended.

    Each stream owns its result (no state is left on the engine), so streams from several threads are
    independent; the engine's lock makes their decodes take turns.
    """

    def __init__(self, engine: MetaResponseEngine, request: LLMRequest) -> None:
        self.engine, self.request = engine, request
        #: Token accounting of the whole answer, set when iteration ends (None before, or after an error).
        self.completion: Completion | None = None
        self._pieces = self._run()

    def __iter__(self) -> Iterator[str]:
        return self._pieces

    def __next__(self) -> str:
        return next(self._pieces)

    def close(self) -> None:
        """Stop reading: the decode in progress ends at its next token and frees the engine."""
        self._pieces.close()

    def _run(self) -> Iterator[str]:
        engine, request = self.engine, self.request
        streamer = cancellable_streamer(engine.tokenizer)
        result: dict[str, Any] = {}

        def work() -> None:
            try:
                result["completion"] = engine.complete_batch([request], streamer=streamer)[0]
            except BaseException as e:  # re-raised in the caller's thread
                result["error"] = e
                streamer.end()

        thread = threading.Thread(target=work, name="modaverse-stream", daemon=True)
        thread.start()
        shown = StopHoldBack(request.params.stop)
        finished = False
        try:
            for piece in streamer:  # after a stop string, drain: decoding finishes in its thread
                out = shown.feed(piece)
                if out:
                    yield out
            if not shown.stopped and len(shown.seen) > len(shown.text):
                yield shown.seen[len(shown.text) :]
            finished = True
        finally:
            if not finished:  # the reader stopped early (closed, or an error here): end the decode too
                streamer.cancelled.set()
            thread.join()
        if "error" in result:
            raise result["error"]
        self.completion = result["completion"]


class DecodeCancelled(Exception):
    """The reader of a stream stopped; its decode ends at the next token."""


class StopCheck:
    """What the engines' decode loops hand each new token to when a decode may be stopped: it raises
    :class:`DecodeCancelled` once ``should_stop()`` is true, and passes the token on to ``inner`` (a streamer)
    when there is one. Unlike a text streamer it takes any batch size."""

    def __init__(self, should_stop: Callable[[], bool], inner: Any | None = None) -> None:
        self.should_stop, self.inner = should_stop, inner

    def put(self, value: Any) -> None:
        if self.should_stop():
            raise DecodeCancelled("the request was stopped")
        if self.inner is not None:
            self.inner.put(value)

    def end(self) -> None:
        if self.inner is not None:
            self.inner.end()


def cancellable_streamer(tokenizer: Any) -> Any:
    """A transformers ``TextIteratorStreamer`` whose ``put`` raises :class:`DecodeCancelled` once
    ``cancelled`` is set: both engines hand every new token to it, so the decode loop ends there."""
    from transformers import TextIteratorStreamer

    class Streamer(TextIteratorStreamer):
        def __init__(self) -> None:
            super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True, clean_up_tokenization_spaces=False)
            self.cancelled = threading.Event()

        def put(self, value: Any) -> None:
            if self.cancelled.is_set():
                raise DecodeCancelled("the stream's reader stopped")
            super().put(value)

    return Streamer()
