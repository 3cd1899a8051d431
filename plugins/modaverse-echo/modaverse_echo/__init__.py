"""modaverse-echo: deterministic, ML-free generators for every ModaVerse task."""

from __future__ import annotations

import hashlib
from typing import Any, ClassVar

import numpy as np

from modaverse_agent import Artifact, GenerationRequest, Generator, GeneratorError, hookimpl

__all__ = ["EchoAudio", "EchoEdit", "EchoImage", "EchoSpeech", "EchoVideo", "register_generators"]

_SIZE = {"type": "integer", "minimum": 8, "maximum": 512}
_SEED = {"type": "integer", "minimum": -(2**63), "maximum": 2**63 - 1}


def _rng(prompt: str, seed: int | None) -> np.random.Generator:
    digest = hashlib.sha256(f"{seed}\x00{prompt}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


class _Echo(Generator):
    __abstract__ = True
    priority: ClassVar[int] = -100

    def run(self, request: GenerationRequest) -> list[Artifact]:
        path = self.make(request, _rng(request.prompt, request.seed))
        return [self.artifact(request, path, deterministic=True)]

    def make(self, request: GenerationRequest, rng: np.random.Generator) -> Any:
        raise NotImplementedError


def _bands(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    colours = rng.integers(0, 256, size=(4, 3), dtype=np.uint8)
    rows = np.arange(height) * 4 // height
    return np.repeat(colours[rows][:, None, :], width, axis=1)


class EchoImage(_Echo):
    name = "echo-image"
    task = "text-to-image"
    modality = "image"
    description = "Draws colour bands derived from the prompt (deterministic test generator)."
    args_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {"width": _SIZE, "height": _SIZE, "seed": _SEED},
        "additionalProperties": False,
    }

    def make(self, request: GenerationRequest, rng: np.random.Generator) -> Any:
        w, h = int(request.args.get("width", 64)), int(request.args.get("height", 64))
        return request.output.write_image("echo-image", _bands(rng, h, w))


def _tone(rng: np.random.Generator, seconds: float, rate: int) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    freqs = rng.uniform(200, 800, size=3)
    return (0.2 * np.sin(2 * np.pi * freqs[:, None] * t).sum(axis=0)).astype(np.float32)


class EchoAudio(_Echo):
    name = "echo-audio"
    task = "text-to-audio"
    modality = "audio"
    description = "Plays a chord whose pitches derive from the prompt (deterministic test generator)."
    args_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {
            "duration": {"type": "number", "exclusiveMinimum": 0, "maximum": 30},
            "seed": _SEED,
        },
        "additionalProperties": False,
    }

    def make(self, request: GenerationRequest, rng: np.random.Generator) -> Any:
        rate = 16000
        return request.output.write_audio(
            "echo-audio", _tone(rng, float(request.args.get("duration", 1.0)), rate), rate
        )


class EchoSpeech(_Echo):
    name = "echo-speech"
    task = "text-to-speech"
    modality = "audio"
    description = "Beeps once per word of the text (deterministic test generator)."

    def make(self, request: GenerationRequest, rng: np.random.Generator) -> Any:
        rate, words = 16000, max(1, len(request.prompt.split()))
        beep = _tone(rng, 0.15, rate)
        gap = np.zeros(int(0.05 * rate), dtype=np.float32)
        return request.output.write_audio("echo-speech", np.concatenate([beep, gap] * words), rate)


class EchoVideo(_Echo):
    name = "echo-video"
    task = "text-to-video"
    modality = "video"
    description = "Animates colour bands derived from the prompt (deterministic test generator)."
    args_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {
            "frames": {"type": "integer", "minimum": 1, "maximum": 64},
            "fps": {"type": "integer", "minimum": 1, "maximum": 60},
            "seed": _SEED,
        },
        "additionalProperties": False,
    }

    def make(self, request: GenerationRequest, rng: np.random.Generator) -> Any:
        frames, fps = int(request.args.get("frames", 8)), int(request.args.get("fps", 8))
        base = _bands(rng, 64, 64)
        rolled = []
        for i in range(frames):
            request.raise_if_cancelled()  # a generator that loops checks for cancellation
            rolled.append(np.roll(base, shift=4 * i, axis=0))
        video = np.stack(rolled)
        return request.output.write_video("echo-video", video, fps)


class EchoEdit(_Echo):
    name = "echo-edit"
    task = "image-editing"
    modality = "image"
    description = "Inverts and tints the input image (deterministic test generator)."
    input_modalities = ("image",)

    def make(self, request: GenerationRequest, rng: np.random.Generator) -> Any:
        import io

        from PIL import Image, UnidentifiedImageError

        if not request.inputs:
            raise GeneratorError("echo-edit needs one input image")
        try:
            image = Image.open(io.BytesIO(request.inputs[0].data)).convert("RGB")
        except (UnidentifiedImageError, OSError) as e:
            raise GeneratorError(f"echo-edit could not decode {request.inputs[0].name}: {e}") from e
        tint = rng.integers(0, 64, size=3)
        edited = np.clip(255 - np.asarray(image, dtype=np.int16) + tint - 32, 0, 255).astype(np.uint8)
        return request.output.write_image("echo-edit", edited)


@hookimpl
def register_generators(register: Any) -> None:
    """Register one echo generator per task."""
    for cls in (EchoImage, EchoAudio, EchoSpeech, EchoVideo, EchoEdit):
        register(cls())
