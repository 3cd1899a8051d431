"""The zoo: every registered generator, and which one serves each task (TOML config or argument)."""

from __future__ import annotations

import contextlib
import os
import stat
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import GeneratorError, ZooError
from .generator_checks import clash_problems, definition_problems
from .generators import Generator
from .meta_response import TaskSpec, build_schema
from .schema_utils import short

CONFIG_ENV = "MODAVERSE_ZOO_CONFIG"
DEFAULT_ZOO_RESOURCE = "default_zoo.toml"
CONFIG_MAX_BYTES = 1 << 20  # a zoo config is a few hundred bytes; this stops /dev/zero and the like


def default_config_path() -> Path:
    """``$MODAVERSE_ZOO_CONFIG`` or ``<user config dir>/modaverse/zoo.toml``."""
    env = os.environ.get(CONFIG_ENV)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_config_dir("modaverse")) / "zoo.toml"


@dataclass
class ZooConfig:
    """Which generator serves each task, and per-generator options. Stored as TOML::

    [tasks]
    text-to-image = "stable-diffusion"

    [generators.stable-diffusion]
    model = "/models/sd15"
    """

    tasks: dict[str, str] = field(default_factory=dict)
    generators: dict[str, dict[str, Any]] = field(default_factory=dict)
    path: Path | None = None

    @classmethod
    def load(cls, path: str | Path | None = None) -> ZooConfig:
        """Read the config; errors name the file and the problem.

        Until a config file exists, the packaged defaults apply (``prompts/default_zoo.toml``: the
        diffusers generators on tiny random weights, so a fresh machine runs end to end); saving writes
        them out with your change.
        """
        p = Path(path).expanduser() if path is not None else default_config_path()
        text = _read_config(p)
        if text is None:
            from importlib.resources import files

            default = files("modaverse_agent.prompts").joinpath(DEFAULT_ZOO_RESOURCE).read_text(encoding="utf-8")
            return cls._parse(default, p, "the packaged default zoo config")
        return cls._parse(text, p, f"zoo config {p}")

    @classmethod
    def _parse(cls, text: str, p: Path, what: str) -> ZooConfig:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ZooError(f"{what} is not valid TOML ({e}); fix or delete it") from e
        except RecursionError as e:
            raise ZooError(f"{what} nests tables or arrays too deeply to read; fix or delete it") from e
        tasks, gens = data.get("tasks", {}), data.get("generators", {})
        if not isinstance(tasks, dict) or not all(isinstance(v, str) for v in tasks.values()):
            raise ZooError(f"{what}: [tasks] must map task names to generator names")
        if not isinstance(gens, dict) or not all(isinstance(v, dict) for v in gens.values()):
            raise ZooError(f"{what}: [generators.NAME] must be tables of options")
        unknown = set(data) - {"tasks", "generators"}
        if unknown:
            raise ZooError(f"{what}: unknown section(s) {sorted(unknown)}; use [tasks] and [generators.NAME]")
        return cls(tasks=dict(tasks), generators={k: dict(v) for k, v in gens.items()}, path=p)

    def save(self, path: str | Path | None = None) -> Path:
        """Write the config as TOML (atomically); returns the path."""
        import tomli_w

        p = Path(path).expanduser() if path is not None else (self.path or default_config_path())
        try:
            data = tomli_w.dumps({"tasks": self.tasks, "generators": self.generators}).encode("utf-8")
        except (TypeError, ValueError, RecursionError) as e:  # UnicodeEncodeError is a ValueError
            raise ZooError(f"zoo config {p} not written: its options cannot be stored as TOML ({e})") from e
        tmp = p.with_name(f".{p.name}.tmp")
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(data)
            tmp.replace(p)
        except OSError as e:
            with contextlib.suppress(OSError):  # the temporary file, if it was made; the error below says why
                tmp.unlink(missing_ok=True)
            where = e.filename or p
            raise ZooError(
                f"cannot write zoo config {p}: {e.strerror or e} ({where}); pass a writable path with --zoo-config"
            ) from e
        self.path = p
        return p


def _read_config(p: Path) -> str | None:
    """The text of the config file ``p``; None when there is none yet. Errors say what to do."""
    try:
        st = p.stat()
    except FileNotFoundError:
        return None
    except NotADirectoryError as e:
        raise ZooError(f"zoo config {p}: a parent of it is a file, not a directory; fix the path") from e
    except OSError as e:
        raise ZooError(f"cannot read zoo config {p}: {e.strerror or e}") from e
    if not stat.S_ISREG(st.st_mode):
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        raise ZooError(f"zoo config {p} is {kind}; point --zoo-config or ${CONFIG_ENV} at a TOML file")
    try:
        with p.open("rb") as f:
            data = f.read(CONFIG_MAX_BYTES + 1)
    except OSError as e:
        raise ZooError(f"cannot read zoo config {p}: {e.strerror or e}") from e
    if len(data) > CONFIG_MAX_BYTES:
        raise ZooError(f"zoo config {p} is larger than {CONFIG_MAX_BYTES} bytes; is it the right file?")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ZooError(f"zoo config {p} is not UTF-8 text (invalid byte at offset {e.start}); fix or delete it") from e


