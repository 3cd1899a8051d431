"""The files the server's answers made, served at ``/v1/files/{id}/content``.

Every artifact of an answer gets an id (``file-`` + 32 hex digits, unguessable) that maps to its path
inside the server's output directory; nothing outside that directory is ever served. A later request
can refer to a file by its id or its URL (``"now make it a watercolor"`` with the picture the server
drew), so the store also keeps the meta-response of the answer that made it. Ids live as long as the
server process (the oldest are forgotten past ``max_files``; the files stay on disk) or until a client
deletes one (``DELETE /v1/files/{id}``, the openai client's ``files.delete``), which removes it from disk;
``GET /v1/files`` (``files.list``) lists them.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..artifacts import Artifact

#: A URL (or path) of a file this server made; ``id`` is the file id.
FILE_URL = re.compile(r"/v1/files/(?P<id>file-[0-9a-f]{32})/content(?=$|[?#)\s])")
DEFAULT_MAX_FILES = 100_000
#: The OpenAI ``purpose`` of every file this server made.
PURPOSE = "assistants_output"


@dataclass(frozen=True)
class StoredFile:
    """One served file and what made it."""

    id: str
    path: Path
    mime_type: str
    modality: str
    task: str
    generator: str
    prompt: str
    seed: int | None
    created: int
    bytes: int
    meta_response: dict[str, Any] | None = None

    def describe(self, url: str) -> dict[str, Any]:
        """The file as JSON: an OpenAI file object plus what made it and where to fetch it."""
        return {
            "id": self.id,
            "object": "file",
            "bytes": self.bytes,
            "created_at": self.created,
            "filename": self.path.name,
            "purpose": PURPOSE,
            "url": url,
            "mime_type": self.mime_type,
            "modality": self.modality,
            "task": self.task,
            "generator": self.generator,
            "prompt": self.prompt,
            "seed": self.seed,
        }


class FileStore:
    """Ids of generated files under ``root`` (thread-safe)."""

    def __init__(self, root: str | Path, *, max_files: int = DEFAULT_MAX_FILES) -> None:
        self.root = Path(root).expanduser().resolve()
        self.max_files = max_files
        self._files: OrderedDict[str, StoredFile] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, artifact: Artifact, meta_response: dict[str, Any] | None = None) -> StoredFile:
        """Register one artifact (ValueError when its file is missing or lies outside ``root``)."""
        path = Path(artifact.path).resolve()
        if not path.is_relative_to(self.root):
            raise ValueError(f"{path.name} lies outside the server's output directory and is not served")
        try:
            size = path.stat().st_size
        except OSError as e:
            raise ValueError(f"{path.name} cannot be served: {e.strerror or e}") from e
        record = StoredFile(
            id=f"file-{uuid.uuid4().hex}",
            path=path,
            mime_type=artifact.mime_type,
            modality=artifact.modality,
            task=artifact.task,
            generator=artifact.generator,
            prompt=artifact.prompt,
            seed=artifact.seed,
            created=int(time.time()),
            bytes=size,
            meta_response=meta_response,
        )
        with self._lock:
            self._files[record.id] = record
            while len(self._files) > self.max_files:
                self._files.popitem(last=False)
        return record

    def get(self, file_id: str) -> StoredFile | None:
        """The file with this id, or None (unknown, forgotten, or deleted from disk since)."""
        with self._lock:
            record = self._files.get(file_id)
        if record is None or not record.path.is_file():
            return None
        return record

    def records(self) -> list[StoredFile]:
        """Every file the store knows, oldest first (a copy; ones removed from disk since are still in it)."""
        with self._lock:
            return list(self._files.values())

    def delete(self, file_id: str) -> bool:
        """Forget ``file_id`` and remove its file (the answer's manifest stays); False if unknown."""
        with self._lock:
            record = self._files.pop(file_id, None)
        if record is None:
            return False
        record.path.unlink(missing_ok=True)
        return True

    def __len__(self) -> int:
        with self._lock:
            return len(self._files)


def file_url(base_url: str, file_id: str) -> str:
    """The URL a client fetches a file from (``base_url``: the server's root, e.g. ``http://host:8000/``)."""
    return f"{base_url.rstrip('/')}/v1/files/{file_id}/content"


__all__ = ["DEFAULT_MAX_FILES", "FILE_URL", "PURPOSE", "FileStore", "StoredFile", "file_url"]
