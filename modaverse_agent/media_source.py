"""Reading media sources into bytes: paths, ``file://`` URLs, bytes, base64 text and ``data:`` URLs.

Files are read through one non-blocking descriptor capped at the byte limit, so a FIFO, a device or a
procfs file that states size 0 can never hang or exhaust the reader.
"""

from __future__ import annotations

import base64
import binascii
import errno
import os
import re
import stat
import urllib.parse
from pathlib import Path

from .errors import MediaError
from .media_sniff import reason, sniff

_B64_TEXT = re.compile(r"[A-Za-z0-9+/=_\-\s]+")


def read_source(source: str | Path | bytes, max_bytes: int) -> tuple[bytes, str, Path | None]:
    """``(bytes, name, path)`` of a path, ``file://`` URL, bytes, base64 text or ``data:`` URL.

    A file is read through one descriptor, at most ``max_bytes`` of it; anything wrong with the source
    (missing, unreadable, a special file, a remote URL, bad base64) is a MediaError saying what to do.
    """
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
