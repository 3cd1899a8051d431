"""A conversation with the agent: turns, the media of every turn, and the files the agent made.

One object the terminal chat, the server and the web page all share. Each :meth:`Conversation.send`
(or :meth:`Conversation.stream`) runs the agent with the earlier turns as history and *every* medium of
the conversation so far: what the user attached and what the agent generated. Generated files become
media like attached ones, with ids the schema offers (``image_2`` is the picture the agent drew last
turn), so "now make it a watercolor" can refer to it. Ids are stable: media only ever append.

A conversation saves to one JSON file (turns, media, artifacts; media that exist only in memory are
written beside it in ``<name>.media/``) and loads back from it.
"""

from __future__ import annotations

import io
import json
import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .agent import MediaSource, ModaVerseAgent, assign_media_ids
from .artifacts import Artifact, safe_stem
from .errors import ModaVerseError
from .llm_io import ChatTurn, GenerationParams
from .media import MediaItem, load_media
from .response import (
    AgentEvent,
    FinalResponse,
    InvocationDone,
    ResponseDone,
    ResponseError,
    TextDelta,
    last_response,
)

FORMAT_VERSION = 1
#: The error of a turn whose reader stopped before the answer was complete.
STOPPED = "the answer was stopped before it finished; what it had made so far is kept"
#: The note of a turn the model refused as sent (a RequestError: NUL characters, too long): it is not kept.
REFUSED = "this message was not added to the conversation (nor its attachments): change it and send it again"
ROLES = ("user", "assistant")
_EXTENSIONS = {"image/png": ".png", "image/jpeg": ".jpg", "audio/wav": ".wav", "video/mp4": ".mp4"}


class ConversationError(ModaVerseError):
    """A conversation file that cannot be read or written."""


def refused(response: FinalResponse) -> bool:
    """Whether the model refused ``response``'s request as sent (an error of stage "request": NUL characters,
    longer than the context): such a message does not join the conversation."""
    return any(e.stage == "request" for e in response.errors)


@dataclass
class MediaRecord:
    """One medium of the conversation: its id, where it came from, and its file."""

    id: str
    modality: str
    mime_type: str
    name: str
    path: str | None
    origin: str  # "attached" | "generated"
    turn: int


@dataclass
class Turn:
    """One turn: what the user said and attached, or what the agent answered and made."""

    role: str  # "user" | "assistant"
    text: str
    media: list[str] = field(default_factory=list)  # ids attached (user) or generated (assistant)
    meta_response: dict[str, Any] | None = None
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    artifacts: list[dict[str, Any]] = field(default_factory=list)


