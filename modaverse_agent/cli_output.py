"""What the ``modaverse`` command prints, and the guards that keep hostile input to one clear line.

Every failure ends in one line on stderr and an exit code: :func:`fail` for a bad command line or
config (2), :func:`report_unexpected` for anything that broke (1), 130 on Ctrl-C. Nothing the user
typed is echoed back whole (:func:`clip`) and nothing unprintable reaches the terminal (:func:`printable`).
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import sys
from collections.abc import Iterable
from typing import Any, NoReturn

import click

EXIT_PARTIAL = 1  # the response came back but with errors
EXIT_FAILURE = 1  # something unexpected broke
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report Ctrl-C
DEBUG_ENV = "MODAVERSE_DEBUG"
MESSAGE_MAX_CHARS = 1000  # an error line quotes at most this much (a 1 MB argument is not echoed back)

_SURROGATE = re.compile("[\ud800-\udfff]")


def printable(text: str) -> str:
    """``text`` with lone surrogates (from ``"\\ud800"`` escapes or undecodable argv bytes) as U+FFFD."""
    return _SURROGATE.sub("\ufffd", text)


_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def terminal_safe(text: str) -> str:
    """:func:`printable` ``text`` with every C0/C1 control character but newline and tab written as ``\\xNN``,
    so text from a user, a file or a model cannot drive the terminal (escape sequences, title changes)."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", printable(text))


def style(text: str, fg: str) -> str:
    """``text`` in color ``fg``, or as it is when the NO_COLOR environment variable is set (no-color.org)."""
    return text if os.environ.get("NO_COLOR") else click.style(text, fg=fg)


def has_surrogate(text: str) -> bool:
    """True when ``text`` holds a lone surrogate (bytes of the command line that were not valid UTF-8)."""
    return _SURROGATE.search(text) is not None


def clip(text: str, limit: int = MESSAGE_MAX_CHARS) -> str:
    """One printable line of at most ``limit`` characters."""
    line = " ".join(printable(text).split())
    return line if len(line) <= limit else f"{line[: limit - 30]}... ({len(line)} characters in all)"


def echo(text: str, err: bool = False) -> None:
    """Print ``text`` (made printable) on stdout, or stderr with ``err``."""
    click.echo(printable(text), err=err)


def emit_json(data: Any) -> None:
    """Print ``data`` as indented JSON on stdout (values JSON can't hold written as their str)."""
    echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """Print ``Error: <message>`` as one clipped line on stderr and exit with ``code``."""
    click.echo(f"Error: {clip(message)}", err=True)
    sys.exit(code)


class FiniteFloat(click.ParamType):
    """A float that must be finite (no nan/inf/1e309) and above (or at) ``minimum``."""

    name = "float"

    def __init__(self, minimum: float, *, inclusive: bool) -> None:
        self.minimum, self.inclusive = minimum, inclusive

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        """Parse ``value``; refuse non-numbers, nan, infinities and values below the bound."""
        shown = clip(repr(value), 80)
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{shown} is not a number", param, ctx)
        if not math.isfinite(number):
            self.fail(f"{shown} is not a finite number", param, ctx)
        if number < self.minimum or (number == self.minimum and not self.inclusive):
            bound = ">=" if self.inclusive else ">"
            self.fail(f"{shown} is out of range: it must be {bound} {self.minimum:g}", param, ctx)
        return number


class ProgressBars:
    """A rich progress bar per task on stderr, fed by generators' step callbacks (a context manager)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bar: Any = None
        self.tasks: dict[str, Any] = {}

    def __enter__(self) -> Any:
        if not self.enabled:
            return None
        from rich.console import Console
        from rich.progress import Progress

        self.bar = Progress(console=Console(stderr=True), transient=True)
        self.bar.start()
        return self.update

    def update(self, task: str, done: int, total: int) -> None:
        """Show ``done`` of ``total`` steps for ``task`` (its bar appears on its first report)."""
        if task not in self.tasks:
            self.tasks[task] = self.bar.add_task(task, total=total)
        self.bar.update(self.tasks[task], completed=done, total=total)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()


def print_stream(events: Iterable[Any]) -> Any:
    """Print an agent's streamed answer for a person: the text as it arrives, then what
    :func:`print_response` prints after it; returns the final response."""
    shown = False
    for event in events:
        if event.kind == "text":
            click.echo(printable(event.text), nl=False)
            sys.stdout.flush()
            shown = True
        elif event.kind == "done":
            if shown:
                click.echo()
            print_response(event.response, text_shown=shown)
            return event.response
    raise RuntimeError("the agent's event stream ended without a response")


def print_response(response: Any, *, text_shown: bool = False) -> None:
    """Print an agent response for a person: the text (unless already shown), the meta-response, files,
    manifest, notes and errors."""
    if response.text and not text_shown:
        echo(response.text)
    if response.meta_response is not None:
        echo("meta-response: " + response.meta_response.to_json())
    for a in response.artifacts:
        label = f"{a.task} via {a.generator}" + (", untrained weights" if a.metadata.get("untrained") else "")
        echo(f"  [{label}] {a.path}")
    if response.manifest:
        echo(f"manifest: {response.manifest}")
    for note in response.notes:
        echo(f"note: {note}")
    for e in response.errors:  # --json has them in full; a line here quotes at most MESSAGE_MAX_CHARS
        echo(f"error: {clip(str(e))}", err=True)


def exit_code(exit: SystemExit) -> int:
    """The exit code ``exit`` stands for; a message given to sys.exit is printed as one line."""
    if exit.code is None:
        return 0
    if isinstance(exit.code, int):
        return exit.code
    click.echo(f"Error: {clip(str(exit.code))}", err=True)
    return EXIT_FAILURE


def report_unexpected(error: Exception) -> int:
    """Print ``error: <Type>: <message>`` (the traceback too under MODAVERSE_DEBUG=1); exit code 1."""
    debug = os.environ.get(DEBUG_ENV, "") not in ("", "0")
    if debug:
        import traceback

        traceback.print_exception(error)
    hint = "" if debug else f" (rerun with {DEBUG_ENV}=1 for the traceback)"
    click.echo(f"error: {clip(f'{type(error).__name__}: {error}')}{hint}", err=True)
    return EXIT_FAILURE


def tolerant_streams() -> None:
    """Make stdout/stderr replace characters they cannot encode instead of raising UnicodeEncodeError."""
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper) and stream.errors == "strict":
            stream.reconfigure(errors="replace")


def silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush to a closed pipe stays quiet."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, io.UnsupportedOperation):
        pass  # stdout is no real file (an in-process caller's buffer): no interpreter flush to quiet
