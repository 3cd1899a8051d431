"""``modaverse chat``: a conversation with the agent in a terminal.

A person types at a ``you>`` prompt with line editing and history (prompt_toolkit; the history file is
``<cache dir>/chat_history``, see :func:`modaverse_agent.cache.cache_dir`; Tab completes commands and
paths). The answer text appears as the model decodes it; while generators run, a one-line progress
display shows which one and how far; then the files the answer made are listed as paths, each with the
media id the conversation gave it (a later turn can refer to it: "now make it a watercolor"). Notes show
once per session, errors once each (on stderr).

Commands: ``/attach PATH...`` (checked at once; they go with the next message), ``/detach``, ``/zoo``,
``/use TASK=GENERATOR`` (for this session only; ``modaverse zoo set`` saves a choice), ``/save FILE``,
``/load FILE``, ``/clear``, ``/help``, ``/quit``. A message that starts with ``/`` is sent by doubling it
(``//etc/hosts is ...``).

Ctrl-C while an answer runs stops that answer, not the session: no further step of it starts (a decode or
generator already running finishes in the background and its result is dropped), the turn is kept as
stopped, and the prompt comes back at once. At the prompt, Ctrl-C discards what was typed; on an empty
line it tells how to leave, and a second Ctrl-C in a row leaves (as Node's REPL does), as do Ctrl-D and
``/quit``. Leaving exits with status 0.

When stdin or stdout is not a terminal (a pipe, a script, ``| tee``) lines are read with ``input()`` and
prompt_toolkit is not loaded; the prompt is printed only when one of them is a terminal.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from ..agent import ModaVerseAgent
from ..cache import cache_dir
from ..cli_output import clip, style, terminal_safe
from ..conversation import Conversation, refused
from ..errors import ModaVerseError
from ..llm_io import GenerationParams
from ..media import MediaItem, load_media
from .terminal_turn import AnswerView, TurnRunner

PROMPT = "you> "
HISTORY_FILE = "chat_history"
LEAVE_HINT = "(To leave, press Ctrl-C again or Ctrl-D, or type /quit)"
HELP = """\
Type a message and press Enter; the answer streams in, and the files it makes
are listed as paths. Commands:
  /attach PATH...  attach files (images, audio, video) to your next message;
                   quote a path with spaces; /attach alone lists them
  /detach          drop the attachments not sent yet
  /zoo             which generator serves each task (untrained ones marked)
  /use TASK=GEN    GEN serves TASK this session (`modaverse zoo set` saves it)
  /save FILE       save the conversation as JSON
  /load FILE       resume a saved conversation
  /clear           start a new conversation (files stay on disk)
  /help            this help
  /quit            leave (also Ctrl-D)
Ctrl-C stops a running answer; at an empty prompt, press it twice to leave.
Start a message with // to send a line that begins with /."""

LineReader = Callable[[str], str]


class LineDiscarded(Exception):
    """Ctrl-C at the prompt with something typed: the line is dropped, the prompt comes back."""


def history_path() -> Path:
    """Where the prompt's history is kept: ``<cache dir>/chat_history``."""
    return cache_dir() / HISTORY_FILE


def plain_reader(prompt: str) -> str:
    """``input()``, showing ``prompt`` only when a person is there (stdin or stdout is a terminal);
    raises EOFError at the end of the input."""
    return input(prompt if sys.stdin.isatty() or sys.stdout.isatty() else "")


def prompt_reader(history: Path, completions: dict[str, Any]) -> tuple[LineReader, str | None]:
    """A prompt_toolkit reader with history in ``history``; returns it and a warning when the history
    file cannot be written (the history is then kept for this session only)."""
    from prompt_toolkit import PromptSession
    from prompt_toolkit.completion import NestedCompleter
    from prompt_toolkit.history import FileHistory, History, InMemoryHistory

    store: History
    warning = None
    try:
        history.parent.mkdir(parents=True, exist_ok=True)
        with history.open("a", encoding="utf-8"):
            pass
        store = FileHistory(str(history))
    except OSError as e:
        store = InMemoryHistory()
        warning = f"the prompt history is kept for this session only: cannot write {history}: {e.strerror or e}"
    session: PromptSession[str] = PromptSession(
        history=store, completer=NestedCompleter.from_nested_dict(completions), complete_while_typing=False
    )

    def read(prompt: str, default: str = "") -> str:
        try:
            return session.prompt(prompt, default=default)
        except KeyboardInterrupt:
            if session.default_buffer.text.strip():
                raise LineDiscarded from None
            raise

    read.prefills = True  # type: ignore[attr-defined]  # it can start the line with a message not sent
    return read, warning


