"""The generator base class: one generative model serving one task, loaded lazily."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .artifacts import Artifact, OutputDir, mime_for
from .errors import GeneratorError
from .media import MediaItem

#: Tasks the paper and the first-party plugins define. Plugins may add any other task string.
KNOWN_TASKS = ("text-to-image", "text-to-audio", "text-to-video", "text-to-speech", "image-editing")
OUTPUT_MODALITIES = ("image", "audio", "video", "text")
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_EMPTY_ARGS: dict[str, Any] = {"type": "object", "properties": {}, "additionalProperties": False}

ProgressCallback = Callable[[int, int], None]


@dataclass
class GenerationRequest:
    """What one invocation asks of a generator."""

    prompt: str
    output: OutputDir
    args: Mapping[str, Any] = field(default_factory=dict)
    inputs: Sequence[MediaItem] = ()
    seed: int | None = None
    progress: ProgressCallback | None = None


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
    #: JSON Schema (an object schema) of the extra arguments an invocation may pass.
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
        problems = []
        if not _NAME.match(cls.name):
            problems.append(f"name {cls.name!r} must be lower-case letters, digits, '.', '_' or '-'")
        for attr in ("task", "modality", "description"):
            if not isinstance(getattr(cls, attr, None), str) or not getattr(cls, attr):
                problems.append(f"`{attr}` must be a non-empty string")
        if isinstance(getattr(cls, "task", None), str) and not _NAME.match(cls.task):
            problems.append(f"task {cls.task!r} must be lower-case letters, digits, '.', '_' or '-'")
        if getattr(cls, "modality", None) not in OUTPUT_MODALITIES:
            problems.append(f"modality must be one of {OUTPUT_MODALITIES}")
        if "\n" in getattr(cls, "description", ""):
            problems.append("description must be one line")
        if cls.args_schema.get("type") != "object":
            problems.append("args_schema must be a JSON Schema with type 'object'")
        if problems:
            raise GeneratorError(f"generator class {cls.__qualname__}: " + "; ".join(problems))

    def __init__(self, **options: Any) -> None:
        self.options: dict[str, Any] = {}
        self._loaded = False
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

    # -- lifecycle -----------------------------------------------------------------------------
    def setup(self) -> None:
        """Load the model once (thread-safe); later calls return at once."""
        with self._lock:
            if not self._loaded:
                self.load()
                self._loaded = True

    def unload(self) -> None:
        """Free the model; the next use loads it again."""
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
        validate_instance(dict(request.args), self.args_schema, what=f"args of generator {self.name!r}")
        wrong = [m.name for m in request.inputs if m.modality not in self.input_modalities]
        if wrong:
            accepts = list(self.input_modalities) or "no input media"
            raise GeneratorError(f"generator {self.name!r} accepts {accepts}, not {wrong}")

    def generate(self, request: GenerationRequest) -> list[Artifact]:
        """Check the request, set up if needed, run, and stamp artifacts (task, generator, prompt, seed, timings)."""
        self.check(request)
        t0 = time.perf_counter()
        self.setup()
        t1 = time.perf_counter()
        artifacts = self.run(request)
        t2 = time.perf_counter()
        if not isinstance(artifacts, list) or not all(isinstance(a, Artifact) for a in artifacts):
            raise GeneratorError(f"generator {self.name!r} returned {type(artifacts).__name__}, not a list of Artifact")
        for a in artifacts:
            a.task = a.task or self.task
            a.generator = a.generator or self.name
            a.prompt = a.prompt or request.prompt
            a.seed = request.seed if a.seed is None else a.seed
            a.mime_type = a.mime_type or mime_for(a.path)
            a.timings.setdefault("setup_s", round(t1 - t0, 6))
            a.timings.setdefault("generate_s", round(t2 - t1, 6))
        return artifacts

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
