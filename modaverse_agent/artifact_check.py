"""Checking a produced file against the modality its artifact declares, by content first, then by name.

The content is sniffed with :func:`~modaverse_agent.media_sniff.sniff` (magic bytes, never a decode).
Content that reads as text, or that no signature matches, is judged by the file's suffix instead; a file
neither tells about (``.bin`` of unknown bytes) passes.
"""

from __future__ import annotations

from pathlib import Path

from .artifacts import Artifact, mime_for
from .errors import MediaError
from .media_sniff import looks_like_text, sniff

#: Containers that may hold audio only as well as video: either declaration fits them.
_AUDIO_OR_VIDEO = frozenset(
    {"video/mp4", "video/quicktime", "video/webm", "video/x-matroska", "video/3gpp", "video/x-ms-asf", "audio/ogg"}
)
_HEAD_BYTES = 4096


def file_kind(path: Path) -> tuple[str, str, str] | None:
    """``(modality, mime type, "content" or "name")`` of a file, e.g. ``("image", "image/png", "content")``.

    None when neither its first bytes nor its suffix tell (or it cannot be read).
    """
    try:
        with open(path, "rb") as f:
            head = f.read(_HEAD_BYTES)
    except OSError:
        return None
    if head and not looks_like_text(head):
        try:
            modality, mime = sniff(head)
            return modality, mime, "content"
        except MediaError:
            pass
    mime = mime_for(path)
    if mime == "application/octet-stream":
        return None
    return mime.split("/")[0], mime, "name"


def modality_problem(artifact: Artifact, generator: str) -> str | None:
    """Why ``artifact``'s file is not of the modality it declares (a one-line error), or None when it fits."""
    kind = file_kind(Path(artifact.path))
    if kind is None or kind[0] == artifact.modality:
        return None
    actual, mime, by = kind
    if mime in _AUDIO_OR_VIDEO and artifact.modality in ("audio", "video"):
        return None
    return (
        f"generator {generator!r} declared {Path(artifact.path).name} as {artifact.modality}, but the file is "
        f"{actual} ({mime} by its {by}); dropped it: write {artifact.modality} output, or declare modality {actual!r}"
    )
