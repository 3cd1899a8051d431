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
2. prose before or after the object: the first ``{`` that starts a complete JSON object is used;
3. raw control characters (newlines, tabs) inside strings, which schema-constrained decoders emit;
4. a trailing end marker after the object (``###``, ``</s>``, ``<end_of_turn>``): covered by 2.

Nothing else is repaired: single quotes, trailing commas or a truncated object are errors.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import MetaResponseError
from .schema_utils import describe_error, first_error, json_path

#: Bounds that make every meta-response finite, so constrained decoding always ends.
TEXT_MAX_CHARS = 2000
PROMPT_MAX_CHARS = 500
MAX_INVOCATIONS = 4
MAX_INPUTS = 4
MEDIA_REF_PATTERN = r"^(image|audio|video)_[1-9][0-9]?$"
#: Schema key listing the tasks left out for want of input media, each with the reason.
UNAVAILABLE_KEY = "x-unavailable-tasks"
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


_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.S)


def extract_json(raw: str) -> Any:
    """Find the JSON object in LLM output (see the module docstring for the tolerances)."""
    if not isinstance(raw, str):
        raise MetaResponseError(f"LLM output must be text, got {type(raw).__name__}")
    text = raw.strip()
    fence = _FENCE.search(text)
    if fence:
        text = fence.group(1).strip()
    decoder = json.JSONDecoder(strict=False)
    start = text.find("{")
    last_error: json.JSONDecodeError | None = None
    while start != -1:
        try:
            value, _ = decoder.raw_decode(text, start)
            return value
        except json.JSONDecodeError as e:
            last_error = last_error or e
            start = text.find("{", start + 1)
    preview = raw if len(raw) <= 200 else raw[:200] + "..."
    detail = f" ({last_error.msg} at char {last_error.pos})" if last_error else ""
    raise MetaResponseError(f"no JSON object found in the LLM output{detail}: {preview!r}", raw=raw)


def _invocation_from(obj: Mapping[str, Any]) -> Invocation:
    return Invocation(
        task=obj["task"],
        prompt=obj.get("prompt", ""),
        inputs=tuple(obj.get("inputs", ())),
        args=dict(obj.get("args", {})),
    )


def _check_envelope(obj: Any, schema: Mapping[str, Any], raw: str) -> list[MetaResponseError]:
    if not isinstance(obj, dict):
        return [MetaResponseError(f"the meta-response must be a JSON object, got {type(obj).__name__}", raw=raw)]
    envelope = {**schema, "properties": {**schema["properties"]}}
    envelope["properties"]["invocations"] = {**schema["properties"]["invocations"], "items": {"type": "object"}}
    errors = []
    from jsonschema import Draft202012Validator

    for err in Draft202012Validator(envelope).iter_errors(obj):
        errors.append(MetaResponseError(describe_error(err), path=json_path(err.absolute_path), raw=raw))
    return errors


def _check_invocation(
    i: int, obj: Mapping[str, Any], by_task: Mapping[str, Any], unavailable: Mapping[str, str], raw: str
) -> MetaResponseError | None:
    task = obj.get("task")
    if task not in by_task and task in unavailable:
        return MetaResponseError(unavailable[task], path=f"invocations[{i}].task", raw=raw)
    if task not in by_task:
        served = sorted(by_task)
        if task is None:
            return MetaResponseError(f"missing `task`; expected one of {served}", path=f"invocations[{i}]", raw=raw)
        return MetaResponseError(
            f"unknown task {task!r}; the zoo serves {served} (install a plugin that serves it, or pick another)",
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
            f"refers to input media {obj['inputs']!r} but the given media are {given or 'none'}",
            path=where,
            raw=raw,
        )
    if err.validator == "required":
        return MetaResponseError(err.message.replace("is a required property", "is missing"), path=where, raw=raw)
    return MetaResponseError(describe_error(err), path=where, raw=raw)


def parse_lenient(raw: str, schema: Mapping[str, Any]) -> tuple[MetaResponse, list[MetaResponseError]]:
    """Parse and validate, keeping every valid invocation; returns the response and the errors found."""
    try:
        obj = extract_json(raw)
    except MetaResponseError as e:
        return MetaResponse(text=""), [e]
    errors = _check_envelope(obj, schema, raw)
    if not isinstance(obj, dict):
        return MetaResponse(text=""), errors
    text = obj.get("text") if isinstance(obj.get("text"), str) else ""
    by_task = _task_schemas(schema)
    invocations = []
    raw_invocations = obj.get("invocations")
    for i, item in enumerate(raw_invocations if isinstance(raw_invocations, list) else []):
        if not isinstance(item, dict):
            continue  # already reported by the envelope check
        if i >= MAX_INVOCATIONS:
            break  # reported as maxItems by the envelope check
        err = _check_invocation(i, item, by_task, schema.get(UNAVAILABLE_KEY, {}), raw)
        if err is None:
            invocations.append(_invocation_from(item))
        else:
            errors.append(err)
    return MetaResponse(text=text[:TEXT_MAX_CHARS], invocations=tuple(invocations)), errors


def parse_meta_response(raw: str, schema: Mapping[str, Any]) -> MetaResponse:
    """Parse and validate strictly; the first problem raises MetaResponseError naming its path."""
    response, errors = parse_lenient(raw, schema)
    if errors:
        raise errors[0]
    return response


def validate_meta_response(obj: Mapping[str, Any], schema: Mapping[str, Any]) -> MetaResponse:
    """Validate an already-parsed dict (e.g. a training sample) strictly."""
    return parse_meta_response(json.dumps(obj), schema)


# -- the official ModaVerse release's format --------------------------------------------------------

#: The release's output tags mapped to our tasks; ``[TEXT]`` is a plain text reply.
LEGACY_TASKS = {"IMAGE": "text-to-image", "AUDIO": "text-to-audio", "VIDEO": "text-to-video"}
_LEGACY = re.compile(
    r"Modality:\s*\[(?P<tag>[A-Za-z]+)\]\s*Prompt:\s*(?P<prompt>.*?)\s*(?=###|</s>|Modality:\s*\[|$)", re.S
)


def parse_legacy(raw: str) -> MetaResponse:
    """Parse ``Modality: [IMAGE] Prompt: ... ###`` (the official release) into a MetaResponse."""
    text_parts: list[str] = []
    invocations: list[Invocation] = []
    body = raw.split("###", 1)[0]  # the release ends a turn at `###`; anything after is the next turn
    matches = list(_LEGACY.finditer(body))
    if not matches:
        raise MetaResponseError(
            f"not in the legacy format `Modality: [IMAGE|AUDIO|VIDEO|TEXT] Prompt: ...`: {raw[:200]!r}", raw=raw
        )
    for m in matches:
        tag, prompt = m.group("tag").upper(), m.group("prompt").strip()
        if tag == "TEXT":
            text_parts.append(prompt)
        elif tag in LEGACY_TASKS:
            if not prompt:
                raise MetaResponseError("empty prompt after `Prompt:`", path=f"[{tag}]", raw=raw)
            invocations.append(Invocation(task=LEGACY_TASKS[tag], prompt=prompt[:PROMPT_MAX_CHARS]))
        else:
            raise MetaResponseError(
                f"unknown modality tag [{tag}]; the release uses [TEXT], [IMAGE], [AUDIO], [VIDEO]", raw=raw
            )
    return MetaResponse(text=" ".join(text_parts), invocations=tuple(invocations))
