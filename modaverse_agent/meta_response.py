"""The meta-response contract: parsing LLM output and validating it precisely against the zoo's schema.

A meta-response is what the LLM writes::

    {"text": "Here is your picture.",
     "invocations": [{"task": "text-to-image", "prompt": "a red apple on a table",
                      "inputs": [], "args": {"steps": 20}}]}

Its parts live in modules of their own, all re-exported here:

- :mod:`modaverse_agent.meta_schema`: the types (TaskSpec, Invocation, MetaResponse), the bounds on a
  meta-response and :func:`build_schema`, the one schema that drives validation, constrained decoding,
  LangChain tool calls and training-data checks;
- :mod:`modaverse_agent.meta_json`: :func:`extract_json`, finding the JSON object in raw output with
  strict, bounded decoding (its docstring lists the tolerances and the bounds);
- :mod:`modaverse_agent.meta_legacy`: the official release's ``Modality: [IMAGE] Prompt: ...`` format.

``parse_meta_response`` is strict; ``parse_lenient`` keeps every valid invocation and reports the invalid
ones, so one bad invocation never loses the rest. The parsers are total and linear-time on hostile output:
``extract_json``, ``parse_meta_response`` and ``parse_legacy`` raise MetaResponseError and nothing else,
the lenient forms never raise. A value a meta-response can't hold (see :mod:`modaverse_agent.meta_json`)
in an invocation drops only that invocation.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from .errors import MetaResponseError
from .meta_json import (
    EXCERPT_CHARS,
    MAX_DEPTH,
    MAX_INVOCATION_VALUES,
    MAX_JSON_STARTS,
    MAX_NUMBER_CHARS,
    MAX_RAW_CHARS,
    MAX_VALUES,
    decode_object,
    extract_json,
    first_problem,
)
from .meta_legacy import LEGACY_TASKS, MAX_LEGACY_ENTRIES, parse_legacy, parse_legacy_lenient
from .meta_schema import (
    EMPTY_ARGS,
    MAX_INPUTS,
    MAX_INVOCATIONS,
    MEDIA_REF_PATTERN,
    PROMPT_MAX_CHARS,
    TEXT_MAX_CHARS,
    UNAVAILABLE_KEY,
    Invocation,
    MetaResponse,
    TaskSpec,
    build_schema,
    max_invocations,
    task_schemas,
)
from .schema_utils import describe_error, first_error, json_path, short

__all__ = [
    "EMPTY_ARGS",
    "EXCERPT_CHARS",
    "LEGACY_TASKS",
    "MAX_DEPTH",
    "MAX_INPUTS",
    "MAX_INVOCATIONS",
    "MAX_INVOCATION_VALUES",
    "MAX_JSON_STARTS",
    "MAX_LEGACY_ENTRIES",
    "MAX_NUMBER_CHARS",
    "MAX_RAW_CHARS",
    "MAX_VALUES",
    "MEDIA_REF_PATTERN",
    "PROMPT_MAX_CHARS",
    "TEXT_MAX_CHARS",
    "UNAVAILABLE_KEY",
    "Invocation",
    "MetaResponse",
    "TaskSpec",
    "build_schema",
    "extract_json",
    "parse_legacy",
    "parse_legacy_lenient",
    "parse_lenient",
    "parse_meta_response",
    "validate_meta_response",
]


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
        obj = decode_object(raw)
    except MetaResponseError as e:
        return MetaResponse(text=""), [e]
    errors: list[MetaResponseError] = []
    view = dict(obj)  # what the envelope check sees: refused values become harmless placeholders
    for key, placeholder in (("text", ""), ("invocations", [])):
        if key in obj and not (key == "invocations" and isinstance(obj[key], list)):
            problem = first_problem(obj[key], [key], 2)
            if problem is not None:
                errors.append(MetaResponseError(problem[1], path=json_path(problem[0]), raw=raw))
                view[key] = placeholder
    items: list[Any] = obj["invocations"] if isinstance(obj.get("invocations"), list) else []
    cap = max_invocations(schema)
    if len(items) > cap:
        errors.append(
            MetaResponseError(f"has {len(items):,} items, over the limit of {cap}", path="invocations", raw=raw)
        )
        items = items[:cap]
    if isinstance(view.get("invocations"), list):
        view["invocations"] = [{} for _ in items]
    errors += _check_envelope(view, schema, raw)
    by_task, unavailable = task_schemas(schema), schema.get(UNAVAILABLE_KEY, {})
    invocations = []
    for i, item in enumerate(items):
        problem = first_problem(item, ["invocations", i], 3)
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
