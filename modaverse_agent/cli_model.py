"""Loading the model a command talks to: ``--model``/``--engine``/``--gguf``/``--constrained``/``--device``/
``--dtype``/``--device-map``/... shared by ``run``, ``chat``, ``serve`` and ``web`` as one :class:`ModelChoice`."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import click

from .cli_output import FiniteFloat, echo, fail
from .devices import DTYPES, device_option
from .errors import ModaVerseError
from .model.placement import DEVICE_MAPS

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


@dataclass(frozen=True)
class ModelChoice:
    """Which model a command talks to and where it runs: what :func:`model_options` parses, what
    :func:`load_model` loads (``directory`` None: the built-in default model)."""

    directory: str | None = None
    engine: str = "auto"
    gguf: str | None = None
    constrained: bool = True
    max_new_tokens: int | None = None
    device: str = "auto"
    dtype: str = "auto"
    device_map: str | None = None


def _choice_from(kwargs: dict[str, Any]) -> ModelChoice:
    """Pop the model options out of a command's keyword arguments (``--precision`` is the old ``--dtype``)."""
    precision = kwargs.pop("precision")
    dtype = kwargs.pop("dtype")
    engine = kwargs.pop("engine")
    if precision is not None:
        if dtype not in ("auto", precision):
            fail(
                f"--precision is the old name of --dtype; give one of them, not --precision {precision} --dtype {dtype}"
            )
        if engine == "llama.cpp" and precision != "auto":
            fail("--precision applies to the torch engine; llama.cpp runs the GGUF's own quantisation")
        dtype = precision
    return ModelChoice(
        directory=kwargs.pop("model_dir"),
        engine=engine,
        gguf=kwargs.pop("gguf"),
        constrained=kwargs.pop("constrained"),
        max_new_tokens=kwargs.pop("max_new_tokens"),
        device=kwargs.pop("device"),
        dtype=dtype,
        device_map=kwargs.pop("device_map"),
    )


def model_options(command: Any) -> Any:
    """The options that choose the model and where it runs: ``--model``, ``--engine``, ``--gguf``,
    ``--constrained/--no-constrained``, ``--max-new-tokens``, ``--device``, ``--dtype``, ``--device-map``.
    The command receives them as one :class:`ModelChoice` argument named ``model`` (pass it to :func:`load_model`)."""

    @functools.wraps(command)
    def with_choice(*args: Any, **kwargs: Any) -> Any:
        return command(*args, model=_choice_from(kwargs), **kwargs)

    wrapped: Any = engine_options(with_choice)
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
            device_option,
            click.option(
                "--dtype",
                type=click.Choice(DTYPES),
                default="auto",
                show_default=True,
                help="Weights of the model (torch engine). auto: bfloat16 on a CUDA GPU that has it (else float16), "
                "float16 on mps, and on the CPU the dtype it was saved in. bfloat16 decodes faster on a CPU, but "
                "its prompt processing is slower on CPUs without bf16 instructions.",
            ),
            click.option(
                "--device-map",
                type=click.Choice(DEVICE_MAPS),
                default=None,
                help="auto: spread an LLM too large for one GPU over every visible GPU (accelerate; then the CPU); "
                "the encoder and projectors sit with its first layers. Torch engine, with --device auto or cuda.",
            ),
            click.option("--precision", type=click.Choice(DTYPES), default=None, hidden=True),
        ]
    ):
        wrapped = option(wrapped)
    return wrapped


def load_model(choice: ModelChoice) -> Any:
    """Load ``choice``: a ModaVerse model directory, or the built-in default model, on the chosen engine and
    device (a bad choice or a missing device ends the command with one line: :func:`fail`)."""
    from transformers.utils import logging as hf_logging

    from .model.llamacpp import load_engine
    from .model.placement import Placement

    hf_logging.disable_progress_bar()
    say = lambda m: echo(m, err=True)  # noqa: E731
    try:
        placement = Placement(choice.device, choice.dtype, choice.device_map)
        if choice.engine == "llama.cpp":
            placement.refuse_torch_only()
        if choice.directory is None and choice.gguf:
            fail(
                "--gguf names the base of a model folder whose config names none; the built-in default model "
                "brings its own GGUF: give --model DIR with it, or leave --gguf out"
            )
        if choice.directory is None:
            from .default_model import load_default_model

            say("using the built-in default model (Gemma 3 270M + the shipped LoRA adapter)")
            model = load_default_model(say, engine=choice.engine, placement=placement)
        else:
            model = load_engine(
                choice.directory, choice.engine, gguf=choice.gguf, log=say, merge=True, placement=placement
            )
    except ModaVerseError as e:
        fail(str(e))
    model.options.constrained = choice.constrained
    model.options.max_new_tokens = choice.max_new_tokens
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
