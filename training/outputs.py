"""Where a training run writes: the model folder (``-o``) and the run folder (checkpoints, metrics).

A trained model is never replaced by accident and two runs never share a run folder:
:func:`plan_outputs` checks both folders before anything loads and says what to pass instead;
:meth:`OutputPlan.prepare_run_dir` clears a replaced run just before training starts, and
:meth:`OutputPlan.drop_later` the abandoned tail of a resumed one only once its first step has trained;
:class:`RunLock` keeps a second training out of a run folder in use; :func:`replace_folder` swaps the
finished model in only once it is written, so a failed run leaves the old model whole.
:func:`check_model_folder` tells a folder that is not a model (empty, foreign, a run folder) from a model
saved in part.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from modaverse_agent.errors import ModelError

from .trainer import PARTIAL_SUFFIX, complete_checkpoints

CONFIG_FILE = "modaverse_config.json"
METRICS_FILE = "metrics.jsonl"
LOCK_FILE = ".lock"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def _checkpoints(run_dir: Path) -> dict[int, Path]:
    """The run folder's ``checkpoint-N`` folders by step."""
    if not run_dir.is_dir():
        return {}
    found = {}
    for p in run_dir.iterdir():
        m = _CHECKPOINT.match(p.name)
        if m and p.is_dir():
            found[int(m.group(1))] = p
    return found


def _run_evidence(run_dir: Path) -> list[str]:
    """What in ``run_dir`` belongs to an earlier run (its metrics, checkpoints, TensorBoard logs)."""
    names = [f"checkpoint-{n}" for n in sorted(_checkpoints(run_dir))]
    names += [n for n in (METRICS_FILE, "tensorboard") if (run_dir / n).exists()]
    return names


def _listing(names: list[str], limit: int = 3) -> str:
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def check_model_folder(path: str | Path) -> Path:
    """``path`` if it can be a model folder; ModelError (one line, what to do) when it clearly is not one.

    A folder with some of a model's files but not all is left to the loader, which names what is missing.
    """
    p = Path(path)
    if not p.is_dir():
        raise ModelError(f"model folder {p} does not exist; give the -o folder of a `modaverse train` run")
    if (p / CONFIG_FILE).is_file():
        return p
    if _run_evidence(p):
        raise ModelError(
            f"{p} is a training run folder (checkpoints and metrics), not a model; give the model folder "
            "that `modaverse train -o` wrote"
        )
    if not any(p.iterdir()) or not any((p / n).exists() for n in ("adapter", "projector.safetensors")):
        raise ModelError(
            f"{p} is not a model folder written by `modaverse train` (it has no {CONFIG_FILE}); give the folder "
            "that `modaverse train -o` wrote"
        )
    return p


@dataclass
class OutputPlan:
    """The checked folders of one training run and what must change in them before it starts."""

    output: Path
    run_dir: Path
    replaces_model: bool = False
    clear: list[Path] = field(default_factory=list)  # an earlier run's files (--overwrite)
    resumed_step: int | None = None  # continuing this run folder from checkpoint-N: drop what came after

    def prepare_run_dir(self, log: Callable[[str], None]) -> None:
        """Clear the replaced run (``--overwrite``) and the scratch folders a killed run left behind.

        The steps after a resumed checkpoint stay until training from it has started (:meth:`drop_later`).
        """
        for p in self.clear:
            shutil.rmtree(p) if p.is_dir() else p.unlink()
        if self.clear:
            log(f"cleared the previous run in {self.run_dir} ({_listing([p.name for p in self.clear])})")
        if self.run_dir.is_dir():
            for p in self.run_dir.iterdir():  # .checkpoint-N.partial / .replaced of a killed run
                if p.name.startswith(".checkpoint-") and p.name.endswith((PARTIAL_SUFFIX, ".replaced")) and p.is_dir():
                    shutil.rmtree(p)

    def drop_later(self, log: Callable[[str], None]) -> None:
        """Drop the checkpoints and metrics lines after the resumed step: one run folder holds one run.

        Called once the first step from the checkpoint has trained, so a resume that fails loses nothing.
        """
        if self.resumed_step is None:
            return
        later = [p for n, p in sorted(_checkpoints(self.run_dir).items()) if n > self.resumed_step]
        for p in later:
            shutil.rmtree(p)
        metrics = self.run_dir / METRICS_FILE
        dropped = 0
        if metrics.is_file():
            lines = [line for line in metrics.read_text(encoding="utf-8").splitlines() if line.strip()]
            kept = [line for line in lines if _metrics_step(line) <= self.resumed_step]
            dropped = len(lines) - len(kept)
            metrics.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
        if later or dropped:
            log(
                f"continuing from step {self.resumed_step}: dropped {len(later)} later checkpoint(s) and "
                f"{dropped} later metrics line(s) of the abandoned continuation"
            )


