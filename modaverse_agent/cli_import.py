"""The ``modaverse import-official`` command: convert the ModaVerse-7b-v0 release into a ModaVerse directory."""

from __future__ import annotations

import click

from .cli_output import echo, fail
from .errors import ModaVerseError


@click.command("import-official")
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
        fail(str(e))
    echo(f'wrote {out}; run it with: modaverse run "..." --model {out}')
