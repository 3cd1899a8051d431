"""The meta-response contract: a JSON Schema generated from the zoo, parsing and precise validation.

A meta-response is what the LLM writes::

    {"text": "Here is your picture.",
     "invocations": [{"task": "text-to-image", "prompt": "a red apple on a table",
                      "inputs": [], "args": {"steps": 20}}]}

The one schema built here drives validation, constrained decoding, LangChain tool calls and
training-data checks. ``parse_meta_response`` is strict; ``parse_lenient`` keeps every valid
invocation and reports the invalid ones, so one bad invocation never loses the rest.

Tolerances of :func:`extract_json` (each tested):

1. surrounding whitespace, and a Markdown code fence (```json ... ```) around the object;
2. prose before or after the object: the first ``{`` that starts a complete JSON object is used (of
   the first MAX_JSON_STARTS places where one could start);
3. raw control characters (newlines, tabs) inside strings, which schema-constrained decoders emit;
4. a trailing end marker after the object (``###``, ``</s>``, ``<end_of_turn>``): covered by 2.

Nothing else is repaired: single quotes, trailing commas or a truncated object are errors.

The parsers are total and linear-time on hostile output: ``extract_json``, ``parse_meta_response`` and
``parse_legacy`` raise MetaResponseError and nothing else, the lenient forms never raise. A meta-response
must be strict JSON: ``NaN``/``Infinity``, numbers written with over MAX_NUMBER_CHARS characters (or
overflowing to infinity), arrays and objects nested deeper than MAX_DEPTH and strings holding a lone
surrogate (``"\\ud800"``, which UTF-8 can't hold) are refused, with an error naming their path; in an
invocation they drop only that invocation. Output over MAX_RAW_CHARS characters is refused whole, and
errors quote at most a short excerpt of what the model wrote.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import islice
from json.decoder import JSONArray, JSONObject
from json.scanner import py_make_scanner  # type: ignore[attr-defined]
from typing import Any

from .errors import MetaResponseError
from .schema_utils import describe_error, first_error, json_path, short

#: Bounds that make every meta-response finite, so constrained decoding always ends.
TEXT_MAX_CHARS = 2000
PROMPT_MAX_CHARS = 500
MAX_INVOCATIONS = 4
MAX_INPUTS = 4
MEDIA_REF_PATTERN = r"^(image|audio|video)_[1-9][0-9]?$"
#: Schema key listing the tasks left out for want of input media, each with the reason.
UNAVAILABLE_KEY = "x-unavailable-tasks"
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
EMPTY_ARGS: dict[str, Any] = {"type": "object", "properties": {}, "additionalProperties": False}


@dataclass(frozen=True)
class TaskSpec:
    """What the schema and the system prompt need to know about one served task."""

    task: str
    description: str
    modality: str
    args_schema: Mapping[str, Any] = field(default_factory=lambda: dict(EMPTY_ARGS))
    input_modalities: tuple[str, ...] = ()
    #: "generator" (prompt + inputs + args) or "function" (a plain tool: only ``args``, all required).
    kind: str = "generator"


@dataclass(frozen=True)
class Invocation:
    """One call of a task: the prompt in the generators' language, input media references, extra args."""

    task: str
    prompt: str
    inputs: tuple[str, ...] = ()
    args: Mapping[str, Any] = field(default_factory=dict)
    #: Where the model put it (``invocations[position]``), kept when earlier invocations were dropped.
    position: int | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict in the schema's shape (a function call has only ``task`` and ``args``)."""
        if not self.prompt and not self.inputs:
            return {"task": self.task, "args": dict(self.args)}
        return {"task": self.task, "prompt": self.prompt, "inputs": list(self.inputs), "args": dict(self.args)}


