"""Progress over denoising steps, and cancellation at the next step."""

from __future__ import annotations

import threading
from typing import Any

from ..generators import GenerationCancelled, ProgressCallback


class StepProgress:
    """A progress bar over denoising steps that also reports ``(done, total)`` to a callback.

    Use as a context manager; pass :meth:`on_step_end` as ``callback_on_step_end`` (current pipelines)
    or :meth:`legacy` as ``callback`` (AudioLDM, text-to-video). When ``cancel`` is set, the next step
    raises :class:`~modaverse_agent.generators.GenerationCancelled`, which aborts the pipeline call.
    """

    def __init__(
        self,
        label: str,
        total: int,
        callback: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> None:
        self.label = label
        self.total = int(total)
        self.done = 0
        self.callback = callback
        self.cancel = cancel
        self._bar: Any = None

    def __enter__(self) -> StepProgress:
        from tqdm.auto import tqdm  # type: ignore[import-untyped]

        self._bar = tqdm(total=self.total, desc=self.label, unit="step", leave=False, disable=None)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def step(self, done: int) -> None:
        """Record that ``done`` steps have finished; raise GenerationCancelled if the invocation was cancelled."""
        if self.cancel is not None and self.cancel.is_set():
            raise GenerationCancelled(f"{self.label}: cancelled after {self.done} of {self.total} steps")
        done = min(int(done), self.total)
        if self._bar is not None:
            self._bar.update(done - self.done)
        self.done = done
        if self.callback is not None:
            self.callback(done, self.total)

    def on_step_end(self, pipe: Any, i: int, t: Any, callback_kwargs: dict[str, Any]) -> dict[str, Any]:
        """diffusers ``callback_on_step_end`` signature; changes no tensor."""
        total = getattr(pipe, "num_timesteps", None)
        if isinstance(total, int) and total > 0 and total != self.total:
            self.total = total
            if self._bar is not None:
                self._bar.total = total
        self.step(i + 1)
        return {}

    def legacy(self, i: int, t: Any, latents: Any) -> None:
        """diffusers' older ``callback(step, timestep, latents)`` signature."""
        self.step(i + 1)