class ChatTerminal:
    """The chat loop over one agent: reads lines, runs commands, streams answers (see the module doc)."""

    def __init__(
        self,
        agent: ModaVerseAgent,
        *,
        params: GenerationParams | None = None,
        title: str = "",
        choices: dict[str, str] | None = None,
        reader: LineReader | None = None,
    ) -> None:
        self.agent = agent
        self.params = params
        self.title = title
        self.conv = Conversation(agent, params=params)
        self.pending: list[tuple[str, MediaItem]] = []
        self.choices = dict(choices or {})  # tasks whose generator was chosen for this session
        self.seen_notes: set[str] = set()
        self.running: TurnRunner | None = None
        self._reader = reader
        self._read: Any = reader
        self.unsent = ""  # a message Ctrl-C kept from being sent: the next prompt starts with it

    # -- the loop ------------------------------------------------------------------------------------
    def run(self) -> int:
        """Talk until /quit, Ctrl-D or two Ctrl-C at an empty prompt; returns the exit status (0)."""
        read = self._read = self._make_reader()
        tasks = self.agent.zoo.tasks()
        head = " · ".join(p for p in ("modaverse chat", self.title, f"{len(tasks)} tasks") if p)
        self.say(f"{head} · /help for commands, /quit or Ctrl-D to leave")
        armed = False
        while True:
            unsent, self.unsent = self.unsent, ""
            try:
                line = read(PROMPT, unsent) if unsent and getattr(read, "prefills", False) else read(PROMPT)
            except EOFError:
                self.say("")
                break
            except LineDiscarded:
                armed = False
                continue
            except KeyboardInterrupt:
                if armed:
                    break
                armed = True
                self.say(LEAVE_HINT)
                continue
            armed = False
            try:
                if not self.handle(line):
                    break
            except KeyboardInterrupt:  # Ctrl-C in a command, or as an answer ended: back to the prompt
                self.say("")
        self._leave()
        return 0

    def _make_reader(self) -> LineReader:
        if self._reader is not None:
            return self._reader
        if not (sys.stdin.isatty() and sys.stdout.isatty()):
            return plain_reader
        words = [f"{t}={g.name}" for t in self.agent.zoo.tasks() for g in self.agent.zoo.candidates(t)]
        from prompt_toolkit.completion import PathCompleter, WordCompleter

        from .terminal_complete import QuotedPathCompleter

        paths = QuotedPathCompleter(PathCompleter(expanduser=True))
        completions: dict[str, Any] = {f"/{name}": None for name in COMMANDS}
        completions.update({"/attach": paths, "/save": paths, "/load": paths, "/use": WordCompleter(words)})
        read, warning = prompt_reader(history_path(), completions)
        if warning:
            self.note(warning)
        return read

    def handle(self, line: str) -> bool:
        """Run one line: a command or a message; False when the session should end."""
        text = line.strip()
        if not text:
            return True
        if text.startswith("/") and not text.startswith("//"):
            name, _, arg = text.partition(" ")
            command = COMMANDS.get(name[1:].lower())
            if command is None:
                self.error(f"unknown command {clip(name, 40)}; /help lists the commands")
                return True
            return command(self, arg.strip()) is not False
        self.answer(text[1:] if text.startswith("//") else text)
        return True

    def answer(self, text: str) -> None:
        """Send ``text`` (with the pending attachments) and show the answer as it comes."""
        if not self._settle():
            kept = "it is back at the prompt" if getattr(self._read, "prefills", False) else "send it again later"
            self.note(f"your message was not sent ({kept})")
            self.unsent = text
            return
        pending = self.pending
        attachments = [item for _, item in pending]
        self.pending = []
        view = AnswerView(self.seen_notes)
        self.agent.on_progress = view.on_progress
        runner, ended = None, False
        try:
            runner = TurnRunner(self.conv, text, attachments)
            while (event := runner.next()) is not None:
                view.show(event)
            ended = True
            view.finish(runner)
            if pending and runner.response is not None and refused(runner.response):
                self.pending = pending  # the refused message took its attachments with it: they wait again
                self.note(f"{len(pending)} attachment(s) stay attached for your next message")
        except KeyboardInterrupt:
            if runner is not None:
                self.running = runner
                if not ended:  # a Ctrl-C while the last lines print has nothing left to stop
                    runner.stop()
                    view.stopped(runner)

    def _settle(self) -> bool:
        """Wait for a stopped answer's running step to end; False when Ctrl-C gave up waiting."""
        runner = self.running
        if runner is not None and not runner.done():
            self.note("waiting for the stopped answer's running step to finish (Ctrl-C to stop waiting)")
            try:
                runner.join()
            except KeyboardInterrupt:
                self.note("it is still running; the conversation is busy until it ends")
                return False
        self.running = None
        return True

    def _leave(self) -> None:
        if self.running is not None and not self.running.done():
            self._settle()  # a step still inside a generator would die mid-write at exit

    # -- output --------------------------------------------------------------------------------------
    def say(self, text: str) -> None:
        """A line on stdout (control characters shown as ``\\xNN``: they may come from a user, a file or
        the model)."""
        click.echo(terminal_safe(text))

    def note(self, text: str) -> None:
        """A notice on stdout (yellow unless NO_COLOR is set)."""
        click.echo(style(terminal_safe(text), "yellow"))

    def error(self, text: str) -> None:
        """``error: text`` on stderr (one clipped line; red unless NO_COLOR is set)."""
        click.echo(style(f"error: {terminal_safe(clip(text))}", "red"), err=True)

    # -- commands ------------------------------------------------------------------------------------
    def cmd_help(self, arg: str) -> None:
        """/help"""
        self.say(HELP)

    def cmd_quit(self, arg: str) -> bool:
        """/quit"""
        return False

    def cmd_attach(self, arg: str) -> None:
        """/attach PATH...: load and check each file now; good ones go with the next message."""
        if not arg:
            if not self.pending:
                self.say("nothing attached; /attach PATH... attaches files to your next message")
            for media_id, item in self.pending:
                self.say(f"  {media_id}  {item.name} ({item.mime_type})")
            return
        try:
            paths = shlex.split(arg)
        except ValueError as e:
            self.error(f"/attach: {e}; quote a path that holds spaces")
            return
        for path in paths:
            try:
                item = load_media(os.path.expanduser(path))
            except ModaVerseError as e:
                self.error(f"cannot attach {path}: {e}")
                continue
            except Exception as e:  # one unreadable file must not cost the others
                self.error(f"cannot attach {path}: {type(e).__name__}: {e}")
                continue
            media_id = self._next_id(item.modality)
            self.pending.append((media_id, item))
            self.say(f"attached {path} as {media_id} ({item.mime_type}); it goes with your next message")

    def _next_id(self, modality: str) -> str:
        """The id the conversation will give the next attached ``modality`` (ids follow order)."""
        count = sum(r.modality == modality for r in self.conv.records)
        count += sum(item.modality == modality for _, item in self.pending)
        return f"{modality}_{count + 1}"

    def cmd_detach(self, arg: str) -> None:
        """/detach: drop the pending attachments."""
        dropped, self.pending = len(self.pending), []
        self.say(f"dropped {dropped} attachment(s)")

    def cmd_zoo(self, arg: str) -> None:
        """/zoo: the generator serving each task, untrained ones marked."""
        zoo = self.agent.zoo
        tasks = zoo.tasks()
        if not tasks:
            self.say("no generators installed; install a plugin (see `modaverse plugins`)")
        for task in tasks:
            gen = zoo.generator_for(task)
            marks = ["untrained: placeholder output"] if gen.untrained else []
            if task in self.choices:
                marks.append("chosen for this session")
            others = [g.name for g in zoo.candidates(task) if g is not gen]
            line = f"  {task:<16} -> {gen.name}"
            line += f"  ({'; '.join(marks)})" if marks else ""
            line += f"  also: {', '.join(others)}" if others else ""
            self.say(line)

    def cmd_use(self, arg: str) -> None:
        """/use TASK=GENERATOR...: switch generators for the next turns (not saved)."""
        items = arg.split()
        if not items:
            self.error("/use takes TASK=GENERATOR (see /zoo for the tasks and generators)")
        for item in items:
            task, sep, name = item.partition("=")
            if not sep or not task or not name:
                self.error(f"/use takes TASK=GENERATOR, got {clip(item, 80)!r}")
                continue
            try:
                self.agent.zoo.choose(task, name)
            except ModaVerseError as e:
                self.error(str(e))
                continue
            self.choices[task] = name
            self.say(f"{task} -> {name} for the rest of this session")

    def _one_path(self, command: str, arg: str) -> str | None:
        """The single path ``arg`` names, quoted as /attach takes them (a path with spaces in quotes)."""
        try:
            words = shlex.split(arg)
        except ValueError as e:
            self.error(f"/{command}: {e}; quote a path that holds spaces")
            return None
        if len(words) != 1:
            example = "chat.json" if command == "save" else "a file saved by /save"
            self.error(f"/{command} takes one file name ({example}); quote a name that holds spaces")
            return None
        return os.path.expanduser(words[0])

    def cmd_save(self, arg: str) -> None:
        """/save FILE: the conversation as JSON."""
        if not arg:
            self.error("/save takes a file name, e.g. /save chat.json")
            return
        target = self._one_path("save", arg)
        if target is None or not self._settle():
            return
        try:
            path = self.conv.save(target)
        except (ModaVerseError, OSError) as e:
            self.error(f"not saved: {e}")
            return
        self.say(f"saved {len(self.conv.turns)} turns and {len(self.conv.records)} media to {path}")

    def cmd_load(self, arg: str) -> None:
        """/load FILE: resume a saved conversation (it replaces the current one)."""
        if not arg:
            self.error("/load takes a file saved by /save, e.g. /load chat.json")
            return
        source = self._one_path("load", arg)
        if source is None or not self._settle():
            return
        try:
            conv = Conversation.load(source, self.agent, params=self.params)
        except (ModaVerseError, OSError) as e:
            self.error(f"not loaded: {e}")
            return
        self.conv, self.pending = conv, []
        ids = ", ".join(r.id for r in conv.records) or "none"
        self.say(f"loaded {source}: {len(conv.turns)} turns, media: {ids}")
        for warning in conv.warnings:
            self.note(f"warning: {clip(warning, 300)}")
        for turn in conv.turns[-6:]:
            who = "you" if turn.role == "user" else "modaverse"
            made = f" [{', '.join(turn.media)}]" if turn.media else ""
            self.say(f"  {who}: {clip(turn.text, 100)}{made}")

    def cmd_clear(self, arg: str) -> None:
        """/clear: forget the conversation (generated files stay on disk)."""
        if not self._settle():
            return
        self.conv.clear()
        self.pending = []
        self.say("cleared: a new conversation starts (files stay on disk)")


COMMANDS: dict[str, Callable[[ChatTerminal, str], Any]] = {
    "attach": ChatTerminal.cmd_attach,
    "detach": ChatTerminal.cmd_detach,
    "zoo": ChatTerminal.cmd_zoo,
    "use": ChatTerminal.cmd_use,
    "save": ChatTerminal.cmd_save,
    "load": ChatTerminal.cmd_load,
    "clear": ChatTerminal.cmd_clear,
    "help": ChatTerminal.cmd_help,
    "quit": ChatTerminal.cmd_quit,
    "exit": ChatTerminal.cmd_quit,
}
