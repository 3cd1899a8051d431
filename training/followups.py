"""Multi-turn samples: a second request that follows an answered one, folded the way a conversation is.

A :class:`~modaverse_agent.conversation.Conversation` hands the LLM every medium so far (attached *and*
generated, ids in order) and the earlier turns as history, which the engines fold into the instruction
(:func:`~modaverse_agent.llm_io.fold_conversation`). The ``followup`` maker writes the same text: a first
request from another maker, its meta-response and the media it made, then a second request that

- edits the picture just made ("now make it a watercolor": ``image-editing`` of that picture's id),
- turns what was made into another output (a video of the picture, a picture of the sound),
- reads a text answer out loud (the answer, not the request, becomes the speech),
- or is unrelated: a new request or a plain question, which must not touch the earlier media.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Mapping
from typing import Any

from modaverse_agent.llm_io import ChatTurn, LLMRequest, fold_conversation
from modaverse_agent.meta_schema import Invocation, MetaResponse

from .dataset import assign_media_ids
from .drafts import Draft, MediaSpec
from .recipe import Recipe, phrase, sentence

#: First requests (maker -> weight); each makes something a second request can refer to, or a text answer.
_FIRST = {"image": 4.0, "edit": 2.0, "video": 1.5, "sound": 1.0, "music": 0.5, "question": 2.5}
#: Second requests that need no earlier output: a new single request, or a plain question.
_NEW = ("image", "sound", "music", "video", "speech")
#: What each task makes, as a medium of the next turn.
_MAKES = {
    "text-to-image": "image",
    "image-editing": "image",
    "text-to-audio": "audio",
    "text-to-speech": "audio",
    "text-to-video": "video",
}


def history_turns(first: Draft, made: list[str]) -> list[ChatTurn]:
    """The first turn as :meth:`Conversation.history` writes it: the request naming what it attached, the
    meta-response naming what it made."""
    ids = assign_media_ids([m[0] for m in first.media])
    attached = f" [attached: {', '.join(ids)}]" if ids else ""
    meta = MetaResponse(
        first.text,
        tuple(Invocation(i["task"], i["prompt"], tuple(i.get("inputs", ()))) for i in first.invocations),
    )
    said = json.dumps(meta.to_dict(), ensure_ascii=False)
    made_note = f" [made: {', '.join(made)}]" if made else ""
    return [ChatTurn("user", first.instruction + attached), ChatTurn("assistant", said + made_note)]


class FollowupMaker:
    """The ``followup`` maker, mixed into the template engine (which provides the attributes below)."""

    recipe: Recipe
    _pools: dict[str, dict[str, list[Any]]]
    _make: Callable[[str, random.Random, str], Draft]
    _pick: Callable[..., tuple[str, str]]
    _has: Callable[[str, str], bool]
    _reply: Callable[[random.Random, str], str]
    _image_prompt: Callable[[str], str]
    _available: Callable[[str, str], bool]
    _question: Callable[[random.Random, str], Draft]

    def _followup_available(self, split: str) -> bool:
        return self._has(split, "followup_edit") and self._available("image", split)

    def _followup(self, rng: random.Random, split: str) -> Draft:
        firsts = {m: w for m, w in _FIRST.items() if self._available(m, split)}
        first = self._make(rng.choices(list(firsts), weights=list(firsts.values()))[0], rng, split)
        made = [_MAKES[i["task"]] for i in first.invocations]
        media: list[MediaSpec] = [*first.media, *((m, None, None) for m in made)]
        ids = assign_media_ids([m[0] for m in media])
        made_ids = ids[len(first.media) :]
        second = self._second(rng, split, first, dict(zip(made_ids, made, strict=True)))
        request = LLMRequest(second.instruction, [], {}, [], history=history_turns(first, made_ids))
        kind = "reasoning" if second.kind == "text-only" and media else second.kind  # text-only has no media
        return Draft(
            fold_conversation(request),
            second.invocations,
            second.text,
            [*first.templates, *second.templates],
            [*second.pools, *first.pools],
            kind,
            media,
        )

    def _second(self, rng: random.Random, split: str, first: Draft, made: Mapping[str, str]) -> Draft:
        """The second request, given the first and the media it made (id -> modality)."""
        last_image = [i for i, m in made.items() if m == "image"][-1:]
        prev = first.invocations[-1] if first.invocations else None
        options: dict[str, float] = {"new": 2.0, "question": 2.0}
        if last_image:
            options |= {"edit": 5.0, "to_video": 1.2, "to_sound": 0.8}
        if prev and prev["task"] in ("text-to-audio", "text-to-video"):
            options["to_picture"] = 1.5
        if first.kind == "text-only" and first.text:
            options["speak"] = 3.0
        options = {k: w for k, w in options.items() if k in ("new", "question") or self._has(split, f"followup_{k}")}
        kind = rng.choices(list(options), weights=list(options.values()))[0]
        if kind == "new":
            return self._make(rng.choice([m for m in _NEW if self._available(m, split)]), rng, split)
        if kind == "question":
            return self._question(rng, split)
        template, label = self._pick(rng, split, f"followup_{kind}")
        if kind == "edit":
            edit = rng.choice(self._pools[split]["edit"])
            instruction = self.recipe.fill(rng, template, {"edit": edit})
            inv = {"task": "image-editing", "prompt": edit, "inputs": last_image}
            return Draft(instruction, [inv], self._reply(rng, "edit"), [template], [label], "editing")
        instruction = self.recipe.fill(rng, template, {})
        assert prev is not None or kind == "speak"
        if kind == "speak":
            inv, reply = {"task": "text-to-speech", "prompt": first.text}, "speech"
        elif kind == "to_picture":
            inv, reply = {"task": "text-to-image", "prompt": self._image_prompt(phrase(prev["prompt"]))}, "image"
        else:
            subject = prev["prompt"].split(", ")[0] if prev["task"] == "text-to-image" else phrase(prev["prompt"])
            if kind == "to_video":
                inv, reply = {"task": "text-to-video", "prompt": subject}, "video"
            else:
                sounds = sentence(f"sounds of {phrase(subject)}.")
                inv, reply = {"task": "text-to-audio", "prompt": sounds}, "sound"
        return Draft(instruction, [inv], self._reply(rng, reply), [template], [label], "reasoning")
