"""modaverse-agent plugin: text-to-audio with AudioLDM through diffusers."""

from __future__ import annotations

from typing import Any, ClassVar

from modaverse_agent.artifacts import Artifact
from modaverse_agent.diffusion import (
    Cap,
    DiffusersGenerator,
    call_pipeline,
    register_tiny_pipeline,
    resolve_seed,
    seed_schema,
    torch_generator,
)
from modaverse_agent.generators import GenerationRequest
from modaverse_agent.hookspecs import hookimpl

from . import tiny

__all__ = ["AudioLDMGenerator", "register_generators"]

register_tiny_pipeline(tiny.KIND, tiny.build_pipeline)


class AudioLDMGenerator(DiffusersGenerator):
    """Text-to-audio with an AudioLDM pipeline; writes one WAV per invocation."""

    name = "audioldm"
    task = "text-to-audio"
    modality = "audio"
    description = "Makes a sound clip (effects, ambience, music) from a short English description of the sound."
    default_model = "cvssp/audioldm-l-full"
    pipeline_classes = ("AudioLDMPipeline",)
    tiny_kind = tiny.KIND
    caps: ClassVar[dict[str, Cap]] = {
        "duration": Cap("max_duration", 10.0, 30.0, "seconds of audio"),
        "steps": Cap("max_steps", 50, 200, "denoising steps"),
    }
    args_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {
            "duration": {"type": "number", "minimum": 0.5, "maximum": 30, "default": 5.0, "description": "seconds"},
            "steps": {"type": "integer", "minimum": 1, "maximum": 200, "default": 10, "description": "denoising steps"},
            "guidance": {"type": "number", "minimum": 0, "maximum": 20, "default": 2.5, "description": "CFG scale"},
            "seed": seed_schema(),
        },
        "additionalProperties": False,
    }

    def run(self, request: GenerationRequest) -> list[Artifact]:
        """Generate one clip of ``duration`` seconds for ``request.prompt``."""
        args = self.arguments(request)
        seed = resolve_seed(args, request)
        pipe = self.pipeline.pipe
        with self.progress(request, args["steps"]) as bar:
            out = call_pipeline(
                self.name,
                pipe,
                prompt=request.prompt,
                audio_length_in_s=float(args["duration"]),
                num_inference_steps=args["steps"],
                guidance_scale=args["guidance"],
                generator=torch_generator(seed),
                output_type="np",
                callback=bar.legacy,
                callback_steps=1,
            )
        samples = out.audios[0]
        rate = int(pipe.vocoder.config.sampling_rate)
        path = request.output.write_audio(self.stem(seed), samples, rate)
        meta = {
            "steps": args["steps"],
            "guidance": args["guidance"],
            "duration_s": round(len(samples) / rate, 6),
            "sample_rate": rate,
        }
        return [self.finish(request, path, seed, **meta)]


@hookimpl
def register_generators(register: Any) -> None:
    """Offer the AudioLDM generator to the zoo."""
    register(AudioLDMGenerator())
