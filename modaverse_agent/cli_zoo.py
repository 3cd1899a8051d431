"""The ``modaverse plugins`` and ``modaverse zoo`` commands: what is installed and which generator serves each task."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NoReturn

import click

from .cli_output import clip, echo, emit_json, fail, has_surrogate
from .errors import ModaVerseError

#: ``--zoo-config``: the zoo config TOML (also read from MODAVERSE_ZOO_CONFIG).
zoo_config_option = click.option(
    "--zoo-config", envvar="MODAVERSE_ZOO_CONFIG", type=click.Path(dir_okay=False), help="Zoo config TOML."
)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def plugins(as_json: bool) -> None:
    """List installed plugins, their versions, hooks and load errors."""
    from .plugins import plugin_info
    from .registration import registered_generators

    registered_generators()  # a plugin whose registration fails is listed as failed
    info = plugin_info()
    if as_json:
        emit_json(info)
        return
    if not info:
        echo("No plugins installed. Install one, e.g. `pip install -e plugins/modaverse-echo`.")
    for p in info:
        where = (
            f"{p['distribution']} {p['version']}" if p.get("distribution") else ("built-in" if p.get("builtin") else "")
        )
        if "error" in p:
            echo(f"{p['name']}  FAILED TO LOAD: {p['error']}")
        else:
            echo(f"{p['name']}  {where}  hooks: {', '.join(p['hooks'])}")


def load_zoo(zoo_config: str | None, use: tuple[str, ...] = ()) -> Any:
    """The zoo of the installed plugins with this config and ``--use TASK=GENERATOR`` choices; exits 2 when bad."""
    from .zoo import Zoo, ZooConfig

    choices = {}
    for item in use:
        task, sep, name = item.partition("=")
        if not sep:
            fail(f"--use takes TASK=GENERATOR, got {item!r}")
        choices[task] = name
    try:
        return Zoo(_registered(), config=ZooConfig.load(zoo_config), choices=choices)
    except ModaVerseError as e:
        fail(str(e))


def _registered() -> list[Any]:
    """The generators of the plugins that registered cleanly; one warning line on stderr per plugin skipped."""
    from .plugins import failure_warnings
    from .registration import registered_generators

    found = registered_generators()
    for line in failure_warnings():
        echo(clip(line), err=True)
    return found


@click.group(invoke_without_command=True)
@zoo_config_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def zoo(ctx: click.Context, zoo_config: str | None, as_json: bool) -> None:
    """Show which generator serves each task (subcommands: set, unset)."""
    ctx.ensure_object(dict)["zoo_config"] = zoo_config
    if ctx.invoked_subcommand is not None:
        return
    z = load_zoo(zoo_config)
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
        emit_json({"config": str(z.config.path) if z.config.path else None, "tasks": rows})
        return
    if not rows:
        echo("No generators installed. Install a plugin, e.g. `pip install -e plugins/modaverse-echo`.")
    width = max([16, *(len(r["task"]) for r in rows)])
    for r in rows:
        alt = f"  (also: {', '.join(r['alternatives'])})" if r["alternatives"] else ""
        opts = f"  {r['options']}" if r["options"] else ""
        echo(f"{r['task']:<{width}} -> {r['generator']}{opts}{alt}")
        if r["untrained"]:
            echo(f"{'':<{width + 4}}untrained tiny weights (placeholder output); real weights: {r['hint']}")
    echo(f"config: {z.config.path}")


@zoo.command("set")
@click.argument("task")
@click.argument("generator")
@click.option("--option", "-o", "options", multiple=True, help="Generator option KEY=VALUE (JSON values allowed).")
@click.pass_context
def zoo_set(ctx: click.Context, task: str, generator: str, options: tuple[str, ...]) -> None:
    """Make GENERATOR serve TASK (and set its options); no retraining needed."""
    z = load_zoo(ctx.obj["zoo_config"])
    parsed = {}
    for item in options:
        key, sep, value = item.partition("=")
        if not sep:
            fail(f"--option takes KEY=VALUE, got {item!r}")
        parsed[key] = _option_value(key, value)
    try:
        z.choose(task, generator)
        z.get(generator).configure(**parsed)
    except ModaVerseError as e:
        fail(str(e))
    cfg = z.config
    cfg.tasks[task] = generator
    if parsed:
        cfg.generators.setdefault(generator, {}).update(parsed)
    echo(f"{task} -> {generator} (saved to {_save(cfg)})")


def _option_value(key: str, value: str) -> Any:
    """``value`` as JSON when it is JSON (a number, list, ...), else the string itself."""
    if has_surrogate(key + value):
        fail(f"--option {key!r} holds bytes that are not valid UTF-8; a zoo config is UTF-8 text")

    def refuse_constant(name: str) -> NoReturn:
        fail(f"--option {key}={name}: a zoo config holds finite numbers only")

    try:
        return json.loads(value, parse_constant=refuse_constant)
    except json.JSONDecodeError:
        return value
    except RecursionError:
        fail(f"--option {key!r}: the value is nested too deeply")
    except ValueError as e:  # e.g. an integer of more than 4300 digits
        fail(f"--option {key!r}: {e}")


def _save(cfg: Any) -> Path:
    """Save the zoo config, or fail with what went wrong (the path is the user's --zoo-config)."""
    try:
        return cfg.save()
    except ModaVerseError as e:
        fail(str(e))


@zoo.command("unset")
@click.argument("task")
@click.pass_context
def zoo_unset(ctx: click.Context, task: str) -> None:
    """Forget the configured generator of TASK (the best installed one serves it again)."""
    z = load_zoo(ctx.obj["zoo_config"])
    if z.config.tasks.pop(task, None) is None:
        fail(f"task {task!r} has no configured generator")
    echo(f"{task} unset (saved to {_save(z.config)})")
