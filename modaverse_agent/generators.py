"""The generator base class: one generative model serving one task, loaded lazily."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from .artifacts import Artifact, OutputDir, clean_strings, clean_text, mime_for
from .errors import GeneratorError
from .generator_checks import definition_problems
from .media import MediaItem

_EMPTY_ARGS: dict[str, Any] = {"type": "object", "properties": {}, "additionalProperties": False}

ProgressCallback = Callable[[int, int], None]


def no_progress(done: int, total: int) -> None:
    """The step callback of a request nobody watches: does nothing."""


class GenerationCancelled(GeneratorError):
    """The invocation was cancelled (it ran past its timeout); the generator stopped on purpose."""


class ArtifactsRefused(GeneratorError):
    """A generator returned artifacts that are not files inside the request's output directory.

    ``kept`` holds the artifacts that are; the message names the refused paths.
    """

    def __init__(self, message: str, kept: list[Artifact]) -> None:
        super().__init__(message)
        self.kept = kept


@dataclass
class GenerationRequest:
    """What one invocation asks of a generator.

    ``cancel`` is set when the invocation must stop (it timed out). A thread cannot be killed, so
    generators must check :attr:`cancelled` (or call :meth:`raise_if_cancelled`) between units of
    work: each denoising step (:class:`~modaverse_agent.diffusion.StepProgress` does it for diffusers
    pipelines), each sentence, each frame. A generator that never checks keeps its thread busy after
    its invocation has been given up, though nothing it writes afterwards lands.

    ``progress(done, total)`` is always callable: :func:`no_progress` when nobody listens (None becomes it).
    """

    prompt: str
    output: OutputDir
    args: Mapping[str, Any] = field(default_factory=dict)
    inputs: Sequence[MediaItem] = ()
    seed: int | None = None
    progress: ProgressCallback = no_progress
    cancel: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        if self.progress is None:  # callers that pass "no listener" as None
            self.progress = no_progress

    @property
    def cancelled(self) -> bool:
        """True once the invocation was cancelled: stop working and return (or raise)."""
        return self.cancel.is_set()

    def raise_if_cancelled(self) -> None:
        """Raise :class:`GenerationCancelled` when the invocation was cancelled."""
        if self.cancel.is_set():
            raise GenerationCancelled("the invocation was cancelled (it ran past its timeout)")


def non_finite_numbers(value: Any, path: str = "") -> list[tuple[str, float]]:
    """Every NaN or infinite float in ``value`` (nested dicts and lists, any depth) with its path (``sizes[1]``).

    Iterative, and each path is spelled only when something is found: an argument nested 100,000 deep
    costs linear time and raises no RecursionError. Paths longer than 200 characters are cut.
    """
    found: list[tuple[str, float]] = []
    links: list[tuple[int, str]] = [(-1, path)]  # (parent link, segment) per visited container or value
    stack: list[tuple[int, Any]] = [(0, value)]

    def spell(link: int) -> str:
        parts = []
        while link >= 0:
            link, segment = links[link]
            parts.append(segment)
        text = "".join(reversed(parts)).lstrip(".")
        return text if len(text) <= 200 else text[:200] + "..."

    while stack:
        link, v = stack.pop()
        if isinstance(v, float) and not math.isfinite(v):
            found.append((spell(link) or "value", v))
            continue
        if isinstance(v, Mapping):
            children: list[tuple[str, Any]] = [(f".{k}", x) for k, x in v.items()]
        elif isinstance(v, list | tuple):
            children = [(f"[{i}]", x) for i, x in enumerate(v)]
        else:
            continue
        for segment, x in reversed(children):
            links.append((link, segment))
            stack.append((len(links) - 1, x))
    return found


def refuse_non_finite(args: Mapping[str, Any], *, what: str) -> None:
    """Raise GeneratorError naming the first NaN or infinite number in ``args``.

    JSON Schema bounds let NaN through (every comparison with it is false), and LangChain tool calls
    reach generators without the JSON parser, so every generator checks this before its schema.
    """
    bad = non_finite_numbers(dict(args))
    if bad:
        where, value = bad[0]
        raise GeneratorError(f"{what}: {where} is {value!r}, not a finite number; give a plain number")


class Generator:
    """Base class of every generator.

    Subclasses set the class attributes and implement :meth:`load` and :meth:`run`. ``load`` is called
    once, lazily, on first use (listing plugins never loads weights); ``run`` returns artifacts written
    through ``request.output``.
    """

    name: ClassVar[str]
    task: ClassVar[str]
    modality: ClassVar[str]
    description: ClassVar[str]
    #: JSON Schema (an object schema) of the extra arguments an invocation may pass; checked against the
    #: JSON Schema meta-schema (bad ``pattern`` regexes included) when the class is defined and when registered.
    args_schema: ClassVar[dict[str, Any]] = _EMPTY_ARGS
    #: Input modalities this generator consumes from the user's media (e.g. ``("image",)`` for editing).
    input_modalities: ClassVar[tuple[str, ...]] = ()
    #: Higher wins when several generators serve a task and the zoo config does not choose.
    priority: ClassVar[int] = 0
    #: JSON Schema of the options the zoo config may set (model id, device, dtype, ...).
    options_schema: ClassVar[dict[str, Any]] = {"type": "object", "properties": {}, "additionalProperties": False}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("__abstract__", False) or "name" not in cls.__dict__:
            return
        problems = definition_problems(cls)
        if problems:
            where = f"generator class {cls.__qualname__} ({getattr(cls, 'name', None)!r} in module {cls.__module__})"
            raise GeneratorError(f"{where}: " + "; ".join(problems))

    def __init__(self, **options: Any) -> None:
        self.options: dict[str, Any] = {}
        self._loaded = False
        self._loading = False
        self._load_stalled = False
        self._lock = threading.Lock()
        self.configure(**options)

    # -- configuration -------------------------------------------------------------------------
    def configure(self, **options: Any) -> None:
        """Validate and set options from the zoo config; drops a loaded model if they change."""
        from .schema_utils import validate_instance

        merged = {**self.options, **options}
        validate_instance(merged, self.options_schema, what=f"options of generator {self.name!r}")
        if merged != self.options and self._loaded:
            self.unload()
        self.options = merged

    def option(self, key: str) -> Any:
        """An option's value, else its ``default`` in ``options_schema``, else None."""
        if key in self.options:
            return self.options[key]
        return self.options_schema.get("properties", {}).get(key, {}).get("default")

    @property
    def untrained(self) -> bool:
        """True when this generator runs random (untrained) weights: its outputs are placeholders."""
        return False

    def real_weights_hint(self) -> str | None:
        """A one-line command that points this generator at real weights (when :attr:`untrained`)."""
        return None

    @property
    def loaded(self) -> bool:
        """Whether the model is in memory."""
        return self._loaded

    @property
    def loading(self) -> bool:
        """Whether :meth:`load` is running now."""
        return self._loading

    # -- lifecycle -----------------------------------------------------------------------------
    def setup(self, cancel: threading.Event | None = None) -> None:
        """Load the model once (thread-safe); later calls return at once.

        While a load that outlived an invocation's timeout still runs (see :meth:`note_timeout`), this
        fails at once instead of queueing behind it; a set ``cancel`` event stops the wait too.
        """
        while not self._lock.acquire(timeout=0.05):
            if self._load_stalled:
                raise GeneratorError(
                    f"generator {self.name!r} cannot run: its load did not finish within an earlier invocation's "
                    "timeout and is still running; retry once it has finished (or raise --timeout), or restart"
                )
            if cancel is not None and cancel.is_set():
                raise GenerationCancelled(f"generator {self.name!r} was cancelled while waiting for its model to load")
        try:
            if not self._loaded:
                self._loading = True
                try:
                    self.load()
                    self._loaded = True
                finally:
                    self._loading = False
                    self._load_stalled = False
        finally:
            self._lock.release()

    def note_timeout(self) -> None:
        """Called when an invocation of this generator timed out: a load still running marks it stalled.

        Until that load returns (or :meth:`reset` is called), every call fails fast with a clear error
        instead of waiting for it, timing out and leaving one more thread behind.
        """
        if self._loading:
            self._load_stalled = True

    def reset(self) -> None:
        """Forget that a load stalled: the next call waits for the model again."""
        self._load_stalled = False

    def unload(self) -> None:
        """Free the model; the next use loads it again. Returns at once when nothing is loaded (even mid-load)."""
        if not self._loaded:  # never wait behind a load that hangs
            return
        with self._lock:
            if self._loaded:
                self.release()
                self._loaded = False

    def load(self) -> None:
        """Load weights (override). Called once, lazily."""

    def release(self) -> None:
        """Drop references to loaded weights (override when ``load`` keeps any)."""

    def run(self, request: GenerationRequest) -> list[Artifact]:
        """Produce artifacts for ``request`` (override)."""
        raise NotImplementedError

    def check(self, request: GenerationRequest) -> None:
        """Refuse a bad request before any weights load: args against ``args_schema``, a non-empty prompt.

        Override to add checks (call ``super().check(request)``); raise GeneratorError saying what to fix.
        """
        from .schema_utils import validate_instance

        if not request.prompt.strip():
            raise GeneratorError(f"generator {self.name!r} needs a non-empty prompt")
        refuse_non_finite(request.args, what=f"args of generator {self.name!r}")
        validate_instance(dict(request.args), self.args_schema, what=f"args of generator {self.name!r}")
        wrong = [m.name for m in request.inputs if m.modality not in self.input_modalities]
        if wrong:
            accepts = list(self.input_modalities) or "no input media"
            raise GeneratorError(f"generator {self.name!r} accepts {accepts}, not {wrong}")

    def generate(self, request: GenerationRequest) -> list[Artifact]:
        """Check the request, set up if needed, run, and stamp artifacts (task, generator, prompt, seed, timings).

        Lone surrogates in the prompt and string arguments become U+FFFD first. Artifacts that are not
        files inside ``request.output`` are refused (:class:`ArtifactsRefused` keeps the others).
        """
        request.prompt = clean_text(request.prompt) if isinstance(request.prompt, str) else request.prompt
        request.args = clean_strings(dict(request.args))
        self.check(request)
        request.raise_if_cancelled()
        t0 = time.perf_counter()
        self.setup(request.cancel)
        request.raise_if_cancelled()
        t1 = time.perf_counter()
        artifacts = self.run(request)
        t2 = time.perf_counter()
        if not isinstance(artifacts, list) or not all(isinstance(a, Artifact) for a in artifacts):
            raise GeneratorError(f"generator {self.name!r} returned {type(artifacts).__name__}, not a list of Artifact")
        inside = [request.output.contains(a.path) for a in artifacts]
        kept = [a for a, ok in zip(artifacts, inside, strict=True) if ok]
        for a in kept:
            a.path = Path(a.path).resolve()
            a.task = a.task or self.task
            a.generator = a.generator or self.name
            a.prompt = a.prompt or request.prompt
            a.seed = request.seed if a.seed is None else a.seed
            a.mime_type = a.mime_type or mime_for(a.path)
            a.timings.setdefault("setup_s", round(t1 - t0, 6))
            a.timings.setdefault("generate_s", round(t2 - t1, 6))
        if len(kept) < len(artifacts):
            refused = [clean_text(str(a.path))[:200] for a, ok in zip(artifacts, inside, strict=True) if not ok]
            raise ArtifactsRefused(
                f"generator {self.name!r} returned {len(refused)} path(s) that are not files inside the output "
                f"directory {request.output.root}, dropped: {', '.join(refused)}",
                kept,
            )
        return kept

    # -- helpers for subclasses ----------------------------------------------------------------
    def artifact(self, request: GenerationRequest, path: Any, **metadata: Any) -> Artifact:
        """An Artifact record for a file this generator wrote through ``request.output``."""
        return Artifact(modality=self.modality, path=path, mime_type=mime_for(path), metadata=dict(metadata))

    def describe(self) -> dict[str, Any]:
        """A JSON-ready description (used by ``modaverse zoo`` and the system prompt)."""
        return {
            "name": self.name,
            "task": self.task,
            "modality": self.modality,
            "description": self.description,
            "args_schema": self.args_schema,
            "input_modalities": list(self.input_modalities),
            "options": self.options,
            "loaded": self._loaded,
            "untrained": self.untrained,
        }

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} task={self.task}>"
