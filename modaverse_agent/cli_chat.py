"""The ``modaverse chat`` command: an interactive conversation in the terminal (see
:mod:`modaverse_agent.serving.terminal` for what a person sees and the keys)."""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from .cli_model import ModelChoice, load_model, model_options, temperature_option, timeout_option
from .cli_output import fail
from .cli_zoo import load_zoo, zoo_config_option
from .diffusion import SEED_MAX


def llm_from_factory(spec: str) -> Any:
    """The LLM that calling ``MODULE:ATTR`` returns; exits 2 with a clear line when it cannot be made."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        fail(f"--llm-factory takes MODULE:ATTR (a callable returning an LLM), got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except Exception as e:
        fail(f"--llm-factory {spec}: cannot import {module_name}: {type(e).__name__}: {e}")
    factory = getattr(module, attr, None)
    if not callable(factory):
        fail(f"--llm-factory {spec}: {module_name} has no callable {attr!r}")
    try:
        llm = factory()
    except Exception as e:
        fail(f"--llm-factory {spec}: the factory failed: {type(e).__name__}: {e}")
    if not callable(getattr(llm, "respond", None)):
        fail(f"--llm-factory {spec}: it returned {type(llm).__name__}, which has no respond(request) method")
    return llm


@click.command()
@model_options
@click.option(
    "--llm-factory",
    metavar="MODULE:ATTR",
    help="Talk to the LLM that calling MODULE.ATTR() returns instead of a ModaVerse model (any object with "
    "respond(request) -> str, and stream(request) to stream): custom backends, scripted demos and tests.",
)
@click.option("--output-dir", "-o", default="outputs", show_default=True, type=click.Path(file_okay=False))
@timeout_option
@temperature_option
@click.option("--seed", type=click.IntRange(0, SEED_MAX), default=None, help="Base seed (invocation i uses seed + i).")
@click.option("--use", multiple=True, help="TASK=GENERATOR for this session (repeatable; /use inside too).")
@zoo_config_option
def chat(
    model: ModelChoice,
    llm_factory: str | None,
    output_dir: str,
    timeout: float,
    temperature: float,
    seed: int | None,
    use: tuple[str, ...],
    zoo_config: str | None,
) -> None:
    """Talk with the agent: answers stream in, files are listed as paths; /help inside lists the commands.

    Ctrl-C stops the running answer (not the session); Ctrl-D, /quit or Ctrl-C twice at an empty
    prompt leaves.
    """
    from .agent import ModaVerseAgent
    from .llm_io import GenerationParams
    from .serving.terminal import ChatTerminal

    if llm_factory is not None and model.directory is not None:
        fail("pass either --model or --llm-factory, not both")
    served = load_zoo(zoo_config, use)  # a bad config or --use fails here, before a model takes its time to load
    if llm_factory is not None:
        llm, title = llm_from_factory(llm_factory), f"LLM: {llm_factory}"
    else:
        llm = load_model(model)
        title = f"model: {model.directory}" if model.directory else "the built-in default model"
    agent = ModaVerseAgent(llm, served, output_dir=output_dir, timeout=timeout, seed=seed)
    choices = {task: name for task, _, name in (item.partition("=") for item in use)}
    terminal = ChatTerminal(
        agent, params=GenerationParams(temperature=temperature, seed=seed), title=title, choices=choices
    )
    sys.exit(terminal.run())
