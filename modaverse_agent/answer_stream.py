"""Read the answer text out of a meta-response while it is still being decoded.

A meta-response is ``{"text": "...", "invocations": [...]}``; the person waiting wants the characters of
``text`` as soon as they are decoded, not when the whole JSON is done. :class:`AnswerTextReader` is fed
raw pieces (any split, even inside an escape) and returns the newly decoded characters of the top-level
``"text"`` string each time: JSON escapes are undone (``\\n``, ``\\"``, ``\\uXXXX`` with surrogate pairs),
and nothing outside that string is ever returned. Output that is not JSON (the release's legacy
``Modality:`` lines) yields no text here; the caller takes the parsed text at the end.
"""

from __future__ import annotations

from collections.abc import Sequence

_SIMPLE = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


class AnswerTextReader:
    """An incremental reader of the top-level ``"text"`` field of a JSON meta-response."""

    def __init__(self, field: str = "text") -> None:
        self.field = field
        self.stack: list[str] = []  # open containers, "{" or "["
        self.in_string = False
        self.escape = ""  # the escape sequence read so far ("\\" or "\\u12")
        self.is_key = False  # the string being read is an object key
        self.expect_key = False  # the next string is a key (just after "{" or "," inside an object)
        self.key = ""  # the last key read in the top-level object
        self.buffer: list[str] = []  # characters of the current key
        self.streaming = False  # inside the value string of the field
        self.done = False  # the field's value has been read completely
        self.high = ""  # a high surrogate waiting for its low half
        #: The whole text read so far.
        self.text = ""

    def feed(self, piece: str) -> str:
        """Consume ``piece`` of raw output; return the answer-text characters it completed."""
        out: list[str] = []
        for ch in piece:
            if self.in_string:
                self._string_char(ch, out)
            elif ch == '"':
                self.in_string = True
                self.is_key, self.expect_key = self.expect_key, False
                self.buffer = []
                top = len(self.stack) == 1
                self.streaming = not self.is_key and top and self.key == self.field and not self.done
            elif ch in "{[":
                self.stack.append(ch)
                self.expect_key = ch == "{"
            elif ch in "}]":
                if self.stack:
                    self.stack.pop()
                self.expect_key = False
            elif ch == ",":
                self.expect_key = bool(self.stack) and self.stack[-1] == "{"
        text = "".join(out)
        self.text += text
        return text

    def _string_char(self, ch: str, out: list[str]) -> None:
        if self.escape:
            self.escape += ch
            decoded = self._finish_escape()
            if decoded is not None:
                self.escape = ""
                self._emit(decoded, out)
            return
        if ch == "\\":
            self.escape = "\\"
        elif ch == '"':
            self.in_string = False
            if self.is_key and len(self.stack) == 1:
                self.key = "".join(self.buffer)
            if self.streaming:
                self.streaming, self.done = False, True
                if self.high:  # a lone high surrogate at the end: replace it
                    out.append("\ufffd")
                    self.high = ""
        else:
            self._emit(ch, out)

    def _finish_escape(self) -> str | None:
        """The character of a complete escape, or None while it is still incomplete."""
        kind = self.escape[1]
        if kind != "u":
            return _SIMPLE.get(kind, kind)
        if len(self.escape) < 6:
            return None
        try:
            return chr(int(self.escape[2:6], 16))
        except ValueError:
            return "\ufffd"

    def _emit(self, ch: str, out: list[str]) -> None:
        if self.is_key:
            self.buffer.append(ch)
            return
        if not self.streaming:
            return
        code = ord(ch)
        if 0xD800 <= code <= 0xDBFF:  # a high surrogate: wait for its pair
            if self.high:
                out.append("\ufffd")
            self.high = ch
            return
        if 0xDC00 <= code <= 0xDFFF:
            if self.high:
                out.append(chr(0x10000 + ((ord(self.high) - 0xD800) << 10) + (code - 0xDC00)))
                self.high = ""
            else:
                out.append("\ufffd")
            return
        if self.high:
            out.append("\ufffd")
            self.high = ""
        out.append(ch)


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """``text`` cut before the first occurrence of any of ``stop``, and whether a cut happened."""
    hits = [i for i in (text.find(s) for s in stop if s) if i >= 0]
    return (text[: min(hits)], True) if hits else (text, False)


class StopHoldBack:
    """Streamed text with stop strings applied: text that could begin a stop string is held back until
    it is known not to, and nothing from the first stop string on is ever shown."""

    def __init__(self, stop: Sequence[str] = ()) -> None:
        self.stop = [s for s in stop if s]
        self.hold = max((len(s) for s in self.stop), default=1) - 1
        self.seen = ""  # everything fed
        #: Everything shown so far.
        self.text = ""
        self.stopped = False

    def feed(self, delta: str) -> str:
        """Take new text; return the part that can be shown now."""
        if self.stopped or not delta:
            return ""
        self.seen += delta
        cut, self.stopped = cut_at_stop(self.seen, self.stop)
        upto = len(cut) if self.stopped else max(len(self.text), len(self.seen) - self.hold)
        out = self.seen[len(self.text) : upto]
        self.text += out
        return out
