"""The teacher engine: any LangChain chat model writes samples, as the paper did with ChatGPT.

One request per batch of candidate descriptions carries seed examples, the candidates and language
references (``prompts/teacher.j2``). The reply must be a JSON array of samples; every sample is
validated like any other, so a malformed reply or an invalid sample is dropped and counted, never kept.
This module builds requests and reads replies; ``teacher_run`` runs them (concurrency, retries, resume).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modaverse_agent.meta_response import MAX_INVOCATIONS, TaskSpec

from .corpora import CaptionedItem, Corpora, builtin_corpora, builtin_references, split_of
from .dataset import DatasetError, Sample, assign_media_ids, check_file
from .tasks import STANDARD_TASKS
from .teacher_retry import RetryPolicy

if TYPE_CHECKING:
    import jinja2
    from langchain_core.language_models import BaseChatModel
    from langchain_core.messages import BaseMessage

    from .teacher_run import TeacherResult

SEEDS_RESOURCE = "seed_examples.jsonl"
PROMPT_RESOURCE = "teacher.j2"


@cache
def _template() -> jinja2.Template:
    import jinja2

    text = files("modaverse_agent.prompts").joinpath(PROMPT_RESOURCE).read_text(encoding="utf-8")
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True)
    return env.from_string(text)


def builtin_seeds() -> list[Sample]:
    """The seed examples shipped in ``prompts/seed_examples.jsonl`` (validated)."""
    path = files("modaverse_agent.prompts").joinpath(SEEDS_RESOURCE)
    return check_file_resource(path)


def check_file_resource(path: Any) -> list[Sample]:
    """Read a dataset from a path or a package resource, raising on the first invalid line."""
    from importlib.resources import as_file

    with as_file(path) as real:
        report = check_file(real)
    if report.errors:
        line, message = report.errors[0]
        raise DatasetError(f"{path}:{line}: {message}")
    return report.samples


def builtin_candidates(corpora: Corpora | None = None, split: str = "train") -> list[CaptionedItem]:
    """Caption-only candidates from the built-in corpora: image subjects, sounds, music, videos, speech lines."""
    c = corpora or builtin_corpora()
    groups = [("image", c.image_subjects), ("audio", c.sounds + c.music), ("video", c.videos), ("speech", c.speech)]
    return [CaptionedItem(m, text, None, "builtin") for m, items in groups for text in items if split_of(text) == split]


@dataclass(frozen=True)
class TeacherRequest:
    """One request to the teacher: its number (the resume key) and its candidate descriptions."""

    index: int
    items: tuple[CaptionedItem, ...]


@dataclass
class ReadReply:
    """What one reply gave: dataset lines to validate, reasons for the items that were not samples, and why
    the whole reply was unusable (``malformed``)."""

    lines: list[dict[str, Any]]
    invalid: Counter[str] = field(default_factory=Counter)
    malformed: str | None = None


@dataclass(frozen=True)
class _Candidate:
    id: str
    modality: str
    caption: str
    media: bool
    item: CaptionedItem


def _reply_text(message: Any) -> str:
    text = getattr(message, "text", None)
    if isinstance(text, str):
        return text
    content = getattr(message, "content", message)
    return content if isinstance(content, str) else json.dumps(content)


_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.S)


def parse_reply(text: str) -> list[Any] | None:
    """The list of sample objects in a teacher's reply (a JSON array, possibly fenced or wrapped in prose,
    or one JSON object per line); None when there is none."""
    fence = _FENCE.search(text)
    body = (fence.group(1) if fence else text).strip()
    decoder = json.JSONDecoder()
    start = body.find("[")
    while start != -1:
        try:
            value, _ = decoder.raw_decode(body, start)
        except json.JSONDecodeError:
            start = body.find("[", start + 1)
            continue
        if isinstance(value, list) and value and any(isinstance(v, dict) for v in value):
            return value  # non-object items are rejected one by one
        start = body.find("[", start + 1)
    objects = []
    for line in body.splitlines():
        line = line.strip().rstrip(",")
        if line.startswith("{"):
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(obj, dict):
                objects.append(obj)
    if objects:
        return objects
    try:
        whole = json.loads(body)
    except json.JSONDecodeError:
        return None
    if isinstance(whole, dict) and isinstance(whole.get("samples"), list):
        return whole["samples"]
    return None


class TeacherEngine:
    """Asks a LangChain chat model for samples about candidate descriptions (see the module docstring)."""

    def __init__(
        self,
        model: BaseChatModel,
        *,
        seeds: Sequence[Sample] | None = None,
        references: Mapping[str, Sequence[str]] | None = None,
        specs: Sequence[TaskSpec] = STANDARD_TASKS,
        batch_size: int = 8,
        per_candidate: int = 2,
        n_examples: int = 6,
        n_references: int = 5,
        seed: int = 0,
        split: str = "train",
        model_name: str | None = None,
    ) -> None:
        if batch_size < 1 or per_candidate < 1:
            raise DatasetError("batch_size and per_candidate must be at least 1")
        self.model = model
        self.seeds = list(seeds) if seeds is not None else builtin_seeds()
        self.references = {k: list(v) for k, v in (references or builtin_references()).items() if v}
        self.specs = specs
        self.batch_size, self.per_candidate = batch_size, per_candidate
        self.n_examples, self.n_references = n_examples, n_references
        self.seed, self.split = seed, split
        self.model_name = model_name or getattr(model, "model_name", None) or getattr(model, "model", None)
        if not isinstance(self.model_name, str):
            self.model_name = type(model).__name__

    # -- the request --------------------------------------------------------------------------------
    def _examples(self, rng: random.Random) -> list[dict[str, Any]]:
        chosen = rng.sample(self.seeds, min(self.n_examples, len(self.seeds)))
        out = []
        for i, s in enumerate(chosen, 1):
            cand = s.source.get("candidate")
            cid = f"e{i}"
            reply = {
                "candidate": cid if cand else None,
                "kind": s.kind,
                "instruction": s.instruction,
                "media": [cid] if s.media else [],
                "response": s.to_dict()["response"],
            }
            candidate = dict(cand, id=cid) if isinstance(cand, dict) else None
            out.append({"candidate": candidate, "sample": json.dumps(reply, ensure_ascii=False)})
        return out

    def build_messages(self, candidates: Sequence[_Candidate], rng: random.Random) -> list[BaseMessage]:
        """The chat messages of one request: system prompt with examples, references and candidates."""
        from langchain_core.messages import HumanMessage, SystemMessage

        refs = {k: rng.sample(v, min(self.n_references, len(v))) for k, v in sorted(self.references.items())}
        prompt = _template().render(
            tasks=self.specs,
            max_invocations=MAX_INVOCATIONS,
            examples=self._examples(rng),
            references=refs,
            candidates=candidates,
            per_candidate=self.per_candidate,
        )
        ask = f"Write {self.per_candidate * len(candidates)} samples as a JSON array."
        return [SystemMessage(content=prompt), HumanMessage(content=ask)]

    # -- turning a reply into samples ---------------------------------------------------------------
    def _to_line(self, obj: Any, by_id: Mapping[str, _Candidate]) -> dict[str, Any]:
        """A reply item as a dataset line (validated by the caller); problems raise DatasetError."""
        if not isinstance(obj, dict):
            raise DatasetError(f"item is {type(obj).__name__}, not an object")
        refs = obj.get("media", [])
        if not isinstance(refs, list) or not all(isinstance(r, str) for r in refs):
            raise DatasetError("media: must be a list of candidate ids")
        chosen = []
        for ref in refs:
            cand = by_id.get(ref)
            if cand is None:
                raise DatasetError(f"media: unknown candidate {ref!r}")
            if not cand.media:
                raise DatasetError(f"media: candidate {ref!r} has no media file")
            chosen.append(cand)
        ids = assign_media_ids([c.modality for c in chosen])
        media = [
            {"id": mid, "modality": c.modality, "path": c.item.path, "caption": c.caption}
            for mid, c in zip(ids, chosen, strict=True)
        ]
        source: dict[str, Any] = {"engine": "teacher", "split": self.split, "model": self.model_name}
        named = obj.get("candidate")
        cand = by_id.get(named) if isinstance(named, str) else None
        if cand is not None:
            source["candidate"] = cand.caption
            source["corpus"] = cand.item.corpus
        digest = hashlib.sha256(json.dumps([obj, [m["path"] for m in media]], sort_keys=True, default=str).encode())
        return {
            "id": f"g-{digest.hexdigest()[:16]}",
            "kind": obj.get("kind"),
            "instruction": obj.get("instruction"),
            "media": media,
            "response": obj.get("response"),
            "source": source,
        }

    def _candidates(self, items: Sequence[CaptionedItem]) -> list[_Candidate]:
        return [_Candidate(f"c{i}", c.modality, c.caption, c.path is not None, c) for i, c in enumerate(items, 1)]

    def requests(self, items: Sequence[CaptionedItem]) -> list[TeacherRequest]:
        """One request per ``batch_size`` candidates, numbered from 0: the number is the request's resume key."""
        return [
            TeacherRequest(i, tuple(items[start : start + self.batch_size]))
            for i, start in enumerate(range(0, len(items), self.batch_size))
        ]

    def messages(self, request: TeacherRequest) -> list[BaseMessage]:
        """The chat messages of ``request``; the examples and references are drawn from the request's own seed,
        so a request reads the same however many run at once and whichever ran before it."""
        rng = random.Random(f"{self.seed}/{self.split}/teacher/{request.index}")
        return self.build_messages(self._candidates(request.items), rng)

    def read_reply(self, request: TeacherRequest, reply: Any) -> ReadReply:
        """The dataset lines a reply (a message or its text) holds, not yet validated as samples, and what was
        wrong with the rest."""
        text = _reply_text(reply)
        parsed = parse_reply(text)
        if parsed is None:
            what = "empty reply" if not text.strip() else "no JSON array of sample objects in the reply"
            return ReadReply([], malformed=what)
        by_id = {c.id: c for c in self._candidates(request.items)}
        out = ReadReply([])
        for obj in parsed:
            try:
                line = self._to_line(obj, by_id)
            except DatasetError as e:
                out.invalid[str(e)[:80]] += 1
                continue
            line["source"]["request"] = request.index
            out.lines.append(line)
        return out

    def generate(
        self,
        items: Sequence[CaptionedItem],
        *,
        exclude: Sequence[Sample] = (),
        concurrency: int = 1,
        retry: RetryPolicy | None = None,
        output: str | Path | None = None,
        fresh: bool = False,
        progress: bool = False,
        notify: Callable[[str], None] | None = None,
    ) -> TeacherResult:
        """Samples about ``items``: ``concurrency`` requests at a time, each retried by ``retry`` (default: no
        retries) on transient errors; malformed replies, invalid samples and failed requests are counted.
        With ``output`` every finished request is appended there at once and a rerun resumes (see
        ``teacher_run``)."""
        from .teacher_run import run_teacher

        if not items:
            raise DatasetError("the teacher needs candidate descriptions; pass a captioned corpus")
        return run_teacher(
            self,
            items,
            exclude=exclude,
            concurrency=concurrency,
            retry=retry or RetryPolicy(retries=0),
            output=Path(output) if output is not None else None,
            fresh=fresh,
            progress=progress,
            notify=notify,
        )
