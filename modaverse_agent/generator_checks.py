"""What makes a generator well defined: checked when its class is defined and again when it is registered.

Every check returns a list of problems (one line each) rather than raising, so a badly defined generator
is refused with every problem listed at once.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from typing import Any

#: Output modalities a generator may declare.
OUTPUT_MODALITIES = ("image", "audio", "video", "text")
#: The output modality of each task the core knows (the paper's and the first-party plugins'). Tasks are
#: free-form strings: a plugin may add any other, and the first generator registered for it sets its modality.
KNOWN_TASK_MODALITIES: dict[str, str] = {
    "text-to-image": "image",
    "text-to-audio": "audio",
    "text-to-speech": "audio",
    "text-to-video": "video",
    "image-editing": "image",
}
#: Most schema problems listed for one schema (the rest are counted).
MAX_SCHEMA_PROBLEMS = 8
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_JSON_TYPES = "array, boolean, integer, null, number, object, string"


def schema_problems(schema: Any, what: str) -> list[str]:
    """Every way ``schema`` is not a valid JSON Schema (draft 2020-12) of an object, each with its JSON path.

    A ``pattern`` that is not a regular expression is caught too; ``what`` (``args_schema``) starts each path.
    """
    if not isinstance(schema, Mapping):
        return [f"{what} must be a JSON Schema object (a dict), not {type(schema).__name__}"]
    try:
        text = json.dumps(schema, allow_nan=False, sort_keys=True)
    except (TypeError, ValueError, RecursionError) as e:
        return [f"{what} must hold only JSON values (finite numbers, strings, lists, dicts): {e}"]
    problems = list(_meta_problems(text, what))
    if len(problems) > MAX_SCHEMA_PROBLEMS:
        problems = [*problems[:MAX_SCHEMA_PROBLEMS], f"{what}: {len(problems) - MAX_SCHEMA_PROBLEMS} more problem(s)"]
    if schema.get("type") != "object":
        problems.append(f"{what} must be a JSON Schema with type 'object'")
    problems += _unsatisfiable_required(schema, what)
    return problems


@functools.lru_cache(maxsize=512)
def _meta_problems(text: str, what: str) -> tuple[str, ...]:
    """The meta-schema errors of the schema whose canonical JSON is ``text`` (cached: zoos are built often)."""
    from jsonschema import Draft202012Validator

    from .schema_utils import describe_error, json_path, short

    meta = Draft202012Validator(Draft202012Validator.META_SCHEMA, format_checker=Draft202012Validator.FORMAT_CHECKER)
    problems = []
    for err in sorted(meta.iter_errors(json.loads(text)), key=lambda e: [str(p) for p in e.absolute_path]):
        where = json_path([what, *err.absolute_path])
        if err.validator == "anyOf" and err.absolute_path and err.absolute_path[-1] == "type":
            problems.append(f"{where}: {short(err.instance)} is not a JSON Schema type (use one of {_JSON_TYPES})")
        elif err.validator == "format" and err.validator_value == "regex":
            problems.append(f"{where}: {short(err.instance)} is not a valid regular expression")
        else:
            problems.append(f"{where}: {describe_error(err)}")
    return tuple(problems)


def _unsatisfiable_required(schema: Mapping[str, Any], what: str) -> list[str]:
    """A required argument that no object may hold: not among ``properties`` while ``additionalProperties`` is false."""
    required, props = schema.get("required"), schema.get("properties", {})
    if schema.get("additionalProperties") is not False or not isinstance(required, list) or not isinstance(props, dict):
        return []
    missing = [r for r in required if isinstance(r, str) and r not in props]
    if not missing:
        return []
    return [f"{what}.required names {missing}, not among its properties, and additionalProperties is false"]


def definition_problems(gen: Any) -> list[str]:
    """Every problem with a generator's declared attributes (a Generator class or instance)."""
    problems = []
    name, task, modality = (getattr(gen, a, None) for a in ("name", "task", "modality"))
    if not isinstance(name, str) or not _NAME.match(name):
        problems.append(f"name {name!r} must be lower-case letters, digits, '.', '_' or '-'")
    for attr in ("task", "modality", "description"):
        if not isinstance(getattr(gen, attr, None), str) or not getattr(gen, attr):
            problems.append(f"`{attr}` must be a non-empty string")
    if isinstance(task, str) and not _NAME.match(task):
        problems.append(f"task {task!r} must be lower-case letters, digits, '.', '_' or '-'")
    if modality not in OUTPUT_MODALITIES:
        problems.append(f"modality must be one of {OUTPUT_MODALITIES}")
    elif task in KNOWN_TASK_MODALITIES and modality != KNOWN_TASK_MODALITIES[task]:
        problems.append(
            f"task {task!r} makes {KNOWN_TASK_MODALITIES[task]}, not {modality}: declare modality "
            f"{KNOWN_TASK_MODALITIES[task]!r} or serve a task of another name"
        )
    if "\n" in str(getattr(gen, "description", "")):
        problems.append("description must be one line")
    problems += schema_problems(getattr(gen, "args_schema", None), "args_schema")
    problems += schema_problems(getattr(gen, "options_schema", None), "options_schema")
    return problems


def clash_problems(gen: Any, registered: Mapping[str, Any], owners: Mapping[str, str] | None = None) -> list[str]:
    """Problems with adding well-defined generator ``gen`` beside ``registered`` (name -> generator): a name
    already taken, or a task that another generator serves with another output modality. ``owners`` (generator
    name -> plugin name) lets the message say where the other generator comes from."""

    def other_one(g: Any) -> str:
        owner = (owners or {}).get(g.name)
        return f"{g!r} of plugin {owner!r}" if owner else repr(g)

    other = registered.get(gen.name)
    if other is not None and other is not gen:
        return [f"two generators are named {gen.name!r} ({other_one(other)} and {gen!r}); rename one"]
    for g in registered.values():
        if g.task == gen.task and g.modality != gen.modality:
            return [
                f"generator {gen.name!r} makes {gen.modality} for task {gen.task!r}, which {other_one(g)} serves "
                f"with {g.modality}; one task has one output modality: serve a task of another name"
            ]
    return []
