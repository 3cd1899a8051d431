"""The model's modality preprocessors: tensors -> tokens (patch stems, class token, position embeddings).

Attribute names follow the reference (``rgbt_stem``, ``depth_stem``, ``imu_stem``,
``pos_embedding_helper.pos_embed``, ...) so the state dict matches the official checkpoint.
"""

from __future__ import annotations

import torch
from torch import nn


class PadIm2Video(nn.Module):
    """(B, C, H, W) images become (B, C, T, H, W) clips by repeating the frame ``ntimes`` (no parameters)."""

    def __init__(self, ntimes: int) -> None:
        super().__init__()
        self.ntimes = ntimes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Add the time axis and repeat a single frame."""
        if x.ndim == 4:
            x = x.unsqueeze(2)
        elif x.ndim != 5:
            raise ValueError(f"vision input must be (B, C, H, W) or (B, C, T, H, W), got shape {tuple(x.shape)}")
        if x.shape[2] == 1:
            x = x.repeat(1, 1, self.ntimes, 1, 1)
        return x


class PatchEmbed(nn.Module):
    """``proj`` (a convolution or linear map) -> flatten to tokens -> optional ``norm_layer``."""

    def __init__(self, proj: nn.Module, norm_layer: nn.Module | None = None) -> None:
        super().__init__()
        self.proj = proj
        self.norm_layer = norm_layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, ...) -> (B, patches, D)."""
        x = self.proj(x)
        if x.ndim > 3:  # convolution output (B, D, *grid)
            x = x.flatten(2).transpose(1, 2)
        if self.norm_layer is not None:
            x = self.norm_layer(x)
        return x


class PosEmbedding(nn.Module):
    """Learnt position embedding, stored as ``pos_embed`` (1, tokens, D)."""

    def __init__(self, num_tokens: int, dim: int) -> None:
        super().__init__()
        self.pos_embed = nn.Parameter(torch.zeros(1, num_tokens, dim))


class PatchTokenizer(nn.Module):
    """Stem + class token + position embedding, for vision, audio, depth and thermal.

    ``stem_name`` is the reference's attribute name: ``rgbt_stem`` for vision, audio and thermal,
    ``depth_stem`` for depth.
    """

    def __init__(self, stem_name: str, stem: PatchEmbed, num_patches: int, dim: int) -> None:
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.stem_name = stem_name
        self.add_module(stem_name, stem)
        self.pos_embedding_helper = PosEmbedding(num_patches + 1, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, ...) -> (B, 1 + patches, D)."""
        tokens = getattr(self, self.stem_name)(x)
        pos = self.pos_embedding_helper.pos_embed
        if tokens.shape[1] + 1 != pos.shape[1]:
            raise ValueError(
                f"input of shape {tuple(x.shape)} gives {tokens.shape[1]} patches but the model expects "
                f"{pos.shape[1] - 1}; resize the input to the size the model was built for"
            )
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)
        return torch.cat([cls, tokens], dim=1) + pos


def causal_mask(length: int) -> torch.Tensor:
    """(length, length) additive mask: 0 on and below the diagonal, -inf above."""
    return torch.full((length, length), float("-inf")).triu_(1)


class TextTokenizer(nn.Module):
    """Token + position embeddings; carries the causal mask buffer and finds each text's EOT position."""

    def __init__(self, vocab_size: int, context_length: int, dim: int) -> None:
        super().__init__()
        self.pos_embed = nn.Parameter(torch.empty(1, context_length, dim))
        self.register_buffer("mask", causal_mask(context_length))
        self.token_embedding = nn.Embedding(vocab_size, dim)

    def forward(self, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, context) int ids -> tokens (B, context, D) and EOT positions (B,) = argmax of the ids."""
        if text.ndim != 2 or text.shape[1] != self.pos_embed.shape[1] or text.is_floating_point():
            raise ValueError(
                f"text input must be integer ids of shape (B, {self.pos_embed.shape[1]}), "
                f"got {text.dtype} {tuple(text.shape)}"
            )
        return self.token_embedding(text) + self.pos_embed, text.argmax(dim=-1)


class IMUTokenizer(nn.Module):
    """(B, 6, T) IMU signals -> patches of 8 steps x 6 channels -> Linear(48, D) -> LayerNorm, class token."""

    kernel_size = 8

    def __init__(self, stem: PatchEmbed, num_patches: int, dim: int) -> None:
        super().__init__()
        self.pos_embed = nn.Parameter(torch.empty(1, num_patches + 1, dim))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.imu_stem = stem

    def forward(self, imu: torch.Tensor) -> torch.Tensor:
        """(B, 6, T) -> (B, 1 + T / 8, D)."""
        if imu.ndim != 3 or imu.shape[1] != 6:
            raise ValueError(f"IMU input must be (B, 6, T), got shape {tuple(imu.shape)}")
        k = self.kernel_size
        patches = imu.unfold(-1, k, k).permute(0, 2, 1, 3)  # (B, T / k, 6, k)
        patches = patches.reshape(patches.shape[0], patches.shape[1], -1)
        tokens = self.imu_stem(patches)
        if tokens.shape[1] + 1 != self.pos_embed.shape[1]:
            steps = (self.pos_embed.shape[1] - 1) * k
            raise ValueError(f"IMU input has {imu.shape[-1]} steps; the model expects {steps}")
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)
        return torch.cat([cls, tokens], dim=1) + self.pos_embed
