"""Generic tiny random-weight components that plugins assemble into their tiny pipelines.

Each is a few kilobytes of weights built from a config (no download). Call them inside a builder
registered with :func:`~modaverse_agent.diffusion.register_tiny_pipeline`, which seeds torch's RNG,
so the weights are the same on every build. diffusers and transformers are imported inside.
"""

from __future__ import annotations

from typing import Any

from .tokenizers import tiny_clip_tokenizer


def tiny_clip_text() -> tuple[Any, Any]:
    """A two-layer CLIP text encoder (width 32, 77 positions) and its offline byte-level tokenizer."""
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = tiny_clip_tokenizer()
    eos = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        max_position_embeddings=77,
        projection_dim=32,
        bos_token_id=tokenizer.convert_tokens_to_ids("<|startoftext|>"),
        eos_token_id=eos,
        pad_token_id=eos,
    )
    return CLIPTextModel(config), tokenizer


def tiny_vae(channels: int = 3) -> Any:
    """An AutoencoderKL with 4 latent channels and a scale factor of 2, for ``channels``-channel samples."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=(8, 16),
        in_channels=channels,
        out_channels=channels,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        norm_num_groups=8,
        sample_size=64,
    )


def tiny_unet2d(in_channels: int = 4, **extra: Any) -> Any:
    """A two-block UNet2DConditionModel (sample size 32, 4 output channels); ``extra`` overrides its config
    (default cross-attention width 32, the tiny CLIP text encoder's)."""
    from diffusers import UNet2DConditionModel

    kwargs: dict[str, Any] = {"cross_attention_dim": 32, **extra}
    return UNet2DConditionModel(
        block_out_channels=(8, 16),
        layers_per_block=1,
        sample_size=32,
        in_channels=in_channels,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
        attention_head_dim=4,
        **kwargs,
    )


def tiny_ddim() -> Any:
    """A DDIMScheduler with Stable Diffusion's betas (its config also seeds other schedulers)."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
