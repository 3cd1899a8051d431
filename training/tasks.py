"""The standard tasks: the five task specs that training data, the default model and the system prompt share.

The LLM is trained on *tasks*, never on generator names; a zoo maps each task to the generator a user
chose. Import :data:`STANDARD_TASKS` wherever the five known tasks are needed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from modaverse_agent.meta_response import TaskSpec, build_schema

STANDARD_TASKS: tuple[TaskSpec, ...] = (
    TaskSpec(
        "text-to-image",
        "Draws a picture from a detailed description of its subject, setting and style.",
        "image",
    ),
    TaskSpec(
        "text-to-audio",
        "Makes a sound effect, ambience or piece of music from a description of how it sounds.",
        "audio",
    ),
    TaskSpec(
        "text-to-video",
        "Makes a short video clip from a description of the scene and its motion.",
        "video",
    ),
    TaskSpec(
        "text-to-speech",
        "Speaks text aloud as natural speech; the prompt is exactly the words to say.",
        "audio",
    ),
    TaskSpec(
        "image-editing",
        "Edits an input image following an instruction that says what to change.",
        "image",
        input_modalities=("image",),
    ),
)

TASKS_BY_NAME: dict[str, TaskSpec] = {spec.task: spec for spec in STANDARD_TASKS}

#: The output label of each task in modality-pair reports (speech is told apart from other audio).
OUTPUT_LABELS: dict[str, str] = {
    "text-to-image": "image",
    "text-to-audio": "audio",
    "text-to-video": "video",
    "text-to-speech": "speech",
    "image-editing": "image",
}


def task_spec(name: str) -> TaskSpec:
    """The standard spec of task ``name``; the error lists the known tasks."""
    try:
        return TASKS_BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown task {name!r}; the standard tasks are {sorted(TASKS_BY_NAME)}") from None


def output_label(task: str, specs: Iterable[TaskSpec] = STANDARD_TASKS) -> str:
    """The label of a task's output in reports: ``speech`` for text-to-speech, else its modality."""
    if task in OUTPUT_LABELS:
        return OUTPUT_LABELS[task]
    for spec in specs:
        if spec.task == task:
            return spec.modality
    return task


_SCHEMAS: dict[tuple[Any, ...], dict[str, Any]] = {}


def _spec_key(spec: TaskSpec) -> tuple[Any, ...]:
    args = json.dumps(spec.args_schema, sort_keys=True)
    return (spec.task, spec.description, spec.modality, args, spec.input_modalities)


def standard_schema(
    media_ids: Sequence[str] | None = None, specs: Sequence[TaskSpec] = STANDARD_TASKS
) -> dict[str, Any]:
    """The meta-response schema of ``specs`` (default: the standard tasks) for these media (cached; don't mutate)."""
    key = (tuple(_spec_key(s) for s in specs), None if media_ids is None else tuple(media_ids))
    schema = _SCHEMAS.get(key)
    if schema is None:
        if len(_SCHEMAS) > 512:
            _SCHEMAS.clear()
        schema = _SCHEMAS[key] = build_schema(specs, media_ids=media_ids)
    return schema
