"""Retrying a teacher request: which errors are transient, how long to wait, and why a request failed.

A transient error (a rate limit, a timeout, a dropped connection, a 5xx or 429 answer) is retried with
exponential backoff: ``base_delay * 2**attempt`` capped at ``max_delay``, times a jitter in [0.5, 1] drawn
from the request's number, so that many workers hit by the same rate limit do not come back together
(and a run's waits are reproducible). Any other error (a bad API key, a prompt over the context) fails
at once: retrying would only repeat it.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

#: Exception class names (anywhere in the class's MRO) that mean "try again later", across the usual
#: client libraries (openai, anthropic, httpx, requests, google) without importing any of them.
TRANSIENT_NAMES = frozenset(
    {
        "RateLimitError",
        "APIConnectionError",
        "APITimeoutError",
        "InternalServerError",
        "ServiceUnavailableError",
        "ServiceUnavailable",
        "OverloadedError",
        "TransportError",
        "TimeoutException",
        "Timeout",
        "ReadTimeout",
        "ConnectTimeout",
        "ConnectionError",
        "ResourceExhausted",
        "DeadlineExceeded",
        "TooManyRequests",
    }
)
#: HTTP status codes worth another try.
TRANSIENT_STATUS = frozenset({408, 409, 425, 429})


def _status_code(error: BaseException) -> int | None:
    for holder in (error, getattr(error, "response", None)):
        code = getattr(holder, "status_code", None)
        if isinstance(code, int):
            return code
    return None


def is_transient(error: BaseException) -> bool:
    """Whether ``error`` is worth retrying: timeouts, connection errors, rate limits, 408/409/425/429/5xx."""
    if isinstance(error, TimeoutError | ConnectionError):
        return True
    code = _status_code(error)
    if code is not None:
        return code in TRANSIENT_STATUS or code >= 500
    return any(cls.__name__ in TRANSIENT_NAMES for cls in type(error).__mro__)


def failure_reason(error: BaseException) -> str:
    """A short, countable reason: the exception's class and the first line of its message (120 characters)."""
    message = str(error).strip().splitlines()
    text = f"{type(error).__name__}: {message[0]}" if message else type(error).__name__
    return text[:120]


@dataclass
class RetryPolicy:
    """How often and how long to retry a transient error; ``sleep`` is injectable for tests."""

    retries: int = 5
    base_delay: float = 1.0
    max_delay: float = 60.0
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)

    def __post_init__(self) -> None:
        if self.retries < 0 or self.base_delay < 0 or self.max_delay < 0:
            raise ValueError("retries, base_delay and max_delay must not be negative")

    def delay(self, attempt: int, key: int) -> float:
        """Seconds to wait after failed attempt ``attempt`` (0-based) of request ``key``."""
        jitter = 0.5 + 0.5 * random.Random(f"{key}/{attempt}").random()
        return min(self.max_delay, self.base_delay * 2**attempt) * jitter


@dataclass
class Attempted:
    """The end of one request: what ``call`` returned, or the error that ended it; how many attempts were
    made and the reasons of the transient errors that were retried."""

    reply: Any
    error: BaseException | None
    attempts: int
    retried: list[str] = field(default_factory=list)


def call_with_retry(call: Callable[[], Any], policy: RetryPolicy, key: int) -> Attempted:
    """Run ``call`` until it returns, a non-transient error, or ``policy.retries`` retries are spent.

    Never raises an ``Exception``: the outcome says what happened (KeyboardInterrupt still stops the run).
    """
    retried: list[str] = []
    for attempt in range(policy.retries + 1):
        try:
            reply = call()
        except Exception as e:
            if attempt < policy.retries and is_transient(e):
                retried.append(failure_reason(e))
                policy.sleep(policy.delay(attempt, key))
                continue
            return Attempted(None, e, attempt + 1, retried)
        return Attempted(reply, None, attempt + 1, retried)
    raise AssertionError("unreachable: the last attempt returns")
