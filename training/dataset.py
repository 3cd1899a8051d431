"""The training dataset format: JSONL samples (``prompts/dataset.schema.json``), reading, writing, validation.

One line is one sample::

    {"id": "t-3f2a...", "kind": "editing", "instruction": "Make the sky stormy.",
     "media": [{"id": "image_1", "modality": "image", "path": "photos/1.jpg"}],
     "response": {"text": "Here is the edited picture.",
                  "invocations": [{"task": "image-editing", "prompt": "make the sky stormy", "inputs": ["image_1"]}]},
     "source": {"engine": "template", "split": "train", "template": "..."}}

Every sample is checked three ways: the line schema, the meta-response schema of the standard tasks for
its media (:func:`modaverse_agent.meta_response.build_schema`), and the rules of its ``kind``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from modaverse_agent.errors import MetaResponseError, ModaVerseError
from modaverse_agent.meta_response import TaskSpec, validate_meta_response
from modaverse_agent.schema_utils import describe_error, json_path

from .tasks import STANDARD_TASKS, standard_schema

KINDS = ("input-alignment", "output-alignment", "reasoning", "text-only", "editing")
MEDIA_MODALITIES = ("image", "audio", "video")
SCHEMA_RESOURCE = "dataset.schema.json"


class DatasetError(ModaVerseError):
    """A dataset file or sample is malformed; the message names the file, line and field."""


@cache
def sample_schema() -> dict[str, Any]:
    """The JSON Schema of one dataset line (``prompts/dataset.schema.json``)."""
    text = files("modaverse_agent.prompts").joinpath(SCHEMA_RESOURCE).read_text(encoding="utf-8")
    return json.loads(text)


@dataclass(frozen=True)
class MediaInput:
    """One input medium of a sample: its reference id, modality, file (None = placeholder) and caption."""

    id: str
    modality: str
    path: str | None = None
    caption: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (``caption`` only when known)."""
        out: dict[str, Any] = {"id": self.id, "modality": self.modality, "path": self.path}
        if self.caption is not None:
            out["caption"] = self.caption
        return out

    def resolve(self, base_dir: str | Path) -> Path | None:
        """The media file, relative paths taken from ``base_dir`` (the dataset file's folder)."""
        if self.path is None:
            return None
        p = Path(self.path).expanduser()
        return p if p.is_absolute() else Path(base_dir) / p


