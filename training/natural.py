"""The natural evaluation set: requests written blind to the templates, judged against accepted task sets.

The set (``natural_eval/*.jsonl`` beside this module, 330 requests) was written by people who never saw
the project's templates, corpora or held-out data, in three voices. Each line::

    {"id": "na-001", "category": "text->image", "instruction": "...",
     "media": [{"id": "image_1", "modality": "image"}], "accept": [["text-to-image"], ["image-editing"]],
     "note": ""}

``accept`` lists every set of tasks a careful human accepts (``[[]]``: a text-only answer). Media carry
no file: they are marked as present, which is what a blind model sees. Never train on this set.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from modaverse_agent.errors import ModaVerseError

from .dataset import DatasetError, MediaInput, Sample
from .tasks import TASKS_BY_NAME

NATURAL_DIR = Path(__file__).with_name("natural_eval")
KEYS = {"id", "category", "instruction", "media", "accept", "note"}

# A text-only answer that says nothing: "Here's the image.", "Sure!", "Done." ...
_FILLER = re.compile(
    r"^\W*(sure|ok(ay)?|done|of course|certainly|here (it )?(is|are)|here's|there you go)\b[^.!?]{0,40}[.!?]?\W*$",
    re.IGNORECASE,
)


def natural_files(path: str | Path | None = None) -> list[Path]:
    """The JSONL files of the natural set: ``path`` (a file or a folder) or the built-in folder."""
    p = Path(path) if path is not None else NATURAL_DIR
    files = sorted(p.glob("*.jsonl")) if p.is_dir() else [p]
    if not files:
        raise DatasetError(f"{p}: no .jsonl files of the natural evaluation set here")
    return files


def is_natural(path: str | Path) -> bool:
    """Whether ``path`` (a file, or a folder of them) is in the natural set's format (lines with ``accept``)."""
    try:
        file = natural_files(path)[0]
        with file.open(encoding="utf-8") as f:
            first = next((line for line in f if line.strip()), "")
        return "accept" in json.loads(first)
    except (OSError, ValueError, ModaVerseError):
        return False


def _sample(obj: Any, where: str) -> Sample:
    if not isinstance(obj, dict) or set(obj) != KEYS:
        raise DatasetError(f"{where}: expected an object with keys {sorted(KEYS)}")
    accept = obj["accept"]
    if not isinstance(accept, list) or not accept or not all(isinstance(a, list) for a in accept):
        raise DatasetError(f"{where}: `accept` must be a non-empty list of task lists ([[]] for text only)")
    unknown = sorted({t for a in accept for t in a} - set(TASKS_BY_NAME))
    if unknown:
        raise DatasetError(f"{where}: unknown task(s) {unknown}; known: {sorted(TASKS_BY_NAME)}")
    media = tuple(MediaInput(m["id"], m["modality"]) for m in obj["media"])
    first = [{"task": t, "prompt": ""} for t in accept[0]]
    source = {"set": "natural", "accept": [sorted(a) for a in accept], "note": obj["note"]}
    return Sample(obj["id"], obj["category"], obj["instruction"], media, {"text": "", "invocations": first}, source)


def read_natural(path: str | Path | None = None) -> list[Sample]:
    """The natural set as samples (``kind`` = category, ``source["accept"]`` = the accepted task sets)."""
    samples: list[Sample] = []
    seen: set[str] = set()
    for file in natural_files(path):
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise DatasetError(f"{file}: cannot read it as UTF-8 text ({e}); the natural set is JSONL") from None
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            where = f"{file}:{n}"
            try:
                sample = _sample(json.loads(line), where)
            except (ValueError, KeyError, TypeError) as e:
                raise DatasetError(f"{where}: not a natural-set line ({type(e).__name__}: {e})") from e
            if sample.id in seen:
                raise DatasetError(f"{where}: duplicate id {sample.id!r}")
            seen.add(sample.id)
            samples.append(sample)
    return samples


def accepted(sample: Sample, tasks: Sequence[str]) -> bool:
    """Whether ``tasks`` (in any order) is one of the sample's accepted sets (the reference set if none given)."""
    sets = sample.source.get("accept") or [list(sample.tasks)]
    return sorted(tasks) in [sorted(a) for a in sets]


def is_placeholder_answer(text: str, instruction: str) -> bool:
    """Whether a text-only answer says nothing: empty, a filler line ("Here's the image."), or the request echoed."""
    words = " ".join(text.lower().split()).strip(" .!?")
    if not words or _FILLER.match(text.strip()):
        return True
    return words == " ".join(instruction.lower().split()).strip(" .!?")
