"""One browser session of the web page: its conversation, its zoo choices, its running answer.

Every tab gets a :class:`WebSession` (kept in a ``gr.State``). A turn runs in a worker thread of its own
that iterates :meth:`Conversation.stream` from start to end (the conversation's lock is taken and
released in that one thread, whatever Gradio does with the request), updates a
:class:`~.web_render.TurnView` and wakes the page's generator, which renders snapshots. "Stop" marks the
view stopped: the page shows the answer as it stands at once; the worker closes the conversation's stream
at its next event (the next piece of answer text, or the plan), which ends the decode at its next token
and starts no generator. While the model writes the invocations part of its answer no text arrives, so
a stop there takes effect when the plan is complete (before any generator runs).

Generator choices are per session: the session's zoo shares the generator objects (and their loaded
weights) with every other tab, but a switch in one tab changes only that tab's next answers.
"""

from __future__ import annotations

import dataclasses
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from ..agent import ModaVerseAgent
from ..conversation import Conversation
from ..errors import ModaVerseError
from ..llm_io import Completion, LLMRequest, TextStream, WrappedLLM, output_format
from ..media import MediaItem, load_media
from ..zoo import Zoo, ZooConfig
from .web_render import Message, TurnSettings, TurnView

AgentFactory = Callable[[], ModaVerseAgent]
#: The page is sent a new frame of the streaming answer at most this often (seconds).
FRAME_S = 0.05


class AgentSource:
    """The agent the page talks to: one given, or made once by a factory on first use (thread-safe).

    A factory that fails is tried again on the next turn; its error is what that turn shows.
    """

    def __init__(self, agent_or_factory: ModaVerseAgent | AgentFactory) -> None:
        self._agent = agent_or_factory if isinstance(agent_or_factory, ModaVerseAgent) else None
        self._factory = None if self._agent is not None else agent_or_factory
        if self._agent is None and not callable(self._factory):
            raise TypeError(f"expected a ModaVerseAgent or a function returning one, got {agent_or_factory!r}")
        self._lock = threading.Lock()

    @property
    def ready(self) -> bool:
        """True once the agent exists (a factory has run)."""
        return self._agent is not None

    def get(self) -> ModaVerseAgent:
        """The agent (running the factory the first time)."""
        if self._agent is not None:
            return self._agent
        with self._lock:
            if self._agent is None:
                assert self._factory is not None
                agent = self._factory()
                if not isinstance(agent, ModaVerseAgent):
                    raise TypeError(f"the agent factory returned {type(agent).__name__}, not a ModaVerseAgent")
                self._agent = agent
            return self._agent


@runtime_checkable
class ConstrainableEngine(Protocol):
    """A ModaVerse engine (torch or llama.cpp): ``options.constrained`` and the full responder surface."""

    options: Any

    def respond(self, request: LLMRequest) -> str: ...
    def complete(self, request: LLMRequest) -> Completion: ...
    def stream(self, request: LLMRequest) -> TextStream: ...


def constrained_applies(llm: object) -> bool:
    """Whether the constrained-decoding switch means anything for ``llm`` (an engine that constrains JSON)."""
    return (
        isinstance(llm, ConstrainableEngine)
        and bool(getattr(llm.options, "constrained", False))
        and output_format(llm) == "json"
    )


