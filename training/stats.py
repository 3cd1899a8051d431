"""Counts over a dataset: per modality pair (``audio+text -> image``), kind, task set, split and source."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .dataset import Sample
from .tasks import output_label


def modality_pair(sample: Sample) -> str:
    """``image+text -> image`` style label: input modalities (sorted, with text) -> output labels (sorted)."""
    inputs = sorted({m.modality for m in sample.media} | {"text"})
    outputs = sorted({output_label(t) for t in sample.tasks}) or ["text"]
    return f"{'+'.join(inputs)} -> {'+'.join(outputs)}"


def task_set(sample: Sample) -> str:
    """The tasks a sample invokes, sorted and joined with ``+`` (``none`` for a text answer)."""
    return "+".join(sorted(set(sample.tasks))) or "none"


@dataclass
class Stats:
    """Counts of a dataset (or of a generation run)."""

    total: int = 0
    by_pair: Counter[str] = field(default_factory=Counter)
    by_kind: Counter[str] = field(default_factory=Counter)
    by_tasks: Counter[str] = field(default_factory=Counter)
    by_split: Counter[str] = field(default_factory=Counter)
    by_pool: Counter[str] = field(default_factory=Counter)
    placeholder_media: int = 0

    def add(self, sample: Sample) -> None:
        """Count one sample."""
        self.total += 1
        self.by_pair[modality_pair(sample)] += 1
        self.by_kind[sample.kind] += 1
        self.by_tasks[task_set(sample)] += 1
        self.by_split[sample.split or "-"] += 1
        self.by_pool[str(sample.source.get("pool", sample.source.get("engine", "-")))] += 1
        self.placeholder_media += sum(m.path is None for m in sample.media)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready counts, each table sorted by count then name."""

        def table(c: Counter[str]) -> dict[str, int]:
            return dict(sorted(c.items(), key=lambda kv: (-kv[1], kv[0])))

        return {
            "total": self.total,
            "by_pair": table(self.by_pair),
            "by_kind": table(self.by_kind),
            "by_tasks": table(self.by_tasks),
            "by_split": table(self.by_split),
            "by_pool": table(self.by_pool),
            "placeholder_media": self.placeholder_media,
        }

    def format(self, *, pools: bool = False) -> str:
        """A readable report (pairs, kinds, task sets, splits; phrasing pools when ``pools``)."""
        data = self.to_dict()
        lines = [f"samples: {self.total}"]
        titles = [("by_pair", "modality pair"), ("by_kind", "kind"), ("by_tasks", "tasks"), ("by_split", "split")]
        if pools:
            titles.append(("by_pool", "pool"))
        for key, title in titles:
            lines.append(f"\n{title}:")
            width = max((len(k) for k in data[key]), default=0)
            lines += [f"  {k:<{width}}  {v:>6}" for k, v in data[key].items()]
        if self.placeholder_media:
            lines.append(f"\nplaceholder media (path null): {self.placeholder_media}")
        return "\n".join(lines)


def compute_stats(samples: Iterable[Sample]) -> Stats:
    """Count every sample."""
    stats = Stats()
    for s in samples:
        stats.add(s)
    return stats