@dataclass(frozen=True)
class MetaResponse:
    """A parsed, validated meta-response."""

    text: str
    invocations: tuple[Invocation, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict in the schema's shape."""
        return {"text": self.text, "invocations": [i.to_dict() for i in self.invocations]}

    def to_json(self, **kwargs: Any) -> str:
        """Serialise to JSON text."""
        return json.dumps(self.to_dict(), ensure_ascii=False, **kwargs)

    @property
    def tasks(self) -> tuple[str, ...]:
        """The tasks invoked, in order."""
        return tuple(i.task for i in self.invocations)


def _readable_media(spec: TaskSpec, media_ids: Sequence[str]) -> list[str]:
    """The media ids ``spec`` can take as inputs: all of them, or those of its ``input_modalities``."""
    if not spec.input_modalities:
        return list(media_ids)
    return [m for m in media_ids if m.rsplit("_", 1)[0] in spec.input_modalities]


def _invocation_schema(spec: TaskSpec, media_ids: Sequence[str] | None) -> dict[str, Any]:
    if spec.kind == "function":
        return {
            "type": "object",
            "properties": {"task": {"const": spec.task}, "args": dict(spec.args_schema)},
            "required": ["task", "args"],
            "additionalProperties": False,
        }
    required = ["task", "prompt"]
    ref: dict[str, Any] = {"type": "string", "pattern": MEDIA_REF_PATTERN}
    inputs: dict[str, Any] = {"type": "array", "items": ref, "maxItems": MAX_INPUTS}
    if media_ids is not None:
        usable = _readable_media(spec, media_ids)
        if spec.input_modalities:  # at least one of the media it can read
            inputs["minItems"] = 1
            required.append("inputs")
        if usable:
            inputs["items"] = {"enum": usable}
        else:
            inputs["maxItems"] = 0
    return {
        "type": "object",
        "properties": {
            "task": {"const": spec.task},
            "prompt": {"type": "string", "minLength": 1, "maxLength": PROMPT_MAX_CHARS},
            "inputs": inputs,
            "args": dict(spec.args_schema),
        },
        "required": required,
        "additionalProperties": False,
    }


def _unavailable(spec: TaskSpec, media_ids: Sequence[str] | None) -> str | None:
    """Why ``spec`` can't be invoked on these media (None: it can)."""
    if media_ids is None or spec.kind == "function" or not spec.input_modalities:
        return None
    if _readable_media(spec, media_ids):
        return None
    wanted = " or ".join(spec.input_modalities)
    return f"task {spec.task!r} needs an input {wanted} and none was given (attach one)"


def build_schema(
    tasks: Iterable[TaskSpec], *, media_ids: Sequence[str] | None = None, min_invocations: int = 0
) -> dict[str, Any]:
    """The JSON Schema of a meta-response for these tasks.

    ``media_ids`` (e.g. ``["image_1", "audio_1"]``) narrows input references to the media of one
    request; None allows any well-formed reference. With ``media_ids`` given, a task that reads input
    media (``input_modalities``) must reference one of its modality, and a task whose modality is
    absent is left out (named with the reason under ``x-unavailable-tasks``, so the validator can
    say why), so constrained decoding can't choose an edit with nothing to edit.
    ``min_invocations`` forces tool use (LangChain's ``tool_choice``).
    """
    specs, unavailable = [], {}
    for spec in sorted(tasks, key=lambda s: s.task):
        why = _unavailable(spec, media_ids)
        if why is None:
            specs.append(spec)
        else:
            unavailable[spec.task] = why
    invocation: dict[str, Any]
    if specs:
        invocation = {"anyOf": [_invocation_schema(s, media_ids) for s in specs]}
        max_inv = MAX_INVOCATIONS
    else:
        invocation, max_inv = {"type": "object"}, 0
    invocations: dict[str, Any] = {"type": "array", "items": invocation, "maxItems": max_inv}
    if min_invocations and specs:
        invocations["minItems"] = min(min_invocations, max_inv)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "ModaVerse meta-response",
        "type": "object",
        "properties": {
            "text": {"type": "string", "maxLength": TEXT_MAX_CHARS},
            "invocations": invocations,
        },
        "required": ["text", "invocations"],
        "additionalProperties": False,
        **({UNAVAILABLE_KEY: unavailable} if unavailable else {}),
    }