class Conversation:
    """A multi-turn chat over one :class:`ModaVerseAgent` (thread-safe: turns take turns)."""

    def __init__(self, agent: ModaVerseAgent, *, params: GenerationParams | None = None) -> None:
        self.agent = agent
        self.params = params
        self.turns: list[Turn] = []
        self.records: list[MediaRecord] = []
        self._items: list[MediaItem] = []
        self._lock = threading.RLock()
        #: What :meth:`load` had to mend (a missing media file, a reference to no medium), one line each.
        self.warnings: list[str] = []

    # -- state -------------------------------------------------------------------------------------
    @property
    def media(self) -> list[tuple[str, MediaItem]]:
        """Every medium so far with its id, in order (attached and generated)."""
        return list(zip((r.id for r in self.records), self._items, strict=True))

    def history(self) -> list[ChatTurn]:
        """The turns as the LLM reads them: each user turn names what it attached, each answer what it made."""
        out = []
        for t in self.turns:
            if t.role == "user":
                attached = f" [attached: {', '.join(t.media)}]" if t.media else ""
                out.append(ChatTurn("user", t.text + attached))
            else:
                body = json.dumps(t.meta_response, ensure_ascii=False) if t.meta_response else t.text
                made = f" [made: {', '.join(t.media)}]" if t.media else ""
                out.append(ChatTurn("assistant", body + made))
        return out

    def clear(self) -> None:
        """Forget every turn and medium."""
        with self._lock:
            self.turns.clear()
            self.records.clear()
            self._items.clear()

    def _add(self, item: MediaItem, origin: str, turn: int) -> str:
        self._items.append(item)
        ids = assign_media_ids(self._items)
        new_id = ids[-1][0]
        path = os.path.abspath(item.path) if item.path is not None else None  # a save is read from anywhere
        self.records.append(MediaRecord(new_id, item.modality, item.mime_type, item.name, path, origin, turn))
        return new_id

    # -- a turn ------------------------------------------------------------------------------------
    def send(
        self, text: str, attachments: Sequence[MediaSource] = (), *, output_dir: str | Path | None = None
    ) -> FinalResponse:
        """One turn: the answer (text and files); the turn and its media join the conversation."""
        return last_response(self.stream(text, attachments, output_dir=output_dir))

    def stream(
        self, text: str, attachments: Sequence[MediaSource] = (), *, output_dir: str | Path | None = None
    ) -> Iterator[AgentEvent]:
        """One turn as the agent's events (text deltas, the plan, each invocation, the response)."""
        with self._lock:
            loaded, errors = self.agent.load_media(attachments)
            history = self.history()
            index = len(self.turns)
            ids = [self._add(item, "attached", index) for _, item in loaded]
            # the agent names media by order, as we do: hand it every medium, already loaded
            self.turns.append(Turn("user", text, ids))
            response, said, made = None, [], []
            made_before = [r.id for r in self.records if r.origin == "generated"]
            events = self.agent.stream(
                text,
                list(self._items),
                output_dir=output_dir,
                params=self.params,
                history=history,
                generated=made_before,
            )
            reason = STOPPED
            try:
                for event in events:
                    if isinstance(event, ResponseDone):
                        response = event.response
                        response.errors[:0] = errors
                        if refused(response):
                            response.notes.append(REFUSED)
                    elif isinstance(event, TextDelta):
                        said.append(event.text)
                    elif isinstance(event, InvocationDone):
                        made += event.artifacts
                    yield event
            except Exception as e:  # recorded below, then raised to the reader
                reason = f"the answer failed: {type(e).__name__}: {e}"
                raise
            finally:
                events.close()  # a reader that stops early: no further invocation starts
                if response is None:  # keep what the turn got, so history still alternates
                    response = FinalResponse("".join(said), list(made), [*errors, ResponseError("stopped", reason)])
                if refused(response):  # only this message is refused: the next one must not carry it along
                    self._forget(index, len(ids))
                else:
                    self._answered(response, index + 1)

    def _forget(self, index: int, attached: int) -> None:
        """Drop the turn at ``index`` (the last one) and the ``attached`` media it added."""
        del self.turns[index:]
        if attached:
            del self.records[-attached:]
            del self._items[-attached:]

    def _answered(self, response: FinalResponse, index: int) -> None:
        made = []
        for artifact in response.artifacts:
            made += self._add_artifact(artifact, index)
        meta = response.meta_response.to_dict() if response.meta_response else None
        self.turns.append(
            Turn(
                "assistant",
                response.text,
                made,
                meta,
                [str(e) for e in response.errors],
                list(response.notes),
                [a.to_dict() for a in response.artifacts],
            )
        )

    def _add_artifact(self, artifact: Artifact, index: int) -> list[str]:
        if artifact.modality not in ("image", "audio", "video"):
            return []
        try:
            item = load_media(artifact.path)
        except ModaVerseError:
            return []  # a placeholder the media checks refuse stays a file, not a medium
        return [self._add(item, "generated", index)]

    # -- files -------------------------------------------------------------------------------------
    def to_dict(self, media_dir: Path | None = None) -> dict[str, Any]:
        """The conversation as JSON-ready data; media without a file are written into ``media_dir``."""
        records = []
        for record, item in zip(self.records, self._items, strict=True):
            rec = asdict(record)
            if record.path is not None:
                rec["path"] = os.path.abspath(record.path)
            if record.path is None and media_dir is not None:
                media_dir.mkdir(parents=True, exist_ok=True)
                suffix = _EXTENSIONS.get(item.mime_type, Path(item.name).suffix or ".bin")
                target = media_dir / f"{record.id}-{safe_stem(Path(item.name).stem)}{suffix}"
                target.write_bytes(item.data)
                rec["path"] = str(target)
            records.append(rec)
        return {"version": FORMAT_VERSION, "turns": [asdict(t) for t in self.turns], "media": records}

    def save(self, path: str | Path) -> Path:
        """Write the conversation as JSON (and in-memory media into ``<name>.media/``); returns the path."""
        p = Path(path)
        with self._lock:
            data = self.to_dict(p.with_name(p.name + ".media"))
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
            tmp = p.with_name(f".{p.name}.tmp")
            tmp.write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")
            tmp.replace(p)
        except OSError as e:
            raise ConversationError(f"cannot save the conversation to {p}: {e.strerror or e}") from e
        return p

    @classmethod
    def load(cls, path: str | Path, agent: ModaVerseAgent, *, params: GenerationParams | None = None) -> Conversation:
        """Read a conversation saved by :meth:`save`; its media are loaded (and checked) again."""
        p = Path(path)
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise ConversationError(f"cannot read the conversation {p}: {e}") from e
        if not isinstance(data, dict) or data.get("version") != FORMAT_VERSION:
            raise ConversationError(f"{p} is not a conversation saved by modaverse (version {FORMAT_VERSION})")
        conv = cls(agent, params=params)
        try:
            conv.turns = [_turn(t, n, p) for n, t in enumerate(data["turns"], 1)]
            for rec in data["media"]:
                record = MediaRecord(**rec)
                if not isinstance(record.path, str) or not record.path:
                    raise ConversationError(f"{p}: medium {record.id} has no file")
                beside = p.parent / record.path  # an older save with a relative path, read from elsewhere
                if not os.path.exists(record.path) and not os.path.isabs(record.path) and beside.exists():
                    record.path = str(beside)
                record.path = os.path.abspath(record.path)
                conv._items.append(_load_medium(record, conv.warnings))
                conv.records.append(record)
        except (KeyError, TypeError) as e:
            raise ConversationError(f"{p} is not a conversation saved by modaverse: {e}") from e
        ids = [i for i, _ in assign_media_ids(conv._items)]
        if ids != [r.id for r in conv.records]:
            raise ConversationError(f"{p}: media ids {[r.id for r in conv.records]} do not follow their order")
        for n, turn in enumerate(conv.turns, 1):
            dangling = [i for i in turn.media if i not in ids]
            if dangling:
                conv.warnings.append(f"turn {n} refers to {', '.join(dangling)}, which the file does not hold")
                turn.media = [i for i in turn.media if i in ids]
        return conv


