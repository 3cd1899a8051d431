"""OpenAI response shapes: completions, stream chunks, errors, and the ``modaverse`` extension field.

An answer's files are listed in ``choices[0].message.modaverse`` (``delta.modaverse`` in the last stream
chunk) as ``{"artifacts": [...], "errors": [...], "notes": [...], "media": [...], "meta_response": {...}}``,
and appended to the text as markdown links (``![text-to-image](http://host/v1/files/<id>/content)``), one
per line, so any OpenAI client shows them. A streamed answer's content adds up to the same text.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from ..artifacts import Artifact, json_safe
from ..llm_io import Completion
from ..response import FinalResponse, ResponseError
from .files import FileStore, StoredFile, file_url


def error_body(
    message: str, kind: str = "invalid_request_error", param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """An OpenAI error object."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def sse(data: dict[str, Any] | str) -> str:
    """One server-sent event (``data: ...`` and a blank line)."""
    text = data if isinstance(data, str) else json.dumps(json_safe(data), ensure_ascii=False, separators=(",", ":"))
    return f"data: {text}\n\n"


def error_dict(e: ResponseError) -> dict[str, Any]:
    """A response error as JSON."""
    return {"stage": e.stage, "message": e.message, "task": e.task, "index": e.index}


class Answer:
    """The shared state of one completion: its id, model, files, and what its content has said so far."""

    def __init__(self, request_id: str, model: str, store: FileStore, base_url: str) -> None:
        self.id = f"chatcmpl-{request_id}"
        self.model = model
        self.created = int(time.time())
        self.store = store
        self.base_url = base_url
        self.files: list[dict[str, Any]] = []
        self.errors: list[ResponseError] = []
        self.said = False  # whether any content went out yet (links then start without a blank line)

    # -- files ---------------------------------------------------------------------------------------
    def register(self, artifacts: Sequence[Artifact], meta_response: dict[str, Any] | None) -> list[StoredFile]:
        """Give each artifact an id and URL; one that cannot be served becomes an error."""
        stored = []
        for a in artifacts:
            try:
                record = self.store.add(a, meta_response)
            except ValueError as e:
                self.errors.append(ResponseError("output", str(e), task=a.task or None))
                continue
            stored.append(record)
            self.files.append(record.describe(file_url(self.base_url, record.id)))
        return stored

    def links(self, stored: Sequence[StoredFile], failure: ResponseError | None = None) -> str:
        """Content lines for these files (and a failed invocation), each after a blank line."""
        lines = [link_line(s, file_url(self.base_url, s.id)) for s in stored]
        if failure is not None:
            lines.append(f"_{failure.task or 'an invocation'} failed: {failure.message}_")
        if not lines:
            return ""
        text = ("\n\n" if self.said else "") + "\n\n".join(lines)
        self.said = True
        return text

    def extension(self, response: FinalResponse) -> dict[str, Any]:
        """The ``modaverse`` field: files, errors, notes, the media ids the model saw, the meta-response."""
        return {
            "artifacts": list(self.files),
            "errors": [error_dict(e) for e in [*response.errors, *self.errors]],
            "notes": list(response.notes),
            "media": [{"id": i, "mime_type": m.mime_type} for i, m in response.media],
            "meta_response": response.meta_response.to_dict() if response.meta_response else None,
        }

    # -- bodies --------------------------------------------------------------------------------------
    def completion(self, message: dict[str, Any], finish: str, usage: dict[str, int] | None) -> dict[str, Any]:
        """A ``chat.completion`` object."""
        body: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
        }
        if usage is not None:
            body["usage"] = usage
        return body

    def chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        """A ``chat.completion.chunk`` object."""
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }

    def usage_chunk(self, usage: dict[str, int]) -> dict[str, Any]:
        """The last chunk of a stream with ``stream_options.include_usage``."""
        body = self.chunk({})
        body["choices"] = []
        body["usage"] = usage
        return body


def link_line(stored: StoredFile, url: str) -> str:
    """A markdown link to one file: an image inline, anything else as a named link."""
    if stored.modality == "image":
        return f"![{stored.task or 'image'}]({url})"
    return f"[{stored.task or stored.modality}: {stored.path.name}]({url})"


def usage(completion: Completion | None) -> dict[str, int] | None:
    """OpenAI usage from a completion's token counts (None when the model reported none)."""
    if completion is None:
        return None
    return {
        "prompt_tokens": completion.input_tokens,
        "completion_tokens": completion.output_tokens,
        "total_tokens": completion.input_tokens + completion.output_tokens,
    }


def tool_call_entries(calls: Sequence[dict[str, Any]], *, stream: bool) -> list[dict[str, Any]]:
    """LangChain tool calls as OpenAI ``tool_calls`` (with ``index`` in a stream)."""
    out = []
    for n, c in enumerate(calls):
        entry: dict[str, Any] = {
            "id": c["id"],
            "type": "function",
            "function": {"name": c["name"], "arguments": json.dumps(c["args"], ensure_ascii=False)},
        }
        if stream:
            entry["index"] = n
        out.append(entry)
    return out


__all__ = ["Answer", "error_body", "error_dict", "link_line", "sse", "tool_call_entries", "usage"]