class SchemaFreeEngine(WrappedLLM):
    """``engine`` answering one request without the schema mask: requests go on with ``schema=None``.

    The engines constrain a row only when its request carries a schema (``options.constrained`` is read
    for every call and shared by every session), so a turn with constrained decoding off is served by this
    wrapper instead of flipping the engine's global option under the other tabs. The agent still
    validates the answer against the zoo's schema: an invalid answer shows as an error in the chat. The
    engine's capabilities are forwarded (:class:`~..llm_io.WrappedLLM`; the prompt does not depend on the mask).
    """

    def __init__(self, engine: ConstrainableEngine) -> None:
        super().__init__(engine)

    @property
    def engine(self) -> ConstrainableEngine:
        """The wrapped engine (``inner``, typed)."""
        return self.inner  # type: ignore[return-value]

    @staticmethod
    def _free(request: LLMRequest) -> LLMRequest:
        return dataclasses.replace(request, schema=None)  # type: ignore[arg-type]  # None: an unconstrained row

    def respond(self, request: LLMRequest) -> str:
        """The raw answer, decoded without the mask."""
        return self.engine.respond(self._free(request))

    def complete(self, request: LLMRequest) -> Completion:
        """The answer with accounting, decoded without the mask."""
        return self.engine.complete(self._free(request))

    def stream(self, request: LLMRequest) -> TextStream:
        """The answer as pieces, decoded without the mask."""
        return self.engine.stream(self._free(request))


def fork_zoo(zoo: Zoo) -> Zoo:
    """A zoo with the same generator objects and current choices, whose choices change independently."""
    choices = {task: zoo.generator_for(task).name for task in zoo.tasks()}
    return Zoo(zoo.generators, config=ZooConfig(path=zoo.config.path), choices=choices)


def load_uploads(paths: Sequence[str], max_bytes: int) -> tuple[list[MediaItem], list[str]]:
    """Load every uploaded file (content-sniffed, size-limited); a bad one becomes a one-line problem."""
    items, problems = [], []
    for p in paths:
        name = Path(p).name
        try:
            items.append(load_media(p, max_bytes=max_bytes))
        except ModaVerseError as e:
            said = str(e)  # names the file itself, as it was uploaded
            problems.append(said.replace(name, f"`{name}`", 1) if name in said else f"`{name}`: {said}")
        except Exception as e:  # one unreadable upload must not take the message down
            problems.append(f"`{name}`: it could not be read ({type(e).__name__})")
    return items, problems


