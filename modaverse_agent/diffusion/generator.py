"""The base class of diffusers generators, its zoo options and its per-device caps on arguments."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from ..artifacts import Artifact
from ..errors import GeneratorError
from ..generators import GenerationRequest, Generator
from .devices import DEVICE_PATTERN, DTYPES, free_memory, resolve_device
from .loading import LoadedPipeline, load_pipeline
from .progress import StepProgress
from .tiny import TINY_RANDOM


def options_schema(default_model: str, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The zoo options every diffusers generator takes (``model``, ``device``, ``dtype``, ``download``)."""
    props: dict[str, Any] = {
        "model": {
            "type": "string",
            "minLength": 1,
            "default": default_model,
            "description": f"Hugging Face model id or local diffusers directory; '{TINY_RANDOM}' builds an "
            "untrained tiny pipeline (no download)",
        },
        "device": {
            "type": "string",
            "pattern": DEVICE_PATTERN,
            "default": "auto",
            "description": "auto (cuda, then mps, then cpu), cpu, mps, cuda or cuda:N",
        },
        "dtype": {"enum": list(DTYPES), "default": "auto", "description": "auto: float16 on cuda/mps, float32 on cpu"},
        "download": {
            "type": "boolean",
            "default": False,
            "description": "fetch missing weights from the Hugging Face Hub on first use",
        },
        **(extra or {}),
    }
    return {"type": "object", "properties": props, "additionalProperties": False}


@dataclass(frozen=True)
class Cap:
    """A default upper bound on an argument, lower on a CPU than on an accelerator; a zoo option raises it.

    The schema keeps the argument's absolute limits; a cap bounds what one invocation may cost by default.
    """

    option: str  # the zoo option that overrides the cap, e.g. "max_steps"
    cpu: int | float
    accelerator: int | float  # cuda and mps
    what: str  # e.g. "denoising steps"

    def limit(self, device: str, override: Any = None) -> int | float:
        """The cap on ``device``: the zoo option when set, else the device's default."""
        if override is not None:
            return override
        return self.cpu if device == "cpu" else self.accelerator

    def option_schema(self) -> dict[str, Any]:
        """The JSON Schema of the overriding zoo option."""
        kind = "integer" if isinstance(self.cpu, int) and isinstance(self.accelerator, int) else "number"
        return {
            "type": kind,
            "exclusiveMinimum": 0,
            "description": f"most {self.what} an invocation may ask for "
            f"(default: {self.cpu:g} on cpu, {self.accelerator:g} on cuda/mps)",
        }


class DiffusersGenerator(Generator):
    """A generator backed by one diffusers pipeline, loaded lazily and kept until :meth:`unload`.

    Subclasses set ``default_model``, ``pipeline_classes`` (accepted diffusers class names) and
    ``tiny_kind`` (the kind their plugin registers with :func:`~.tiny.register_tiny_pipeline`, built
    for ``model = "tiny-random"``), plus the usual Generator attributes, and implement ``run`` with the
    helpers below.
    """

    default_model: ClassVar[str]
    pipeline_classes: ClassVar[tuple[str, ...]]
    tiny_kind: ClassVar[str]
    #: Extra zoo options (JSON Schema properties) on top of model/device/dtype/download.
    extra_options: ClassVar[dict[str, Any]] = {}
    #: Per-device caps on arguments (argument name -> Cap); each cap's option joins the zoo options.
    caps: ClassVar[dict[str, Cap]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        if any(k in cls.__dict__ for k in ("default_model", "extra_options", "caps")):
            cap_options = {c.option: c.option_schema() for c in cls.caps.values()}
            cls.options_schema = options_schema(cls.default_model, {**cap_options, **cls.extra_options})
        super().__init_subclass__(**kwargs)

    def __init__(self, **options: Any) -> None:
        self._pipeline: LoadedPipeline | None = None
        super().__init__(**options)

    @property
    def untrained(self) -> bool:
        """True while the ``model`` option is the tiny random pipeline."""
        return self.option("model") == TINY_RANDOM

    def real_weights_hint(self) -> str:
        """The command that points this generator at the real default weights."""
        return f"modaverse zoo set {self.task} {self.name} -o model={self.default_model}"

    def load(self) -> None:
        """Load the pipeline named by the ``model`` option."""
        self._pipeline = load_pipeline(
            self.option("model"),
            generator=self.name,
            accepted=self.pipeline_classes,
            tiny_kind=self.tiny_kind,
            device=self.option("device"),
            dtype=self.option("dtype"),
            download=self.option("download"),
        )

    def release(self) -> None:
        """Drop the pipeline and free its memory."""
        loaded, self._pipeline = self._pipeline, None
        if loaded is not None:
            device = loaded.device
            del loaded
            free_memory(device)

    @property
    def pipeline(self) -> LoadedPipeline:
        """The loaded pipeline (loads it on first use)."""
        self.setup()
        if self._pipeline is None:
            raise GeneratorError(f"generator {self.name!r} has no pipeline after setup; call unload() and retry")
        return self._pipeline

    def check(self, request: GenerationRequest) -> None:
        """The base checks, then the per-device caps on the arguments (defaults included)."""
        super().check(request)
        if self.caps:
            args = self.arguments(request)
            for arg in self.caps:
                if arg in args:
                    self.within_cap(arg, args[arg])

    def cap_device(self) -> str:
        """The device the caps are read for: the loaded pipeline's, else the ``device`` option resolved."""
        loaded = self._pipeline
        return loaded.device if loaded is not None else resolve_device(self.option("device"))

    def cap(self, arg: str, device: str | None = None) -> int | float:
        """The cap on argument ``arg`` on ``device`` (default: :meth:`cap_device`)."""
        c = self.caps[arg]
        return c.limit(device or self.cap_device(), self.option(c.option))

    def within_cap(self, arg: str, value: Any, device: str | None = None) -> None:
        """Raise a GeneratorError naming ``arg``, its cap and the option that raises it when ``value`` is over."""
        dev = device or self.cap_device()
        limit = self.cap(arg, dev)
        if isinstance(value, int | float) and value > limit:
            option = self.caps[arg].option
            raise GeneratorError(
                f"args of generator {self.name!r}: {arg} {value:g} is over the cap of {limit:g} on {dev}; ask for "
                f"less, or raise the cap with `modaverse zoo set {self.task} {self.name} -o {option}={value:g}`"
            )

    def arguments(self, request: GenerationRequest) -> dict[str, Any]:
        """The invocation's arguments (``check`` validated them) with the schema's defaults filled in."""
        out = {k: s["default"] for k, s in self.args_schema.get("properties", {}).items() if "default" in s}
        out.update(request.args)
        return out

    def progress(self, request: GenerationRequest, total: int) -> StepProgress:
        """A step progress bar wired to ``request.progress`` that stops the pipeline once ``request.cancel`` is set."""
        return StepProgress(self.name, total, request.progress, request.cancel)

    def finish(self, request: GenerationRequest, path: Path, seed: int, **metadata: Any) -> Artifact:
        """The artifact for ``path``, recording the seed, model, device and whether the weights are untrained."""
        loaded = self.pipeline
        record = {
            "model": loaded.model,
            "pipeline": type(loaded.pipe).__name__,
            "device": loaded.device,
            "dtype": loaded.dtype,
            "seed": seed,
            **metadata,
        }
        if loaded.untrained:
            record["untrained"] = True
        art = self.artifact(request, path, **record)
        art.seed = seed
        return art

    def stem(self, seed: int) -> str:
        """A file-name stem for an output."""
        return f"{self.name}-{seed}"
