"""The encoder interface the rest of the model builds on: modality + media -> one embedding per item."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from ..media import MediaItem


class MediaEncoder(ABC):
    """A frozen encoder of media into a shared embedding space.

    Implementations run without gradients (``torch.no_grad``; not ``inference_mode``, whose tensors
    could not feed a trainable projector), batch internally, and return ``(len(items), embed_dim)``
    tensors on the encoder's device in its dtype.
    """

    modalities: tuple[str, ...] = ()
    """The modalities :meth:`encode` accepts (ImageBind: ``("image", "audio", "video")``)."""

    @property
    @abstractmethod
    def embed_dim(self) -> int:
        """Width of the embeddings."""

    @property
    @abstractmethod
    def device(self) -> torch.device:
        """Device the encoder runs on."""

    @property
    @abstractmethod
    def dtype(self) -> torch.dtype:
        """Floating-point type of the weights and of the returned embeddings."""

    @abstractmethod
    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> MediaEncoder:
        """Move and/or cast the encoder in place; returns ``self``."""

    @abstractmethod
    def encode(self, modality: str, items: Sequence[MediaItem]) -> torch.Tensor:
        """Decode, preprocess and embed ``items`` of ``modality``: a ``(len(items), embed_dim)`` tensor."""

    @abstractmethod
    def encode_tensors(self, modality: str, batch: torch.Tensor) -> torch.Tensor:
        """Embed an already preprocessed batch of ``modality``: a ``(batch.shape[0], embed_dim)`` tensor."""

    def check_modality(self, modality: str) -> None:
        """A ValueError naming the accepted modalities if ``modality`` is not one of them."""
        if modality not in self.modalities:
            raise ValueError(f"{type(self).__name__} encodes {list(self.modalities)}, not {modality!r}")
