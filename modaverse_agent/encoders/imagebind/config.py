"""ImageBind's configuration: the official constructor's arguments as a dataclass, saved as JSON.

Field names are the keyword arguments of the reference ``ImageBindModel`` so an official configuration
reads in unchanged; ``huge()`` is the released checkpoint's, ``tiny()`` the test fixtures'.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

#: Every tower of the official model, in the state dict's order.
ALL_MODALITIES: tuple[str, ...] = ("vision", "text", "audio", "depth", "thermal", "imu")


def _help(text: str, default: Any) -> Any:
    return field(default=default, metadata={"help": text})


@dataclass
class ImageBindConfig:
    """Sizes of the six ImageBind towers (defaults: the reference constructor's defaults)."""

    out_embed_dim: int = _help("Width of the shared embedding space.", 768)
    video_frames: int = _help("Frames per clip the vision stem expects (images are repeated to this).", 2)
    kernel_size: tuple[int, int, int] = _help("Vision Conv3d kernel and stride (time, height, width).", (2, 14, 14))
    image_size: int = _help("Side of the square vision input.", 224)
    vision_embed_dim: int = _help("Vision trunk width.", 1024)
    vision_num_blocks: int = _help("Vision trunk depth.", 24)
    vision_num_heads: int = _help("Vision attention heads.", 16)
    text_embed_dim: int = _help("Text trunk width.", 768)
    text_num_blocks: int = _help("Text trunk depth.", 12)
    text_num_heads: int = _help("Text attention heads.", 12)
    text_context_length: int = _help("Tokens per text (CLIP: 77).", 77)
    text_vocab_size: int = _help("BPE vocabulary size (CLIP: 49408).", 49408)
    audio_kernel_size: int = _help("Audio Conv2d kernel over the mel spectrogram.", 16)
    audio_stride: int = _help("Audio Conv2d stride.", 10)
    audio_embed_dim: int = _help("Audio trunk width.", 768)
    audio_num_blocks: int = _help("Audio trunk depth.", 12)
    audio_num_heads: int = _help("Audio attention heads.", 12)
    audio_num_mel_bins: int = _help("Mel bins of the audio input.", 128)
    audio_target_len: int = _help("Frames of the audio input.", 204)
    audio_drop_path: float = _help("Training-only stochastic depth; recorded, not applied (frozen encoder).", 0.1)
    depth_embed_dim: int = _help("Depth trunk width.", 384)
    depth_kernel_size: int = _help("Depth Conv2d kernel and stride.", 16)
    depth_num_blocks: int = _help("Depth trunk depth.", 12)
    depth_num_heads: int = _help("Depth attention heads.", 8)
    depth_drop_path: float = _help("Training-only stochastic depth; recorded, not applied.", 0.0)
    thermal_embed_dim: int = _help("Thermal trunk width.", 768)
    thermal_kernel_size: int = _help("Thermal Conv2d kernel and stride.", 16)
    thermal_num_blocks: int = _help("Thermal trunk depth.", 12)
    thermal_num_heads: int = _help("Thermal attention heads.", 12)
    thermal_drop_path: float = _help("Training-only stochastic depth; recorded, not applied.", 0.0)
    imu_embed_dim: int = _help("IMU trunk width.", 512)
    imu_kernel_size: int = _help("IMU patch length; the reference hard-codes 8 (Linear(48, D)).", 8)
    imu_num_blocks: int = _help("IMU trunk depth.", 6)
    imu_num_heads: int = _help("IMU attention heads.", 8)
    imu_drop_path: float = _help("Training-only stochastic depth; recorded, not applied.", 0.7)
    text_logit_scale_init: float = _help("Initial text logit scale (learnable).", 1 / 0.07)
    audio_logit_scale_init: float = _help("Initial audio logit scale (a fixed buffer).", 20.0)
    depth_logit_scale_init: float = _help("Initial depth logit scale (a fixed buffer).", 5.0)
    thermal_logit_scale_init: float = _help("Initial thermal logit scale (a fixed buffer).", 10.0)
    imu_logit_scale_init: float = _help("Initial IMU logit scale (a fixed buffer).", 5.0)
    max_logit_scale: float = _help("Logit scales are clipped to this.", 100.0)
    modalities: tuple[str, ...] = _help(
        "Towers to build; leave out those you never encode to save memory (their weights are skipped on load).",
        ALL_MODALITIES,
    )

    def __post_init__(self) -> None:
        self.kernel_size = tuple(int(k) for k in self.kernel_size)  # type: ignore[assignment]
        self.modalities = tuple(self.modalities)
        unknown = set(self.modalities) - set(ALL_MODALITIES)
        if unknown or not self.modalities:
            raise ValueError(f"`modalities` must be a non-empty subset of {ALL_MODALITIES}, got {self.modalities}")
        if len(self.kernel_size) != 3:
            raise ValueError(f"`kernel_size` must be (time, height, width), got {self.kernel_size}")
        if self.imu_kernel_size != 8:
            raise ValueError("`imu_kernel_size` must be 8: the reference IMU stem hard-codes Linear(6 * 8, D)")
        for name in ALL_MODALITIES:
            dim, heads = getattr(self, f"{name}_embed_dim"), getattr(self, f"{name}_num_heads")
            if dim % heads:
                raise ValueError(f"`{name}_embed_dim` ({dim}) must be divisible by `{name}_num_heads` ({heads})")
        if self.image_size % self.kernel_size[1] or self.image_size % self.kernel_size[2]:
            raise ValueError(f"`image_size` {self.image_size} is not a multiple of the patch size {self.kernel_size}")

    # -- presets ---------------------------------------------------------------------------------
    @classmethod
    def huge(cls, **overrides: Any) -> ImageBindConfig:
        """The released ``imagebind_huge`` (1.2 B parameters, 1024-d embeddings)."""
        kwargs: dict[str, Any] = {
            "vision_embed_dim": 1280,
            "vision_num_blocks": 32,
            "vision_num_heads": 16,
            "text_embed_dim": 1024,
            "text_num_blocks": 24,
            "text_num_heads": 16,
            "out_embed_dim": 1024,
            "audio_drop_path": 0.1,
            "imu_drop_path": 0.7,
        }
        return cls(**{**kwargs, **overrides})

    @classmethod
    def tiny(cls, **overrides: Any) -> ImageBindConfig:
        """A few-layer model for tests: each tower has its own width so wiring mistakes fail to load."""
        kwargs: dict[str, Any] = {"out_embed_dim": 32}
        for name, (dim, blocks, heads) in {
            "vision": (64, 2, 4),
            "text": (24, 2, 4),
            "audio": (48, 2, 4),
            "depth": (16, 2, 2),
            "thermal": (40, 2, 4),
            "imu": (56, 2, 4),
        }.items():
            kwargs |= {f"{name}_embed_dim": dim, f"{name}_num_blocks": blocks, f"{name}_num_heads": heads}
        for name in ("audio", "depth", "thermal", "imu"):
            kwargs[f"{name}_drop_path"] = 0.0
        return cls(**{**kwargs, **overrides})

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> ImageBindConfig:
        """``"huge"`` or ``"tiny"``."""
        presets = {"huge": cls.huge, "tiny": cls.tiny}
        if name not in presets:
            raise ValueError(f"unknown ImageBind preset {name!r}; use one of {sorted(presets)} or a config JSON path")
        return presets[name](**overrides)

    # -- derived sizes ---------------------------------------------------------------------------
    @property
    def vision_patch_grid(self) -> tuple[int, int, int]:
        """Patches along (time, height, width) of one clip."""
        t, h, w = self.kernel_size
        return self.video_frames // t, self.image_size // h, self.image_size // w

    @property
    def audio_patch_grid(self) -> tuple[int, int]:
        """Patches along (mel bins, frames) of one audio clip."""
        k, s = self.audio_kernel_size, self.audio_stride
        return (self.audio_num_mel_bins - k) // s + 1, (self.audio_target_len - k) // s + 1

    def logit_scale_init(self, modality: str) -> float:
        """Initial logit scale of ``modality``'s postprocessor."""
        return float(getattr(self, f"{modality}_logit_scale_init"))

    # -- (de)serialisation -----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict."""
        data = asdict(self)
        data["kernel_size"] = list(self.kernel_size)
        data["modalities"] = list(self.modalities)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ImageBindConfig:
        """Build from a dict; unknown keys are reported and ignored (they may come from a newer version)."""
        known = {f.name for f in fields(cls)}
        extra = sorted(set(data) - known)
        if extra:
            logger.warning("ImageBindConfig: ignoring unknown keys %s", extra)
        kwargs = {k: v for k, v in data.items() if k in known}
        for key in ("kernel_size", "modalities"):
            if key in kwargs:
                kwargs[key] = tuple(kwargs[key])
        return cls(**kwargs)

    def to_json_file(self, path: str | Path) -> None:
        """Write the config as indented JSON."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def from_json_file(cls, path: str | Path) -> ImageBindConfig:
        """Read a config written by :meth:`to_json_file` (or the reference's constructor kwargs)."""
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
