"""``modaverse serve``: the agent as an OpenAI-compatible HTTP server (see :mod:`modaverse_agent.serving.server`)."""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

import click

from .cli_model import ModelChoice, load_model, model_options, read_plan, timeout_option
from .cli_output import echo, fail
from .cli_zoo import load_zoo, zoo_config_option
from .diffusion import SEED_MAX

#: Engines that decode the rows of a batch one after another gain nothing from micro-batching.
_SERIAL_ENGINES = ("LlamaCppModel",)


def _listen(host: str, port: int) -> socket.socket:
    """A socket bound to ``host``:``port`` (port 0: any free port), or a clear error."""
    try:
        family, kind, proto, *_ = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        # proto IPPROTO_TCP (not 0) so that asyncio sets TCP_NODELAY on accepted connections (else ~40 ms a reply)
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as e:
        fail(f"cannot listen on {host}:{port}: {e.strerror or e}; choose another --host or --port")
    return sock


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: every interface).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="Port (0: any free one).")
@model_options
@click.option("--meta-response", "plan", help="Answer every request with this meta-response JSON (or @file): no model.")
@click.option("--model-name", default="modaverse", show_default=True, help="The model id clients see in /v1/models.")
@click.option("--use", multiple=True, help="TASK=GENERATOR for this server (repeatable).")
@zoo_config_option
@click.option(
    "--output-dir",
    "-o",
    default="outputs/serve",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Where generated files go (one folder per request); they are served from /v1/files.",
)
@timeout_option
@click.option("--seed", type=click.IntRange(0, SEED_MAX), default=None, help="Base seed of the generators.")
@click.option(
    "--api-key", envvar="MODAVERSE_API_KEY", help="Require `Authorization: Bearer KEY` (env MODAVERSE_API_KEY)."
)
@click.option(
    "--cors", multiple=True, metavar="ORIGIN", help="Allow browser pages from ORIGIN (repeatable; off by default)."
)
@click.option("--workers", type=click.IntRange(1, 256), default=8, show_default=True, help="Requests answered at once.")
@click.option(
    "--max-queue",
    type=click.IntRange(0),
    default=64,
    show_default=True,
    help="Requests that may wait; beyond that the server answers 429 with Retry-After.",
)
@click.option(
    "--max-batch",
    type=click.IntRange(1, 256),
    default=None,
    help="Decode up to this many concurrent answers together (default: 8; 1 on llama.cpp, which gains nothing).",
)
@click.option(
    "--max-body-bytes",
    type=click.IntRange(1024),
    default=64 * 1024 * 1024,
    show_default=True,
    help="Largest request body (attached media included); larger ones get 413.",
)
@click.option(
    "--allow-local-files", is_flag=True, help="Let requests attach files of this machine by path or file:// URL."
)
@click.option(
    "--public-url", help="The URL clients reach this server at, for file links (default: the request's host)."
)
@click.option("--ui", is_flag=True, help="Also serve the chat page (as `modaverse web`) at /ui/.")
@click.option(
    "--log-level",
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
    default="info",
    show_default=True,
    help="Server log level.",
)
def serve(
    host: str,
    port: int,
    model: ModelChoice,
    plan: str | None,
    model_name: str,
    use: tuple[str, ...],
    zoo_config: str | None,
    output_dir: str,
    timeout: float,
    seed: int | None,
    api_key: str | None,
    cors: tuple[str, ...],
    workers: int,
    max_queue: int,
    max_batch: int | None,
    max_body_bytes: int,
    allow_local_files: bool,
    public_url: str | None,
    ui: bool,
    log_level: str,
) -> None:
    """Serve the agent over HTTP with the OpenAI chat-completions API (POST /v1/chat/completions).

    Point any OpenAI client at http://HOST:PORT/v1. Answers carry the generated files as URLs; a request
    with `tools` gets tool calls back instead of running them.
    """
    import uvicorn

    from .agent import ModaVerseAgent
    from .serving.server import ServeOptions, create_app
    from .testing import FixedPlanLLM

    if plan is not None and model.directory is not None:
        fail("pass either --model or --meta-response, not both")
    if api_key is not None and not api_key.strip():
        fail("--api-key is empty; give a key or leave it out")
    sock = _listen(host, port)  # a taken port fails now, before a model takes its time to load
    zoo = load_zoo(zoo_config, use)
    llm: Any = FixedPlanLLM(read_plan(plan)) if plan is not None else load_model(model)
    if max_batch is None:
        max_batch = 1 if type(llm).__name__ in _SERIAL_ENGINES else 8
    agent = ModaVerseAgent(llm, zoo, output_dir=output_dir, timeout=timeout, seed=seed)
    options = ServeOptions(
        model_name=model_name,
        api_key=api_key,
        cors_origins=cors,
        workers=workers,
        max_queue=max_queue,
        max_body_bytes=max_body_bytes,
        allow_local_files=allow_local_files,
        max_batch=max_batch,
        public_url=public_url,
    )
    page = None
    if ui:  # before create_app: the page points Gradio's temp files into the output dir
        from .serving.web import build_web_app

        page = build_web_app(agent, output_dir=output_dir, title=model_name)
    app = create_app(agent, options)
    if page is not None:
        from .serving.web import mount_web

        app = mount_web(app, page, "/ui")
    bound = sock.getsockname()
    shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
    if not _is_loopback(host) and api_key is None:
        echo(f"warning: listening on {host} without --api-key: anyone who reaches this port can use it", err=True)
    echo(f"serving {model_name} on http://{shown}:{bound[1]}/v1 (Ctrl-C stops)", err=True)
    if page is not None:
        echo(f"chat page on http://{shown}:{bound[1]}/ui/", err=True)
    config = uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=5)
    uvicorn.Server(config).run(sockets=[sock])


__all__ = ["serve"]
