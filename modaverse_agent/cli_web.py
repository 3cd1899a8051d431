"""``modaverse web``: serve the Gradio chat page (see :mod:`modaverse_agent.serving.web`)."""

from __future__ import annotations

from typing import Any

import click

from .cli_model import ModelChoice, load_model, model_options, timeout_option
from .cli_output import FiniteFloat, echo, fail
from .cli_zoo import load_zoo, zoo_config_option


@click.command()
@model_options
@click.option("--meta-response", "plan", help="Answer every message with this meta-response JSON (no model; a demo).")
@click.option("--use", multiple=True, help="TASK=GENERATOR for this page (repeatable; the page can switch too).")
@zoo_config_option
@click.option(
    "--output-dir",
    "-o",
    default="outputs",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Every file the page writes goes here: generated media, conversations, uploads (Gradio's cache).",
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on. 0.0.0.0 opens the page, and the files in the output directory, to your network.",
)
@click.option("--port", type=click.IntRange(1, 65535), default=7860, show_default=True, help="Port to listen on.")
@timeout_option
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Answers computed at once across every tab (the others wait in a queue that shows their position).",
)
@click.option(
    "--max-upload-mb",
    type=FiniteFloat(0, inclusive=False),
    default=50.0,
    show_default=True,
    help="Largest file a person may attach, in MB (at most 200).",
)
def web(
    model: ModelChoice,
    plan: str | None,
    use: tuple[str, ...],
    zoo_config: str | None,
    output_dir: str,
    host: str,
    port: int,
    timeout: float,
    concurrency: int,
    max_upload_mb: float,
) -> None:
    """Serve a multimodal chat page (Gradio) on http://HOST:PORT: attach media, get text, images, audio, video."""
    from .media import MAX_FILE_BYTES

    max_bytes = int(max_upload_mb * 1024 * 1024)
    if not 0 < max_bytes <= MAX_FILE_BYTES:
        fail(f"--max-upload-mb must be above 0 and at most {MAX_FILE_BYTES // (1024 * 1024)}")
    if plan is not None and model.directory is not None:
        fail("pass either --model or --meta-response, not both")
    try:
        from .serving.web import build_web_app, launch_web
    except ImportError as e:
        fail(f"the web page needs gradio ({e}); install it: pip install 'modaverse-agent[web]'")
    from .agent import ModaVerseAgent

    served = load_zoo(zoo_config, use)  # a bad config fails here, before the model takes its time to load
    llm: Any
    if plan is not None:
        from .testing import FixedPlanLLM

        llm = FixedPlanLLM(plan)
    else:
        llm = load_model(model)
    agent = ModaVerseAgent(llm, served, output_dir=output_dir, timeout=timeout)
    try:
        page = build_web_app(agent, concurrency=concurrency, max_upload_bytes=max_bytes)
    except OSError as e:
        fail(f"cannot use the output directory {output_dir}: {e.strerror or e}; choose another with --output-dir")
    echo(f"files go to {agent.output_dir.resolve()}; press Ctrl-C to stop", err=True)
    try:
        launch_web(page, host=host, port=port, block=True)
    except OSError as e:
        fail(f"cannot serve on {host}:{port}: {e}; choose another --port or --host")
