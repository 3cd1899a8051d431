"""Media inputs: read from a path, bytes or base64, sniff the real format, probe it, enforce limits.

``load_media`` identifies a file by its content (never its name), checks that it really decodes
(Pillow for images, PyAV/FFmpeg for audio and video) and enforces limits on size, pixels and
duration before anything large is decoded. Its steps live in modules of their own, all re-exported here:

- :mod:`modaverse_agent.media_item`: the MediaItem record, MediaInfo and MediaLimits;
- :mod:`modaverse_agent.media_source`: reading paths, ``file://`` URLs, bytes, base64 and ``data:`` URLs;
- :mod:`modaverse_agent.media_sniff`: magic bytes, describing non-media content, decoder errors, limits;
- :mod:`modaverse_agent.media_probe`: checking that a file decodes and reading its cheap facts.

Decoding to pixels and samples lives in :mod:`modaverse_agent.media_decode`. None of them imports torch.
"""

from __future__ import annotations

from pathlib import Path

from .media_item import DEFAULT_LIMITS, MAX_FILE_BYTES, MODALITIES, MediaInfo, MediaItem, MediaLimits, Modality
from .media_probe import open_container, probe, real_video_streams, stream_duration
from .media_sniff import SUPPORTED_HINT, check_duration, check_pixels, decoder_errors, describe_content, reason, sniff
from .media_source import read_source

__all__ = [
    "DEFAULT_LIMITS",
    "MAX_FILE_BYTES",
    "MODALITIES",
    "SUPPORTED_HINT",
    "MediaInfo",
    "MediaItem",
    "MediaLimits",
    "Modality",
    "check_duration",
    "check_pixels",
    "decoder_errors",
    "describe_content",
    "load_media",
    "open_container",
    "probe",
    "read_source",
    "real_video_streams",
    "reason",
    "sniff",
    "stream_duration",
]


def load_media(
    source: str | Path | bytes,
    *,
    max_bytes: int | None = None,
    limits: MediaLimits | None = None,
) -> MediaItem:
    """Read ``source`` (path, ``file://`` URL, bytes, base64 or ``data:`` URL) into a checked MediaItem.

    The format comes from the content; the file must decode and stay within ``limits``
    (``max_bytes`` overrides ``limits.max_bytes``). Raises MediaError, and nothing else, for anything
    wrong with the source (missing, unreadable, special file, corrupt, hostile), saying what to do.
    """
    limits = limits or DEFAULT_LIMITS
    if max_bytes is not None:
        limits = MediaLimits(
            max_bytes=max_bytes,
            max_pixels=limits.max_pixels,
            max_duration_s=limits.max_duration_s,
            max_decoded_bytes=limits.max_decoded_bytes,
        )
    data, name, path = read_source(source, limits.max_bytes)
    item = probe(data, name=name, limits=limits)
    return MediaItem(item.modality, item.mime_type, item.data, item.name, path, item.info)
