"""The ``modaverse`` command: plugins, zoo, run (plus commands plugins add through ``register_commands``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from .errors import ModaVerseError

EXIT_PARTIAL = 1  # the response came back but with errors
EXIT_USAGE = 2


def _emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def _fail(message: str, code: int = EXIT_USAGE) -> None:
    click.echo(f"Error: {message}", err=True)
    sys.exit(code)


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
        click.echo("No plugins installed. Install one, e.g. `pip install -e plugins/modaverse-echo`.")
    for p in info:
        where = (
            f"{p['distribution']} {p['version']}" if p.get("distribution") else ("built-in" if p.get("builtin") else "")
        )
        if "error" in p:
            click.echo(f"{p['name']}  FAILED TO LOAD: {p['error']}")
        else:
            click.echo(f"{p['name']}  {where}  hooks: {', '.join(p['hooks'])}")


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
        click.echo("No generators installed. Install a plugin, e.g. `pip install -e plugins/modaverse-echo`.")
    for r in rows:
        alt = f"  (also: {', '.join(r['alternatives'])})" if r["alternatives"] else ""
        opts = f"  {r['options']}" if r["options"] else ""
        click.echo(f"{r['task']:<16} -> {r['generator']}{opts}{alt}")
        if r["untrained"]:
            click.echo(f"{'':<20}untrained tiny weights (placeholder output); real weights: {r['hint']}")
    click.echo(f"config: {z.config.path}")


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
        try:
            parsed[key] = json.loads(value)
        except json.JSONDecodeError:
            parsed[key] = value
    try:
        z.choose(task, generator)
        z.get(generator).configure(**parsed)
    except ModaVerseError as e:
        _fail(str(e))
    cfg = z.config
    cfg.tasks[task] = generator
    if parsed:
        cfg.generators.setdefault(generator, {}).update(parsed)
    click.echo(f"{task} -> {generator} (saved to {cfg.save()})")


@zoo.command("unset")
@click.argument("task")
@click.pass_context
def zoo_unset(ctx: click.Context, task: str) -> None:
    """Forget the configured generator of TASK (the best installed one serves it again)."""
    z = _load_zoo(ctx.obj["zoo_config"])
    if z.config.tasks.pop(task, None) is None:
        _fail(f"task {task!r} has no configured generator")
    click.echo(f"{task} unset (saved to {z.config.save()})")


def _read_plan(value: str) -> str:
    if value.startswith("@"):
        try:
            return Path(value[1:]).read_text(encoding="utf-8")
        except OSError as e:
            _fail(f"cannot read meta-response file {value[1:]}: {e.strerror}")
    return value


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
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Sample the model's answer at this temperature (0: greedy); --seed seeds it.",
)
@engine_options
@click.option("--use", multiple=True, help="TASK=GENERATOR for this run only (repeatable).")
@click.option("--timeout", default=600.0, show_default=True, help="Seconds each invocation may take.")
@click.option("--seed", type=int, default=None, help="Base seed (invocation i uses seed + i).")
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
    agent = ModaVerseAgent(llm, _load_zoo(zoo_config, use), output_dir=output_dir, timeout=timeout, seed=seed)
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
    say = lambda m: click.echo(m, err=True)  # noqa: E731
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
    click.echo(f'wrote {out}; run it with: modaverse run "..." --model {out}')


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
        click.echo("meta-response: " + response.meta_response.to_json())
    if response.text:
        click.echo(f"\n{response.text}")
    for a in response.artifacts:
        label = f"{a.task} via {a.generator}" + (", untrained weights" if a.metadata.get("untrained") else "")
        click.echo(f"  [{label}] {a.path}")
    if response.manifest:
        click.echo(f"manifest: {response.manifest}")
    for note in response.notes:
        click.echo(f"note: {note}")
    for e in response.errors:
        click.echo(f"error: {e}", err=True)


def main() -> None:
    """Entry point: load plugins, let them add commands, run the CLI."""
    from .plugins import load_plugins

    load_plugins().hook.register_commands(cli=cli)
    cli(prog_name="modaverse")


if __name__ == "__main__":
    main()
