"""modaverse-chime: a minimal third-party generator plugin serving a new task, ``text-to-chime``.

Installed, its entry point (group ``modaverse_agent``) makes the generator appear in the zoo and in
the system prompt, so a ModaVerse can name the task with no change to the core.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from modaverse_agent import Artifact, GenerationRequest, Generator, hookimpl


class Chime(Generator):
    """Rings a short bell-like chime whose pitch follows the prompt."""

    name = "chime"
    task = "text-to-chime"
    modality = "audio"
    description = "Rings a short chime; the prompt sets the pitch (e.g. 'a high, bright chime')."
    args_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {"seconds": {"type": "number", "exclusiveMinimum": 0, "maximum": 5}},
        "additionalProperties": False,
    }

    def run(self, request: GenerationRequest) -> list[Artifact]:
        rate, seconds = 16000, float(request.args.get("seconds", 1.0))
        pitch = 880.0 if "high" in request.prompt.lower() else 440.0
        samples = [
            0.3 * math.exp(-4 * t / rate) * math.sin(2 * math.pi * pitch * t / rate) for t in range(int(rate * seconds))
        ]
        return [self.artifact(request, request.output.write_audio("chime", samples, rate), pitch=pitch)]


@hookimpl
def register_generators(register: Any) -> None:
    """Offer the chime generator."""
    register(Chime())
