"""An OpenAI message list as the agent reads it (instruction, media, history), or as LangChain messages.

The mapping follows ChatModaVerse and Conversation: the last user message is the instruction; every
medium of every user message is offered in order (``image_1``, ``audio_1``...), and each earlier user
turn says what it attached; system and developer messages lead the history; an earlier answer of this
server is read back as the meta-response that made it, and the files it links
(``.../v1/files/<id>/content``) become media too, so "now make it a watercolor" can edit the picture
the last answer drew. A medium that cannot be loaded is skipped with an error; the others stay.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage

from ..agent import assign_media_ids
from ..errors import ModaVerseError
from ..llm_io import ChatTurn
from ..media import MediaItem, load_media
from ..response import ResponseError
from .files import FileStore
from .openai_wire import ChatRequest, MediaRef, WireMessage

#: A markdown link this server appended to an answer (see :func:`~.chunks.link_line`).
_LINK_SUFFIX = "/content)"


@dataclass
class AgentCall:
    """What the agent is asked: the instruction, every medium in order, the history, and media errors."""

    instruction: str
    media: list[MediaItem] = field(default_factory=list)
    history: list[ChatTurn] = field(default_factory=list)
    errors: list[ResponseError] = field(default_factory=list)


def load_ref(ref: MediaRef, store: FileStore) -> MediaItem:
    """The medium a content part attached (MediaError when it cannot be read)."""
    if ref.kind == "file":
        stored = store.get(str(ref.value))
        if stored is None:
            raise ModaVerseError(f"file {ref.value} is unknown to this server (it may have restarted); attach it")
        return load_media(stored.path)
    return load_media(ref.value)


def _load(refs: list[MediaRef], store: FileStore, errors: list[ResponseError]) -> list[MediaItem]:
    items = []
    for ref in refs:
        try:
            items.append(load_ref(ref, store))
        except ModaVerseError as e:
            errors.append(ResponseError("media", f"{ref.param} skipped: {e}"))
        except Exception as e:  # one unreadable part must not lose the others
            errors.append(ResponseError("media", f"{ref.param} skipped: it could not be read ({type(e).__name__})"))
    return items


def with_media_errors(message: str, errors: list[ResponseError]) -> str:
    """A refusal's ``message`` followed by the errors of the media that could not be read (a request whose only
    picture is unreadable is refused as empty: the client must learn why)."""
    skipped = [e.message for e in errors if e.stage == "media"]
    return f"{message} ({'; '.join(skipped)})" if skipped else message


def split_links(text: str) -> tuple[str, list[str]]:
    """An earlier answer's text without the file links this server appended, and those files' ids."""
    from .files import FILE_URL

    kept, ids = [], []
    for line in text.split("\n"):
        found = FILE_URL.search(line)
        if found is not None and line.rstrip().endswith(_LINK_SUFFIX):
            ids.append(found.group("id"))
        else:
            kept.append(line)
    return "\n".join(kept).strip(), ids


def _assistant(msg: WireMessage, store: FileStore) -> tuple[str, list[MediaRef]]:
    """An earlier answer as the meta-response it stood for, and the files it linked."""
    text, ids = split_links(msg.text)
    stored = [s for s in (store.get(i) for i in ids) if s is not None]
    metas = [s.meta_response for s in stored if s.meta_response is not None]
    if metas and all(m == metas[0] for m in metas):
        body = json.dumps(metas[0], ensure_ascii=False)
    else:
        invocations = [
            {"task": c["name"], **c["args"]} if "prompt" in c["args"] else {"task": c["name"], "args": c["args"]}
            for c in msg.tool_calls
        ]
        body = json.dumps({"text": text, "invocations": invocations}, ensure_ascii=False)
    return body, [MediaRef("file", s.id, f"file {s.id}") for s in stored]


def agent_call(request: ChatRequest, store: FileStore) -> AgentCall:
    """The agent's instruction, media and history for ``request`` (media loaded here: call it off the event loop)."""
    call = AgentCall("")
    last_user = max(i for i, m in enumerate(request.messages) if m.role == "user")
    system = [ChatTurn("system", m.text) for m in request.messages if m.role in ("system", "developer") and m.text]
    turns: list[ChatTurn] = []

    def add(refs: list[MediaRef]) -> list[str]:
        start = len(call.media)
        call.media += _load(refs, store, call.errors)
        return [i for i, _ in assign_media_ids(call.media)[start:]]

    for i, m in enumerate(request.messages):
        if m.role == "user":
            ids = add(m.media)
            if i == last_user:
                call.instruction = m.text
            else:
                attached = f" [attached: {', '.join(ids)}]" if ids else ""
                turns.append(ChatTurn("user", m.text + attached))
        elif m.role == "assistant":
            body, refs = _assistant(m, store)
            made = add(refs)
            turns.append(ChatTurn("assistant", body + (f" [made: {', '.join(made)}]" if made else "")))
        elif m.role == "tool":
            turns.append(ChatTurn("tool", f"[{m.name or m.tool_call_id}] {m.text}"))
    call.history = system + turns
    return call


def langchain_messages(
    request: ChatRequest, store: FileStore
) -> tuple[list[BaseMessage], dict[str, MediaItem], list[ResponseError]]:
    """``request`` as LangChain messages for ChatModaVerse: media as ``file_id`` blocks resolved from the
    returned mapping, and the errors of media that could not be loaded."""
    out: list[BaseMessage] = []
    loaded: dict[str, MediaItem] = {}
    errors: list[ResponseError] = []
    for m in request.messages:
        if m.role in ("system", "developer"):
            out.append(SystemMessage(m.text))
        elif m.role == "user":
            blocks: list[Any] = [{"type": "text", "text": m.text}] if m.text else []
            for item in _load(m.media, store, errors):
                key = f"media-{len(loaded)}"
                loaded[key] = item
                blocks.append({"type": "file", "file_id": key})
            out.append(HumanMessage(blocks if m.media else m.text))
        elif m.role == "assistant":
            calls = [{"name": c["name"], "args": c["args"], "id": c["id"], "type": "tool_call"} for c in m.tool_calls]
            out.append(AIMessage(split_links(m.text)[0], tool_calls=calls))
        else:
            out.append(ToolMessage(m.text, tool_call_id=m.tool_call_id or "", name=m.name))
    return out, loaded, errors


__all__ = ["AgentCall", "agent_call", "langchain_messages", "load_ref", "split_links", "with_media_errors"]
