"""Narrowed task lists: samples whose system prompt offers fewer generators, answered honestly.

A deployed agent offers the tasks of its installed plugins, LangChain's ``bind_tools`` offers the tools a
user binds (none at all with ``bind_tools([])`` or ``tool_choice="none"``). A model trained only on the
full list answers "Draw a cat" with "Here's the image." whatever the list says. ``narrow`` rewrites a
sample for a narrower list: invocations of tasks not offered are dropped and the text says what can't be
made here (a line to speak is given in writing instead; the text is :mod:`modaverse_agent.unoffered`'s,
which the chat model uses too); what is offered stays.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from modaverse_agent.unoffered import narrow

from .dataset import DatasetError, Sample, offered_specs

#: The kinds of narrower list and their weights: no task at all, every task but one, a single task.
LIST_KINDS = {"none": 0.4, "all-but-one": 0.3, "one": 0.3}


def draw_offered(rng: random.Random, tasks: Sequence[str], kinds: Sequence[str] = tuple(LIST_KINDS)) -> tuple[str, ...]:
    """A narrower task list of one of ``kinds`` (weighted as in ``LIST_KINDS``), in ``tasks`` order."""
    unknown = sorted(set(kinds) - set(LIST_KINDS))
    if unknown or not kinds:
        raise DatasetError(f"unknown narrower list kind(s) {unknown or kinds}; use some of {list(LIST_KINDS)}")
    kind = rng.choices(list(kinds), weights=[LIST_KINDS[k] for k in kinds])[0]
    if kind == "none":
        return ()
    if kind == "all-but-one":
        left_out = rng.choice(list(tasks))
        return tuple(t for t in tasks if t != left_out)
    return (rng.choice(list(tasks)),)


def narrowed_kind(kind: str, invocations: Sequence[dict[str, Any]], has_media: bool) -> str:
    """The sample kind once invocations were dropped (text-only and input-alignment need none; editing an edit)."""
    if not invocations:
        return "input-alignment" if has_media else "text-only"
    if kind == "editing" and not any(i["task"] == "image-editing" for i in invocations):
        return "reasoning"
    return kind


def offer_only(sample: Sample, offered: Sequence[str]) -> Sample:
    """``sample`` as asked when only ``offered`` tasks are offered: other tasks leave its reference answer and
    each of its accepted task sets (what can still be made stays; nothing left means a text answer)."""
    text, kept = narrow(sample.response.get("text", ""), sample.response.get("invocations", ()), offered)
    source = dict(sample.source)
    if "accept" in source:
        sets = [sorted(t for t in a if t in offered) for a in source["accept"]]
        source["accept"] = [a for i, a in enumerate(sets) if a not in sets[:i]]
    asked = replace(sample, response={"text": text, "invocations": kept}, source=source, offered=tuple(offered))
    offered_specs(asked)  # an unknown task is refused here, before any model loads
    return asked
