"""The untrained tiny AudioLDM pipeline behind ``model = "tiny-random"``, built from configs."""

from __future__ import annotations

from typing import Any

from modaverse_agent.diffusion import tiny_ddim, tiny_roberta_tokenizer, tiny_unet2d, tiny_vae

#: The tiny-pipeline kind this plugin registers (it also names the cache folder).
KIND = "audioldm"


def build_pipeline() -> Any:
    """A random-weight AudioLDMPipeline (CLAP text encoder, 8 mel bins, 16 kHz HiFi-GAN), no download."""
    import diffusers
    from transformers import ClapTextConfig, ClapTextModelWithProjection, SpeechT5HifiGan, SpeechT5HifiGanConfig

    tokenizer = tiny_roberta_tokenizer()
    text_encoder = ClapTextModelWithProjection(
        ClapTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=37,
            num_attention_heads=4,
            num_hidden_layers=2,
            projection_dim=32,
            max_position_embeddings=80,  # 77 tokens + Roberta's position offset (pad id + 1)
            bos_token_id=0,
            pad_token_id=1,
            eos_token_id=2,
        )
    )
    # The CLAP embedding conditions the UNet as a class embedding; its attention blocks self-attend,
    # so each block's cross-attention width is its own channel count.
    unet = tiny_unet2d(
        cross_attention_dim=(8, 16),
        class_embed_type="simple_projection",
        projection_class_embeddings_input_dim=32,
        class_embeddings_concat=True,
    )
    # 8 mel bins, 64 samples per mel frame; a wider init than the default keeps random audio audible in 16-bit PCM.
    vocoder = SpeechT5HifiGan(
        SpeechT5HifiGanConfig(
            model_in_dim=8,
            sampling_rate=16000,
            upsample_initial_channel=16,
            upsample_rates=[8, 8],
            upsample_kernel_sizes=[16, 16],
            resblock_kernel_sizes=[3],
            resblock_dilation_sizes=[[1, 3]],
            normalize_before=False,
            initializer_range=0.3,
        )
    )
    return diffusers.AudioLDMPipeline(
        vae=tiny_vae(channels=1),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=tiny_ddim(),
        vocoder=vocoder,
    )
