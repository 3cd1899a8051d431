"""Running one invocation in a worker thread, with a timeout that really stops it.

An invocation that runs past its timeout is cancelled (``GenerationRequest.cancel`` is set, which
diffusers generators check at every denoising step), the files it wrote are deleted and its output
directory refuses later writes; the caller then waits ``grace`` seconds for the thread to stop. A
generator that never checks ``request.cancelled`` cannot be stopped from outside: its thread runs on,
and at interpreter exit the process waits up to :data:`EXIT_GRACE_S` seconds for it, then ends with
:data:`EXIT_ABANDONED` (a clean ``os._exit``, never an abort from C++ code still running).

An invocation that fails (raises, or keeps no file) has the files it wrote deleted the same way; a file
whose content is not of the modality its artifact declares is dropped (and deleted) with an error.
The agent and the LangChain tools (:mod:`.tools`) both run invocations through :func:`run_with_timeout`.
"""

from __future__ import annotations

import atexit
import contextlib
import math
import os
import sys
import threading
import time
from typing import Any

from .artifact_check import modality_problem
from .artifacts import Artifact
from .errors import ArtifactError, ModaVerseError
from .generators import ArtifactsRefused, GenerationRequest, Generator
from .media import MediaItem
from .meta_response import Invocation

#: Seconds an invocation may run before it is cancelled, unless the caller sets another timeout.
DEFAULT_TIMEOUT_S = 600.0
#: Seconds the caller waits for a cancelled invocation's thread to stop before it moves on.
CANCEL_GRACE_S = 2.0
#: Seconds the process waits at exit for cancelled invocations' threads that still run.
EXIT_GRACE_S = 30.0
#: Exit status when such a thread still runs after EXIT_GRACE_S (the response already reported the timeout).
EXIT_ABANDONED = 1


class InvocationFailed(Exception):
    """One invocation failed; the message is user-facing."""


def check_timeout(timeout: Any) -> float:
    """``timeout`` as float seconds; ModaVerseError unless it is a finite number above 0."""
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not (0 < timeout < math.inf):
        raise ModaVerseError(f"timeout must be a finite number of seconds above 0, got {timeout!r}")
    return float(timeout)


def resolve_inputs(inv: Invocation, gen: Generator, by_id: dict[str, MediaItem]) -> list[MediaItem]:
    """The media an invocation refers to (InvocationFailed when one is missing or the generator needs one)."""
    missing = [ref for ref in inv.inputs if ref not in by_id]
    if missing:
        have = sorted(by_id) or "none"
        raise InvocationFailed(f"refers to input media {missing} that were not given (given: {have})")
    items = [by_id[ref] for ref in inv.inputs]  # their modality is checked by Generator.check
    if gen.input_modalities and not items:
        raise InvocationFailed(
            f"generator {gen.name!r} needs an input {'/'.join(gen.input_modalities)}; attach one and refer to it"
        )
    return items


def run_with_timeout(
    gen: Generator, req: GenerationRequest, timeout: float, grace: float, *, raise_with: str = "--timeout"
) -> tuple[list[Artifact], str | None]:
    """Run ``gen`` on ``req`` in a worker thread; past ``timeout`` cancel it and discard what it wrote.

    Returns the artifacts kept and a problem that dropped others (or None). InvocationFailed when it timed
    out (the message says to raise ``raise_with``), raised, or kept no file; its files are then deleted.
    ``req.output`` should come from :meth:`~modaverse_agent.artifacts.OutputDir.for_invocation`.
    """
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["artifacts"] = gen.generate(req)
        except BaseException as e:
            result["error"] = e

    t0 = time.perf_counter()
    worker = threading.Thread(target=target, name=f"modaverse-{gen.name}", daemon=True)
    worker.start()
    worker.join(min(timeout, threading.TIMEOUT_MAX))
    if worker.is_alive():
        was_loading = gen.loading
        gen.note_timeout()
        req.output.revoke()  # sets req.cancel: the generator stops at its next check, no later file lands
        worker.join(max(0.0, grace))
        still = ""
        if worker.is_alive():
            _abandon(worker)
            still = "; it is still running, since it does not check request.cancelled (its files are discarded)"
        loading = "; its model was still loading, so later calls fail at once until that ends" if was_loading else ""
        raise InvocationFailed(
            f"generator {gen.name!r} did not finish within {timeout:g} s and was cancelled{loading}{still}; "
            f"raise the timeout ({raise_with}) or ask for less work (fewer steps, a smaller size)"
        )
    problem = None
    if isinstance(result.get("error"), ArtifactsRefused):
        refused: ArtifactsRefused = result.pop("error")
        result["artifacts"], problem = refused.kept, str(refused)
    if "error" in result:
        e = result["error"]
        _discard_written(req)
        raise InvocationFailed(f"generator {gen.name!r} failed: {type(e).__name__}: {e}") from e
    artifacts, problem = _settle(gen, req, result["artifacts"], problem)
    for a in artifacts:
        a.timings.setdefault("wall_s", round(time.perf_counter() - t0, 6))
    return artifacts, problem


