"""The media record: one checked input (:class:`MediaItem`), what probing found (:class:`MediaInfo`), the limits.

The bottom of the media modules: it imports none of them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Modality = Literal["image", "audio", "video"]
MODALITIES: tuple[Modality, ...] = ("image", "audio", "video")

#: Largest media file accepted, in bytes (override per call).
MAX_FILE_BYTES = 200 * 1024 * 1024


@dataclass(frozen=True)
class MediaLimits:
    """Limits checked on every input before it is decoded in full."""

    max_bytes: int = MAX_FILE_BYTES
    """Largest file, in bytes."""
    max_pixels: int = 50_000_000
    """Largest image or video frame, in pixels (width x height); guards against decompression bombs."""
    max_duration_s: float = 600.0
    """Longest audio or video, in seconds."""
    max_decoded_bytes: int = 2 * 1024**3
    """Largest decoded result held in memory at once (all frames of a video, all samples of an audio)."""

    def __post_init__(self) -> None:
        for name in ("max_bytes", "max_pixels", "max_duration_s", "max_decoded_bytes"):
            if not getattr(self, name) > 0:
                raise ValueError(f"`{name}` must be positive, got {getattr(self, name)!r}")


DEFAULT_LIMITS = MediaLimits()


@dataclass(frozen=True)
class MediaInfo:
    """What probing found out about a media file (cheap facts, read without decoding it all)."""

    container: str
    """Pillow format (``PNG``) or FFmpeg demuxer name (``wav``, ``mov,mp4,m4a,3gp,3g2,mj2``)."""
    width: int | None = None
    height: int | None = None
    duration_s: float | None = None
    """Declared duration, when the container states one."""
    fps: float | None = None
    sample_rate: int | None = None
    channels: int | None = None
    codec: str | None = None
    """Codec of the primary stream (video for videos, audio for audio)."""
    mode: str | None = None
    """Pillow mode of an image (``RGB``, ``RGBA``, ``P``, ``L``, ...)."""
    has_audio: bool = False
    has_video: bool = False
    frames: int | None = None
    """Frames of an animated image or a video, when known."""


@dataclass(frozen=True)
class MediaItem:
    """One input media file, identified by content."""

    modality: Modality
    mime_type: str
    data: bytes = field(repr=False)
    name: str
    path: Path | None = None
    info: MediaInfo | None = field(default=None, compare=False)

    @property
    def sha256(self) -> str:
        """Hex digest of the content (stable id for caches)."""
        return hashlib.sha256(self.data).hexdigest()
