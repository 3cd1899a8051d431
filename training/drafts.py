"""A request before it becomes a sample: what the template engine's makers return."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: One medium of a draft: (modality, file path or None for a placeholder, caption or None).
MediaSpec = tuple[str, str | None, str | None]


@dataclass
class Draft:
    """A request before it becomes a sample: instruction, meta-response parts, where its words came from."""

    instruction: str
    invocations: list[dict[str, Any]]
    text: str
    templates: list[str]
    pools: list[str]
    kind: str = "output-alignment"
    media: list[MediaSpec] = field(default_factory=list)