@dataclass(frozen=True)
class Sample:
    """One instruction-invocation pair (see the module docstring)."""

    id: str
    kind: str
    instruction: str
    media: tuple[MediaInput, ...]
    response: Mapping[str, Any]
    source: Mapping[str, Any] = field(default_factory=dict)
    #: The tasks the system prompt offers for this sample (None: every standard task). A narrower list
    #: teaches the model to say what it can't make when a generator is missing (``--narrow-p``).
    offered: tuple[str, ...] | None = None

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any]) -> Sample:
        """Build from a dict already checked against the line schema."""
        media = tuple(MediaInput(m["id"], m["modality"], m.get("path"), m.get("caption")) for m in obj.get("media", ()))
        offered = tuple(obj["offered"]) if obj.get("offered") is not None else None
        return cls(
            obj["id"], obj["kind"], obj["instruction"], media, dict(obj["response"]), dict(obj["source"]), offered
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict in the line schema's shape and key order (``offered`` only when narrowed)."""
        out = {
            "id": self.id,
            "kind": self.kind,
            "instruction": self.instruction,
            "media": [m.to_dict() for m in self.media],
            "response": canonical_response(self.response),
            "source": dict(self.source),
        }
        if self.offered is not None:
            out["offered"] = list(self.offered)
        return out

    def to_json(self) -> str:
        """One JSONL line (no newline)."""
        return json.dumps(self.to_dict(), ensure_ascii=False)

    @property
    def media_ids(self) -> tuple[str, ...]:
        """The media reference ids, in order."""
        return tuple(m.id for m in self.media)

    @property
    def tasks(self) -> tuple[str, ...]:
        """The tasks the expected response invokes, in order."""
        return tuple(i["task"] for i in self.response.get("invocations", ()))

    @property
    def split(self) -> str | None:
        """``train`` / ``test`` when the source says so."""
        return self.source.get("split")

    def target_json(self) -> str:
        """The expected meta-response as compact JSON: the LLM's training target."""
        return json.dumps(canonical_response(self.response), ensure_ascii=False, separators=(", ", ": "))


def canonical_response(response: Mapping[str, Any]) -> dict[str, Any]:
    """The meta-response with fixed key order; empty ``inputs`` / ``args`` dropped (they are optional)."""
    invocations = []
    for inv in response.get("invocations", ()):
        out: dict[str, Any] = {"task": inv["task"], "prompt": inv["prompt"]}
        if inv.get("inputs"):
            out["inputs"] = list(inv["inputs"])
        if inv.get("args"):
            out["args"] = dict(inv["args"])
        invocations.append(out)
    return {"text": response.get("text", ""), "invocations": invocations}


def assign_media_ids(modalities: Sequence[str]) -> list[str]:
    """Ids for media in order, numbered per modality: ``image, audio, image`` -> image_1, audio_1, image_2."""
    seen: dict[str, int] = {}
    ids = []
    for m in modalities:
        if m not in MEDIA_MODALITIES:
            raise DatasetError(f"unknown media modality {m!r}; use one of {list(MEDIA_MODALITIES)}")
        seen[m] = seen.get(m, 0) + 1
        ids.append(f"{m}_{seen[m]}")
    return ids


def content_id(
    instruction: str,
    media: Sequence[MediaInput],
    response: Mapping[str, Any],
    prefix: str = "s",
    offered: Sequence[str] | None = None,
) -> str:
    """A stable id from the sample's content (same content, same id; a narrowed task list is content too)."""
    parts: list[Any] = [instruction, [[m.modality, m.path] for m in media], canonical_response(response)]
    if offered is not None:
        parts.append(sorted(offered))
    key = json.dumps(parts, ensure_ascii=False)
    return f"{prefix}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def make_sample(
    kind: str,
    instruction: str,
    response: Mapping[str, Any],
    *,
    media: Sequence[tuple[str, str | None] | tuple[str, str | None, str | None]] = (),
    source: Mapping[str, Any] | None = None,
    prefix: str = "s",
    offered: Sequence[str] | None = None,
) -> Sample:
    """A sample with media ids assigned in order and a content-hash id (not yet validated)."""
    ids = assign_media_ids([m[0] for m in media])
    items = tuple(
        MediaInput(mid, m[0], m[1], m[2] if len(m) > 2 else None)  # type: ignore[misc]
        for mid, m in zip(ids, media, strict=True)
    )
    resp = canonical_response(response)
    narrowed = tuple(offered) if offered is not None else None
    sample_id = content_id(instruction, items, resp, prefix, narrowed)
    return Sample(sample_id, kind, instruction, items, resp, dict(source or {}), narrowed)


def offered_specs(sample: Sample, specs: Sequence[TaskSpec] = STANDARD_TASKS) -> list[TaskSpec]:
    """The task specs the sample's system prompt lists: ``specs``, narrowed to ``sample.offered`` when set."""
    if sample.offered is None:
        return list(specs)
    known = {s.task for s in specs}
    unknown = sorted(set(sample.offered) - known)
    if unknown:
        raise DatasetError(f"offered: unknown task(s) {unknown}; known: {sorted(known)}")
    return [s for s in specs if s.task in sample.offered]


# -- validation -------------------------------------------------------------------------------------


@cache
def _line_validator() -> Draft202012Validator:
    return Draft202012Validator(sample_schema())


def _line_schema_error(obj: Any) -> str | None:
    validator = _line_validator()
    if validator.is_valid(obj):
        return None
    err = best_match(validator.iter_errors(obj))
    if err is None:
        return None
    where = json_path(err.absolute_path)
    return f"{where + ': ' if where else ''}{describe_error(err)}"


def _check_media(media: Sequence[MediaInput]) -> None:
    expected = assign_media_ids([m.modality for m in media])
    for m, want in zip(media, expected, strict=True):
        if m.id != want:
            raise DatasetError(
                f"media id {m.id!r} should be {want!r}: ids are numbered per modality in order (expected {expected})"
            )


