"""The ``modaverse import-official`` command: convert the ModaVerse-7b-v0 release into a ModaVerse directory."""

from __future__ import annotations

import time

import click

from .cli_output import echo, fail
from .errors import ModaVerseError


@click.command("import-official")
@click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False))
@click.option("--base-llm", required=True, help="The release's base LLM: a local Vicuna-7b-v0 dir (or a hub id).")
@click.option("--output", "-o", required=True, type=click.Path(file_okay=False), help="ModaVerse dir to write.")
@click.option("--encoder", type=click.Path(exists=True), help="Local ImageBind huge weights (optional).")
@click.option(
    "--dtype",
    default="bfloat16",
    show_default=True,
    type=click.Choice(["float32", "bfloat16", "float16"]),
    help="The dtype written into the model's config: what it loads as (run's --dtype auto keeps it on a CPU).",
)
@click.option(
    "--device",
    metavar="auto|cpu|cuda|cuda:N|mps",
    help="Check the result: load the written model there (auto: a GPU when there is one) in --dtype and "
    "let it answer a few tokens. Left out: convert only (the conversion itself runs on the CPU).",
)
def import_official(
    checkpoint: str, base_llm: str, output: str, encoder: str | None, dtype: str, device: str | None
) -> None:
    """Convert the ModaVerse-7b-v0 release's CHECKPOINT (pytorch_model.pt) into a ModaVerse dir."""
    from .model.checkpoint import import_official as convert

    try:
        where = None if device is None else _resolve(device)  # a missing device fails before the conversion
        out = convert(checkpoint, base_llm, output, dtype=dtype, encoder=encoder)
        if where is not None:
            _check_loads(str(out), where)
    except ModaVerseError as e:
        fail(str(e))
    echo(f'wrote {out}; run it with: modaverse run "..." --model {out}')


def _resolve(device: str) -> str:
    from .devices import resolve_device

    return resolve_device(device)


def _check_loads(directory: str, device: str) -> None:
    """Load ``directory`` on ``device`` (in its config's dtype) and decode a few tokens of a text-only request."""
    from .llm_io import LLMRequest
    from .model.modeling import ModaVerseModel

    start = time.perf_counter()
    model = ModaVerseModel.from_pretrained(directory, device=device, merge=True)
    loaded = time.perf_counter() - start
    model.options.max_new_tokens = 4
    model.options.constrained = False
    completion = model.complete(LLMRequest("Say hello.", [], {}, []))
    echo(
        f"checked: loaded on {model.device} ({str(model.dtype).removeprefix('torch.')}) in {loaded:.1f} s and "
        f"answered {completion.output_tokens} token(s)",
        err=True,
    )
