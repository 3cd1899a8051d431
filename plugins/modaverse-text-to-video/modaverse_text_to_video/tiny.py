"""The untrained tiny text-to-video pipeline behind ``model = "tiny-random"``, built from configs."""

from __future__ import annotations

from typing import Any

from modaverse_agent.diffusion import tiny_clip_text, tiny_ddim, tiny_vae

#: The tiny-pipeline kind this plugin registers (it also names the cache folder).
KIND = "text-to-video"


def build_pipeline() -> Any:
    """A random-weight TextToVideoSDPipeline (32 x 32 frames) with a two-block UNet3D, no download."""
    import diffusers

    text_encoder, tokenizer = tiny_clip_text()
    unet = diffusers.UNet3DConditionModel(
        block_out_channels=(8, 16),
        layers_per_block=1,
        sample_size=16,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"),
        up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"),
        cross_attention_dim=32,
        attention_head_dim=4,
        norm_num_groups=8,
    )
    return diffusers.TextToVideoSDPipeline(
        vae=tiny_vae(), text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=tiny_ddim()
    )