def _check_inputs(sample: Sample, specs: Mapping[str, TaskSpec]) -> None:
    modality_of = {m.id: m.modality for m in sample.media}
    for i, inv in enumerate(sample.response["invocations"]):
        spec = specs[inv["task"]]
        inputs = inv.get("inputs", [])
        where = f"response.invocations[{i}].inputs"
        if spec.input_modalities:
            if not any(modality_of.get(ref) in spec.input_modalities for ref in inputs):
                raise DatasetError(f"{where}: task {spec.task!r} needs an input {'/'.join(spec.input_modalities)}")
            wrong = [ref for ref in inputs if modality_of.get(ref) not in spec.input_modalities]
            if wrong:
                raise DatasetError(f"{where}: {wrong} are not {'/'.join(spec.input_modalities)} media")
        elif inputs:
            raise DatasetError(f"{where}: task {spec.task!r} takes no input media, got {inputs}")


def _check_kind(sample: Sample) -> None:
    kind, n_inv, n_media = sample.kind, len(sample.response["invocations"]), len(sample.media)
    text = sample.response.get("text", "").strip()
    if kind == "text-only" and (n_inv or n_media):
        raise DatasetError("kind 'text-only' must have no media and no invocations; use another kind")
    if kind in ("text-only", "input-alignment") and not text:
        raise DatasetError(f"kind {kind!r} needs a non-empty response.text (the answer)")
    if kind == "input-alignment" and not n_media:
        raise DatasetError("kind 'input-alignment' needs input media")
    if kind == "output-alignment" and not n_inv:
        raise DatasetError("kind 'output-alignment' needs at least one invocation")
    if kind == "editing" and "image-editing" not in sample.tasks:
        raise DatasetError("kind 'editing' needs an image-editing invocation")


def _check_references(sample: Sample) -> None:
    """Every input an invocation names must be one of the sample's media (checked before the meta-response
    schema, which would only say that the task has no input)."""
    invocations = sample.response.get("invocations")
    if not isinstance(invocations, list):
        return  # the meta-response schema says what is wrong
    attached = sample.media_ids
    for i, inv in enumerate(invocations):
        inputs = inv.get("inputs") if isinstance(inv, dict) else None
        if not isinstance(inputs, list):
            continue
        for ref in inputs:
            if isinstance(ref, str) and ref not in attached:
                have = f"attached: {', '.join(attached)}" if attached else "the sample has no media"
                raise DatasetError(
                    f"response.invocations[{i}].inputs: {ref!r} names no attached medium ({have}); "
                    "inputs refer to the ids in `media`"
                )


def validate_sample(obj: Any, specs: Sequence[TaskSpec] = STANDARD_TASKS) -> Sample:
    """Check a parsed line (line schema, meta-response schema, kind rules); returns the Sample."""
    problem = _line_schema_error(obj)
    if problem:
        raise DatasetError(problem)
    sample = Sample.from_dict(obj)
    _check_media(sample.media)
    _check_references(sample)
    specs = offered_specs(sample, specs)
    by_task = {s.task: s for s in specs}
    try:
        validate_meta_response(sample.response, standard_schema(sample.media_ids, specs))
    except MetaResponseError as e:
        where = f"response.{e.path}" if e.path else "response"
        raise DatasetError(f"{where}: {e.reason}") from None
    _check_inputs(sample, by_task)
    _check_kind(sample)
    return sample


# -- files ------------------------------------------------------------------------------------------


def _text_lines(p: Path) -> Iterator[tuple[int, str]]:
    """(line number, line) of a UTF-8 text file; DatasetError when it cannot be read or is not UTF-8 text."""
    lineno = 0
    try:
        with p.open(encoding="utf-8") as handle:
            for lineno, line in enumerate(handle, 1):
                yield lineno, line
    except OSError as e:
        raise DatasetError(f"cannot read dataset {p}: {e.strerror}") from e
    except UnicodeDecodeError as e:
        raise DatasetError(
            f"{p}:{lineno + 1}: not UTF-8 text ({e.reason}); a dataset is a JSONL file, one JSON object "
            "per line (`modaverse data generate` writes one)"
        ) from None


def _not_json(line: str) -> str:
    """Why one line is not JSON, with the column in that line (1-based) where parsing failed."""
    text = line.rstrip("\r\n")
    try:
        json.loads(text)
    except json.JSONDecodeError as e:
        end = ", the end of the line" if e.pos >= len(text) else ""
        return f"not JSON ({e.msg} at column {e.pos + 1}{end})"
    return "not JSON (it parses only with the line break)"  # pragma: no cover - json ignores trailing whitespace


