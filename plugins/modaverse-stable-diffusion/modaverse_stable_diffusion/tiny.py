"""The untrained tiny Stable Diffusion pipeline behind ``model = "tiny-random"``, built from configs."""

from __future__ import annotations

from typing import Any

from modaverse_agent.diffusion import tiny_clip_text, tiny_ddim, tiny_unet2d, tiny_vae

#: The tiny-pipeline kind this plugin registers (it also names the cache folder).
KIND = "stable-diffusion"


def build_pipeline() -> Any:
    """A random-weight StableDiffusionPipeline of a few hundred kilobytes (64 x 64 images), no download."""
    import diffusers

    text_encoder, tokenizer = tiny_clip_text()
    return diffusers.StableDiffusionPipeline(
        vae=tiny_vae(),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=tiny_unet2d(),
        scheduler=tiny_ddim(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
