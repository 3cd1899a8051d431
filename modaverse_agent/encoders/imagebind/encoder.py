"""ImageBindEncoder: the frozen ImageBind as a MediaEncoder (image, audio and video in; embeddings out).

Images and videos go through the vision tower (a video is 5 clips x 3 crops, averaged), audio
through the audio tower; a video's sound is encoded by passing the video item as ``"audio"``.
Embeddings are the reference's final outputs: L2-normalised, audio scaled by its logit scale.

    encoder = ImageBindEncoder.from_pretrained("~/models/imagebind_huge.pth")  # local file, never downloaded
    images = encoder.encode("image", [load_media("cat.jpg"), load_media("dog.png")])  # (2, 1024)
    sound = encoder.encode("audio", [load_media("clip.mp4")])  # a video's audio track
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from ...errors import ModelError
from ...media import DEFAULT_LIMITS, MediaItem, MediaLimits
from ..base import MediaEncoder
from .config import ImageBindConfig
from .model import ImageBindModel
from .preprocess import preprocess, tokenize
from .weights import build_model, note_licence, read_state_dict, resolve_checkpoint, save_pretrained

#: Which tower embeds each modality.
TOWERS = {"image": "vision", "video": "vision", "audio": "audio", "text": "text"}
#: Towers ``from_pretrained`` builds by default: those this encoder can use.
DEFAULT_TOWERS = ("vision", "text", "audio")


class ImageBindEncoder(MediaEncoder):
    """ImageBind, frozen, batched and device/dtype aware."""

    modalities = ("image", "audio", "video")

    def __init__(self, model: ImageBindModel, *, batch_size: int = 8, limits: MediaLimits = DEFAULT_LIMITS) -> None:
        if batch_size < 1:
            raise ValueError(f"`batch_size` must be >= 1, got {batch_size}")
        self.model = model.eval().requires_grad_(False)
        self.batch_size = batch_size
        self.limits = limits

    # -- construction ----------------------------------------------------------------------------
    @classmethod
    def from_config(
        cls,
        config: ImageBindConfig,
        state_dict: Mapping[str, torch.Tensor] | None = None,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        **kwargs: object,
    ) -> ImageBindEncoder:
        """An encoder of ``config`` with random weights, or ``state_dict`` loaded key for key."""
        return cls(build_model(config, state_dict, device=device, dtype=dtype), **kwargs)  # type: ignore[arg-type]

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        config: ImageBindConfig | str | Path = "huge",
        *,
        towers: Sequence[str] | None = DEFAULT_TOWERS,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        **kwargs: object,
    ) -> ImageBindEncoder:
        """Load local weights: the official ``imagebind_huge.pth``, a ``.safetensors`` file, or a directory
        written by :meth:`save_pretrained`. Never downloads.

        ``config`` is a preset name (``"huge"``, ``"tiny"``), a config JSON path or an ImageBindConfig;
        ``towers`` keeps only those towers (None: all six) and skips the other weights.
        """
        cfg, weights = resolve_checkpoint(path, config)
        if towers is not None:
            cfg = dataclasses.replace(cfg, modalities=tuple(m for m in cfg.modalities if m in set(towers)))
        note_licence()
        return cls.from_config(cfg, read_state_dict(weights), device=device, dtype=dtype, **kwargs)

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``config.json`` + ``model.safetensors`` (reload with :meth:`from_pretrained`)."""
        return save_pretrained(self.model, directory)

    # -- MediaEncoder ----------------------------------------------------------------------------
    @property
    def config(self) -> ImageBindConfig:
        """The model's configuration."""
        return self.model.config

    @property
    def embed_dim(self) -> int:
        """Width of the shared embedding space (1024 for huge)."""
        return self.config.out_embed_dim

    @property
    def device(self) -> torch.device:
        """Device of the weights."""
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """Floating-point type of the weights."""
        return next(self.model.parameters()).dtype

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> ImageBindEncoder:
        """Move and/or cast in place; returns ``self``."""
        if dtype is not None and not dtype.is_floating_point:
            raise ValueError(f"`dtype` must be a floating-point type, got {dtype}")
        self.model.to(device=device, dtype=dtype)
        return self

    def preprocess(self, modality: str, item: MediaItem) -> torch.Tensor:
        """One item as the model's float32 CPU input: image (3, 224, 224), audio (3, 1, 128, 204),
        video (15, 3, 2, 224, 224)."""
        self.check_modality(modality)
        return preprocess(modality, item, limits=self.limits)

    def encode(self, modality: str, items: Sequence[MediaItem]) -> torch.Tensor:
        """Embed ``items`` (decoded and preprocessed one by one, run in batches of ``batch_size``)."""
        self.check_modality(modality)
        self._tower(modality)
        if not items:
            return torch.empty(0, self.embed_dim, device=self.device, dtype=self.dtype)
        out = []
        for start in range(0, len(items), self.batch_size):
            chunk = items[start : start + self.batch_size]
            batch = torch.stack([self.preprocess(modality, item) for item in chunk])
            out.append(self.encode_tensors(modality, batch))
        return torch.cat(out)

    def encode_tensors(self, modality: str, batch: torch.Tensor) -> torch.Tensor:
        """Embed a preprocessed batch: image (B, 3, H, W), video (B, clips, 3, T, H, W),
        audio (B, clips, 1, mel, frames)."""
        self.check_modality(modality)
        self._check_shape(modality, batch)
        return self._run(self._tower(modality), batch)

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """Embed strings with the text tower (scaled by its logit scale, as the reference)."""
        if isinstance(texts, str):
            raise TypeError("`texts` must be a sequence of strings; wrap a single string in a list")
        self._tower("text")
        return self._run("text", tokenize(list(texts)))

    # -- internals -------------------------------------------------------------------------------
    def _tower(self, modality: str) -> str:
        tower = TOWERS[modality]
        if tower not in self.model.modalities:
            raise ModelError(
                f"this encoder was built without the {tower!r} tower needed for {modality}; "
                f"load it with towers including {tower!r}"
            )
        return tower

    def _check_shape(self, modality: str, x: torch.Tensor) -> None:
        cfg = self.config
        s = cfg.image_size
        expected = {
            "image": (None, 3, s, s),
            "video": (None, None, 3, cfg.video_frames, s, s),
            "audio": (None, None, 1, cfg.audio_num_mel_bins, cfg.audio_target_len),
        }[modality]
        ok = x.ndim == len(expected) and all(e is None or e == n for e, n in zip(expected, x.shape, strict=True))
        if not ok or not x.is_floating_point():
            names = {"image": "(B, 3, H, W)", "video": "(B, clips, 3, T, H, W)", "audio": "(B, clips, 1, mel, frames)"}
            want = tuple("*" if e is None else e for e in expected)
            raise ValueError(
                f"{modality} batch must be a float tensor {names[modality]} = {want}, got {x.dtype} {tuple(x.shape)}"
            )

    def _run(self, tower: str, x: torch.Tensor) -> torch.Tensor:
        device, dtype = self.device, self.dtype
        out = []
        with torch.no_grad():  # not inference_mode: callers feed the result to trainable projectors
            for start in range(0, x.shape[0], self.batch_size):
                chunk = x[start : start + self.batch_size].to(device)
                if chunk.is_floating_point():
                    chunk = chunk.to(dtype)
                out.append(self.model.embed(tower, chunk))
        if not out:
            return torch.empty(0, self.embed_dim, device=device, dtype=dtype)
        return torch.cat(out)
