"""The ``modaverse`` command: plugins, zoo, run (plus commands plugins add through ``register_commands``).

Every failure ends in one clear line on stderr and a non-zero exit code: 2 for a bad command line or
config (click's usage errors and :func:`_fail`), 1 when a run came back with errors or something
unexpected broke (:func:`main` turns any stray exception into ``error: <Type>: <message>``; set
``MODAVERSE_DEBUG=1`` for its traceback), 130 on Ctrl-C.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import click

from .diffusion import SEED_MAX
from .errors import ModaVerseError

EXIT_PARTIAL = 1  # the response came back but with errors
EXIT_FAILURE = 1  # something unexpected broke
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report Ctrl-C
DEBUG_ENV = "MODAVERSE_DEBUG"
PLAN_FILE_MAX_BYTES = 1 << 20  # a meta-response is a few KB; this only stops /dev/zero and the like
MESSAGE_MAX_CHARS = 1000  # an error line quotes at most this much (a 1 MB argument is not echoed back)

_SURROGATE = re.compile("[\ud800-\udfff]")


def printable(text: str) -> str:
    """``text`` with lone surrogates (from ``"\\ud800"`` escapes or undecodable argv bytes) as U+FFFD."""
    return _SURROGATE.sub("\ufffd", text)


def _clip(text: str, limit: int = MESSAGE_MAX_CHARS) -> str:
    """One printable line of at most ``limit`` characters."""
    line = " ".join(printable(text).split())
    return line if len(line) <= limit else f"{line[: limit - 30]}... ({len(line)} characters in all)"


def _echo(text: str, err: bool = False) -> None:
    click.echo(printable(text), err=err)


def _emit_json(data: Any) -> None:
    _echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def _fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    click.echo(f"Error: {_clip(message)}", err=True)
    sys.exit(code)


class FiniteFloat(click.ParamType):
    """A float that must be finite (no nan/inf/1e309) and above (or at) ``minimum``."""

    name = "float"

    def __init__(self, minimum: float, *, inclusive: bool) -> None:
        self.minimum, self.inclusive = minimum, inclusive

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        """Parse ``value``; refuse non-numbers, nan, infinities and values below the bound."""
        shown = _clip(repr(value), 80)
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{shown} is not a number", param, ctx)
        if not math.isfinite(number):
            self.fail(f"{shown} is not a finite number", param, ctx)
        if number < self.minimum or (number == self.minimum and not self.inclusive):
            bound = ">=" if self.inclusive else ">"
            self.fail(f"{shown} is out of range: it must be {bound} {self.minimum:g}", param, ctx)
        return number


@click.group()
@click.version_option(package_name="modaverse-agent")
def cli() -> None:
    """ModaVerse: any-to-any multimodal agent (text + images, audio, video in and out)."""


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def plugins(as_json: bool) -> None:
    """List installed plugins, their versions, hooks and load errors."""
    from .plugins import plugin_info

    info = plugin_info()
    if as_json:
        _emit_json(info)
        return
    if not info:
        _echo("No plugins installed. Install one, e.g. `pip install -e plugins/modaverse-echo`.")
    for p in info:
        where = (
            f"{p['distribution']} {p['version']}" if p.get("distribution") else ("built-in" if p.get("builtin") else "")
        )
        if "error" in p:
            _echo(f"{p['name']}  FAILED TO LOAD: {p['error']}")
        else:
            _echo(f"{p['name']}  {where}  hooks: {', '.join(p['hooks'])}")


def _load_zoo(zoo_config: str | None, use: tuple[str, ...] = ()) -> Any:
    from .zoo import Zoo, ZooConfig

    choices = {}
    for item in use:
        task, sep, name = item.partition("=")
        if not sep:
            _fail(f"--use takes TASK=GENERATOR, got {item!r}")
        choices[task] = name
    try:
        return Zoo(_registered(), config=ZooConfig.load(zoo_config), choices=choices)
    except ModaVerseError as e:
        _fail(str(e))


def _registered() -> list[Any]:
    from .plugins import load_plugins

    found: list[Any] = []
    load_plugins().hook.register_generators(register=found.append)
    return found


def engine_options(command: Any) -> Any:
    """``--engine`` and ``--gguf``: which inference engine runs a ModaVerse model."""
    command = click.option(
        "--gguf",
        type=click.Path(exists=True, dir_okay=False),
        help="The base LLM as a GGUF file, for --engine llama.cpp when the model's config names none.",
    )(command)
    return click.option(
        "--engine",
        type=click.Choice(["auto", "torch", "llama.cpp"]),
        default="auto",
        show_default=True,
        help="Who runs the model: llama.cpp (fast on a CPU; needs llama-cpp-python and a GGUF base) or torch. "
        "auto: llama.cpp when it is installed and the model can run on it, else torch.",
    )(command)


zoo_config_option = click.option(
    "--zoo-config", envvar="MODAVERSE_ZOO_CONFIG", type=click.Path(dir_okay=False), help="Zoo config TOML."
)


@cli.group(invoke_without_command=True)
@zoo_config_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def zoo(ctx: click.Context, zoo_config: str | None, as_json: bool) -> None:
    """Show which generator serves each task (subcommands: set, unset)."""
    ctx.ensure_object(dict)["zoo_config"] = zoo_config
    if ctx.invoked_subcommand is not None:
        return
    z = _load_zoo(zoo_config)
    rows = []
    for task in z.tasks():
        chosen = z.generator_for(task)
        rows.append(
            {
                "task": task,
                "generator": chosen.name,
                "description": chosen.description,
                "options": chosen.options,
                "alternatives": [g.name for g in z.candidates(task) if g is not chosen],
                "untrained": chosen.untrained,
                "hint": chosen.real_weights_hint() if chosen.untrained else None,
            }
        )
    if as_json:
        _emit_json({"config": str(z.config.path) if z.config.path else None, "tasks": rows})
        return
    if not rows:
        _echo("No generators installed. Install a plugin, e.g. `pip install -e plugins/modaverse-echo`.")
    for r in rows:
        alt = f"  (also: {', '.join(r['alternatives'])})" if r["alternatives"] else ""
        opts = f"  {r['options']}" if r["options"] else ""
        _echo(f"{r['task']:<16} -> {r['generator']}{opts}{alt}")
        if r["untrained"]:
            _echo(f"{'':<20}untrained tiny weights (placeholder output); real weights: {r['hint']}")
    _echo(f"config: {z.config.path}")


@zoo.command("set")
@click.argument("task")
@click.argument("generator")
@click.option("--option", "-o", "options", multiple=True, help="Generator option KEY=VALUE (JSON values allowed).")
@click.pass_context
def zoo_set(ctx: click.Context, task: str, generator: str, options: tuple[str, ...]) -> None:
    """Make GENERATOR serve TASK (and set its options); no retraining needed."""
    z = _load_zoo(ctx.obj["zoo_config"])
    parsed = {}
    for item in options:
        key, sep, value = item.partition("=")
        if not sep:
            _fail(f"--option takes KEY=VALUE, got {item!r}")
        parsed[key] = _option_value(key, value)
    try:
        z.choose(task, generator)
        z.get(generator).configure(**parsed)
    except ModaVerseError as e:
        _fail(str(e))
    cfg = z.config
    cfg.tasks[task] = generator
    if parsed:
        cfg.generators.setdefault(generator, {}).update(parsed)
    _echo(f"{task} -> {generator} (saved to {_save(cfg)})")


def _option_value(key: str, value: str) -> Any:
    """``value`` as JSON when it is JSON (a number, list, ...), else the string itself."""
    if _SURROGATE.search(key + value):
        _fail(f"--option {key!r} holds bytes that are not valid UTF-8; a zoo config is UTF-8 text")

    def refuse_constant(name: str) -> NoReturn:
        _fail(f"--option {key}={name}: a zoo config holds finite numbers only")

    try:
        return json.loads(value, parse_constant=refuse_constant)
    except json.JSONDecodeError:
        return value
    except RecursionError:
        _fail(f"--option {key!r}: the value is nested too deeply")
    except ValueError as e:  # e.g. an integer of more than 4300 digits
        _fail(f"--option {key!r}: {e}")


def _save(cfg: Any) -> Path:
    """Save the zoo config, or fail with what went wrong (the path is the user's --zoo-config)."""
    try:
        return cfg.save()
    except ModaVerseError as e:
        _fail(str(e))


@zoo.command("unset")
@click.argument("task")
@click.pass_context
def zoo_unset(ctx: click.Context, task: str) -> None:
    """Forget the configured generator of TASK (the best installed one serves it again)."""
    z = _load_zoo(ctx.obj["zoo_config"])
    if z.config.tasks.pop(task, None) is None:
        _fail(f"task {task!r} has no configured generator")
    _echo(f"{task} unset (saved to {_save(z.config)})")


def _read_plan(value: str) -> str:
    """The meta-response text: ``value`` itself, or the UTF-8 file named after an ``@``."""
    if not value.startswith("@"):
        return value
    name = value[1:]
    try:
        with open(name, "rb") as f:
            data = f.read(PLAN_FILE_MAX_BYTES + 1)
    except OSError as e:
        _fail(f"cannot read meta-response file {name}: {e.strerror or e}")
    if len(data) > PLAN_FILE_MAX_BYTES:
        _fail(f"meta-response file {name} is larger than {PLAN_FILE_MAX_BYTES} bytes; a meta-response is a few KB")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        _fail(f"meta-response file {name} is not UTF-8 text (invalid byte at offset {e.start}); save it as UTF-8")


@cli.command()
@click.argument("instruction", required=False, default="")
@click.option("--media", "-m", multiple=True, help="Input image/audio/video file (repeatable).")
@click.option("--output-dir", "-o", default="outputs", show_default=True, type=click.Path(file_okay=False))
@click.option("--meta-response", "plan", help="Execute this meta-response JSON (or @file) instead of asking a model.")
@click.option(
    "--model",
    "model_dir",
    type=click.Path(file_okay=False),
    help="Ask this ModaVerse model directory (default: the built-in Gemma 3 270M model).",
)
@click.option(
    "--constrained/--no-constrained",
    default=True,
    show_default=True,
    help="Constrain the model's answer to the zoo's meta-response schema (xgrammar).",
)
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=None, help="Token budget of the model's answer.")
@click.option(
    "--precision",
    type=click.Choice(["auto", "float32", "bfloat16"]),
    default="auto",
    show_default=True,
    help="Weights of the model while it answers (auto: as trained). bfloat16 decodes faster on a CPU, "
    "but its prompt processing is slower on CPUs without bf16 instructions.",
)
@click.option(
    "--temperature",
    type=FiniteFloat(0, inclusive=True),
    default=0.0,
    show_default=True,
    help="Sample the model's answer at this temperature (0: greedy); --seed seeds it.",
)
@engine_options
@click.option("--use", multiple=True, help="TASK=GENERATOR for this run only (repeatable).")
@click.option(
    "--timeout",
    type=FiniteFloat(0, inclusive=False),
    default=600.0,
    show_default=True,
    help="Seconds each invocation may take (a finite number > 0).",
)
@click.option("--seed", type=click.IntRange(0, SEED_MAX), default=None, help="Base seed (invocation i uses seed + i).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@zoo_config_option
def run(
    instruction: str,
    media: tuple[str, ...],
    output_dir: str,
    plan: str | None,
    model_dir: str | None,
    constrained: bool,
    max_new_tokens: int | None,
    precision: str,
    temperature: float,
    engine: str,
    gguf: str | None,
    use: tuple[str, ...],
    timeout: float,
    seed: int | None,
    as_json: bool,
    zoo_config: str | None,
) -> None:
    """Answer INSTRUCTION (with --media files) with text and generated files."""
    from .agent import ModaVerseAgent
    from .testing import FixedPlanLLM

    if plan is not None and model_dir is not None:
        _fail("pass either --model or --meta-response, not both")
    zoo = _load_zoo(zoo_config, use)  # a bad config or --use fails here, before a model takes its time to load
    if plan is not None:
        llm: Any = FixedPlanLLM(_read_plan(plan))
    else:
        llm = _load_model(
            model_dir,
            constrained=constrained,
            max_new_tokens=max_new_tokens,
            precision=precision,
            engine=engine,
            gguf=gguf,
        )
        llm.options.do_sample, llm.options.temperature, llm.options.seed = temperature > 0, temperature or 1.0, seed
    agent = ModaVerseAgent(llm, zoo, output_dir=output_dir, timeout=timeout, seed=seed)
    with _progress(enabled=not as_json) as on_progress:
        agent.on_progress = on_progress
        response = agent.run(instruction, list(media))
    if as_json:
        _emit_json(response.to_dict())
    else:
        _print_response(response)
    sys.exit(0 if response.ok else EXIT_PARTIAL)


def _load_model(
    directory: str | None,
    *,
    constrained: bool,
    max_new_tokens: int | None,
    precision: str = "auto",
    engine: str = "auto",
    gguf: str | None = None,
) -> Any:
    """Load a ModaVerse model directory, or the built-in default model, on the chosen engine."""
    from transformers.utils import logging as hf_logging

    from .model.llamacpp import load_engine

    hf_logging.disable_progress_bar()
    if precision != "auto":
        if engine == "llama.cpp":
            _fail("--precision applies to the torch engine; llama.cpp runs the GGUF's own quantisation")
        engine = "torch"
    say = lambda m: _echo(m, err=True)  # noqa: E731
    try:
        if directory is None:
            from .default_model import load_default_model

            say("using the built-in default model (Gemma 3 270M + the shipped LoRA adapter)")
            model = load_default_model(say, engine=engine)
        else:
            model = load_engine(directory, engine, gguf=gguf, log=say, merge=True)
        if precision != "auto":
            model.to_dtype(precision)
    except ModaVerseError as e:
        _fail(str(e))
    model.options.constrained = constrained
    model.options.max_new_tokens = max_new_tokens
    return model


@cli.command("import-official")
@click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False))
@click.option("--base-llm", required=True, help="The release's base LLM: a local Vicuna-7b-v0 dir (or a hub id).")
@click.option("--output", "-o", required=True, type=click.Path(file_okay=False), help="ModaVerse dir to write.")
@click.option("--encoder", type=click.Path(exists=True), help="Local ImageBind huge weights (optional).")
@click.option("--dtype", default="bfloat16", show_default=True, type=click.Choice(["float32", "bfloat16", "float16"]))
def import_official(checkpoint: str, base_llm: str, output: str, encoder: str | None, dtype: str) -> None:
    """Convert the ModaVerse-7b-v0 release's CHECKPOINT (pytorch_model.pt) into a ModaVerse dir."""
    from .model.checkpoint import import_official as convert

    try:
        out = convert(checkpoint, base_llm, output, dtype=dtype, encoder=encoder)
    except ModaVerseError as e:
        _fail(str(e))
    _echo(f'wrote {out}; run it with: modaverse run "..." --model {out}')


