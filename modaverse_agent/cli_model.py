"""Loading the model a command talks to: ``--model``/``--engine``/``--gguf``/``--constrained``/... shared by
``run``, ``chat``, ``serve`` and ``web``."""

from __future__ import annotations

from typing import Any

import click

from .cli_output import FiniteFloat, echo, fail
from .errors import ModaVerseError

PLAN_FILE_MAX_BYTES = 1 << 20  # a meta-response is a few KB; this only stops /dev/zero and the like


def read_plan(value: str) -> str:
    """The meta-response text: ``value`` itself, or the UTF-8 file named after an ``@``."""
    if not value.startswith("@"):
        return value
    name = value[1:]
    try:
        with open(name, "rb") as f:
            data = f.read(PLAN_FILE_MAX_BYTES + 1)
    except OSError as e:
        fail(f"cannot read meta-response file {name}: {e.strerror or e}")
    if len(data) > PLAN_FILE_MAX_BYTES:
        fail(f"meta-response file {name} is larger than {PLAN_FILE_MAX_BYTES} bytes; a meta-response is a few KB")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        fail(f"meta-response file {name} is not UTF-8 text (invalid byte at offset {e.start}); save it as UTF-8")


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


def model_options(command: Any) -> Any:
    """The options that choose and set up the model: ``--model``, ``--engine``, ``--gguf``,
    ``--constrained/--no-constrained``, ``--max-new-tokens``, ``--precision`` (pass them to :func:`load_model`)."""
    command = engine_options(command)
    for option in reversed(
        [
            click.option(
                "--model",
                "model_dir",
                type=click.Path(file_okay=False),
                help="Ask this ModaVerse model directory (default: the built-in Gemma 3 270M model).",
            ),
            click.option(
                "--constrained/--no-constrained",
                default=True,
                show_default=True,
                help="Constrain the model's answer to the zoo's meta-response schema (xgrammar).",
            ),
            click.option(
                "--max-new-tokens", type=click.IntRange(min=1), default=None, help="Token budget of the model's answer."
            ),
            click.option(
                "--precision",
                type=click.Choice(["auto", "float32", "bfloat16"]),
                default="auto",
                show_default=True,
                help="Weights of the model while it answers (auto: as trained). bfloat16 decodes faster on a CPU, "
                "but its prompt processing is slower on CPUs without bf16 instructions.",
            ),
        ]
    ):
        command = option(command)
    return command


def load_model(
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
            fail("--precision applies to the torch engine; llama.cpp runs the GGUF's own quantisation")
        engine = "torch"
    say = lambda m: echo(m, err=True)  # noqa: E731
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
        fail(str(e))
    model.options.constrained = constrained
    model.options.max_new_tokens = max_new_tokens
    return model


#: ``--timeout``: seconds each invocation may take (run, chat, serve, web).
timeout_option = click.option(
    "--timeout",
    type=FiniteFloat(0, inclusive=False),
    default=600.0,
    show_default=True,
    help="Seconds each invocation may take (a finite number > 0).",
)
#: ``--temperature``: sampling temperature of the model's answers (run, chat).
temperature_option = click.option(
    "--temperature",
    type=FiniteFloat(0, inclusive=True),
    default=0.0,
    show_default=True,
    help="Sample the model's answers at this temperature (0: greedy); --seed seeds it.",
)
