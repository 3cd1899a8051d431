"""Finding the JSON object in LLM output, decoded strictly and within bounds.

Tolerances of :func:`extract_json` (each tested):

1. surrounding whitespace, and a Markdown code fence (```json ... ```) around the object;
2. prose before or after the object: the first ``{`` that starts a complete JSON object is used (of
   the first MAX_JSON_STARTS places where one could start);
3. raw control characters (newlines, tabs) inside strings, which schema-constrained decoders emit;
4. a trailing end marker after the object (``###``, ``</s>``, ``<end_of_turn>``): covered by 2.

Nothing else is repaired: single quotes, trailing commas or a truncated object are errors.

Decoding is total and linear-time on hostile output: it raises MetaResponseError and nothing else. A
meta-response must be strict JSON: ``NaN``/``Infinity``, numbers written with over MAX_NUMBER_CHARS
characters (or overflowing to infinity), arrays and objects nested deeper than MAX_DEPTH and strings
holding a lone surrogate (``"\\ud800"``, which UTF-8 can't hold) are refused, with an error naming their
path. Output over MAX_RAW_CHARS characters is refused whole, and errors quote at most a short excerpt
of what the model wrote.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from json.decoder import JSONArray, JSONObject
from json.scanner import py_make_scanner  # type: ignore[attr-defined]
from typing import Any

from .errors import MetaResponseError
from .schema_utils import json_path, short

#: Bounds on raw model output, so hostile text can't exhaust time, memory or the stack (each error says
#: which was hit): its length, the nesting of arrays and objects, the length of a number, the places
#: tried as the start of the JSON object, the values in one invocation and in all, the excerpt errors quote.
MAX_RAW_CHARS = 2_000_000
MAX_DEPTH = 32
MAX_NUMBER_CHARS = 100
MAX_JSON_STARTS = 64
MAX_INVOCATION_VALUES = 10_000
MAX_VALUES = 5 * MAX_INVOCATION_VALUES
EXCERPT_CHARS = 120


@dataclass(frozen=True)
class _Refused:
    """Stands in for a JSON value a meta-response can't hold, so the rest of the document still parses."""

    reason: str


def _parse_int(text: str) -> int | _Refused:
    if len(text) <= MAX_NUMBER_CHARS:
        return int(text)
    return _Refused(f"is a number of {len(text):,} characters, over the limit of {MAX_NUMBER_CHARS}")


def _parse_float(text: str) -> float | _Refused:
    if len(text) > MAX_NUMBER_CHARS:
        return _Refused(f"is a number of {len(text):,} characters, over the limit of {MAX_NUMBER_CHARS}")
    value = float(text)
    if not math.isfinite(value):
        return _Refused(f"{text} is too large to be a number (it overflows to infinity); write a smaller one")
    return value


def _parse_constant(name: str) -> _Refused:
    return _Refused(f"{name} is not allowed: a meta-response must be strict JSON (write a finite number)")


_HOOKS: dict[str, Any] = {
    "strict": False,  # raw control characters inside strings (tolerance 3)
    "parse_int": _parse_int,
    "parse_float": _parse_float,
    "parse_constant": _parse_constant,
}
_DECODER = json.JSONDecoder(**_HOOKS)


class _BoundedDecoder(json.JSONDecoder):
    """Pure-Python decoding that refuses arrays and objects nested deeper than MAX_DEPTH without recursing.

    Only used when the C decoder hits the recursion limit: the too-deep subtree becomes a :class:`_Refused`
    (its brackets are counted to find its end, not validated: it is refused anyway), so its siblings parse.
    """

    def __init__(self) -> None:
        super().__init__(**_HOOKS)
        self._depth = 0
        self.parse_object = self._bounded(JSONObject)
        self.parse_array = self._bounded(JSONArray)
        self.scan_once = py_make_scanner(self)

    def _bounded(self, parse: Callable[..., tuple[Any, int]]) -> Callable[..., tuple[Any, int]]:
        def nested(s_and_end: tuple[str, int], *args: Any) -> tuple[Any, int]:
            if self._depth >= MAX_DEPTH:
                return _Refused(_TOO_DEEP), _skip_nested(*s_and_end)
            self._depth += 1
            try:
                return parse(s_and_end, *args)
            finally:
                self._depth -= 1

        return nested


_TOO_DEEP = f"is nested deeper than {MAX_DEPTH} levels, the limit"
# a run of anything but brackets (strings whole, so brackets inside them don't count), or a run of brackets
_SKIP = re.compile(r'(?:[^\[\]{}"]|"[^"\\]*(?:\\.[^"\\]*)*")+|[\[{]+|[\]}]+', re.S)


def _skip_nested(s: str, end: int) -> int:
    """The index just past the bracket that closes the one opened just before ``end``."""
    depth, pos = 1, end
    while (m := _SKIP.match(s, pos)) is not None:
        token, pos = m.group(), m.end()
        if token[0] in "[{":
            depth += len(token)
        elif token[0] in "]}":
            if len(token) >= depth:
                return m.start() + depth
            depth -= len(token)
    raise json.JSONDecodeError("Unterminated array or object", s, end - 1)