class Zoo:
    """Generators by name, and the choice of generator per task."""

    def __init__(
        self,
        generators: Iterable[Generator] = (),
        config: ZooConfig | None = None,
        choices: Mapping[str, str] | None = None,
    ) -> None:
        self._by_name: dict[str, Generator] = {}
        for g in generators:
            self.add(g)
        self.config = config or ZooConfig()
        self._choices: dict[str, str] = {}
        for name, options in self.config.generators.items():
            if name in self._by_name:
                self._by_name[name].configure(**options)
        for task, name in {**self.config.tasks, **(choices or {})}.items():
            self.choose(task, name)

    @classmethod
    def from_plugins(cls, config: ZooConfig | str | Path | None = None, **kwargs: Any) -> Zoo:
        """A zoo of every generator the loaded plugins register, configured by ``config``.

        A plugin whose registration fails is skipped and recorded in ``plugins.failures``; the others load.
        """
        from .registration import registered_generators

        found = registered_generators()
        cfg = config if isinstance(config, ZooConfig) else ZooConfig.load(config)
        return cls(found, config=cfg, **kwargs)

    def add(self, generator: Generator) -> None:
        """Register a generator instance: well defined (see :func:`definition_problems`), a unique name, and
        the output modality of its task (for the built-in tasks, :data:`KNOWN_TASK_MODALITIES`)."""
        if not isinstance(generator, Generator):
            raise GeneratorError(f"register() expects a Generator instance, got {short(generator)}")
        problems = definition_problems(generator)
        if problems:
            raise GeneratorError(f"generator {short(getattr(generator, 'name', None))}: " + "; ".join(problems))
        problems = clash_problems(generator, self._by_name)
        if problems:
            raise ZooError("; ".join(problems))
        self._by_name[generator.name] = generator

    def choose(self, task: str, name: str) -> None:
        """Make generator ``name`` serve ``task``."""
        g = self._by_name.get(name)
        if g is None:
            raise ZooError(f"no generator named {name!r} (installed: {sorted(self._by_name)}); see `modaverse zoo`")
        if g.task != task:
            raise ZooError(f"generator {name!r} serves {g.task!r}, not {task!r}")
        self._choices[task] = name

    # -- queries -----------------------------------------------------------------------------------
    @property
    def generators(self) -> list[Generator]:
        """Every registered generator, by name."""
        return [self._by_name[n] for n in sorted(self._by_name)]

    def get(self, name: str) -> Generator:
        """A generator by name."""
        try:
            return self._by_name[name]
        except KeyError:
            raise ZooError(f"no generator named {name!r}; installed: {sorted(self._by_name)}") from None

    def candidates(self, task: str) -> list[Generator]:
        """Generators able to serve ``task``, best first (priority, then name)."""
        return sorted((g for g in self._by_name.values() if g.task == task), key=lambda g: (-g.priority, g.name))

    def tasks(self) -> list[str]:
        """Every task some generator serves, sorted."""
        return sorted({g.task for g in self._by_name.values()})

    def generator_for(self, task: str) -> Generator:
        """The generator serving ``task``: the configured one, else the best candidate."""
        if task in self._choices:
            return self._by_name[self._choices[task]]
        found = self.candidates(task)
        if not found:
            raise ZooError(
                f"no generator serves task {task!r}; served tasks: {self.tasks()}. "
                "Install a plugin that serves it (see `modaverse plugins`)."
            )
        return found[0]

    def task_specs(self, tasks: Sequence[str] | None = None) -> list[TaskSpec]:
        """TaskSpecs of the chosen generators (all served tasks, or only ``tasks``)."""
        wanted = self.tasks() if tasks is None else list(tasks)
        specs = []
        for t in wanted:
            g = self.generator_for(t)
            specs.append(TaskSpec(t, g.description, g.modality, g.args_schema, tuple(g.input_modalities)))
        return specs

    def schema(self, *, tasks: Sequence[str] | None = None, media_ids: Sequence[str] | None = None) -> dict[str, Any]:
        """The meta-response JSON Schema for this zoo (see :func:`build_schema`)."""
        return build_schema(self.task_specs(tasks), media_ids=media_ids)

    def unload_all(self) -> None:
        """Free every loaded model."""
        for g in self._by_name.values():
            g.unload()
