"""The meta-response's types and its JSON Schema, generated from the tasks the zoo serves.

A meta-response is what the LLM writes::

    {"text": "Here is your picture.",
     "invocations": [{"task": "text-to-image", "prompt": "a red apple on a table",
                      "inputs": [], "args": {"steps": 20}}]}

The one schema built here drives validation, constrained decoding, LangChain tool calls and
training-data checks. Parsing and validation live in :mod:`modaverse_agent.meta_response`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

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
    tasks: Iterable[TaskSpec],
    *,
    media_ids: Sequence[str] | None = None,
    min_invocations: int = 0,
    text: bool = True,
) -> dict[str, Any]:
    """The JSON Schema of a meta-response for these tasks.

    ``media_ids`` (e.g. ``["image_1", "audio_1"]``) narrows input references to the media of one
    request; None allows any well-formed reference. With ``media_ids`` given, a task that reads input
    media (``input_modalities``) must reference one of its modality, and a task whose modality is
    absent is left out (named with the reason under ``x-unavailable-tasks``, so the validator can
    say why), so constrained decoding can't choose an edit with nothing to edit.
    ``min_invocations`` forces tool use (LangChain's ``tool_choice``); ``text=False`` asks for the calls
    alone (an empty ``text``), as a forced call is answered: text written before a call the model was made
    to make speaks of what it wanted to do instead ("Here's the image." beside a forced speech call).
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
            "text": {"type": "string", "maxLength": TEXT_MAX_CHARS if text else 0},
            "invocations": invocations,
        },
        "required": ["text", "invocations"],
        "additionalProperties": False,
        **({UNAVAILABLE_KEY: unavailable} if unavailable else {}),
    }


def task_schemas(schema: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The invocation schema of each task a :func:`build_schema` schema serves, by task name."""
    items = schema["properties"]["invocations"]["items"]
    return {s["properties"]["task"]["const"]: s for s in items.get("anyOf", [])}


def max_invocations(schema: Mapping[str, Any]) -> int:
    """The schema's cap on invocations (its ``maxItems``), or MAX_INVOCATIONS when it states none."""
    cap = schema.get("properties", {}).get("invocations", {}).get("maxItems", MAX_INVOCATIONS)
    return cap if isinstance(cap, int) and not isinstance(cap, bool) else MAX_INVOCATIONS