def _turn(data: Any, number: int, path: Path) -> Turn:
    """Turn ``number`` of a saved file; a role other than user/assistant or a text that is no string is refused."""
    if not isinstance(data, dict):
        raise ConversationError(f"{path}: turn {number} is not an object")
    turn = Turn(**data)
    if turn.role not in ROLES:
        role = json.dumps(turn.role, ensure_ascii=True)[:60]
        raise ConversationError(f"{path}: turn {number} has the role {role}; a turn's role is user or assistant")
    if not isinstance(turn.text, str) or not isinstance(turn.media, list):
        raise ConversationError(f"{path}: turn {number} has no text or its media is not a list")
    return turn


def _load_medium(record: MediaRecord, warnings: list[str]) -> MediaItem:
    """The medium ``record`` names; when its file is missing or unreadable, a blank stand-in of its modality
    (so the later media keep their ids) and a warning naming it."""
    try:
        return load_media(record.path or "")
    except ModaVerseError as e:
        try:
            item = load_media(_stand_in(record.modality))
        except Exception:  # no stand-in can be made: the file can't be read without this medium
            raise ConversationError(f"medium {record.id}: {e}") from e
        warnings.append(f"medium {record.id} ({record.name}) is left out: {e} (a blank {record.modality} stands in)")
        return MediaItem(item.modality, item.mime_type, item.data, record.name, None, item.info)


def _stand_in(modality: str) -> bytes:
    """A small blank medium: a gray picture, a second of silence, or a short gray video."""
    buf = io.BytesIO()
    if modality == "image":
        from PIL import Image

        Image.new("RGB", (32, 32), (128, 128, 128)).save(buf, format="PNG")
    elif modality == "audio":
        import wave

        with wave.open(buf, "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(16000)
            w.writeframes(b"\0\0" * 16000)
    else:
        import tempfile

        import numpy as np

        from .artifacts import encode_mp4

        with tempfile.TemporaryDirectory() as d:  # the encoder writes a file
            tmp = Path(d) / "blank.mp4"
            encode_mp4(tmp, np.full((8, 32, 32, 3), 128, dtype=np.uint8), 8)
            return tmp.read_bytes()
    return buf.getvalue()


__all__ = ["Conversation", "ConversationError", "MediaRecord", "ResponseError", "Turn"]
