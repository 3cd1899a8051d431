"""One answer of the web page as it unfolds, and how it shows in the chat (Gradio "messages" dicts).

A :class:`TurnView` is fed the agent's events (:mod:`modaverse_agent.response`) and renders the turn as
chat messages: what the person attached, the answer text as it streams, each generated file (played
inline: the chat shows image/audio/video files as ``<img>``/``<audio>``/``<video>``), the notes and errors
in plain sight, and a collapsible "details" message with the meta-response, the generator of each
invocation, timings and the settings of the turn. Plain dicts only: no Gradio import here.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..artifacts import Artifact
from ..llm_io import GenerationParams
from ..media import MediaItem
from ..meta_response import MetaResponse
from ..response import AgentEvent, FinalResponse, InvocationDone, PlanReady, ResponseDone, TextDelta
from ..zoo import Zoo

Message = dict[str, Any]
DETAILS_TITLE = "Details: meta-response, generators, timings"


@dataclass(frozen=True)
class TurnSettings:
    """What the settings panel says for one turn (None: the model's default / a random seed)."""

    temperature: float = 0.0
    max_new_tokens: int | None = None
    seed: int | None = None
    constrained: bool = True

    def params(self) -> GenerationParams:
        """The decoding settings of the turn."""
        return GenerationParams(max_new_tokens=self.max_new_tokens, temperature=self.temperature, seed=self.seed)

    def describe(self, constrained_applies: bool) -> str:
        """One line for the details panel."""
        budget = f"{self.max_new_tokens} tokens" if self.max_new_tokens is not None else "the model's default"
        seed = self.seed if self.seed is not None else "random"
        if constrained_applies:
            constrained = "on" if self.constrained else "off"
        else:
            constrained = "n/a (this model is not constrained)"
        return (
            f"temperature {self.temperature:g} · answer budget: {budget} · seed {seed} · "
            f"constrained decoding {constrained}"
        )


@dataclass
class InvocationView:
    """One generator call of the turn: who ran it, how long, what it made or why it failed."""

    index: int
    task: str
    generator: str = ""
    untrained: bool = False
    seconds: float | None = None
    artifacts: tuple[Artifact, ...] = ()
    error: str | None = None


def file_message(path: str, mime_type: str, role: str = "assistant") -> Message:
    """A chat message that shows a file inline (image, audio or video) or as a download link."""
    return {"role": role, "content": {"path": path, "mime_type": mime_type}}


def waiting_messages(text: str, files: list[str]) -> list[Message]:
    """The person's message as it waits for its turn (attachments named; they are checked when it runs)."""
    out: list[Message] = []
    if text.strip():
        out.append({"role": "user", "content": text})
    if files:
        names = ", ".join(f"`{Path(f).name}`" for f in files)
        out.append({"role": "user", "content": f"*attaching {names}…*"})
    return out


def _fence(text: str, lang: str = "") -> str:
    """``text`` in a Markdown code fence longer than any backtick run inside it."""
    run, longest = 0, 0
    for ch in text:
        run = run + 1 if ch == "`" else 0
        longest = max(longest, run)
    ticks = "`" * max(3, longest + 1)
    return f"{ticks}{lang}\n{text}\n{ticks}"


def _cell(text: str) -> str:
    """``text`` safe inside a Markdown table cell."""
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


@dataclass
class TurnView:
    """The state of one turn, updated by the agent's events and rendered as chat messages."""

    text: str
    attached: list[MediaItem] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    settings: TurnSettings = field(default_factory=TurnSettings)
    constrained_applies: bool = False
    answer: str = ""
    meta: MetaResponse | None = None
    invocations: list[InvocationView] = field(default_factory=list)
    planned: list[InvocationView] = field(default_factory=list)
    progress: dict[str, str] = field(default_factory=dict)
    response: FinalResponse | None = None
    failure: str | None = None
    waiting: str | None = None
    stopped: bool = False
    finished: bool = False
    started: float = field(default_factory=time.perf_counter)
    first_text_s: float | None = None
    plan_s: float | None = None
    done_s: float | None = None
    _last_mark: float = 0.0

    # -- events ------------------------------------------------------------------------------------
    def apply(self, event: AgentEvent, zoo: Zoo) -> None:
        """Take one agent event into the view (nothing changes once the turn was stopped)."""
        if self.stopped:
            return
        now = time.perf_counter() - self.started
        if isinstance(event, TextDelta):
            if self.first_text_s is None:
                self.first_text_s = now
            self.answer += event.text
        elif isinstance(event, PlanReady):
            self.plan_s = self._last_mark = now
            self.meta = event.meta_response
            for n, inv in enumerate(event.meta_response.invocations):
                position = inv.position if isinstance(inv.position, int) else n
                self.planned.append(InvocationView(position, str(inv.task), *_generator(zoo, str(inv.task))))
        elif isinstance(event, InvocationDone):
            task = event.task or "?"
            gen_name, untrained = _generator(zoo, task)
            if event.artifacts:
                gen_name = event.artifacts[0].generator or gen_name
            err = str(event.error) if event.error is not None else None
            view = InvocationView(event.index, task, gen_name, untrained, now - self._last_mark, event.artifacts, err)
            self.invocations.append(view)
            self._last_mark = now
            self.progress.pop(task, None)
        elif isinstance(event, ResponseDone):
            self.response = event.response
            self.done_s = now
            self.answer = event.response.text or self.answer

    def on_progress(self, task: str, done: int, total: int) -> None:
        """A generator's progress (diffusion steps): shown in the pending details line."""
        self.progress[task] = f"{task} {done}/{total}"

    # -- rendering ---------------------------------------------------------------------------------
    def messages(self) -> list[Message]:
        """The turn as chat messages (user side first, then the answer)."""
        out: list[Message] = []
        if self.text.strip():
            out.append({"role": "user", "content": self.text})
        for item in self.attached:
            if item.path is not None:
                out.append(file_message(str(item.path), item.mime_type, role="user"))
        if self.problems:
            lines = "\n".join(f"- {p}" for p in self.problems)
            out.append({"role": "assistant", "content": f"⚠ **Not attached** (the rest was sent):\n{lines}"})
        if self.waiting and not self.finished:
            out.append({"role": "assistant", "content": f"{self.waiting}"})
        if self.answer:
            out.append({"role": "assistant", "content": self.answer})
        for inv in sorted(self.invocations, key=lambda i: i.index):
            for art in inv.artifacts:
                out.append(file_message(str(art.path), art.mime_type))
        out += self._notes_and_errors()
        if self._pending():
            if self.meta is not None:
                out.append(self._working())
        elif self.meta is not None or self.response is not None or self.invocations:
            out.append(self._details())
        return out

    def _notes_and_errors(self) -> list[Message]:
        out: list[Message] = []
        if self.response is not None:
            for note in self.response.notes:
                out.append({"role": "assistant", "content": f"ℹ **Note:** {note}"})
            for err in self.response.errors:
                out.append(
                    {"role": "assistant", "content": f"⚠ **{err.stage}{_where(err.task, err.index)}:** {err.message}"}
                )
            if not self.answer and not self.response.artifacts and not self.response.errors:
                out.append({"role": "assistant", "content": "(the model answered with no text and no files)"})
        else:
            for inv in self.invocations:
                if inv.error:
                    out.append({"role": "assistant", "content": f"⚠ {inv.error}"})
        if self.failure:
            out.append({"role": "assistant", "content": f"⚠ **This answer failed:** {self.failure}"})
        if self.stopped:
            out.append(
                {"role": "assistant", "content": "**Stopped.** The answer ends here; send a new message to go on."}
            )
        return out

    def _pending(self) -> bool:
        return not (self.finished or self.stopped or self.response is not None)

    def _working(self) -> Message:
        """While generators run: one line with a spinner (what runs, on which generator, its progress)."""
        done = {i.index for i in self.invocations}
        running = [
            self.progress.get(p.task) or f"{p.task} on {p.generator or '?'}"
            for p in self.planned
            if p.index not in done
        ]
        title = f"Working: {', '.join(running)}…" if running else "Finishing…"
        return {"role": "assistant", "content": "", "metadata": {"title": title, "status": "pending"}}

    def _details(self) -> Message:
        """The collapsible details panel (closed at first)."""
        meta: dict[str, Any] = {"title": DETAILS_TITLE, "status": "done"}
        if self.done_s is not None:
            meta["duration"] = round(self.done_s, 2)
        return {"role": "assistant", "content": self.details_markdown(), "metadata": meta}

    def details_markdown(self) -> str:
        """The collapsible panel: generators per invocation, timings, settings, the meta-response."""
        parts = []
        if self.planned or self.invocations:
            rows = ["| # | task | generator | result | seconds |", "|---|---|---|---|---|"]
            done = {i.index for i in self.invocations}
            not_run = [p for p in self.planned if p.index not in done]
            for inv in sorted([*self.invocations, *not_run], key=lambda i: i.index):
                gen = (inv.generator or "-") + (" (untrained)" if inv.untrained else "")
                made = ", ".join(a.path.name for a in inv.artifacts) or "-"
                result = f"error: {inv.error}" if inv.error else made if inv.index in done else "not run"
                secs = f"{inv.seconds:.2f}" if inv.seconds is not None else "-"
                rows.append(f"| {inv.index} | {_cell(inv.task)} | {_cell(gen)} | {_cell(result)} | {secs} |")
            parts.append("**Generators**\n\n" + "\n".join(rows))
        else:
            parts.append("**Generators**: none (a text-only answer)")
        parts.append("**Timings**: " + self._timings())
        parts.append("**Settings**: " + self.settings.describe(self.constrained_applies))
        if self.response is not None and self.response.manifest is not None:
            parts.append(f"**Manifest**: `{self.response.manifest.name}` in `{self.response.manifest.parent}`")
        if self.meta is not None:
            parts.append(
                "**Meta-response**\n\n" + _fence(json.dumps(self.meta.to_dict(), ensure_ascii=False, indent=1), "json")
            )
        elif self.response is not None and self.response.raw:
            parts.append("**Raw model output**\n\n" + _fence(self.response.raw))
        return "\n\n".join(parts)

    def _timings(self) -> str:
        bits = []
        if self.first_text_s is not None:
            bits.append(f"first text {self.first_text_s:.2f} s")
        if self.plan_s is not None:
            bits.append(f"answer decoded {self.plan_s:.2f} s")
        gen = sum(i.seconds or 0.0 for i in self.invocations)
        if self.invocations:
            bits.append(f"generators {gen:.2f} s")
        if self.done_s is not None:
            bits.append(f"total {self.done_s:.2f} s")
        return " · ".join(bits) or "-"


def _generator(zoo: Zoo, task: str) -> tuple[str, bool]:
    """The name of the generator serving ``task`` in ``zoo`` and whether it is untrained ("" for none)."""
    try:
        gen = zoo.generator_for(task)
    except Exception:  # an unknown task: its invocation error says so
        return "", False
    return gen.name, gen.untrained


def _where(task: str | None, index: int | None) -> str:
    if not task:
        return ""
    return f" [{task} #{index}]" if index is not None else f" [{task}]"
