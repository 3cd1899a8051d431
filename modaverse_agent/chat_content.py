"""LangChain message content -> (instruction text, media items).

Accepted blocks:

* text: a plain string, ``{"type": "text", "text": ...}``;
* LangChain v1 data blocks: ``{"type": "image"|"audio"|"video"|"file", "url"|"base64"|"file_id", "mime_type"}``;
* LangChain v0 blocks: ``{"type": "image", "source_type": "url"|"base64", "url"|"data", "mime_type"}``;
* OpenAI ``{"type": "image_url", "image_url": {"url": ...}}`` (a ``data:`` URL, a path or ``file://``).

URLs may be local paths or ``file://``; ``http(s)`` URLs are refused unless a ``fetcher`` is given
(a callable URL -> bytes). ``file_id`` needs a ``resolver`` (id -> path or bytes).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from langchain_core.messages import BaseMessage

from .errors import MediaError
from .media import MediaItem, load_media

Fetcher = Callable[[str], bytes]
Resolver = Callable[[str], str | Path | bytes]
_MEDIA_TYPES = {"image", "audio", "video", "file"}


def _from_url(url: str, fetcher: Fetcher | None) -> MediaItem:
    if url.startswith(("http://", "https://")):
        if fetcher is None:
            raise MediaError(
                f"remote URL {url[:80]!r} refused: download it and pass a local path, or configure a fetcher"
            )
        return load_media(fetcher(url))
    return load_media(url)


def _from_base64(data: str) -> MediaItem:
    try:
        return load_media(base64.b64decode(data, validate=True))
    except (binascii.Error, ValueError) as e:
        raise MediaError(f"a content block's base64 data is invalid ({e})") from e


def block_to_media(
    block: Mapping[str, Any], *, fetcher: Fetcher | None = None, resolver: Resolver | None = None
) -> MediaItem:
    """Load the media of one non-text content block."""
    kind = block.get("type")
    if kind == "image_url":
        ref = block.get("image_url")
        url = ref.get("url") if isinstance(ref, Mapping) else ref
        if not isinstance(url, str):
            raise MediaError("an `image_url` block needs image_url.url")
        return _from_url(url, fetcher)
    source_type = block.get("source_type")
    if source_type == "base64" or (source_type is None and "base64" in block):
        return _from_base64(block.get("data") if source_type else block["base64"])
    if source_type == "url" or (source_type is None and "url" in block):
        return _from_url(block["url"], fetcher)
    if "file_id" in block or source_type == "id":
        file_id = block.get("file_id") or block.get("id")
        if resolver is None:
            raise MediaError(f"block refers to file_id {file_id!r}; configure a resolver or pass the file itself")
        return load_media(resolver(str(file_id)))
    raise MediaError(f"a {kind!r} content block needs `url`, `base64` or `file_id`")


def content_to_parts(
    content: str | Sequence[Any], *, fetcher: Fetcher | None = None, resolver: Resolver | None = None
) -> tuple[str, list[MediaItem]]:
    """Split message content into its text (blocks joined by newlines) and its media, in order."""
    if isinstance(content, str):
        return content, []
    texts: list[str] = []
    media: list[MediaItem] = []
    for block in content:
        if isinstance(block, str):
            texts.append(block)
        elif isinstance(block, Mapping) and block.get("type") == "text":
            texts.append(str(block.get("text", "")))
        elif isinstance(block, Mapping) and (block.get("type") in _MEDIA_TYPES or block.get("type") == "image_url"):
            media.append(block_to_media(block, fetcher=fetcher, resolver=resolver))
        else:
            kind = block.get("type") if isinstance(block, Mapping) else type(block).__name__
            raise MediaError(f"unsupported content block type {kind!r}; use text, image, audio, video or file")
    return "\n".join(t for t in texts if t), media


def message_to_instruction(message: BaseMessage, **kwargs: Any) -> tuple[str, list[MediaItem]]:
    """The instruction and media of one message."""
    return content_to_parts(message.content, **kwargs)
