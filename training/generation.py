"""What both instruction engines share: validate every candidate sample, deduplicate, count what was dropped."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from modaverse_agent.meta_response import TaskSpec

from .dataset import DatasetError, Sample, dedup_key, validate_sample
from .stats import Stats, compute_stats
from .tasks import STANDARD_TASKS


@dataclass
class GenerationResult:
    """The samples an engine produced and an account of everything it dropped."""

    samples: list[Sample] = field(default_factory=list)
    requested: int = 0
    duplicates: int = 0
    invalid: Counter[str] = field(default_factory=Counter)
    #: Teacher engine: replies that were not a JSON list of samples, and requests that raised.
    malformed_replies: int = 0
    failed_requests: int = 0
    requests: int = 0
    #: Template engine: samples a maker could not produce (its combinations ran out), by maker.
    shortfall: Counter[str] = field(default_factory=Counter)

    @property
    def rejected(self) -> int:
        """Candidate samples dropped as invalid (not counting duplicates)."""
        return sum(self.invalid.values())

    def stats(self) -> Stats:
        """Counts of the kept samples (per modality pair, kind, task set, split)."""
        return compute_stats(self.samples)

    def summary(self) -> dict[str, Any]:
        """JSON-ready account of the run."""
        out: dict[str, Any] = {
            "kept": len(self.samples),
            "requested": self.requested,
            "duplicates": self.duplicates,
            "invalid": self.rejected,
            "invalid_reasons": dict(self.invalid.most_common()),
        }
        if self.requests:
            out |= {
                "requests": self.requests,
                "malformed_replies": self.malformed_replies,
                "failed_requests": self.failed_requests,
            }
        if self.shortfall:
            out["shortfall"] = dict(sorted(self.shortfall.items()))
        return out


def _reason(error: DatasetError) -> str:
    """A short, countable reason: the field path and the kind of problem, without the offending value."""
    text = str(error)
    head, sep, rest = text.partition(": ")
    if sep and (head.startswith(("response", "media", "instruction", "kind", "id", "source")) or "[" in head):
        return f"{head}: {rest.split(' (', 1)[0][:60]}"
    return text[:80]


class Collector:
    """Validates each offered sample, drops duplicates (also of ``exclude``), and counts both."""

    def __init__(
        self,
        result: GenerationResult | None = None,
        *,
        specs: Sequence[TaskSpec] = STANDARD_TASKS,
        exclude: Iterable[Sample] = (),
    ) -> None:
        self.result = result or GenerationResult()
        self.specs = specs
        self._seen = {dedup_key(s) for s in exclude}

    def offer(self, sample: Sample | dict[str, Any]) -> bool:
        """Keep the sample when it is valid and new; returns whether it was kept."""
        if isinstance(sample, Sample) and dedup_key(sample) in self._seen:
            self.result.duplicates += 1  # checked first: validation is the expensive part
            return False
        obj = sample.to_dict() if isinstance(sample, Sample) else sample
        try:
            valid = validate_sample(obj, self.specs)
        except DatasetError as e:
            self.result.invalid[_reason(e)] += 1
            return False
        key = dedup_key(valid)
        if key in self._seen:
            self.result.duplicates += 1
            return False
        self._seen.add(key)
        self.result.samples.append(valid)
        return True
