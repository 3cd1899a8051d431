"""Running a teacher at scale: many requests at once, retries with backoff, resumable output.

Requests go through LangChain's ``batch_as_completed`` with ``max_concurrency`` (a thread pool: any chat
model works, sync or async, hosted or local), a window of ``4 * concurrency`` requests at a time. Each
request retries transient errors (``teacher_retry``). Replies are read, validated, deduplicated and written
in request order, whatever order they arrive in, so a run's file does not depend on its concurrency or on
where it was stopped and resumed. Nothing is dropped silently: every failed request, malformed reply and
invalid sample is counted with its reason.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .corpora import CaptionedItem
from .dataset import DatasetError, Sample
from .generation import Collector, GenerationResult
from .teacher_log import Resumed, RunLog, run_settings
from .teacher_retry import Attempted, RetryPolicy, call_with_retry, failure_reason

if TYPE_CHECKING:
    from .teacher import TeacherEngine, TeacherRequest

#: Requests in flight or waiting to be written, per unit of concurrency.
WINDOW_PER_WORKER = 4


@dataclass
class TeacherResult(GenerationResult):
    """A teacher run's samples and account: on top of the shared counts, why requests failed (after their
    retries) and why replies were malformed, the retries made, and what an earlier run had finished."""

    failures: Counter[str] = field(default_factory=Counter)
    malformed: Counter[str] = field(default_factory=Counter)
    retries: Counter[str] = field(default_factory=Counter)
    #: Samples asked in requests that failed: missing from the file until a rerun asks again.
    unasked: int = 0
    resumed_requests: int = 0
    resumed_samples: int = 0

    def summary(self) -> dict[str, Any]:
        """JSON-ready account of the run (the shared counts plus the teacher's)."""
        out = super().summary()
        out |= {
            "failed_reasons": dict(self.failures.most_common()),
            "malformed_reasons": dict(self.malformed.most_common()),
            "retries": sum(self.retries.values()),
            "retry_reasons": dict(self.retries.most_common()),
            "unasked": self.unasked,
            "resumed_requests": self.resumed_requests,
            "resumed_samples": self.resumed_samples,
        }
        return out


def _restore(result: TeacherResult, resumed: Resumed) -> None:
    """Count an earlier run's finished requests as if this run had made them (the file holds their samples)."""
    result.samples.extend(resumed.samples)
    result.resumed_requests, result.resumed_samples = len(resumed.done), len(resumed.samples)
    for entry in resumed.done.values():
        result.requests += 1
        result.duplicates += int(entry.get("duplicates", 0))
        result.invalid.update(entry.get("invalid", {}))
        if entry.get("malformed"):
            result.malformed_replies += 1
            result.malformed[entry["malformed"]] += 1


class _Run:
    """One split's run: asks, then commits each request in order (counts, samples, the log)."""

    def __init__(self, engine: TeacherEngine, result: TeacherResult, exclude: Sequence[Sample], log: RunLog | None):
        self.engine, self.result, self.log = engine, result, log
        self.collector = Collector(specs=engine.specs, exclude=[*exclude, *result.samples])
        self.asked = self.failed = self.consecutive_failures = 0
        self.first_error: BaseException | None = None

    def commit(self, request: TeacherRequest, outcome: Attempted) -> None:
        r = self.result
        r.requests += 1
        self.asked += 1
        r.retries.update(outcome.retried)
        entry: dict[str, Any] = {"request": request.index, "attempts": outcome.attempts}
        kept: list[Sample] = []
        if outcome.error is not None:
            reason = failure_reason(outcome.error)
            r.failed_requests += 1
            r.failures[reason] += 1
            r.unasked += len(request.items) * self.engine.per_candidate
            self.failed += 1
            self.consecutive_failures += 1
            self.first_error = self.first_error or outcome.error
            entry |= {"status": "failed", "error": reason}
        else:
            self.consecutive_failures = 0
            read = self.engine.read_reply(request, outcome.reply)
            scratch = GenerationResult(invalid=read.invalid)
            self.collector.result = scratch
            for line in read.lines:
                self.collector.offer(line)
            kept = scratch.samples
            r.samples.extend(kept)
            r.duplicates += scratch.duplicates
            r.invalid.update(scratch.invalid)
            if read.malformed:
                r.malformed_replies += 1
                r.malformed[read.malformed] += 1
            entry |= {"status": "done", "kept": len(kept), "duplicates": scratch.duplicates}
            entry |= {"invalid": dict(scratch.invalid), "malformed": read.malformed}
        if self.log is not None:
            self.log.commit(kept, entry)


def _progress(enabled: bool, total: int, done: int) -> Any:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = [TextColumn("teacher"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()]
    bar = Progress(*columns, TextColumn("{task.fields[status]}"), console=Console(stderr=True), disable=not enabled)
    task = bar.add_task("requests", total=total, completed=done, status="")
    return bar, task


def _ask(engine: TeacherEngine, retry: RetryPolicy) -> Callable[[TeacherRequest], Attempted]:
    def ask(request: TeacherRequest) -> Attempted:
        messages = engine.messages(request)
        return call_with_retry(lambda: engine.model.invoke(messages), retry, request.index)

    return ask


def _check_stop(run: _Run, window: int, output: Path | None) -> None:
    if run.consecutive_failures < window:
        return
    reason, _ = run.result.failures.most_common(1)[0]
    where = f"; the finished requests are in {output}: fix the cause and rerun the same command" if output else ""
    raise DatasetError(f"stopped: the last {run.consecutive_failures} requests failed (mostly {reason}){where}")


def run_teacher(
    engine: TeacherEngine,
    items: Sequence[CaptionedItem],
    *,
    exclude: Sequence[Sample] = (),
    concurrency: int = 1,
    retry: RetryPolicy | None = None,
    output: Path | None = None,
    fresh: bool = False,
    progress: bool = False,
    notify: Callable[[str], None] | None = None,
) -> TeacherResult:
    """Ask the teacher about ``items`` (see the module docstring); with ``output``, resume an earlier run."""
    from langchain_core.runnables import RunnableLambda

    if concurrency < 1:
        raise DatasetError(f"concurrency must be at least 1, got {concurrency}")
    say = notify or (lambda _: None)
    retry = retry or RetryPolicy()
    requests = engine.requests(items)
    result = TeacherResult(requested=len(items) * engine.per_candidate)
    log: RunLog | None = None
    done: set[int] = set()
    if output is not None:
        settings = run_settings(
            items,
            split=engine.split,
            seed=engine.seed,
            batch_size=engine.batch_size,
            per_candidate=engine.per_candidate,
        )
        log, resumed = RunLog.open(output, settings, model=str(engine.model_name), fresh=fresh, notify=say)
        _restore(result, resumed)
        done = set(resumed.done)
        if done:
            say(f"{output}: resuming, {len(done)} of {len(requests)} requests already finished")
    run = _Run(engine, result, exclude, log)
    pending = [r for r in requests if r.index not in done]
    window = max(WINDOW_PER_WORKER * concurrency, 8)
    runnable = RunnableLambda(_ask(engine, retry))
    bar, task = _progress(progress, len(requests), len(done))
    try:
        with bar:
            for start in range(0, len(pending), window):
                chunk = pending[start : start + window]
                ready: dict[int, Attempted] = {}
                following = 0
                config: Any = {"max_concurrency": concurrency}
                stream = runnable.batch_as_completed(chunk, config=config)
                try:  # closing the stream cancels the requests not started when this loop stops early
                    for pos, outcome in stream:
                        ready[pos] = outcome
                        while following in ready:
                            run.commit(chunk[following], ready.pop(following))
                            following += 1
                            status = f"kept {len(result.samples)} · failed {result.failed_requests}"
                            bar.update(task, advance=1, status=status)
                            _check_stop(run, window, output)
                finally:
                    stream.close()
    finally:
        if log is not None:
            log.close()
    if run.asked and run.failed == run.asked and not done and run.first_error is not None:
        e = run.first_error
        raise DatasetError(f"every request to the teacher failed; the first error: {type(e).__name__}: {e}") from e
    return result
