"""Input projection ``P``: encoder embeddings -> soft tokens in the LLM's embedding space."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from .config import ModaVerseConfig

SHARED = "shared"


class MediaProjector(nn.Module):
    """One ``nn.Linear`` per modality (or one ``shared`` by all, as the release), ``num_tokens`` soft tokens each.

    State-dict keys are ``proj.<modality>.weight`` / ``proj.shared.weight`` (and ``.bias``).
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        modalities: Sequence[str] = ("image", "audio", "video"),
        *,
        num_tokens: int = 1,
        shared: bool = False,
        bias: bool = True,
    ) -> None:
        super().__init__()
        if num_tokens < 1:
            raise ValueError(f"`num_tokens` must be >= 1, got {num_tokens}")
        self.in_dim, self.out_dim, self.num_tokens, self.shared = in_dim, out_dim, num_tokens, shared
        self.modalities = tuple(modalities)
        names = (SHARED,) if shared else self.modalities
        self.proj = nn.ModuleDict({n: nn.Linear(in_dim, out_dim * num_tokens, bias=bias) for n in names})

    @classmethod
    def for_config(cls, config: ModaVerseConfig, out_dim: int) -> MediaProjector:
        """The projectors ``config`` describes, into an LLM ``out_dim`` wide (fresh weights)."""
        return cls(
            config.encoder_dim,
            out_dim,
            config.modalities,
            num_tokens=config.num_media_tokens,
            shared=config.shared_projector,
            bias=config.projector_bias,
        )

    def layer(self, modality: str) -> nn.Linear:
        """The linear layer serving ``modality``."""
        if modality not in self.modalities:
            raise ValueError(f"no projector for modality {modality!r}; this model projects {list(self.modalities)}")
        return self.proj[SHARED if self.shared else modality]  # type: ignore[return-value]

    def forward(self, modality: str, features: torch.Tensor) -> torch.Tensor:
        """``(n, in_dim)`` embeddings of one modality -> ``(n, num_tokens, out_dim)`` soft tokens."""
        if features.dim() != 2 or features.shape[1] != self.in_dim:
            raise ValueError(
                f"{modality} features must have shape (n, {self.in_dim}), got {tuple(features.shape)}; "
                "is the encoder's width the config's `encoder_dim`?"
            )
        layer = self.layer(modality)
        out = layer(features.to(layer.weight.dtype))
        return out.view(features.shape[0], self.num_tokens, self.out_dim)

    def project_items(self, modalities: Sequence[str], features: torch.Tensor) -> torch.Tensor:
        """Project items of mixed modality, keeping their order: ``(n, in_dim)`` -> ``(n * num_tokens, out_dim)``."""
        if len(modalities) != features.shape[0]:
            raise ValueError(f"{features.shape[0]} media feature rows but {len(modalities)} modalities given")
        out = features.new_empty((features.shape[0], self.num_tokens, self.out_dim), dtype=self.dtype)
        for modality in dict.fromkeys(modalities):
            rows = torch.tensor([i for i, m in enumerate(modalities) if m == modality], device=features.device)
            out[rows] = self(modality, features[rows])
        return out.reshape(-1, self.out_dim)

    @property
    def dtype(self) -> torch.dtype:
        """The weights' dtype."""
        return next(self.parameters()).dtype
