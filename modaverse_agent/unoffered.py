"""Answers for tasks that are asked for but not offered: the invocations leave, the text says so.

A model trained only on its zoo's whole task list routes well on that list and poorly on a narrower one:
it writes its text first ("Here's the image."), and constrained decoding can then only pick another task
or none. :class:`~.chat_model.ChatModaVerse` can ask such a model with the whole list and give the answer
for the tasks not offered with :func:`narrow`; the training data engine writes narrowed samples with it too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from .meta_response import MetaResponse, TaskSpec

#: What the answer says for each task that is asked for but not offered.
UNAVAILABLE = {
    "text-to-image": "I can't make pictures here: no image generator is available.",
    "text-to-audio": "I can't make sounds or music here: no audio generator is available.",
    "text-to-video": "I can't make videos here: no video generator is available.",
    "text-to-speech": "I can't speak aloud here: no speech generator is available.",
    "image-editing": "I can't edit pictures here: no image editor is available.",
}
#: After those lines, when some of the request could still be made.
THE_REST = "Here's what I could make."


def narrow(
    text: str, invocations: Sequence[dict[str, Any]], offered: Sequence[str]
) -> tuple[str, list[dict[str, Any]]]:
    """The answer under ``offered``: (text, invocations). Unchanged when every invoked task is offered;
    else the invocations of other tasks leave and the text says what can't be made (a line to speak is
    given in writing)."""
    kept = [i for i in invocations if i["task"] in offered]
    missing = list(dict.fromkeys(i["task"] for i in invocations if i["task"] not in offered))
    if not missing:
        return text, list(invocations)
    lines = []
    for task in missing:
        line = UNAVAILABLE.get(task, f"I can't run {task} here: it is not available.")
        if task == "text-to-speech":
            spoken = next(i.get("prompt", "") for i in invocations if i["task"] == task)
            line = f"{line[:-1]}, so here it is in writing: {spoken}"
        lines.append(line)
    if kept:
        lines.append(THE_REST)
    return " ".join(lines), kept


def narrow_meta(meta: MetaResponse, offered: Sequence[str]) -> tuple[MetaResponse, list[str]]:
    """``meta`` with the invocations of tasks not ``offered`` answered in text (:func:`narrow`), and those tasks."""
    unoffered = sorted({i.task for i in meta.invocations} - set(offered))
    if not unoffered:
        return meta, []
    plain = [{"task": i.task, "prompt": i.prompt, "n": n} for n, i in enumerate(meta.invocations)]
    text, kept = narrow(meta.text, plain, offered)
    return replace(meta, text=text, invocations=tuple(meta.invocations[k["n"]] for k in kept)), unoffered


def unserved(trained: Sequence[TaskSpec], served: Sequence[TaskSpec]) -> list[TaskSpec]:
    """The ``trained`` tasks that ``served`` lacks, by name, in ``trained`` order."""
    names = {s.task for s in served}
    return [t for t in trained if t.task not in names]