class WebSession:
    """One tab's chat: the conversation, the messages the page shows, the zoo choices, the running turn."""

    def __init__(self, source: AgentSource, zoo: Zoo, output_dir: Path, *, max_upload_bytes: int) -> None:
        self.source = source
        self.zoo = fork_zoo(zoo)
        self.id = f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
        self.dir = Path(output_dir) / "web" / self.id
        self.max_upload_bytes = max_upload_bytes
        self.messages: list[Message] = []
        self.conversation: Conversation | None = None
        self.saved: Path | None = None
        self._view: TurnView | None = None
        self._worker: threading.Thread | None = None
        self._generation = 0  # bumped by clear(): a worker of an older generation commits nothing
        self._lock = threading.RLock()
        self._changed = threading.Event()

    # -- what the page shows ------------------------------------------------------------------------
    def snapshot(self) -> list[Message]:
        """Every message so far, the running turn's included."""
        with self._lock:
            view = self._view.messages() if self._view is not None else []
            return [*self.messages, *view]

    @property
    def busy(self) -> bool:
        """True while a turn's worker runs (a stopped answer may still be finishing its decode)."""
        return self._worker is not None and self._worker.is_alive()

    def choose(self, task: str, generator: str) -> str:
        """Make ``generator`` serve ``task`` from this session's next answer; returns a line to show."""
        self.zoo.choose(task, generator)
        gen = self.zoo.get(generator)
        state = " (untrained tiny weights: placeholder output)" if gen.untrained else ""
        return f"{task} → {generator}{state}, from the next answer"

    # -- a turn -------------------------------------------------------------------------------------
    def turn(self, text: str, files: Sequence[str], settings: TurnSettings) -> Iterator[list[Message]]:
        """Run one turn, yielding the whole chat each time it changes (the answer streams)."""
        text = text or ""
        view = TurnView(text, settings=settings)
        if self.busy:
            waiting = {"role": "assistant", "content": "Finishing the stopped answer first…"}
            yield [*self.snapshot(), waiting]
            while self.busy:
                assert self._worker is not None
                self._worker.join(0.2)
        items, view.problems = load_uploads(files, self.max_upload_bytes)
        view.attached = items
        if not text.strip() and not items:
            view.finished = True
            if not view.problems:
                view.problems.append("the message was empty: type a request or attach an image, audio or video")
            with self._lock:
                self.messages += view.messages()
                self._view = None
            yield self.snapshot()
            return
        with self._lock:
            self._view = view
        if not self.source.ready:
            view.waiting = "loading the model (the first answer waits for it)…"
        yield self.snapshot()
        self._changed.clear()
        worker = threading.Thread(
            target=self._work, args=(view, self._generation), name="modaverse-web-turn", daemon=True
        )
        self._worker = worker
        worker.start()
        shown = time.perf_counter()
        while True:
            self._changed.wait(0.25)
            # at most one frame per FRAME_S: the pieces that arrive meanwhile go out together, so a fast
            # model does not make the page re-render the whole chat for every token
            pause = FRAME_S - (time.perf_counter() - shown)
            if pause > 0 and not (view.finished or view.stopped):
                time.sleep(pause)
            self._changed.clear()
            ended = view.finished or view.stopped
            shown = time.perf_counter()
            yield self.snapshot()
            if ended:
                return

    def stop(self) -> list[Message]:
        """End the running answer here (no generator starts after this); returns the chat."""
        with self._lock:
            if self._view is not None and not self._view.finished:
                self._view.stopped = True
        self._changed.set()
        return self.snapshot()

    def clear(self) -> list[Message]:
        """Forget the conversation (a running answer is stopped and dropped); returns the empty chat."""
        self.stop()
        with self._lock:
            self._generation += 1
            self.messages = []
            self._view = None
            self.conversation = None
            self.saved = None
        return []

    # -- the worker ---------------------------------------------------------------------------------
    def _agent_for(self, settings: TurnSettings, view: TurnView) -> ModaVerseAgent:
        base = self.source.get()
        view.constrained_applies = constrained_applies(base.llm)
        llm: Any = base.llm
        if view.constrained_applies and not settings.constrained:
            llm = SchemaFreeEngine(base.llm)
        agent = ModaVerseAgent(llm, self.zoo, output_dir=self.dir, timeout=base.timeout, seed=settings.seed)
        agent.cancel_grace = base.cancel_grace

        def progress(task: str, done: int, total: int) -> None:
            with self._lock:
                view.on_progress(task, done, total)
            self._changed.set()

        agent.on_progress = progress
        return agent

    def _work(self, view: TurnView, generation: int) -> None:
        conv = None
        try:
            agent = self._agent_for(view.settings, view)
            with self._lock:
                view.waiting = None
                if self.conversation is None:
                    self.conversation = Conversation(agent)
                conv = self.conversation
            self._changed.set()
            conv.agent = agent
            conv.params = view.settings.params()
            events = conv.stream(view.text, view.attached, output_dir=self.dir)
            try:
                for event in events:
                    with self._lock:
                        view.apply(event, self.zoo)
                    self._changed.set()
                    if view.stopped:
                        break
            finally:
                # in this thread, so the conversation's lock is released where it was taken; a stopped
                # turn keeps what it had (the conversation records it), and the decode ends at its next token
                events.close()
        except Exception as e:  # the model failing to load, a bug: shown in the chat, the session goes on
            with self._lock:
                view.failure = f"{type(e).__name__}: {e}"[:500]
        finally:
            saved = self._save(conv) if conv is not None else None
            with self._lock:
                view.finished = True
                view.waiting = None
                if generation == self._generation:
                    self.messages += view.messages()
                    if self._view is view:
                        self._view = None
                    self.saved = saved or self.saved
            self._changed.set()

    def _save(self, conv: Conversation) -> Path | None:
        """The conversation as JSON (what "download conversation" serves); None when it cannot be written."""
        try:
            return conv.save(self.dir / "conversation.json")
        except ModaVerseError:
            return None