def _unfence(text: str) -> str:
    """The inside of the first closed Markdown code fence, or ``text`` when it has none (linear time)."""
    opening = text.find("```")
    if opening == -1:
        return text
    body = opening + 3
    if text.startswith(("json", "JSON"), body):
        body += 4
    closing = text.find("```", body)
    return text if closing == -1 else text[body:closing]


_RECURSION = "nested too deep for the call stack"


def _attempt(decoder: json.JSONDecoder, text: str, start: int) -> tuple[Any, str, int]:
    """``(object, "", 0)``, or ``(None, why it failed, how many characters it scanned)``."""
    try:
        return decoder.raw_decode(text, start)[0], "", 0
    except json.JSONDecodeError as e:
        return None, f"{e.msg} at char {e.pos}", e.pos - start
    except RecursionError:
        return None, _RECURSION, 0


#: Where a JSON object can start: ``{`` then optional whitespace and a key or ``}``.
_OBJECT_START = re.compile(r'\{\s*["}]')


def oversized_error(raw: Any) -> MetaResponseError:
    """The error for output that is no text, or longer than MAX_RAW_CHARS (it is refused whole)."""
    if not isinstance(raw, str):
        return MetaResponseError(f"LLM output must be text, got {type(raw).__name__}")
    return MetaResponseError(
        f"the LLM output is {len(raw):,} characters, over the limit of {MAX_RAW_CHARS:,} "
        "(a meta-response is far shorter); ask for a shorter answer",
        raw=raw,
    )


def decode_object(raw: Any) -> dict[str, Any]:
    """The first JSON object in ``raw``; values a meta-response can't hold come back as refused placeholders.

    :func:`first_problem` finds those placeholders (and what else a meta-response can't hold) and says why.

    Linear time: at most MAX_JSON_STARTS places are tried, all together they may scan the text four
    times over, and only one of them may be decoded again by the bounded decoder.
    """
    if not isinstance(raw, str) or len(raw) > MAX_RAW_CHARS:
        raise oversized_error(raw)
    text = _unfence(raw)
    budget, fallbacks, tried, why = 4 * len(text) + 4096, 1, 0, ""
    for match in _OBJECT_START.finditer(text):
        if tried == MAX_JSON_STARTS or budget <= 0:
            why += f"; gave up after trying {tried} places that start an object"
            break
        tried, start = tried + 1, match.start()
        value, failure, scanned = _attempt(_DECODER, text, start)
        if failure == _RECURSION and fallbacks:  # deeper than the C decoder goes: the bounded one, once
            fallbacks -= 1
            value, failure, scanned = _attempt(_BoundedDecoder(), text, start)
        if not failure:
            return value
        budget -= scanned
        why = why or failure
    detail = f" ({why})" if why else ""
    raise MetaResponseError(f"no JSON object found in the LLM output{detail}: {short(raw, EXCERPT_CHARS)}", raw=raw)


def lone_surrogate(text: str) -> str | None:
    """Why ``text`` can't be written as UTF-8 (it holds a lone surrogate such as ``"\\ud800"``), or None."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        return (
            f"holds the lone surrogate {text[e.start]!r} at character {e.start}, which is not a character and "
            "can't be written as UTF-8 (escape a character outside the BMP as a full surrogate pair)"
        )
    return None


_PLAIN = frozenset({int, float, bool, type(None)})


def first_problem(
    value: Any, path: list[Any], depth: int, budget: int = MAX_INVOCATION_VALUES
) -> tuple[list[Any], str] | None:
    """Where and why ``value`` can't be part of a meta-response, or None when it can.

    Finds, in document order: a refused value (NaN, a huge number, a too-deep subtree), a lone surrogate
    in a string or a key, an array or object deeper than MAX_DEPTH (``depth`` is that of ``value``), or
    more than ``budget`` values in all. Iterative: no recursion, whatever the nesting.
    """
    stack: list[tuple[Any, list[Any], int]] = [(value, path, depth)]
    seen, too_many = 1, (path, f"{'' if path else 'the object '}holds more than {budget:,} values, over the limit")
    while stack:
        node, where, level = stack.pop()
        if len(where) > len(path) and isinstance(where[-1], str) and (bad := lone_surrogate(where[-1])):
            return where, f"has a field name that {bad}"
        if isinstance(node, _Refused):
            return where, node.reason
        if isinstance(node, str):
            if bad := lone_surrogate(node):
                return where, bad
        elif isinstance(node, dict | list):
            if level > MAX_DEPTH:
                return where, _TOO_DEEP
            seen += len(node)
            if seen > budget:
                return too_many
            if isinstance(node, list) and all(type(child) in _PLAIN for child in node):
                continue  # numbers, booleans and nulls: nothing to look into (the common long array)
            children = node.items() if isinstance(node, dict) else enumerate(node)
            stack.extend((child, [*where, key], level + 1) for key, child in reversed(list(children)))
    return None


def extract_json(raw: str) -> Any:
    """Find the JSON object in LLM output (see the module docstring for the tolerances and the bounds).

    Whatever ``raw`` is, the only exception is MetaResponseError, naming the path of a refused value.
    """
    value = decode_object(raw)
    problem = first_problem(value, [], 1, budget=MAX_VALUES)
    if problem is not None:
        raise MetaResponseError(problem[1], path=json_path(problem[0]), raw=raw)
    return value
