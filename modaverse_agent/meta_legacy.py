"""The official ModaVerse release's output format: ``Modality: [IMAGE] Prompt: ... ###``.

Read into the same :class:`~modaverse_agent.meta_schema.MetaResponse` as the JSON format, within the
same bounds; :func:`parse_legacy_lenient` keeps every valid entry and never raises.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from itertools import islice
from typing import Any

from .errors import MetaResponseError
from .meta_json import MAX_RAW_CHARS, lone_surrogate, oversized_error
from .meta_schema import (
    MAX_INVOCATIONS,
    PROMPT_MAX_CHARS,
    TEXT_MAX_CHARS,
    Invocation,
    MetaResponse,
    max_invocations,
)
from .schema_utils import short

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
        return MetaResponse(text=""), [oversized_error(raw)]
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
    cap = max_invocations(schema) if schema is not None else MAX_INVOCATIONS
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
            if bad := lone_surrogate(prompt):
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