class _progress:
    """A rich progress bar per task on stderr, fed by generators' step callbacks."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bar: Any = None
        self.tasks: dict[str, Any] = {}

    def __enter__(self) -> Any:
        if not self.enabled:
            return None
        from rich.console import Console
        from rich.progress import Progress

        self.bar = Progress(console=Console(stderr=True), transient=True)
        self.bar.start()
        return self.update

    def update(self, task: str, done: int, total: int) -> None:
        if task not in self.tasks:
            self.tasks[task] = self.bar.add_task(task, total=total)
        self.bar.update(self.tasks[task], completed=done, total=total)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()


def _print_response(response: Any) -> None:
    if response.meta_response is not None:
        _echo("meta-response: " + response.meta_response.to_json())
    if response.text:
        _echo(f"\n{response.text}")
    for a in response.artifacts:
        label = f"{a.task} via {a.generator}" + (", untrained weights" if a.metadata.get("untrained") else "")
        _echo(f"  [{label}] {a.path}")
    if response.manifest:
        _echo(f"manifest: {response.manifest}")
    for note in response.notes:
        _echo(f"note: {note}")
    for e in response.errors:  # --json has them in full; a line here quotes at most MESSAGE_MAX_CHARS
        _echo(f"error: {_clip(str(e))}", err=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: load plugins, let them add commands, run the CLI; returns the exit code.

    Whatever escapes a command becomes one line on stderr (``MODAVERSE_DEBUG=1`` adds the traceback)
    and exit code 1; Ctrl-C exits 130 without a word; output that the terminal cannot encode is
    replaced, never a crash.
    """
    _tolerant_streams()
    try:
        from .plugins import load_plugins

        load_plugins().hook.register_commands(cli=cli)
        rv = cli.main(args=list(argv) if argv is not None else None, prog_name="modaverse", standalone_mode=False)
        code = rv if isinstance(rv, int) else 0
    except SystemExit as e:  # the commands exit through sys.exit (see _fail)
        code = _exit_code(e)
    except click.ClickException as e:
        e.message = _clip(e.message)
        e.show()
        return e.exit_code
    except click.Abort as e:  # click turns Ctrl-C (and EOF at a prompt) into Abort
        if isinstance(e.__cause__ or e.__context__, KeyboardInterrupt):
            return EXIT_INTERRUPTED
        click.echo("Aborted.", err=True)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader went away (`modaverse zoo | head -1`): nothing left to say
        _silence_stdout()
        return EXIT_FAILURE
    except Exception as e:
        return _report_unexpected(e)
    try:
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's last flush
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_FAILURE
    return code


