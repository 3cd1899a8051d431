"""modaverse-agent plugin: image editing by instruction with InstructPix2Pix through diffusers."""

from __future__ import annotations

import io
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
from modaverse_agent.errors import GeneratorError
from modaverse_agent.generators import GenerationRequest
from modaverse_agent.hookspecs import hookimpl
from modaverse_agent.media import MediaItem

from . import tiny

__all__ = ["InstructPix2PixGenerator", "register_generators"]

register_tiny_pipeline(tiny.KIND, tiny.build_pipeline)


class InstructPix2PixGenerator(DiffusersGenerator):
    """Edits the user's picture as an English instruction says; writes one PNG per invocation."""

    name = "instruct-pix2pix"
    task = "image-editing"
    modality = "image"
    description = "Edits the given input image as an English instruction says (e.g. 'turn the apple green')."
    input_modalities = ("image",)
    default_model = "timbrooks/instruct-pix2pix"
    pipeline_classes = ("StableDiffusionInstructPix2PixPipeline",)
    tiny_kind = tiny.KIND
    caps: ClassVar[dict[str, Cap]] = {"steps": Cap("max_steps", 50, 150, "denoising steps")}
    extra_options: ClassVar[dict[str, Any]] = {
        "max_side": {
            "type": "integer",
            "minimum": 64,
            "maximum": 4096,
            "default": 768,
            "description": "larger input images are scaled down to fit this many pixels on their longest side",
        }
    }
    args_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {
            "steps": {"type": "integer", "minimum": 1, "maximum": 150, "default": 20, "description": "denoising steps"},
            "guidance": {
                "type": "number",
                "minimum": 0,
                "maximum": 30,
                "default": 7.5,
                "description": "text CFG scale",
            },
            "image_guidance": {
                "type": "number",
                "minimum": 0,
                "maximum": 10,
                "default": 1.5,
                "description": "how closely to keep the input image",
            },
            "seed": seed_schema(),
        },
        "additionalProperties": False,
    }

    def check(self, request: GenerationRequest) -> None:
        """Refuse a request without an input image before any weights load."""
        super().check(request)
        _input_item(self.name, request)

    def run(self, request: GenerationRequest) -> list[Artifact]:
        """Edit ``request.inputs[0]`` as ``request.prompt`` says."""
        args = self.arguments(request)
        item = _input_item(self.name, request)
        image = decode_image(item, self.name)
        size = fit_size(image.size, int(self.option("max_side")))
        work_size = _multiple_of_8(size)
        work = image if image.size == work_size else image.resize(work_size, resample=_lanczos())
        seed = resolve_seed(args, request)
        with self.progress(request, args["steps"]) as bar:
            out = call_pipeline(
                self.name,
                self.pipeline.pipe,
                prompt=request.prompt,
                image=work,
                num_inference_steps=args["steps"],
                guidance_scale=args["guidance"],
                image_guidance_scale=args["image_guidance"],
                generator=torch_generator(seed),
                output_type="pil",
                callback_on_step_end=bar.on_step_end,
                callback_on_step_end_tensor_inputs=[],
            )
        edited = out.images[0]
        if edited.size != size:
            edited = edited.resize(size, resample=_lanczos())
        path = request.output.write_image(self.stem(seed), edited)
        meta: dict[str, Any] = {
            "steps": args["steps"],
            "guidance": args["guidance"],
            "image_guidance": args["image_guidance"],
            "input": item.name,
            "input_sha256": item.sha256,
            "input_size": list(image.size),
            "width": size[0],
            "height": size[1],
        }
        nsfw = getattr(out, "nsfw_content_detected", None)
        if nsfw:
            meta["nsfw_content_detected"] = bool(nsfw[0])
        return [self.finish(request, path, seed, **meta)]


def _input_item(generator: str, request: GenerationRequest) -> MediaItem:
    if not request.inputs:
        raise GeneratorError(f"generator {generator!r} edits an input image: attach one and refer to it")
    item = request.inputs[0]
    if item.modality != "image":
        raise GeneratorError(f"generator {generator!r} edits images, but input {item.name!r} is {item.modality}")
    return item


def decode_image(item: MediaItem, generator: str) -> Any:
    """The input as an upright RGB PIL image; a clear error when Pillow cannot read it."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(item.data)) as im:
            im.load()
            return ImageOps.exif_transpose(im).convert("RGB")
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError) as e:
        raise GeneratorError(
            f"generator {generator!r} cannot read input image {item.name!r} ({item.mime_type}): {e}; "
            "give a PNG, JPEG or WebP image"
        ) from e


def fit_size(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    """``size`` scaled down (never up) so its longest side is at most ``max_side``, aspect kept."""
    w, h = size
    scale = min(1.0, max_side / max(w, h))
    return max(1, round(w * scale)), max(1, round(h * scale))


def _multiple_of_8(size: tuple[int, int]) -> tuple[int, int]:
    """Stable Diffusion's VAE needs sides that are multiples of 8: round to the nearest (at least 8)."""
    return tuple(max(8, round(s / 8) * 8) for s in size)  # type: ignore[return-value]


def _lanczos() -> Any:
    from PIL import Image

    return Image.Resampling.LANCZOS


@hookimpl
def register_generators(register: Any) -> None:
    """Offer the InstructPix2Pix image editor to the zoo."""
    register(InstructPix2PixGenerator())
