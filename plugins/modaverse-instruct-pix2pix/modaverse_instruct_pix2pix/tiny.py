"""The untrained tiny InstructPix2Pix pipeline behind ``model = "tiny-random"``, built from configs."""

from __future__ import annotations

from typing import Any

from modaverse_agent.diffusion import tiny_clip_text, tiny_ddim, tiny_unet2d, tiny_vae

#: The tiny-pipeline kind this plugin registers (it also names the cache folder).
KIND = "instruct-pix2pix"


def build_pipeline() -> Any:
    """A random-weight StableDiffusionInstructPix2PixPipeline of a few hundred kilobytes, no download."""
    import diffusers

    text_encoder, tokenizer = tiny_clip_text()
    return diffusers.StableDiffusionInstructPix2PixPipeline(
        vae=tiny_vae(),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=tiny_unet2d(in_channels=8),  # noisy latents + image latents
        scheduler=diffusers.EulerAncestralDiscreteScheduler.from_config(tiny_ddim().config),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
