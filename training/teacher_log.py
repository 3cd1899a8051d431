"""A teacher run's output that survives being stopped: samples appended to the JSONL as each request
finishes, and a progress log beside it (``OUTPUT.progress``) that records every finished request.

The resume key is the request's number: request ``i`` asks about candidates ``i*batch_size`` to
``(i+1)*batch_size - 1``, so the log's first line holds the settings that fix that mapping (split, seed,
batch size, samples per candidate, the candidates' digest) and a rerun with other settings is refused.
A request is finished once its line is in the log; its samples are written (and flushed) before that line.
On resume:

* a torn last line (the run was killed while writing it) of either file is cut off, with a message;
* samples after the last finished request's (those of a request that was being written) are cut off;
* finished requests are skipped; requests that failed are asked again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from .corpora import CaptionedItem
from .dataset import DatasetError, Sample

PROGRESS_SUFFIX = ".progress"
FORMAT = 1


def progress_path(output: str | Path) -> Path:
    """The progress log beside ``output`` (``data/train.jsonl`` -> ``data/train.jsonl.progress``)."""
    p = Path(output)
    return p.with_name(p.name + PROGRESS_SUFFIX)


def run_settings(
    items: Sequence[CaptionedItem], *, split: str, seed: int, batch_size: int, per_candidate: int
) -> dict[str, Any]:
    """What must not change between a run and its resumption (they fix what request ``i`` asks)."""
    digest = hashlib.sha256()
    for item in items:
        digest.update(json.dumps([item.modality, item.caption, item.path], ensure_ascii=False).encode())
    return {
        "split": split,
        "seed": seed,
        "batch_size": batch_size,
        "per_candidate": per_candidate,
        "candidates": len(items),
        "candidates_sha256": digest.hexdigest()[:16],
    }


@dataclass
class Resumed:
    """What an earlier run left: its finished requests' log entries (by number) and their samples."""

    done: dict[int, dict[str, Any]] = field(default_factory=dict)
    samples: list[Sample] = field(default_factory=list)


def _lines(path: Path, notify: Callable[[str], None]) -> Iterator[tuple[int, bytes]]:
    """(byte offset after the line, line) for each complete line; a torn last line is cut off the file."""
    end = 0
    with path.open("rb") as f:
        for raw in f:
            if not raw.endswith(b"\n"):
                notify(f"{path}: discarded a torn last line ({len(raw)} bytes; the run stopped while writing it)")
                break
            end += len(raw)
            yield end, raw
    if path.stat().st_size != end:
        with path.open("r+b") as f:
            f.truncate(end)


def _cut(path: Path, end: int) -> None:
    with path.open("r+b") as f:
        f.truncate(end)


def _start_over(output: Path, log: Path, notify: Callable[[str], None]) -> None:
    for p in (output, log):
        if p.exists():
            p.unlink()
            notify(f"--fresh: removed {p}")


def _read_log(log: Path, settings: Mapping[str, Any], notify: Callable[[str], None]) -> dict[int, dict[str, Any]]:
    latest: dict[int, dict[str, Any]] = {}
    header: Any = None
    for lineno, (_, raw) in enumerate(_lines(log, notify), 1):
        try:
            entry = json.loads(raw)
        except json.JSONDecodeError:
            raise DatasetError(f"{log}:{lineno}: not JSON; remove the file, or pass --fresh to start over") from None
        if lineno == 1:
            header = entry
            continue
        if not isinstance(entry, dict) or not isinstance(entry.get("request"), int):
            raise DatasetError(f"{log}:{lineno}: not a progress entry; pass --fresh to start over")
        latest[entry["request"]] = entry
    if not isinstance(header, dict) or header.get("teacher_progress") != FORMAT:
        raise DatasetError(f"{log} is not a teacher progress log; remove it or pass --fresh to start over")
    before = header.get("settings", {})
    changed = [f"{k} {before.get(k)!r} -> {v!r}" for k, v in settings.items() if before.get(k) != v]
    if changed:
        raise DatasetError(
            f"{log.with_suffix('')} was started with other settings ({', '.join(changed)}); rerun with the same "
            "ones to continue it, pass --fresh to start over, or choose another -o"
        )
    return {i: e for i, e in latest.items() if e.get("status") == "done"}


def _read_samples(output: Path, done: Mapping[int, Mapping[str, Any]], notify: Callable[[str], None]) -> list[Sample]:
    expected = sum(int(e.get("kept", 0)) for e in done.values())
    if not output.exists():
        if expected:
            raise DatasetError(
                f"{output} is missing but its progress log records {expected} samples; pass --fresh to start over"
            )
        output.touch()
        return []
    samples: list[Sample] = []
    keep_end, extra = 0, 0
    for lineno, (end, raw) in enumerate(_lines(output, notify), 1):
        if len(samples) == expected:
            extra += 1
            continue
        try:
            sample = Sample.from_dict(json.loads(raw))
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise DatasetError(
                f"{output}:{lineno}: not a sample this run wrote ({type(e).__name__}); the file was changed after "
                "the run wrote it: pass --fresh to start over"
            ) from None
        if sample.source.get("request") not in done:
            raise DatasetError(
                f"{output}:{lineno}: a sample of request {sample.source.get('request')!r}, which the progress log "
                "does not record as finished; pass --fresh to start over"
            )
        samples.append(sample)
        keep_end = end
    if len(samples) < expected:
        raise DatasetError(
            f"{output} has {len(samples)} samples but its progress log records {expected}; pass --fresh to start over"
        )
    if extra:
        _cut(output, keep_end)
        notify(f"{output}: discarded {extra} samples of a request that had not finished (it is asked again)")
    return samples


class RunLog:
    """Appends finished requests to the output and the progress log, each flushed at once."""

    def __init__(self, output: Path, samples: IO[str], log: IO[str]) -> None:
        self.output = output
        self._samples, self._log = samples, log

    @classmethod
    def open(
        cls,
        output: str | Path,
        settings: Mapping[str, Any],
        *,
        model: str,
        fresh: bool = False,
        notify: Callable[[str], None] = lambda _: None,
    ) -> tuple[RunLog, Resumed]:
        """Open ``output`` for appending, reading back what an earlier run with the same settings finished."""
        out, log = Path(output), progress_path(output)
        out.parent.mkdir(parents=True, exist_ok=True)
        if fresh:
            _start_over(out, log, notify)
        resumed = Resumed()
        if log.exists():
            resumed.done = _read_log(log, settings, notify)
            resumed.samples = _read_samples(out, resumed.done, notify)
        elif out.exists() and out.stat().st_size:
            raise DatasetError(
                f"{out} exists and has no progress log {log.name}, so no resumable teacher run wrote it; "
                "pass --fresh to overwrite it, or choose another -o"
            )
        else:
            header = {"teacher_progress": FORMAT, "settings": dict(settings), "model": model}
            log.write_text(json.dumps(header) + "\n", encoding="utf-8")
            out.write_text("", encoding="utf-8")
        samples = out.open("a", encoding="utf-8", newline="\n")
        return cls(out, samples, log.open("a", encoding="utf-8", newline="\n")), resumed

    def commit(self, samples: Sequence[Sample], entry: Mapping[str, Any]) -> None:
        """Write a finished request: its samples first, then its progress line (a request is finished once its
        progress line is there)."""
        if samples:
            self._samples.write("".join(s.to_json() + "\n" for s in samples))
            self._samples.flush()
        self._log.write(json.dumps(dict(entry), ensure_ascii=False) + "\n")
        self._log.flush()

    def close(self) -> None:
        """Close both files."""
        self._samples.close()
        self._log.close()