def _task_schemas(schema: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    items = schema["properties"]["invocations"]["items"]
    return {s["properties"]["task"]["const"]: s for s in items.get("anyOf", [])}


def _max_invocations(schema: Mapping[str, Any]) -> int:
    """The schema's cap on invocations (its ``maxItems``), or MAX_INVOCATIONS when it states none."""
    cap = schema.get("properties", {}).get("invocations", {}).get("maxItems", MAX_INVOCATIONS)
    return cap if isinstance(cap, int) and not isinstance(cap, bool) else MAX_INVOCATIONS


# -- strict, bounded JSON decoding --------------------------------------------------------------------


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


def _oversized(raw: Any) -> MetaResponseError:
    if not isinstance(raw, str):
        return MetaResponseError(f"LLM output must be text, got {type(raw).__name__}")
    return MetaResponseError(
        f"the LLM output is {len(raw):,} characters, over the limit of {MAX_RAW_CHARS:,} "
        "(a meta-response is far shorter); ask for a shorter answer",
        raw=raw,
    )


def _decode(raw: Any) -> dict[str, Any]:
    """The first JSON object in ``raw``; values a meta-response can't hold come back as :class:`_Refused`.

    Linear time: at most MAX_JSON_STARTS places are tried, all together they may scan the text four
    times over, and only one of them may be decoded again by the bounded decoder.
    """
    if not isinstance(raw, str) or len(raw) > MAX_RAW_CHARS:
        raise _oversized(raw)
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


def _lone_surrogate(text: str) -> str | None:
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


def _first_problem(
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
        if len(where) > len(path) and isinstance(where[-1], str) and (bad := _lone_surrogate(where[-1])):
            return where, f"has a field name that {bad}"
        if isinstance(node, _Refused):
            return where, node.reason
        if isinstance(node, str):
            if bad := _lone_surrogate(node):
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
    value = _decode(raw)
    problem = _first_problem(value, [], 1, budget=MAX_VALUES)
    if problem is not None:
        raise MetaResponseError(problem[1], path=json_path(problem[0]), raw=raw)
    return value


def _invocation_from(obj: Mapping[str, Any], position: int) -> Invocation:
    return Invocation(
        task=obj["task"],
        prompt=obj.get("prompt", ""),
        inputs=tuple(obj.get("inputs", ())),
        args=dict(obj.get("args", {})),
        position=position,
    )


def _check_envelope(view: Mapping[str, Any], schema: Mapping[str, Any], raw: str) -> list[MetaResponseError]:
    """Errors of the top level; ``view``'s invocations are placeholders (each is checked on its own)."""
    from jsonschema import Draft202012Validator

    envelope = {**schema, "properties": {**schema["properties"]}}
    envelope["properties"]["invocations"] = {**schema["properties"]["invocations"], "items": {"type": "object"}}
    envelope["properties"]["invocations"].pop("maxItems", None)  # counted by parse_lenient
    return [
        MetaResponseError(describe_error(err), path=json_path(err.absolute_path), raw=raw)
        for err in Draft202012Validator(envelope).iter_errors(view)
    ]


def _check_invocation(
    i: int, obj: Mapping[str, Any], by_task: Mapping[str, Any], unavailable: Mapping[str, str], raw: str
) -> MetaResponseError | None:
    served = sorted(by_task)
    if "task" not in obj:
        return MetaResponseError(f"missing `task`; expected one of {served}", path=f"invocations[{i}]", raw=raw)
    task = obj["task"]
    if not isinstance(task, str):
        return MetaResponseError(
            f"{short(task)} is not a task name; expected one of {served}", path=f"invocations[{i}].task", raw=raw
        )
    if task not in by_task and task in unavailable:
        return MetaResponseError(unavailable[task], path=f"invocations[{i}].task", raw=raw)
    if task not in by_task:
        return MetaResponseError(
            f"unknown task {short(task)}; the zoo serves {served} (install a plugin that serves it, or pick another)",
            path=f"invocations[{i}].task",
            raw=raw,
        )
    err = first_error(obj, by_task[task])
    if err is None:
        return None
    where = json_path(["invocations", i, *err.absolute_path])
    if (
        list(err.absolute_path)[:1] == ["inputs"]
        and "inputs" in by_task[task]["properties"]
        and err.validator in ("enum", "maxItems")
    ):
        given = by_task[task]["properties"]["inputs"]["items"].get("enum", [])
        return MetaResponseError(
            f"refers to input media {short(obj['inputs'])} but the given media are {given or 'none'}",
            path=where,
            raw=raw,
        )
    if err.validator == "required":
        return MetaResponseError(err.message.replace("is a required property", "is missing"), path=where, raw=raw)
    return MetaResponseError(describe_error(err), path=where, raw=raw)


def parse_lenient(raw: str, schema: Mapping[str, Any]) -> tuple[MetaResponse, list[MetaResponseError]]:
    """Parse and validate, keeping every valid invocation; returns the response and the errors found.

    Never raises, whatever ``raw`` holds: each problem is a MetaResponseError naming its path, and a bad
    invocation drops only itself (``invocations[i]`` is always its position in the model's list).
    """
    try:
        obj = _decode(raw)
    except MetaResponseError as e:
        return MetaResponse(text=""), [e]
    errors: list[MetaResponseError] = []
    view = dict(obj)  # what the envelope check sees: refused values become harmless placeholders
    for key, placeholder in (("text", ""), ("invocations", [])):
        if key in obj and not (key == "invocations" and isinstance(obj[key], list)):
            problem = _first_problem(obj[key], [key], 2)
            if problem is not None:
                errors.append(MetaResponseError(problem[1], path=json_path(problem[0]), raw=raw))
                view[key] = placeholder
    items: list[Any] = obj["invocations"] if isinstance(obj.get("invocations"), list) else []
    cap = _max_invocations(schema)
    if len(items) > cap:
        errors.append(
            MetaResponseError(f"has {len(items):,} items, over the limit of {cap}", path="invocations", raw=raw)
        )
        items = items[:cap]
    if isinstance(view.get("invocations"), list):
        view["invocations"] = [{} for _ in items]
    errors += _check_envelope(view, schema, raw)
    by_task, unavailable = _task_schemas(schema), schema.get(UNAVAILABLE_KEY, {})
    invocations = []
    for i, item in enumerate(items):
        problem = _first_problem(item, ["invocations", i], 3)
        err: MetaResponseError | None
        if problem is not None:
            err = MetaResponseError(problem[1], path=json_path(problem[0]), raw=raw)
        elif not isinstance(item, dict):
            err = MetaResponseError(f"{short(item)} is not of type 'object'", path=f"invocations[{i}]", raw=raw)
        else:
            err = _check_invocation(i, item, by_task, unavailable, raw)
        if err is None:
            invocations.append(_invocation_from(item, i))
        else:
            errors.append(err)
    text = view["text"][:TEXT_MAX_CHARS] if isinstance(view.get("text"), str) else ""
    return MetaResponse(text=text, invocations=tuple(invocations)), errors


def parse_meta_response(raw: str, schema: Mapping[str, Any]) -> MetaResponse:
    """Parse and validate strictly; the first problem raises MetaResponseError naming its path."""
    response, errors = parse_lenient(raw, schema)
    if errors:
        raise errors[0]
    return response


def validate_meta_response(obj: Mapping[str, Any], schema: Mapping[str, Any]) -> MetaResponse:
    """Validate an already-parsed dict (e.g. a training sample) strictly."""
    try:
        raw = json.dumps(obj)
    except (ValueError, TypeError, RecursionError) as e:
        raise MetaResponseError(f"can't be written as JSON: {type(e).__name__}: {short(str(e))}") from e
    return parse_meta_response(raw, schema)


# -- the official ModaVerse release's format --------------------------------------------------------

#: The release's output tags mapped to our tasks; ``[TEXT]`` is a plain text reply.
LEGACY_TASKS = {"IMAGE": "text-to-image", "AUDIO": "text-to-audio", "VIDEO": "text-to-video"}
#: At most this many ``Modality:`` entries are read (text and media together).
MAX_LEGACY_ENTRIES = 4 * MAX_INVOCATIONS
_MODALITY = re.compile(r"Modality:\s*\[")
_SPACES = re.compile(r"\s*")


def _legacy_entry(body: str, start: int, end: int) -> tuple[str, str]:
    """``(TAG, prompt)`` of the entry in ``body[start:end]`` (just after ``Modality: [``)."""
    close = body.find("]", start, end)
    if close == -1:
        raise MetaResponseError(f"no `]` closes the tag {short(body[start:end], 40)}")
    tag = body[start:close].strip().upper()
    after = _SPACES.match(body, close + 1, end)
    at = after.end() if after else close + 1
    if not body.startswith("Prompt:", at, end):
        raise MetaResponseError(f"expected `Prompt:` after the tag, got {short(body[at:end], 40)}")
    stop = body.find("</s>", at + 7, end)
    return tag, body[at + 7 : stop if stop != -1 else end].strip()


def parse_legacy_lenient(
    raw: str, schema: Mapping[str, Any] | None = None
) -> tuple[MetaResponse, list[MetaResponseError]]:
    """Parse ``Modality: [IMAGE] Prompt: ... ###`` (the official release), keeping every valid entry.

    Each ``Modality:`` entry stands alone: an unknown tag or an empty prompt drops only that entry, with
    an error naming it (``Modality[2]``, counting from 0). At most MAX_LEGACY_ENTRIES entries are read and
    the schema's ``maxItems`` (MAX_INVOCATIONS without a schema) media entries kept, the JSON format's
    cap. Prompts are cut to PROMPT_MAX_CHARS (the release's model knows no limit). Never raises.
    """
    if not isinstance(raw, str) or len(raw) > MAX_RAW_CHARS:
        return MetaResponse(text=""), [_oversized(raw)]
    cut = raw.find("###")  # the release ends a turn at `###`; anything after is the next turn
    body = raw if cut == -1 else raw[:cut]
    matches = list(islice(_MODALITY.finditer(body), MAX_LEGACY_ENTRIES + 1))
    if not matches:
        message = f"not in the legacy format `Modality: [IMAGE|AUDIO|VIDEO|TEXT] Prompt: ...`: {short(raw, 80)}"
        return MetaResponse(text=""), [MetaResponseError(message, raw=raw)]
    errors: list[MetaResponseError] = []
    if len(matches) > MAX_LEGACY_ENTRIES:
        total = sum(1 for _ in _MODALITY.finditer(body))
        errors.append(
            MetaResponseError(
                f"{total:,} `Modality:` entries, over the limit of {MAX_LEGACY_ENTRIES}; only the first were read",
                raw=raw,
            )
        )
    ends = [m.start() for m in matches[1:]] + [len(body)]
    cap = _max_invocations(schema) if schema is not None else MAX_INVOCATIONS
    text_parts: list[str] = []
    invocations: list[Invocation] = []
    media = 0
    for k, (match, end) in enumerate(zip(matches[:MAX_LEGACY_ENTRIES], ends, strict=False)):
        try:
            tag, prompt = _legacy_entry(body, match.end(), end)
            if tag != "TEXT" and tag not in LEGACY_TASKS:
                raise MetaResponseError(
                    f"unknown modality tag {short(tag, 40)}; the release uses [TEXT], [IMAGE], [AUDIO], [VIDEO]"
                )
            if bad := _lone_surrogate(prompt):
                raise MetaResponseError(f"the prompt {bad}")
            if tag == "TEXT":
                text_parts.append(prompt)
                continue
            if not prompt:
                raise MetaResponseError(f"empty prompt after `[{tag}] Prompt:`")
        except MetaResponseError as e:
            errors.append(MetaResponseError(e.reason, path=f"Modality[{k}]", raw=raw))
            continue
        media += 1
        if media <= cap:
            invocations.append(Invocation(task=LEGACY_TASKS[tag], prompt=prompt[:PROMPT_MAX_CHARS], position=k))
    if media > cap:
        errors.append(
            MetaResponseError(
                f"{media} media entries ([IMAGE|AUDIO|VIDEO]), over the limit of {cap}; the first {cap} were kept",
                raw=raw,
            )
        )
    text = " ".join(text_parts)
    if len(text) > TEXT_MAX_CHARS:
        errors.append(
            MetaResponseError(f"is {len(text):,} characters, over the limit of {TEXT_MAX_CHARS}", path="text", raw=raw)
        )
    return MetaResponse(text=text[:TEXT_MAX_CHARS], invocations=tuple(invocations)), errors


def parse_legacy(raw: str) -> MetaResponse:
    """Parse ``Modality: [IMAGE] Prompt: ... ###`` strictly: the first problem raises MetaResponseError."""
    response, errors = parse_legacy_lenient(raw)
    if errors:
        raise errors[0]
    return response
