"""One answer in the terminal chat: its events pumped in a thread, shown as they come, stoppable with Ctrl-C.

:class:`TurnRunner` iterates :meth:`Conversation.stream` in a worker thread and hands each event to the
main thread through a queue, so Ctrl-C (a ``KeyboardInterrupt`` in the main thread) never lands inside the
agent: the main thread calls :meth:`TurnRunner.stop`, and the worker closes the event iterator as soon
as the step in progress (a decode, a generator) returns - no further step of that answer starts. The
stopped (or failed) turn is recorded by the conversation with the text and files it got so far, so the
next turn's history still alternates user / assistant.

:class:`AnswerView` prints the events for a person: the text as it decodes, a one-line progress display
on a terminal while generators run (:class:`ProgressLine`), then the files as paths with their media ids,
notes (once per session) and errors (once each).
"""

from __future__ import annotations

import queue
import re
import shutil
import sys
import threading
from collections.abc import Sequence
from typing import Any, TextIO

import click

from ..artifacts import Artifact
from ..cli_output import clip, style, terminal_safe
from ..conversation import Conversation
from ..media import MediaItem
from ..response import AgentEvent, FinalResponse, InvocationDone, PlanReady, ResponseDone, TextDelta

_END = object()


class TurnRunner:
    """One turn of ``conv`` run in a daemon thread; read its events with :meth:`next` (None at the end)."""

    def __init__(self, conv: Conversation, text: str, attachments: Sequence[MediaItem]) -> None:
        self.conv = conv
        self.response: FinalResponse | None = None
        self.failure: Exception | None = None
        self.text = ""
        self.made: list[Artifact] = []
        self._events = conv.stream(text, list(attachments))
        self._queue: queue.Queue[Any] = queue.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._pump, name="modaverse-chat-turn", daemon=True)
        self._thread.start()

    def next(self) -> AgentEvent | None:
        """The next event, waiting for it (interruptible by Ctrl-C); None when the turn is over."""
        item = self._queue.get()
        return None if item is _END else item

    def stop(self) -> None:
        """Ask the turn to stop: the worker closes the event iterator after the step in progress."""
        self._stop.set()

    @property
    def stopped(self) -> bool:
        """True once :meth:`stop` was called."""
        return self._stop.is_set()

    def done(self) -> bool:
        """True when the worker has finished (the conversation is free for the next turn)."""
        return not self._thread.is_alive()

    def join(self) -> None:
        """Wait for the worker to finish (interruptible by Ctrl-C)."""
        while self._thread.is_alive():
            self._thread.join(0.2)

    def untrained_generators(self) -> set[str]:
        """Names of the zoo's generators that run untrained (placeholder) weights."""
        return {g.name for g in self.conv.agent.zoo.generators if g.untrained}

    def _pump(self) -> None:
        try:
            for event in self._events:
                if isinstance(event, TextDelta):
                    self.text += event.text
                elif isinstance(event, InvocationDone):
                    self.made += event.artifacts  # a step that ends after the stop still made its files
                if self._stop.is_set():
                    break
                if isinstance(event, ResponseDone):
                    self.response = event.response
                self._queue.put(event)
        except Exception as e:  # a bug below must end this turn with a message, not the session
            self.failure = e
        finally:
            self._events.close()  # GeneratorExit at the agent's yield: no further invocation starts
            self._queue.put(_END)


class ProgressLine:
    """A single status line redrawn in place on a terminal (nothing at all when ``stream`` is not one)."""

    def __init__(self, stream: TextIO, enabled: bool | None = None) -> None:
        self.stream = stream
        self.enabled = stream.isatty() if enabled is None else enabled
        self._lock = threading.Lock()
        self._shown = False

    def show(self, text: str) -> None:
        """Replace the line with ``text`` (cut to the terminal's width)."""
        if not self.enabled:
            return
        width = max(20, shutil.get_terminal_size().columns - 1)
        with self._lock:
            self.stream.write("\r\x1b[K" + text[:width])
            self.stream.flush()
            self._shown = True

    def clear(self) -> None:
        """Erase the line if it is shown."""
        with self._lock:
            if self._shown:
                self.stream.write("\r\x1b[K")
                self.stream.flush()
                self._shown = False


def progress_text(position: int, count: int, task: str, done: int | None = None, total: int | None = None) -> str:
    """``[1/2] text-to-image  12/50 ━━━━━━──────`` (or ``[1/2] text-to-image ...`` before any step is reported)."""
    head = f"[{position}/{count}] {task}"
    if done is None or not total:
        return f"{head} ..."
    filled = max(0, min(20, round(20 * done / total)))
    return f"{head}  {done}/{total} {'━' * filled}{'─' * (20 - filled)}"


