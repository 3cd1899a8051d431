"""Media inputs: read from a path, bytes or base64, sniff the real format, enforce limits.

This module only identifies and checks media; decoding to pixels and samples for the encoder lives
with the encoder's preprocessing.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from .errors import MediaError

Modality = Literal["image", "audio", "video"]
MODALITIES: tuple[Modality, ...] = ("image", "audio", "video")

#: Largest media file accepted, in bytes (override per call).
MAX_FILE_BYTES = 200 * 1024 * 1024


@dataclass(frozen=True)
class MediaItem:
    """One input media file, identified by content."""

    modality: Modality
    mime_type: str
    data: bytes = field(repr=False)
    name: str
    path: Path | None = None

    @property
    def sha256(self) -> str:
        """Hex digest of the content (stable id for caches)."""
        return hashlib.sha256(self.data).hexdigest()


_SIGNATURES: tuple[tuple[int, bytes, str, Modality], ...] = (
    (0, b"\x89PNG\r\n\x1a\n", "image/png", "image"),
    (0, b"\xff\xd8\xff", "image/jpeg", "image"),
    (0, b"GIF87a", "image/gif", "image"),
    (0, b"GIF89a", "image/gif", "image"),
    (0, b"BM", "image/bmp", "image"),
    (0, b"ID3", "audio/mpeg", "audio"),
    (0, b"fLaC", "audio/flac", "audio"),
    (0, b"OggS", "audio/ogg", "audio"),
    (0, b"\x1aE\xdf\xa3", "video/webm", "video"),
)


def sniff(data: bytes) -> tuple[Modality, str]:
    """Return ``(modality, mime_type)`` from the content's magic bytes, never the file name."""
    if data[:4] == b"RIFF" and len(data) >= 12:
        kind = data[8:12]
        if kind == b"WAVE":
            return "audio", "audio/wav"
        if kind == b"WEBP":
            return "image", "image/webp"
        if kind == b"AVI ":
            return "video", "video/x-msvideo"
    if data[4:8] == b"ftyp":
        brand = data[8:12]
        if brand in (b"M4A ", b"M4B "):
            return "audio", "audio/mp4"
        return "video", "video/mp4"
    for offset, magic, mime, modality in _SIGNATURES:
        if data[offset : offset + len(magic)] == magic:
            return modality, mime
    if len(data) >= 2 and data[0] == 0xFF and (data[1] & 0xE0) == 0xE0:
        return "audio", "audio/mpeg"
    raise MediaError(
        "unsupported or unrecognised media format (first bytes "
        f"{data[:12]!r}); give a PNG/JPEG/WebP/GIF image, a WAV/MP3/FLAC/OGG audio or an MP4/WebM video"
    )


def _read(source: str | Path | bytes, max_bytes: int) -> tuple[bytes, str, Path | None]:
    if isinstance(source, bytes | bytearray):
        return bytes(source), "<bytes>", None
    text = str(source)
    if isinstance(source, str) and text.startswith("data:"):
        _, _, payload = text.partition(",")
        return _b64(payload), "<data-url>", None
    if text.startswith("file://"):
        text = text[len("file://") :]
    elif "://" in text:
        raise MediaError(f"{text!r} is a remote URL; download it and pass the local file instead")
    path = Path(text).expanduser()
    if not path.is_file():
        if isinstance(source, str) and len(text) > 256 and "/" not in text[:64]:
            return _b64(text), "<base64>", None
        raise MediaError(f"media file {str(path)!r} does not exist; check the path")
    size = path.stat().st_size
    if size > max_bytes:
        raise MediaError(f"{path} is {size} bytes, over the {max_bytes}-byte limit; use a smaller file")
    return path.read_bytes(), path.name, path


def _b64(payload: str) -> bytes:
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as e:
        raise MediaError(f"media given as text is not valid base64 ({e}); pass a path or raw bytes") from e


def load_media(source: str | Path | bytes, *, max_bytes: int = MAX_FILE_BYTES) -> MediaItem:
    """Read ``source`` (path, ``file://`` URL, bytes, base64 or ``data:`` URL) into a checked MediaItem."""
    data, name, path = _read(source, max_bytes)
    if not data:
        raise MediaError(f"{name} is empty (0 bytes); give a real media file")
    if len(data) > max_bytes:
        raise MediaError(f"{name} is {len(data)} bytes, over the {max_bytes}-byte limit")
    try:
        modality, mime = sniff(data)
    except MediaError as e:
        raise MediaError(f"{name}: {e}") from None
    return MediaItem(modality=modality, mime_type=mime, data=data, name=name, path=path)
