"""modaverse-agent plugin: text-to-image with Stable Diffusion 1.x / 2.x / XL through diffusers."""

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

__all__ = ["StableDiffusionGenerator", "register_generators"]

_SIZE = {"type": "integer", "minimum": 64, "maximum": 2048, "multipleOf": 8}

register_tiny_pipeline(tiny.KIND, tiny.build_pipeline)


class StableDiffusionGenerator(DiffusersGenerator):
    """Text-to-image with a Stable Diffusion pipeline; writes one PNG per invocation."""

    name = "stable-diffusion"
    task = "text-to-image"
    modality = "image"
    description = "Draws a picture from a detailed English description of its content and style."
    default_model = "stable-diffusion-v1-5/stable-diffusion-v1-5"
    pipeline_classes = ("StableDiffusionPipeline", "StableDiffusionXLPipeline")
    tiny_kind = tiny.KIND
    caps: ClassVar[dict[str, Cap]] = {
        "steps": Cap("max_steps", 50, 150, "denoising steps"),
        "width": Cap("max_side", 768, 2048, "pixels per side"),
        "height": Cap("max_side", 768, 2048, "pixels per side"),
    }
    args_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {
            "steps": {"type": "integer", "minimum": 1, "maximum": 150, "default": 50, "description": "denoising steps"},
            "guidance": {"type": "number", "minimum": 0, "maximum": 30, "default": 7.5, "description": "CFG scale"},
            "width": {**_SIZE, "description": "pixels (multiple of 8); default: the model's native size"},
            "height": {**_SIZE, "description": "pixels (multiple of 8); default: the model's native size"},
            "negative_prompt": {"type": "string", "maxLength": 1000, "description": "what the image must not show"},
            "seed": seed_schema(),
        },
        "additionalProperties": False,
    }

    def run(self, request: GenerationRequest) -> list[Artifact]:
        """Generate one image for ``request.prompt``."""
        args = self.arguments(request)
        seed = resolve_seed(args, request)
        pipe = self.pipeline.pipe
        native = int(pipe.unet.config.sample_size) * int(pipe.vae_scale_factor)
        width, height = int(args.get("width", native)), int(args.get("height", native))
        self.within_cap("width", width)  # the model's native size counts too (1024 for SDXL)
        self.within_cap("height", height)
        with self.progress(request, args["steps"]) as bar:
            out = call_pipeline(
                self.name,
                pipe,
                prompt=request.prompt,
                negative_prompt=args.get("negative_prompt"),
                num_inference_steps=args["steps"],
                guidance_scale=args["guidance"],
                width=width,
                height=height,
                generator=torch_generator(seed),
                output_type="pil",
                callback_on_step_end=bar.on_step_end,
                callback_on_step_end_tensor_inputs=[],
            )
        image = out.images[0]
        path = request.output.write_image(self.stem(seed), image)
        meta: dict[str, Any] = {"steps": args["steps"], "guidance": args["guidance"], "width": width, "height": height}
        if args.get("negative_prompt"):
            meta["negative_prompt"] = args["negative_prompt"]
        nsfw = getattr(out, "nsfw_content_detected", None)
        if nsfw:
            meta["nsfw_content_detected"] = bool(nsfw[0])
        return [self.finish(request, path, seed, **meta)]


@hookimpl
def register_generators(register: Any) -> None:
    """Offer the Stable Diffusion generator to the zoo."""
    register(StableDiffusionGenerator())
