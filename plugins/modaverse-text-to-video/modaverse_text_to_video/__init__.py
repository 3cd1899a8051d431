"""modaverse-agent plugin: text-to-video with ModelScope's model through diffusers' TextToVideoSDPipeline."""

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

__all__ = ["TextToVideoGenerator", "register_generators"]

register_tiny_pipeline(tiny.KIND, tiny.build_pipeline)


class TextToVideoGenerator(DiffusersGenerator):
    """Text-to-video with a TextToVideoSD pipeline; writes one H.264 MP4 per invocation."""

    name = "text-to-video-ms"
    task = "text-to-video"
    modality = "video"
    description = "Makes a short silent video clip from an English description of the scene and its motion."
    default_model = "damo-vilab/text-to-video-ms-1.7b"
    pipeline_classes = ("TextToVideoSDPipeline",)
    tiny_kind = tiny.KIND
    caps: ClassVar[dict[str, Cap]] = {
        "frames": Cap("max_frames", 16, 64, "video frames"),
        "steps": Cap("max_steps", 25, 100, "denoising steps"),
    }
    args_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {
            "frames": {"type": "integer", "minimum": 1, "maximum": 64, "default": 16, "description": "video frames"},
            "steps": {"type": "integer", "minimum": 1, "maximum": 100, "default": 25, "description": "denoising steps"},
            "fps": {"type": "integer", "minimum": 1, "maximum": 60, "default": 8, "description": "frames per second"},
            "seed": seed_schema(),
        },
        "additionalProperties": False,
    }

    def run(self, request: GenerationRequest) -> list[Artifact]:
        """Generate one clip of ``frames`` frames for ``request.prompt``."""
        args = self.arguments(request)
        seed = resolve_seed(args, request)
        with self.progress(request, args["steps"]) as bar:
            out = call_pipeline(
                self.name,
                self.pipeline.pipe,
                prompt=request.prompt,
                num_frames=args["frames"],
                num_inference_steps=args["steps"],
                generator=torch_generator(seed),
                output_type="np",
                callback=bar.legacy,
                callback_steps=1,
            )
        frames = out.frames[0]  # (T, H, W, 3) floats in [0, 1]
        path = request.output.write_video(self.stem(seed), frames, args["fps"])
        meta = {
            "steps": args["steps"],
            "frames": int(frames.shape[0]),
            "fps": args["fps"],
            "width": int(frames.shape[2]),
            "height": int(frames.shape[1]),
            "duration_s": round(frames.shape[0] / args["fps"], 6),
        }
        return [self.finish(request, path, seed, **meta)]


@hookimpl
def register_generators(register: Any) -> None:
    """Offer the text-to-video generator to the zoo."""
    register(TextToVideoGenerator())
