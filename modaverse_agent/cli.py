"""The ``modaverse`` command: plugins, zoo, run, import-official (and commands plugins add: ``register_commands``).

Every failure ends in one clear line on stderr and a non-zero exit code: 2 for a bad command line or
config (click's usage errors and :func:`~modaverse_agent.cli_output.fail`), 1 when a run came back with
errors or something unexpected broke (:func:`main` turns any stray exception into ``error: <Type>: <message>``;
set ``MODAVERSE_DEBUG=1`` for its traceback), 130 on Ctrl-C.

This module holds the group, ``run`` and :func:`main`; ``plugins`` and ``zoo`` live in
:mod:`modaverse_agent.cli_zoo`, ``import-official`` in :mod:`modaverse_agent.cli_import`, and what is
printed (and the guards against hostile input) in :mod:`modaverse_agent.cli_output`.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Sequence
from typing import Any

import click

from .cli_chat import chat
from .cli_import import import_official
from .cli_model import (
    PLAN_FILE_MAX_BYTES,
    ModelChoice,
    engine_options,
    load_model,
    model_options,
    read_plan,
    temperature_option,
    timeout_option,
)
from .cli_output import (
    DEBUG_ENV,
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_PARTIAL,
    EXIT_USAGE,
    MESSAGE_MAX_CHARS,
    FiniteFloat,
    ProgressBars,
    clip,
    emit_json,
    exit_code,
    fail,
    print_stream,
    printable,
    report_unexpected,
    silence_stdout,
    tolerant_streams,
)
from .cli_serve import serve
from .cli_web import web
from .cli_zoo import load_zoo, plugins, zoo, zoo_config_option
from .diffusion import SEED_MAX

__all__ = [
    "DEBUG_ENV",
    "EXIT_FAILURE",
    "EXIT_INTERRUPTED",
    "EXIT_PARTIAL",
    "EXIT_USAGE",
    "MESSAGE_MAX_CHARS",
    "PLAN_FILE_MAX_BYTES",
    "FiniteFloat",
    "ModelChoice",
    "cli",
    "engine_options",
    "load_model",
    "main",
    "model_options",
    "printable",
    "run",
    "zoo_config_option",
]


@click.group()
@click.version_option(package_name="modaverse-agent")
def cli() -> None:
    """ModaVerse: any-to-any multimodal agent (text + images, audio, video in and out)."""


cli.add_command(plugins)
cli.add_command(zoo)
cli.add_command(import_official)
cli.add_command(serve)
cli.add_command(chat)
cli.add_command(web)


@cli.command()
@click.argument("instruction", required=False, default="")
@click.option("--media", "-m", multiple=True, help="Input image/audio/video file (repeatable).")
@click.option("--output-dir", "-o", default="outputs", show_default=True, type=click.Path(file_okay=False))
@click.option("--meta-response", "plan", help="Execute this meta-response JSON (or @file) instead of asking a model.")
@temperature_option
@model_options
@click.option("--use", multiple=True, help="TASK=GENERATOR for this run only (repeatable).")
@timeout_option
@click.option("--seed", type=click.IntRange(0, SEED_MAX), default=None, help="Base seed (invocation i uses seed + i).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@zoo_config_option
def run(
    instruction: str,
    media: tuple[str, ...],
    output_dir: str,
    plan: str | None,
    model: ModelChoice,
    temperature: float,
    use: tuple[str, ...],
    timeout: float,
    seed: int | None,
    as_json: bool,
    zoo_config: str | None,
) -> None:
    """Answer INSTRUCTION (with --media files) with text and generated files."""
    from .agent import ModaVerseAgent
    from .llm_io import GenerationParams
    from .testing import FixedPlanLLM

    if plan is not None and model.directory is not None:
        fail("pass either --model or --meta-response, not both")
    served = load_zoo(zoo_config, use)  # a bad config or --use fails here, before a model takes its time to load
    unreadable = [m for m in media if _no_file(m)]  # and a mistyped --media file
    if unreadable:
        fail(f"--media {', '.join(repr(m) for m in unreadable)}: no such file; check the path")
    if plan is None and not instruction.strip() and not media:
        fail("nothing to answer: give an INSTRUCTION (and/or --media files)")
    if plan is not None:
        llm: Any = FixedPlanLLM(read_plan(plan))
    else:
        llm = load_model(model)
    params = GenerationParams(temperature=temperature, seed=seed)
    agent = ModaVerseAgent(llm, served, output_dir=output_dir, timeout=timeout, seed=seed)
    with ProgressBars(enabled=not as_json) as on_progress:
        agent.on_progress = on_progress
        if as_json:
            response = agent.run(instruction, list(media), params=params)
        else:
            response = print_stream(agent.stream(instruction, list(media), params=params))
    if as_json:
        emit_json(response.to_dict())
    sys.exit(0 if response.ok else EXIT_PARTIAL)


def _no_file(source: str) -> bool:
    """Whether a --media path names no file (URLs such as file:// or data: are left to the media loader)."""
    if re.match(r"^[A-Za-z][A-Za-z0-9+.\-]*:", source):
        return False
    return not os.path.isfile(os.path.expanduser(source))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: load plugins, let them add commands, run the CLI; returns the exit code.

    Whatever escapes a command becomes one line on stderr (``MODAVERSE_DEBUG=1`` adds the traceback)
    and exit code 1; Ctrl-C exits 130 without a word; output that the terminal cannot encode is
    replaced, never a crash.
    """
    tolerant_streams()
    try:
        from .plugins import load_plugins

        load_plugins().hook.register_commands(cli=cli)
        rv = cli.main(args=list(argv) if argv is not None else None, prog_name="modaverse", standalone_mode=False)
        code = rv if isinstance(rv, int) else 0
    except SystemExit as e:  # the commands exit through sys.exit (see cli_output.fail)
        code = exit_code(e)
    except click.ClickException as e:
        e.message = clip(e.message)
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
        silence_stdout()
        return EXIT_FAILURE
    except Exception as e:
        return report_unexpected(e)
    try:
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's last flush
    except BrokenPipeError:
        silence_stdout()
        return EXIT_FAILURE
    return code


if __name__ == "__main__":
    sys.exit(main())
