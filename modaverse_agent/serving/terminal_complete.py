"""Tab completion of paths for the terminal chat's ``/attach``, ``/save`` and ``/load``.

Those commands split their argument as a shell does (:func:`shlex.split`), so a path with spaces must be
quoted. :class:`QuotedPathCompleter` completes the last word of the argument (quoted or not) with
prompt_toolkit's path completer and inserts the result quoted when it needs quotes, so what Tab writes
is read back as the same path.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable

from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document


def last_word(text: str) -> tuple[int, str]:
    """Where the last shell word of ``text`` starts and its value with quotes and escapes removed (an
    unclosed quote counts as closed at the end); ``(len(text), "")`` when ``text`` ends in a space."""
    start, value, in_word, quote = len(text), "", False, ""
    i = 0
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == quote:
                quote = ""
            elif ch == "\\" and quote == '"' and i + 1 < len(text) and text[i + 1] in '"\\$`':
                i += 1
                value += text[i]
            else:
                value += ch
        elif ch.isspace():
            in_word = False
        else:
            if not in_word:
                start, value, in_word = i, "", True
            if ch in "'\"":
                quote = ch
            elif ch == "\\" and i + 1 < len(text):
                i += 1
                value += text[i]
            else:
                value += ch
        i += 1
    return (start, value) if in_word else (len(text), "")


def quoted(path: str) -> str:
    """``path`` as one shell word (quoted when it holds spaces, quotes or other special characters)."""
    return shlex.quote(path) if path else path


class QuotedPathCompleter(Completer):
    """Completes the argument's last word with ``paths`` (a PathCompleter); quotes what needs quotes."""

    def __init__(self, paths: Completer) -> None:
        self.paths = paths

    def get_completions(self, document: Document, complete_event: CompleteEvent) -> Iterable[Completion]:
        """The completions of the last word, each replacing the whole word (quotes included)."""
        text = document.text_before_cursor
        start, value = last_word(text)
        for c in self.paths.get_completions(Document(value, len(value)), complete_event):
            full = value[: len(value) + c.start_position] + c.text
            yield Completion(quoted(full), start_position=start - len(text), display=c.display)
