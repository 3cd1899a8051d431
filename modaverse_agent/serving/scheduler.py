"""A bounded queue of workers over one agent: admit, run, cancel, and say when to come back.

At most ``workers`` requests run at once and at most ``max_queue`` wait; a request beyond that is
refused at once (:class:`QueueFull`, answered 429 with ``Retry-After``) rather than piling up. A job
that is cancelled while it waits never runs; one cancelled while it runs sees ``job.cancelled`` set and
stops at its next check (the server checks before each step of the agent, so no further invocation
starts). Either way its slot is free again when its work has stopped.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

logger = logging.getLogger(__name__)
#: Marks the end of a job's events.
END = object()


class QueueFull(Exception):
    """Every worker is busy and the queue is full; ``retry_after`` is a guess in whole seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"the server is busy; retry in {retry_after} s")
        self.retry_after = retry_after


class Job:
    """One admitted request: its cancel flag, its result future, and (for streams) its event queue."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None) -> None:
        self.cancelled = threading.Event()
        self.future: Future[Any] = Future()
        self.loop = loop
        self.events: asyncio.Queue[Any] | None = asyncio.Queue() if loop is not None else None
        self.started = 0.0

    def emit(self, item: Any) -> None:
        """Hand ``item`` to the request's event loop (dropped once the loop is gone)."""
        if self.loop is None or self.events is None:
            return
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, item)
        except RuntimeError:  # the loop closed: the server is stopping
            self.cancelled.set()

    def cancel(self) -> None:
        """Stop this job: never start it, or ask it to stop at its next check."""
        self.cancelled.set()
        self.future.cancel()


class Scheduler:
    """``workers`` threads and a queue of at most ``max_queue`` waiting jobs."""

    def __init__(self, *, workers: int = 8, max_queue: int = 64) -> None:
        if workers < 1 or max_queue < 0:
            raise ValueError(f"need workers >= 1 and max_queue >= 0, got {workers} and {max_queue}")
        self.workers = workers
        self.max_queue = max_queue
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="modaverse-serve")
        self._lock = threading.Lock()
        self._admitted = 0
        self._running = 0
        self._service_s = 1.0  # a running average of how long a job takes
        self._jobs: set[Job] = set()
        #: Counts since start: admitted, refused, cancelled, failed, completed.
        self.counts = {"admitted": 0, "refused": 0, "cancelled": 0, "failed": 0, "completed": 0}

    @property
    def capacity(self) -> int:
        """Jobs the server holds at most (running + waiting)."""
        return self.workers + self.max_queue

    def load(self) -> dict[str, int]:
        """Running and waiting jobs now, and the capacity."""
        with self._lock:
            return {"running": self._running, "waiting": self._admitted - self._running, "capacity": self.capacity}

    def retry_after(self) -> int:
        """Seconds until a slot is likely free (at least 1)."""
        with self._lock:
            return self._retry_after()

    def _retry_after(self) -> int:
        waiting = max(0, self._admitted - self._running)
        return max(1, math.ceil(self._service_s * (waiting + 1) / self.workers))

    def submit(self, fn: Callable[[Job], Any], *, loop: asyncio.AbstractEventLoop | None = None) -> Job:
        """Admit ``fn(job)`` (QueueFull when there is no room); ``loop`` gives the job an event queue."""
        with self._lock:
            if self._admitted >= self.capacity:
                self.counts["refused"] += 1
                raise QueueFull(self._retry_after())
            self._admitted += 1
            self.counts["admitted"] += 1
            job = Job(loop)
            self._jobs.add(job)
        job.future.add_done_callback(lambda f: self._finished(job, f))
        try:
            self._pool.submit(self._run, fn, job)
        except RuntimeError:  # the pool shut down
            job.cancel()
            raise QueueFull(1) from None
        return job

    def _run(self, fn: Callable[[Job], Any], job: Job) -> None:
        if not job.future.set_running_or_notify_cancel():
            return  # cancelled while it waited
        with self._lock:
            self._running += 1
            job.started = time.monotonic()
        try:
            result = fn(job)
        except BaseException as e:
            if not job.cancelled.is_set():  # a stopped request is no failure
                logger.exception("a request failed in the server")
            job.future.set_exception(e)
        else:
            job.future.set_result(result)
        finally:
            job.emit(END)

    def _finished(self, job: Job, future: Future[Any]) -> None:
        with self._lock:
            self._admitted -= 1
            self._jobs.discard(job)
            if job.started:
                self._running -= 1
                took = time.monotonic() - job.started
                self._service_s = 0.8 * self._service_s + 0.2 * took
            if future.cancelled() or job.cancelled.is_set():
                self.counts["cancelled"] += 1
            elif future.exception() is not None:
                self.counts["failed"] += 1
            else:
                self.counts["completed"] += 1

    def shutdown(self) -> None:
        """Refuse new jobs; cancel the waiting ones and ask the running ones to stop."""
        with self._lock:
            jobs = list(self._jobs)
        for job in jobs:
            job.cancel()
        self._pool.shutdown(wait=False, cancel_futures=True)


__all__ = ["END", "Job", "QueueFull", "Scheduler"]