def _metrics_step(line: str) -> float:
    """The step of one metrics line (a line cut short by a kill counts as after every step)."""
    try:
        return float(json.loads(line).get("step", 0))
    except (ValueError, AttributeError):
        return math.inf


def last_complete_checkpoint(run_dir: str | Path) -> Path | None:
    """The latest whole ``checkpoint-N`` of ``run_dir`` (None when there is none)."""
    found = complete_checkpoints(Path(run_dir))
    return found[max(found)] if found else None


class RunLock:
    """An exclusive lock on a run folder (``RUN/.lock``, ``fcntl.flock``) held for the whole training.

    A second training into the same run folder (the same ``-o``, or the same ``--run-dir``) is refused with
    a ModelError instead of interleaving its checkpoints and metrics. The kernel drops the lock when the
    process ends, however it ends. Where ``fcntl`` is missing (Windows) nothing is locked.
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self._fd: int | None = None
        self._made_dir = False

    def __enter__(self) -> RunLock:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            return self
        if self.run_dir.exists() and not self.run_dir.is_dir():
            raise ModelError(f"run folder {self.run_dir} is a file; give a folder (--run-dir)")
        self._made_dir = not self.run_dir.exists()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 32).decode("ascii", "replace").strip()
            os.close(fd)
            raise ModelError(
                f"run folder {self.run_dir} is in use by another training (pid {holder or '?'}); wait for it to "
                "finish, or give another -o or --run-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is None:
            return
        import fcntl

        lock = self.run_dir / LOCK_FILE
        if self._made_dir and [p.name for p in self.run_dir.iterdir()] == [LOCK_FILE]:
            lock.unlink()  # a run that failed before writing anything leaves no folder behind
            self.run_dir.rmdir()
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None


def plan_outputs(
    output: str | Path, run_dir: str | Path, *, overwrite: bool = False, resume: str | Path | None = None
) -> OutputPlan:
    """Check the model and run folders of a training run before anything loads (ModelError says what to pass).

    A folder that already holds a model is replaced only with ``overwrite`` or ``resume``; a run folder
    with an earlier run is cleared only with ``overwrite``, and continued only by resuming one of its
    own checkpoints. A non-empty folder that holds no model is never written into.
    """
    out, run = Path(output), Path(run_dir)
    plan = OutputPlan(out, run)
    if out.exists() and not out.is_dir():
        raise ModelError(f"-o {out} is a file; give a folder for the trained model")
    if out.is_dir() and any(out.iterdir()):
        if not (out / CONFIG_FILE).is_file():
            raise ModelError(f"-o {out} is not empty and holds no model; give a new or empty folder")
        if not (overwrite or resume):
            raise ModelError(
                f"-o {out} already holds a trained model; pass --overwrite to replace it, or give another -o"
            )
        plan.replaces_model = True
    earlier = _run_evidence(run)
    if resume is not None:
        checkpoint = Path(resume)
        m = _CHECKPOINT.match(checkpoint.name)
        if m and checkpoint.parent.resolve() == run.resolve():
            plan.resumed_step = int(m.group(1))
            return plan
    if earlier and not overwrite:
        last = last_complete_checkpoint(run)
        hint = f", --resume {last} to continue it" if last is not None and not resume else ""
        raise ModelError(
            f"run folder {run} holds an earlier run ({_listing(earlier)}); pass --overwrite to start over{hint}, "
            "or give another --run-dir"
        )
    plan.clear = [run / n for n in earlier]
    return plan


def replace_folder(written: Path, target: Path) -> Path:
    """Move the finished folder ``written`` to ``target``, replacing what was there only now (no half states)."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.replaced-{os.getpid()}")
        target.rename(old)
    written.rename(target)
    if old is not None:
        shutil.rmtree(old)
    return target


def staging_folder(target: Path) -> Path:
    """An empty folder beside ``target`` to write the model into before :func:`replace_folder`."""
    staging = target.with_name(f".{target.name}.writing-{os.getpid()}")
    if staging.exists():
        shutil.rmtree(staging)
    target.parent.mkdir(parents=True, exist_ok=True)
    return staging