def note_key(note: str) -> str:
    """What makes two notes the same for showing once a session: their words, not their numbers (the
    context note counts the turns left out, and would otherwise show again every turn)."""
    return re.sub(r"\d+", "#", note)


class AnswerView:
    """Prints one answer's events; ``seen_notes`` is shared by the session so a note shows once."""

    def __init__(self, seen_notes: set[str], out: TextIO | None = None, err: TextIO | None = None) -> None:
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.seen_notes = seen_notes
        self.progress = ProgressLine(self.err)
        self.active = True
        self._shown_errors: set[str] = set()
        self._text_open = False
        self._tasks: list[str] = []
        self._finished = 0

    # -- events --------------------------------------------------------------------------------------
    def show(self, event: AgentEvent) -> None:
        """Print what ``event`` adds to the answer."""
        if isinstance(event, TextDelta):
            self._write(event.text)
            self._text_open = True
        elif isinstance(event, PlanReady):
            self.end_text()
            for e in event.errors:
                self.error(str(e))
            self._tasks = [inv.task if isinstance(inv.task, str) else "?" for inv in event.meta_response.invocations]
            self._next_status()
        elif isinstance(event, InvocationDone):
            self._finished += 1
            self.progress.clear()
            if event.error is not None:
                self.error(str(event.error))
            self._next_status()
        elif isinstance(event, ResponseDone):
            self.progress.clear()
            self.end_text()

    def on_progress(self, task: str, done: int, total: int) -> None:
        """The agent's progress callback (called from generator threads): redraw the status line."""
        if not self.active or not self._tasks:
            return
        try:
            self.progress.show(progress_text(self._finished + 1, len(self._tasks), task, done, total))
        except (OSError, ValueError):  # the terminal went away: the generator must not fail for it
            self.active = False

    def finish(self, runner: TurnRunner) -> None:
        """After the last event: the files (with the media ids the conversation gave them), notes, errors."""
        self.active = False
        self.progress.clear()
        self.end_text()
        if runner.failure is not None:
            self.error(f"this answer failed: {type(runner.failure).__name__}: {runner.failure}")
        response = runner.response
        if response is None:
            self.files(runner.made, {}, runner.untrained_generators())
            return
        ids = {r.path: r.id for r in runner.conv.records if r.path is not None}
        self.files(response.artifacts, ids, runner.untrained_generators())
        for note in response.notes:
            key = note_key(note)
            if key not in self.seen_notes:
                self.seen_notes.add(key)
                self._line(f"note: {note}", fg="yellow")
        for e in response.errors:
            self.error(str(e))

    def stopped(self, runner: TurnRunner) -> None:
        """Ctrl-C: stop drawing, say so, and list the files made before the stop."""
        self.active = False
        self.progress.clear()
        self.end_text()
        self._line("stopped: nothing more runs for this answer", fg="yellow")
        self.files(list(runner.made), {}, runner.untrained_generators())

    # -- printing ------------------------------------------------------------------------------------
    def files(self, artifacts: Sequence[Artifact], ids: dict[str, str], untrained: set[str]) -> None:
        """One line per file: its media id (when it became one), its path, what made it (and whether that
        generator runs untrained weights, so the file is a placeholder)."""
        for a in artifacts:
            placeholder = a.metadata.get("untrained") or a.generator in untrained
            label = f"{a.task} via {a.generator}" + (", untrained weights" if placeholder else "")
            media_id = ids.get(str(a.path), a.modality)
            self._line(f"  {media_id}  {a.path}  ({label})")

    def error(self, message: str) -> None:
        """Print ``error: message`` on stderr, once per answer."""
        if message in self._shown_errors:
            return
        self._shown_errors.add(message)
        self.progress.clear()
        self.end_text()
        click.echo(style(f"error: {terminal_safe(clip(message))}", "red"), file=self.err)

    def end_text(self) -> None:
        """End the streamed text's line."""
        if self._text_open:
            self._write("\n")
            self._text_open = False

    def _next_status(self) -> None:
        if self.active and self._finished < len(self._tasks):
            self.progress.show(progress_text(self._finished + 1, len(self._tasks), self._tasks[self._finished]))

    def _line(self, text: str, fg: str | None = None) -> None:
        text = terminal_safe(text)
        click.echo(style(text, fg) if fg else text, file=self.out)

    def _write(self, text: str) -> None:
        click.echo(terminal_safe(text), file=self.out, nl=False)
        self.out.flush()
