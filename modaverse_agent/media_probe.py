"""Probing media: check that a sniffed file really decodes and respects the limits, and read its cheap facts.

Pillow probes images, PyAV (FFmpeg) audio and video; only the first frame is decoded. Neither library is
imported until a file needs it.
"""

from __future__ import annotations

import io
import struct
import warnings
from typing import Any

from .errors import MediaError
from .media_item import DEFAULT_LIMITS, MediaInfo, MediaItem, MediaLimits, Modality
from .media_sniff import SUPPORTED_HINT, check_duration, check_pixels, decoder_errors, reason, sniff

_PIL_FORMATS = {
    "PNG": "image/png",
    "JPEG": "image/jpeg",
    "MPO": "image/jpeg",
    "GIF": "image/gif",
    "WEBP": "image/webp",
    "BMP": "image/bmp",
    "DIB": "image/bmp",
    "TIFF": "image/tiff",
    "AVIF": "image/avif",
}


def _probe_image(data: bytes, name: str, limits: MediaLimits) -> tuple[Modality, str, MediaInfo]:
    from PIL import Image, UnidentifiedImageError

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data))
        except Image.DecompressionBombError as e:
            raise _over_pixels(name, e, limits) from e
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
            raise MediaError(f"{name}: not a readable image ({reason(e)}); the file is corrupt or not an image") from e
        with img:
            fmt = img.format or "?"
            if fmt not in _PIL_FORMATS:
                raise MediaError(f"{name}: {fmt} images are not supported; {SUPPORTED_HINT}")
            width, height = img.size
            check_pixels(name, width, height, limits)
            frames = getattr(img, "n_frames", 1)
            try:
                img.load()  # decodes the first frame: catches truncated and corrupt files
            except Image.DecompressionBombError as e:
                raise _over_pixels(name, e, limits) from e
            except (OSError, SyntaxError, ValueError, EOFError) as e:
                raise MediaError(
                    f"{name}: image data cannot be decoded ({reason(e)}); the file is truncated or corrupt"
                ) from e
            info = MediaInfo(container=fmt, width=width, height=height, frames=frames, mode=img.mode)
    return "image", _PIL_FORMATS[fmt], info


def _over_pixels(name: str, e: Exception, limits: MediaLimits) -> MediaError:
    return MediaError(
        f"{name}: declares a frame far over the {limits.max_pixels}-pixel limit ({reason(e)}); "
        "downscale it first (or raise MediaLimits.max_pixels if you trust the file)"
    )


def _wav_truncation(data: bytes) -> tuple[int, int] | None:
    """``(declared, present)`` byte counts of a RIFF/WAVE data chunk cut short, else None."""
    pos = 12
    while pos + 8 <= len(data):
        chunk, size = data[pos : pos + 4], struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        if chunk == b"data":
            present = len(data) - pos - 8
            # 0 and 0xFFFFFFFF are the placeholders of streaming writers: length unknown, not truncated.
            if size not in (0, 0xFFFFFFFF) and size > present:
                return size, present
            return None
        pos += 8 + size + (size & 1)
    return None


def open_container(data: bytes, name: str) -> Any:
    """Open ``data`` with PyAV; a MediaError if FFmpeg cannot read it."""
    import av

    try:
        return av.open(io.BytesIO(data), mode="r", metadata_errors="ignore")
    except av.FFmpegError as e:
        raise MediaError(
            f"{name}: cannot be opened as audio/video ({reason(e)}); the file is truncated or corrupt"
        ) from e


def real_video_streams(container: Any) -> list[Any]:
    """Video streams that carry moving pictures (not cover art attached to an audio file)."""
    import av

    return [s for s in container.streams.video if not (s.disposition & av.stream.Disposition.attached_pic)]


def stream_duration(container: Any, stream: Any) -> float | None:
    """Declared duration of ``stream`` in seconds (the container's when the stream has none)."""
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000
    return None


def _probe_av(data: bytes, name: str, mime: str, limits: MediaLimits) -> tuple[Modality, str, MediaInfo]:
    import av

    if mime == "audio/wav" and (cut := _wav_truncation(data)) is not None:
        raise MediaError(
            f"{name}: WAV file is truncated (its header declares {cut[0]} bytes of audio, only {cut[1]} are present); "
            "re-export or re-download it"
        )
    with open_container(data, name) as container:
        videos, audios = real_video_streams(container), list(container.streams.audio)
        fmt = container.format.name
        modality: Modality
        if videos:
            stream, modality = videos[0], "video"
        elif audios:
            stream, modality = audios[0], "audio"
        else:
            raise MediaError(f"{name}: has no audio or video stream (container {fmt}); the file is corrupt or empty")
        duration = stream_duration(container, stream)
        check_duration(name, duration, limits)
        ctx = stream.codec_context
        if ctx is None or ctx.codec is None:
            raise MediaError(f"{name}: the {stream.type} codec is not supported by this FFmpeg build; re-encode it")
        if modality == "video":
            check_pixels(name, ctx.width, ctx.height, limits)
            rate = stream.average_rate or stream.guessed_rate
            info = MediaInfo(
                container=fmt,
                width=ctx.width,
                height=ctx.height,
                duration_s=duration,
                fps=float(rate) if rate else None,
                codec=ctx.name,
                has_video=True,
                has_audio=bool(audios),
                frames=stream.frames or None,
                sample_rate=audios[0].rate if audios else None,
                channels=audios[0].channels if audios else None,
            )
        else:
            info = MediaInfo(
                container=fmt,
                duration_s=duration,
                sample_rate=stream.rate,
                channels=stream.channels,
                codec=ctx.name,
                has_audio=True,
            )
        try:
            first = next(iter(container.decode(stream)), None)
        except av.FFmpegError as e:
            raise MediaError(f"{name}: {stream.type} data cannot be decoded ({reason(e)}); the file is corrupt") from e
        if first is None:
            raise MediaError(
                f"{name}: its {stream.type} stream holds no decodable frame; the file is truncated, corrupt or empty"
            )
    return modality, _refine_mime(mime, fmt, modality), info


def _refine_mime(sniffed: str, fmt: str, modality: Modality) -> str:
    if modality == "audio":
        swap = {
            "video/mp4": "audio/mp4",
            "video/3gpp": "audio/3gpp",
            "video/quicktime": "audio/mp4",
            "video/webm": "audio/webm",
            "video/x-matroska": "audio/x-matroska",
        }
        return swap.get(sniffed, sniffed)
    if sniffed.startswith("audio/"):
        return {"audio/ogg": "video/ogg", "audio/mp4": "video/mp4"}.get(sniffed, "video/" + sniffed.split("/")[1])
    return sniffed


def probe(data: bytes, *, name: str = "<media>", limits: MediaLimits = DEFAULT_LIMITS) -> MediaItem:
    """Identify ``data``, check it decodes and respects ``limits``; a MediaError saying why not."""
    if not data:
        raise MediaError(f"{name} is empty (0 bytes); give a real media file")
    if len(data) > limits.max_bytes:
        raise MediaError(f"{name} is {len(data)} bytes, over the {limits.max_bytes}-byte limit; use a smaller file")
    try:
        modality, mime = sniff(data)
    except MediaError as e:
        raise MediaError(f"{name}: {e}") from None
    with decoder_errors(name, "image" if modality == "image" else "audio/video"):
        if modality == "image":
            modality, mime, info = _probe_image(data, name, limits)
        else:
            modality, mime, info = _probe_av(data, name, mime, limits)
    return MediaItem(modality=modality, mime_type=mime, data=data, name=name, info=info)
