"""Splitting a dataset into train and test so that a template (or an instruction) never crosses the split."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import replace

from .dataset import DatasetError, Sample, dedup_key


def group_key(sample: Sample, by: str) -> str:
    """What must stay on one side: the template (else the instruction), the instruction, or the sample."""
    if by == "template":
        template = sample.source.get("template")
        if isinstance(template, str) and template.strip():
            return f"template:{template}"
        by = "instruction"
    if by == "instruction":
        return f"instruction:{dedup_key(sample)[0]}"
    if by == "sample":
        return f"sample:{sample.id}"
    raise DatasetError(f"cannot split by {by!r}; use template, instruction or sample")


def split_samples(
    samples: Sequence[Sample], test_fraction: float, *, by: str = "template", seed: int = 0
) -> tuple[list[Sample], list[Sample]]:
    """Whole groups go to test (in an order fixed by ``seed``) until it holds ``test_fraction`` of the samples.

    Samples keep their order; ``source.split`` is set to ``train`` / ``test``.
    """
    if not 0.0 <= test_fraction <= 1.0:
        raise DatasetError(f"test_fraction must be between 0 and 1, got {test_fraction}")
    groups: dict[str, int] = {}
    for s in samples:
        key = group_key(s, by)
        groups[key] = groups.get(key, 0) + 1
    order = sorted(groups, key=lambda k: hashlib.sha256(f"{seed}\x00{k}".encode()).hexdigest())
    want, taken, test_groups = round(test_fraction * len(samples)), 0, set()
    for key in order:
        if taken >= want:
            break
        test_groups.add(key)
        taken += groups[key]
    train: list[Sample] = []
    test: list[Sample] = []
    for s in samples:
        is_test = group_key(s, by) in test_groups
        moved = replace(s, source={**s.source, "split": "test" if is_test else "train"})
        (test if is_test else train).append(moved)
    return train, test