def _exit_code(exit: SystemExit) -> int:
    """The exit code ``exit`` stands for; a message given to sys.exit is printed as one line."""
    if exit.code is None:
        return 0
    if isinstance(exit.code, int):
        return exit.code
    click.echo(f"Error: {_clip(str(exit.code))}", err=True)
    return EXIT_FAILURE


def _report_unexpected(error: Exception) -> int:
    """Print ``error: <Type>: <message>`` (the traceback too under MODAVERSE_DEBUG=1); exit code 1."""
    debug = os.environ.get(DEBUG_ENV, "") not in ("", "0")
    if debug:
        import traceback

        traceback.print_exception(error)
    hint = "" if debug else f" (rerun with {DEBUG_ENV}=1 for the traceback)"
    click.echo(f"error: {_clip(f'{type(error).__name__}: {error}')}{hint}", err=True)
    return EXIT_FAILURE


def _tolerant_streams() -> None:
    """Make stdout/stderr replace characters they cannot encode instead of raising UnicodeEncodeError."""
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper) and stream.errors == "strict":
            stream.reconfigure(errors="replace")


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush to a closed pipe stays quiet."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, io.UnsupportedOperation):
        pass  # stdout is no real file (an in-process caller's buffer): no interpreter flush to quiet


if __name__ == "__main__":
    sys.exit(main())
