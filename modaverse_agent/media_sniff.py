"""Identifying media by content: magic bytes, what non-media content looks like, decoder failures, limits.

Nothing here decodes a file: :func:`sniff` reads its first bytes; probing and decoding
(:mod:`modaverse_agent.media_probe`, :mod:`modaverse_agent.media_decode`) use these helpers to report
what went wrong in one line that never quotes the file's bytes.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

from .errors import MediaError
from .media_item import MediaLimits, Modality

_SIGNATURES: tuple[tuple[int, bytes, str, Modality], ...] = (
    (0, b"\x89PNG\r\n\x1a\n", "image/png", "image"),
    (0, b"\xff\xd8\xff", "image/jpeg", "image"),
    (0, b"GIF87a", "image/gif", "image"),
    (0, b"GIF89a", "image/gif", "image"),
    (0, b"BM", "image/bmp", "image"),
    (0, b"II*\x00", "image/tiff", "image"),
    (0, b"MM\x00*", "image/tiff", "image"),
    (0, b"ID3", "audio/mpeg", "audio"),
    (0, b"fLaC", "audio/flac", "audio"),
    (0, b"OggS", "audio/ogg", "audio"),
    (0, b"#!AMR", "audio/amr", "audio"),
    (0, b"caff", "audio/x-caf", "audio"),
    (0, b"FLV\x01", "video/x-flv", "video"),
    (0, b"\x00\x00\x01\xba", "video/mpeg", "video"),
    (0, b"\x30\x26\xb2\x75\x8e\x66\xcf\x11", "video/x-ms-asf", "video"),
)
_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"}
#: What every "not supported" error suggests instead.
SUPPORTED_HINT = (
    "give a PNG/JPEG/WebP/GIF/BMP/TIFF image, a WAV/MP3/FLAC/OGG/M4A/AAC audio or an MP4/MOV/WebM/MKV/AVI video"
)


def sniff(data: bytes) -> tuple[Modality, str]:
    """Return ``(modality, mime_type)`` from the content's magic bytes, never the file name.

    Containers that may hold audio only (MP4, Ogg, WebM, ...) are settled by :func:`probe`.
    """
    if data[:4] == b"RIFF" and len(data) >= 12:
        kind = data[8:12]
        if kind == b"WAVE":
            return "audio", "audio/wav"
        if kind == b"WEBP":
            return "image", "image/webp"
        if kind == b"AVI ":
            return "video", "video/x-msvideo"
    if data[:4] == b"FORM" and data[8:12] in (b"AIFF", b"AIFC"):
        return "audio", "audio/aiff"
    if data[4:8] == b"ftyp":
        brand = data[8:12]
        if brand in _HEIF_BRANDS:
            raise MediaError(f"HEIF/HEIC images are not supported; convert it to JPEG or PNG first. {SUPPORTED_HINT}")
        if brand in (b"avif", b"avis"):
            return "image", "image/avif"
        if brand in (b"M4A ", b"M4B ", b"M4P "):
            return "audio", "audio/mp4"
        if brand == b"qt  ":
            return "video", "video/quicktime"
        if brand.startswith(b"3g"):
            return "video", "video/3gpp"
        return "video", "video/mp4"
    if data[:4] == b"\x1aE\xdf\xa3":  # EBML: the DocType in the header tells WebM from Matroska
        return "video", "video/webm" if b"webm" in data[:64] else "video/x-matroska"
    for offset, magic, mime, modality in _SIGNATURES:
        if data[offset : offset + len(magic)] == magic:
            return modality, mime
    if len(data) >= 376 and data[0] == 0x47 and data[188] == 0x47:
        return "video", "video/mp2t"
    if len(data) >= 2 and data[0] == 0xFF and (data[1] & 0xF0) == 0xF0 and (data[1] & 0x06) == 0:
        return "audio", "audio/aac"
    if len(data) >= 2 and data[0] == 0xFF and (data[1] & 0xE0) == 0xE0 and (data[1] & 0x06) != 0:
        return "audio", "audio/mpeg"
    raise MediaError(
        f"unrecognised media format: the content looks like {describe_content(data)}, not an image, audio or video "
        f"file; {SUPPORTED_HINT}"
    )


_OTHER_FORMATS: tuple[tuple[bytes, str], ...] = (
    (b"%PDF", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive (or an Office/JAR file)"),
    (b"PK\x05\x06", "an empty ZIP archive"),
    (b"\x1f\x8b", "gzip-compressed data"),
    (b"BZh", "bzip2-compressed data"),
    (b"\xfd7zXZ\x00", "xz-compressed data"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"Rar!", "a RAR archive"),
    (b"\x7fELF", "an ELF executable"),
    (b"MZ", "a Windows executable"),
    (b"SQLite format 3\x00", "an SQLite database"),
    (b"\x28\xb5\x2f\xfd", "zstd-compressed data"),
)


def describe_content(data: bytes) -> str:
    """What ``data`` looks like, in words (``plain text``, ``a PDF document``, ...), never quoting any of it."""
    if not data:
        return "nothing (0 bytes)"
    for magic, what in _OTHER_FORMATS:
        if data.startswith(magic):
            return what
    head = data[:4096]
    if not head.strip(b"\x00"):
        return "zero bytes only"
    text = _as_text(head)
    if text is None:
        return "unknown binary data"
    start = text.lstrip("\ufeff \t\r\n").lower()
    if "<svg" in start[:1024]:
        return "an SVG drawing (vector graphics are not supported: export it as PNG)"
    if start.startswith(("<!doctype html", "<html")):
        return "an HTML page"
    if start.startswith("<?xml") or start.startswith("<"):
        return "an XML document"
    if start.startswith(("{", "[")):
        return "JSON or other plain text"
    return "plain text"


def looks_like_text(data: bytes) -> bool:
    """True when ``data`` (a file's first bytes) is non-empty, mostly printable UTF-8/UTF-16 text."""
    return bool(data) and _as_text(data[:4096]) is not None


def _as_text(head: bytes) -> str | None:
    """``head`` decoded as UTF-8/UTF-16 text when it is mostly printable, else None."""
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return head.decode("utf-16", errors="replace")
    text = head.decode("utf-8", errors="replace")
    bad = sum(1 for c in text if c == "\ufffd" or (ord(c) < 32 and c not in "\t\r\n\f"))
    return text if bad <= len(text) // 50 else None


_BYTES_REPR = re.compile(r"\bb'(?:[^'\\]|\\.)*'" + r'|\bb"(?:[^"\\]|\\.)*"')  # b'...' and b"..." reprs
_NOISE = re.compile(r" ?<_io\.BytesIO object at 0x[0-9a-fA-F]+>|: '<none>'")  # the in-memory file's name


def reason(e: BaseException) -> str:
    """A decoder's exception as a short phrase, with any bytes it quotes from the file taken out."""
    text = " ".join(_BYTES_REPR.sub("<bytes>", _NOISE.sub("", str(e))).split())
    text = text if len(text) <= 160 else text[:157] + "..."
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


@contextlib.contextmanager
def decoder_errors(name: str, what: str) -> Iterator[None]:
    """Turn anything a decoder library raises on hostile bytes into a MediaError naming ``name``.

    Pillow and FFmpeg raise many kinds of exception on corrupt input (TypeError, struct.error,
    IndexError, MemoryError, ...); every one is about the file, so it is reported as such.
    """
    try:
        yield
    except MediaError:
        raise
    except Exception as e:
        raise MediaError(
            f"{name}: the {what} decoder failed on it ({reason(e)}); the file is corrupt or in a variant we cannot "
            f"read: re-export it; {SUPPORTED_HINT}"
        ) from e


def check_pixels(name: str, width: int, height: int, limits: MediaLimits) -> None:
    """A MediaError if a ``width`` x ``height`` frame is empty or over ``limits.max_pixels``."""
    if width <= 0 or height <= 0:
        raise MediaError(f"{name}: has an empty frame size {width}x{height}; the file is corrupt")
    if width * height > limits.max_pixels:
        raise MediaError(
            f"{name}: is {width}x{height} = {width * height} pixels, over the {limits.max_pixels}-pixel limit; "
            "downscale it first (or raise MediaLimits.max_pixels if you trust the file)"
        )


def check_duration(name: str, seconds: float | None, limits: MediaLimits) -> None:
    """A MediaError if ``seconds`` is over ``limits.max_duration_s`` (None: unknown, not checked)."""
    if seconds is not None and seconds > limits.max_duration_s:
        raise MediaError(
            f"{name}: is {seconds:.1f} s long, over the {limits.max_duration_s:g} s limit; "
            "trim it (e.g. `ffmpeg -i IN -t 600 OUT`) or raise MediaLimits.max_duration_s"
        )