def iter_lines(path: str | Path) -> Iterator[tuple[int, Any]]:
    """(line number, parsed JSON) for every non-blank line; bad JSON raises DatasetError naming the line."""
    p = Path(path)
    for lineno, line in _text_lines(p):
        if not line.strip():
            continue
        try:
            yield lineno, json.loads(line)
        except json.JSONDecodeError as e:
            raise DatasetError(f"{p}:{lineno}: {_not_json(line)}; one object per line") from e


def check_media_files(sample: Sample, base_dir: str | Path) -> None:
    """DatasetError naming the first of the sample's media whose file does not exist (placeholders, ``path:
    null``, have none to check); relative paths are taken from ``base_dir``, the dataset file's folder."""
    for i, m in enumerate(sample.media):
        path = m.resolve(base_dir)
        if path is None or path.is_file():
            continue
        what = "is not a file" if path.exists() else "does not exist"
        relative = (
            ""
            if Path(m.path or "").expanduser().is_absolute()
            else " (relative paths start from the dataset file's folder)"
        )
        raise DatasetError(f"media[{i}] ({m.id}): {path} {what}{relative}")


@dataclass
class FileCheck:
    """The result of checking a whole file: the valid samples and every problem, by line."""

    path: Path
    samples: list[Sample] = field(default_factory=list)
    errors: list[tuple[int, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every line is a valid sample."""
        return not self.errors


def check_file(
    path: str | Path, specs: Sequence[TaskSpec] = STANDARD_TASKS, *, media_dir: str | Path | None = None
) -> FileCheck:
    """Validate every line of a JSONL dataset, collecting all problems (bad JSON, invalid samples, duplicate ids).

    With ``media_dir`` (the folder relative media paths start from: the dataset file's), a sample whose media
    file is missing is a problem of its line too (:func:`check_media_files`).
    """
    p = Path(path)
    report = FileCheck(p)
    seen: dict[str, int] = {}
    for lineno, line in _text_lines(p):
        if not line.strip():
            continue
        try:
            sample = validate_sample(json.loads(line), specs)
            if media_dir is not None:
                check_media_files(sample, media_dir)
        except json.JSONDecodeError:
            report.errors.append((lineno, _not_json(line)))
            continue
        except DatasetError as e:
            report.errors.append((lineno, str(e)))
            continue
        if sample.id in seen:
            report.errors.append((lineno, f"duplicate id {sample.id!r} (first on line {seen[sample.id]})"))
            continue
        seen[sample.id] = lineno
        report.samples.append(sample)
    return report


def read_samples(
    path: str | Path, specs: Sequence[TaskSpec] = STANDARD_TASKS, *, media_dir: str | Path | None = None
) -> list[Sample]:
    """Read and validate a JSONL dataset; the first problem raises DatasetError naming ``file:line``.

    ``media_dir``: also require every media file to exist, relative paths taken from there (see
    :func:`check_file`)."""
    report = check_file(path, specs, media_dir=media_dir)
    if report.errors:
        lineno, message = report.errors[0]
        more = f" (and {len(report.errors) - 1} more; run `modaverse data validate {report.path}`)"
        raise DatasetError(f"{report.path}:{lineno}: {message}{more if len(report.errors) > 1 else ''}")
    return report.samples


def write_samples(samples: Iterable[Sample], path: str | Path) -> Path:
    """Write samples as JSONL, atomically (a temp file then a rename); returns the path."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("w", encoding="utf-8", newline="\n") as f:
            for s in samples:
                f.write(s.to_json() + "\n")
        tmp.replace(p)
    finally:
        tmp.unlink(missing_ok=True)
    return p


def dedup_key(sample: Sample) -> tuple[str, tuple[tuple[str, str | None], ...]]:
    """Two samples are duplicates when their normalised instruction and media are the same."""
    words = " ".join(sample.instruction.lower().split()).strip(" .!?")
    return words, tuple((m.modality, m.path) for m in sample.media)


def dedup(samples: Iterable[Sample]) -> tuple[list[Sample], int]:
    """Keep the first of each duplicate group (see :func:`dedup_key`); returns (kept, number dropped)."""
    kept: list[Sample] = []
    seen: set[tuple[str, tuple[tuple[str, str | None], ...]]] = set()
    dropped = 0
    for s in samples:
        key = dedup_key(s)
        if key in seen:
            dropped += 1
            continue
        seen.add(key)
        kept.append(s)
    return kept, dropped
