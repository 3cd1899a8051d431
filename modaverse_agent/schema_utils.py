"""Small jsonschema helpers shared by the zoo, generators and the meta-response contract."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import jsonschema
from jsonschema import Draft202012Validator

from .errors import GeneratorError

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,39}")
#: Longest path :func:`json_path` returns (longer ones keep their start and end).
PATH_MAX_CHARS = 120
#: Longest message :func:`describe_error` returns.
MESSAGE_MAX_CHARS = 200


def json_path(parts: Iterable[Any]) -> str:
    """Render a jsonschema error path as ``invocations[0].prompt``.

    A field whose name is not a short plain word is quoted and cut, ``args['a b']``, and a path over
    PATH_MAX_CHARS keeps its start and end, so a path never echoes a huge or unprintable name.
    """
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        elif isinstance(p, str) and _NAME.fullmatch(p):
            out += f".{p}" if out else p
        else:
            out += f"[{short(p, 40)}]"
    return out if len(out) <= PATH_MAX_CHARS else f"{out[: PATH_MAX_CHARS // 2]}...{out[-PATH_MAX_CHARS // 2 :]}"


def first_error(instance: Any, schema: dict[str, Any]) -> jsonschema.ValidationError | None:
    """The most relevant validation error, or None when valid."""
    return jsonschema.exceptions.best_match(Draft202012Validator(schema).iter_errors(instance))


def short(value: Any, limit: int = 80) -> str:
    """A value's repr cut to ``limit`` characters (errors never echo a 1 MB string)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} chars)"


def describe_error(err: jsonschema.ValidationError) -> str:
    """A one-line message for a validation error that never echoes huge values."""
    v = err.validator
    if v == "maxLength":
        return f"is {len(err.instance)} characters, over the limit of {err.validator_value}"
    if v == "minLength":
        return f"is {len(err.instance)} characters, under the minimum of {err.validator_value}"
    if v == "maxItems":
        return f"has {len(err.instance)} items, over the limit of {err.validator_value}"
    if v == "additionalProperties":
        return _cut(err.message.replace("Additional properties are not allowed", "unexpected field(s)"))
    if v in ("enum", "const"):
        allowed = err.validator_value if v == "enum" else [err.validator_value]
        return f"{short(err.instance)} is not one of {allowed}"
    if v == "type":
        return f"{short(err.instance)} is not of type {err.validator_value!r}"
    return _cut(err.message)


def _cut(message: str) -> str:
    return message if len(message) <= MESSAGE_MAX_CHARS else message[:MESSAGE_MAX_CHARS] + "..."


def validate_instance(instance: Any, schema: dict[str, Any], *, what: str) -> None:
    """Raise GeneratorError naming the path when ``instance`` breaks ``schema``."""
    err = first_error(instance, schema)
    if err is not None:
        where = json_path(err.absolute_path)
        raise GeneratorError(f"{what}: {where + ' ' if where else ''}{describe_error(err)}")
