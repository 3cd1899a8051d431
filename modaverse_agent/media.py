"""Media inputs: read from a path, bytes or base64, sniff the real format, probe it, enforce limits.

``load_media`` identifies a file by its content (never its name), checks that it really decodes
(Pillow for images, PyAV/FFmpeg for audio and video) and enforces limits on size, pixels and
duration before anything large is decoded. Decoding to pixels and samples lives in
:mod:`modaverse_agent.media_decode`. Neither module imports torch.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import errno
import hashlib
import io
import os
import re
import stat
import struct
import urllib.parse
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .errors import MediaError

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
_SUPPORTED_HINT = (
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
            raise MediaError(f"HEIF/HEIC images are not supported; convert it to JPEG or PNG first. {_SUPPORTED_HINT}")
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
        f"file; {_SUPPORTED_HINT}"
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
            f"read: re-export it; {_SUPPORTED_HINT}"
        ) from e


# -- reading the bytes ---------------------------------------------------------------------------

_B64_TEXT = re.compile(r"[A-Za-z0-9+/=_\-\s]+")


def _read(source: str | Path | bytes, max_bytes: int) -> tuple[bytes, str, Path | None]:
    if isinstance(source, bytes | bytearray | memoryview):
        return bytes(source), "<bytes>", None
    if not isinstance(source, str | Path):
        raise MediaError(f"cannot read media from a {type(source).__name__}; pass a path, bytes or base64 text")
    text = str(source)
    if isinstance(source, str) and text.startswith("data:"):
        return _data_url(text), "<data-url>", None
    if text.startswith("file://"):
        try:
            text = urllib.parse.unquote(urllib.parse.urlparse(text).path)
        except ValueError as e:  # e.g. an unclosed "[" read as an IPv6 host
            raise MediaError(f"{_show(text)} is not a valid file:// URL ({e}); pass the plain path") from e
    elif re.match(r"^[A-Za-z][A-Za-z0-9+.\-]*://", text):
        raise MediaError(f"{_show(text)} is a remote URL; download it and pass the local file instead")
    if isinstance(source, str) and len(text) > 255 and _B64_TEXT.fullmatch(text) and not _is_path(text):
        return _b64(text), "<base64>", None
    try:
        path = Path(text).expanduser()
    except RuntimeError as e:  # "~user/..." for a user without a home directory
        raise MediaError(f"cannot expand the home directory in {_show(text)} ({e}); give the full path") from e
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError) as e:
        if isinstance(source, str) and (data := _short_b64(text)) is not None:
            return data, "<base64>", None
        if _is_path(str(path), follow=False):
            raise MediaError(f"{_show(path)} is a broken symbolic link; point it at a media file") from e
        raise MediaError(f"media file {_show(path)} does not exist; check the path") from e
    except PermissionError as e:
        raise MediaError(f"cannot reach {_show(path)}: permission denied; make it readable or copy it") from e
    except (OSError, ValueError) as e:  # a name too long for the file system, a NUL character, a loop of links
        raise MediaError(f"cannot use {_show(text)} as a path ({reason(e)}); pass a path, bytes or base64 text") from e
    if not stat.S_ISREG(st.st_mode):
        raise MediaError(f"{_show(path)} is {_file_kind(st.st_mode)}, not a regular file; pass a media file")
    return _read_file(path, max_bytes), path.name, path


def _show(text: str | Path, limit: int = 200) -> str:
    """A path or URL the user gave, quoted and shortened for an error message."""
    text = str(text)
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


def _is_path(text: str, *, follow: bool = True) -> bool:
    """True when ``text`` names something on disk (False for anything that cannot be a path)."""
    try:
        (os.stat if follow else os.lstat)(text)
    except (OSError, ValueError):
        return False
    return True


def _file_kind(mode: int) -> str:
    kinds = (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a named pipe (FIFO)"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    )
    return next((what for test, what in kinds if test(mode)), "a special file")


def _read_file(path: Path, max_bytes: int) -> bytes:
    """The bytes of the regular file ``path``, at most ``max_bytes``; a MediaError for any failure to read."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)  # non-blocking: a FIFO swapped in after the check cannot hang the open
    except PermissionError as e:
        raise MediaError(f"cannot read {_show(path)}: permission denied; make it readable (chmod +r) or copy it") from e
    except OSError as e:
        raise MediaError(f"cannot open {_show(path)} ({_os_reason(e)}); check the file and pass a readable one") from e
    try:
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise MediaError(f"{_show(path)} is {_file_kind(st.st_mode)}, not a regular file; pass a media file")
            if st.st_size > max_bytes:
                raise MediaError(f"{path} is {st.st_size} bytes, over the {max_bytes}-byte limit; use a smaller file")
            data = f.read(max_bytes + 1)  # files of /proc and the like state size 0: read no more than allowed
    except OSError as e:
        raise MediaError(
            f"cannot read {_show(path)} ({_os_reason(e)}); it is not a readable media file (a special or damaged "
            "file, or a removed disk): copy the media into an ordinary file and pass that"
        ) from e
    if len(data) > max_bytes:
        raise MediaError(f"{path} is over the {max_bytes}-byte limit; use a smaller file")
    return data


def _os_reason(e: OSError) -> str:
    if e.errno is not None and e.strerror:
        return f"{errno.errorcode.get(e.errno, e.errno)}: {e.strerror}"
    return reason(e)


def _short_b64(text: str) -> bytes | None:
    """Bytes of a short base64 text that decodes to a known media format, else None (it was a path)."""
    if len(text) < 16 or not _B64_TEXT.fullmatch(text):
        return None
    try:
        data = _b64(text)
        sniff(data)
    except MediaError:
        return None
    return data


def _data_url(text: str) -> bytes:
    header, sep, payload = text.partition(",")
    if not sep:
        raise MediaError("data: URL has no ',' before its payload; use data:<mime>;base64,<data>")
    if header.endswith(";base64"):
        return _b64(payload)
    return urllib.parse.unquote_to_bytes(payload)


def _b64(payload: str) -> bytes:
    cleaned = "".join(payload.split())
    try:
        if "-" in cleaned or "_" in cleaned:
            return base64.urlsafe_b64decode(cleaned + "=" * (-len(cleaned) % 4))
        return base64.b64decode(cleaned, validate=True)
    except (binascii.Error, ValueError) as e:
        raise MediaError(f"media given as text is not valid base64 ({e}); pass a path or raw bytes") from e


# -- probing -------------------------------------------------------------------------------------

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
                raise MediaError(f"{name}: {fmt} images are not supported; {_SUPPORTED_HINT}")
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
    data, name, path = _read(source, limits.max_bytes)
    item = probe(data, name=name, limits=limits)
    return MediaItem(item.modality, item.mime_type, item.data, item.name, path, item.info)