def _settle(
    gen: Generator, req: GenerationRequest, artifacts: list[Artifact], problem: str | None
) -> tuple[list[Artifact], str | None]:
    """Drop (and delete) files not of their declared modality; fail the invocation when none is kept."""
    why = [modality_problem(a, gen.name) for a in artifacts]
    refused = [a.path for a, w in zip(artifacts, why, strict=True) if w]
    if refused:
        req.output.discard(refused)
        problem = "; ".join(p for p in (problem, *why) if p)
        artifacts = [a for a, w in zip(artifacts, why, strict=True) if not w]
    if not artifacts:
        _discard_written(req)
        raise InvocationFailed(
            problem
            or f"generator {gen.name!r} made no file (its run() returned no artifact); check that it writes its output "
            "through request.output and returns self.artifact(request, path) for each file"
        )
    return artifacts, problem


def _discard_written(req: GenerationRequest) -> None:
    """Delete every file the failed invocation wrote (and refuse later writes when its output can be revoked)."""
    try:
        req.output.revoke()
    except ArtifactError:  # an OutputDir not made for one invocation: delete what it wrote
        req.output.discard(req.output.written)


_abandoned: list[threading.Thread] = []
_abandoned_lock = threading.Lock()
_exit_hook: list[bool] = []


def _abandon(worker: threading.Thread) -> None:
    """Remember a cancelled worker that still runs, so that interpreter exit waits for it."""
    with _abandoned_lock:
        _abandoned[:] = [t for t in _abandoned if t.is_alive()]
        _abandoned.append(worker)
        if not _exit_hook:  # registered now, after torch & co. registered theirs: it runs before them
            atexit.register(_wait_for_abandoned_workers)
            _exit_hook.append(True)


def abandoned_workers() -> list[threading.Thread]:
    """Worker threads of cancelled invocations that are still running."""
    with _abandoned_lock:
        return [t for t in _abandoned if t.is_alive()]


def _wait_for_abandoned_workers() -> None:
    """At exit: give cancelled workers EXIT_GRACE_S to stop, else end the process before finalisation.

    A daemon thread still inside torch or another native library while the interpreter finalises can
    abort the process (``terminate called without an active exception``, exit status 134).
    """
    deadline = time.monotonic() + EXIT_GRACE_S
    for t in abandoned_workers():
        t.join(max(0.0, deadline - time.monotonic()))
    alive = abandoned_workers()
    if not alive:
        return
    names = ", ".join(sorted({t.name for t in alive}))
    with contextlib.suppress(OSError, ValueError, AttributeError):
        sys.stdout.flush()
    with contextlib.suppress(OSError, ValueError, AttributeError):
        sys.stderr.write(
            f"modaverse: {names} ignored cancellation and still ran {EXIT_GRACE_S:g} s after exit began; "
            f"ending the process (exit status {EXIT_ABANDONED})\n"
        )
        sys.stderr.flush()
    os._exit(EXIT_ABANDONED)
