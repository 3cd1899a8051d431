"""``modaverse web``: a Gradio multimodal chat page over one :class:`Conversation` per browser tab.

:func:`build_web_app` makes the page (``gr.Blocks``) for an agent (or a function that makes one on first
use); :func:`launch_web` serves it on its own, :func:`mount_web` mounts it into a FastAPI app (what
``modaverse serve --ui`` does). The page: a chat where images, audio and video can be attached (upload,
drag and drop, microphone; webcam in the Camera panel), the answer streams, generated files play inline,
each answer has a collapsible details panel; a settings panel (temperature, answer budget, seed,
constrained decoding), the zoo (which generator serves each task, a switch per task for this tab's next
answers), stop, clear and download conversation.

Offline and private: analytics are off, every asset is served by this process (tested with the
network closed), and Gradio's upload/cache folder is ``<output_dir>/.gradio`` (``GRADIO_TEMP_DIR``), so
nothing is written outside the output directory. Several tabs share one queue with a visible position.
"""

from __future__ import annotations

import math
import os
import sys
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..agent import ModaVerseAgent
from ..diffusion import SEED_MAX
from ..media import MAX_FILE_BYTES
from ..zoo import Zoo
from .web_render import Message, TurnSettings, waiting_messages
from .web_session import AgentFactory, AgentSource, WebSession, constrained_applies
from .web_zoo import zoo_hints, zoo_markdown, zoo_switches

#: Uploads larger than this are refused (by Gradio before they are sent, and again when loaded).
DEFAULT_MAX_UPLOAD_BYTES = 50 * 1024 * 1024
#: Answers computed at once across every tab (the engine decodes one at a time anyway).
DEFAULT_CONCURRENCY = 2
#: Events waiting in the queue at most (more tabs are told the queue is full).
QUEUE_MAX_SIZE = 64
CSS = """
#chat { flex-grow: 1; }
#prompt textarea { font-size: 1.05em; }
.modaverse-footnote { opacity: 0.75; font-size: 0.9em; }
/* Gradio's "share to Hugging Face" button on chat media: this page stays on this machine */
#chat button[aria-label="Share"] { display: none; }
"""


@dataclass(frozen=True)
class WebOptions:
    """How a page built by :func:`build_web_app` must be served (used by :func:`launch_web`/:func:`mount_web`)."""

    output_dir: Path
    max_upload_bytes: int


_OPTIONS: weakref.WeakKeyDictionary[Any, WebOptions] = weakref.WeakKeyDictionary()


def prepare_environment(output_dir: str | Path) -> Path:
    """Keep Gradio offline and inside ``output_dir``: analytics off, its upload/cache folder under it.

    Sets ``GRADIO_ANALYTICS_ENABLED=False`` and ``GRADIO_TEMP_DIR=<output_dir>/.gradio`` for this process
    (Gradio reads them when a page and its server are made); returns the output directory, resolved.
    """
    out = Path(output_dir).expanduser().resolve()
    cache = out / ".gradio"
    cache.mkdir(parents=True, exist_ok=True)
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    os.environ["GRADIO_TEMP_DIR"] = str(cache)
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    # a few of Gradio's routes copy GRADIO_TEMP_DIR when they are imported: if Gradio was imported
    # before this, point those copies here too (its server makes a folder there at start)
    for name in ("gradio.route_utils", "gradio.routes"):
        module = sys.modules.get(name)
        if module is not None and hasattr(module, "DEFAULT_TEMP_DIR"):
            module.DEFAULT_TEMP_DIR = str(cache)
    return out


def _header(source: AgentSource, title: str) -> str:
    if not source.ready:
        return f"## {title}\nAny-to-any chat: attach images, audio or video, ask for pictures, sounds, speech or clips."
    agent = source.get()
    name = str(getattr(agent.llm, "model_name", "") or type(agent.llm).__name__)
    name = Path(name).name if "/" in name or "\\" in name else name  # a base LLM path: its file name says enough
    from ..llm_io import sees_media

    sight = (
        ""
        if sees_media(agent.llm)
        else " · this model has **no media encoder**: it knows a file is attached, not what is in it"
    )
    return (
        f"## {title}\nAny-to-any chat: attach images, audio or video, ask for pictures, sounds, speech or clips.\n\n"
        f"<span class='modaverse-footnote'>model: `{name}`{sight}</span>"
    )


def _whole(value: Any, what: str, low: int, high: int | None, blank: str) -> int | None:
    """A whole number from a settings box (blank: None); ``gr.Error`` saying what to type otherwise."""
    import gradio as gr

    text = str(value if value is not None else "").strip()
    if not text:
        return None
    bound = f"from {low} to {high}" if high is not None else f"of at least {low}"
    try:
        number = int(text)
    except ValueError:
        raise gr.Error(f"{what} must be a whole number {bound}, or blank for {blank}.") from None
    if number < low or (high is not None and number > high):
        raise gr.Error(f"{what} must be a whole number {bound}, or blank for {blank}.")
    return number


def parse_settings(temperature: Any, budget: Any, seed: Any, constrained: Any) -> TurnSettings:
    """The settings panel's values as :class:`TurnSettings`; a bad value raises ``gr.Error`` saying what to do."""
    import gradio as gr

    try:
        t = float(temperature if temperature is not None else 0.0)
    except (TypeError, ValueError):
        raise gr.Error("Temperature must be a number from 0 to 2.") from None
    if not math.isfinite(t) or not 0 <= t <= 2:
        raise gr.Error("Temperature must be a number from 0 to 2.")
    n = _whole(budget, "The answer budget", 1, None, "the model's default")
    s = _whole(seed, "The seed", 0, SEED_MAX, "a random one")
    return TurnSettings(temperature=t, max_new_tokens=n, seed=s, constrained=bool(constrained))


def build_web_app(
    agent_or_factory: ModaVerseAgent | AgentFactory,
    *,
    zoo: Zoo | None = None,
    output_dir: str | Path | None = None,
    title: str = "ModaVerse",
    concurrency: int = DEFAULT_CONCURRENCY,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
) -> Any:
    """The chat page (a ``gr.Blocks``, queue enabled) over ``agent_or_factory``.

    ``agent_or_factory``: the agent every tab talks to (its LLM and generators are shared; each tab has
    its own conversation and zoo choices), or a function that returns it, called once on the first
    message (the page is up while the model loads). ``zoo``: the generators shown in the zoo panel
    (default: the agent's; needed up front with a factory, else the factory runs now). ``output_dir``:
    where every file goes, Gradio's included (default: the agent's). Serve the result with
    :func:`launch_web` or :func:`mount_web`.
    """
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, got {concurrency}")
    if not 0 < max_upload_bytes <= MAX_FILE_BYTES:
        raise ValueError(f"max_upload_bytes must be from 1 to {MAX_FILE_BYTES}, got {max_upload_bytes}")
    source = AgentSource(agent_or_factory)
    if zoo is None:
        zoo = source.get().zoo
    if output_dir is None:
        output_dir = source.get().output_dir if source.ready else "outputs"
    out = prepare_environment(output_dir)

    import gradio as gr

    constrained_ok = constrained_applies(source.get().llm) if source.ready else True

    def session_of(session: WebSession | None) -> WebSession:
        return session if session is not None else WebSession(source, zoo, out, max_upload_bytes=max_upload_bytes)

    with gr.Blocks(title=title, analytics_enabled=False) as demo:
        state = gr.State(None)
        pending = gr.State(None)
        header = gr.Markdown(_header(source, title), elem_id="header")
        with gr.Row(equal_height=False):
            with gr.Column(scale=3):
                chatbot = gr.Chatbot(
                    elem_id="chat",
                    height=600,
                    buttons=["copy", "copy_all"],
                    feedback_options=None,
                    group_consecutive_messages=False,
                    placeholder="Attach a photo, a sound or a clip, and ask for an image, audio, speech or video.",
                    label="Conversation",
                )
                box = gr.MultimodalTextbox(
                    elem_id="prompt",
                    sources=["upload", "microphone"],
                    file_count="multiple",
                    placeholder="Type a request; attach or drop images, audio or video…",
                    show_label=False,
                    autofocus=True,
                )
                with gr.Row():
                    stop = gr.Button("Stop", elem_id="stop", variant="stop", size="sm")
                    clear = gr.Button("Clear", elem_id="clear", size="sm")
                    download = gr.DownloadButton(
                        "Download conversation", elem_id="download", interactive=False, size="sm"
                    )
                with gr.Accordion("Camera: attach a photo or a clip to the next message", open=False), gr.Row():
                    cam_image = gr.Image(sources=["webcam"], type="filepath", label="Photo", elem_id="cam-image")
                    cam_video = gr.Video(sources=["webcam"], label="Clip", elem_id="cam-video")
            with gr.Column(scale=1, min_width=280):
                with gr.Accordion("Settings", open=True):
                    temperature = gr.Slider(0, 2, value=0, step=0.05, label="Temperature", info="0: greedy")
                    budget = gr.Textbox(
                        "",
                        label="Answer budget (max new tokens)",
                        placeholder="the model's default",
                        elem_id="budget",
                    )
                    seed = gr.Textbox("", label="Seed", placeholder="random", elem_id="seed")
                    constrained = gr.Checkbox(
                        value=constrained_ok,
                        interactive=constrained_ok,
                        label="Constrained decoding",
                        info="keep every answer valid for the zoo's schema"
                        if constrained_ok
                        else "this model does not constrain its answers",
                        elem_id="constrained",
                    )
                with gr.Accordion("Generators (zoo)", open=True, elem_id="zoo"):
                    zoo_md = gr.Markdown(zoo_markdown(zoo), elem_id="zoo-table")
                    switches = zoo_switches(zoo)
                hints = zoo_hints(zoo)
                if hints:
                    with gr.Accordion("Real weights for the untrained generators", open=False):
                        gr.Markdown(hints, elem_id="zoo-hints")

        settings = [temperature, budget, seed, constrained]

        def take(
            value: dict[str, Any] | None, session: WebSession | None, photo: Any, clip: Any, *values: Any
        ) -> tuple[Any, ...]:
            turn_settings = parse_settings(*values)  # a bad setting stops here, the message stays in the box
            value = value or {}
            text = str(value.get("text") or "")
            files = [str(f) for f in value.get("files") or []]
            files += [str(f) for f in (photo, clip) if f]
            session = session_of(session)
            return (
                gr.MultimodalTextbox(value=None, interactive=False),
                (text, files, turn_settings),
                session,
                None,
                None,
                [*session.snapshot(), *waiting_messages(text, files)],  # shown while the turn waits its turn
            )

        def respond(
            taken: tuple[str, list[str], TurnSettings] | None, session: WebSession
        ) -> Iterator[tuple[list[Message], Any]]:
            text, files, turn_settings = taken or ("", [], TurnSettings())
            for messages in session.turn(text, files, turn_settings):
                yield messages, gr.skip()
            saved = session.saved
            yield session.snapshot(), gr.DownloadButton(value=str(saved) if saved else None, interactive=bool(saved))

        def on_stop(session: WebSession | None) -> tuple[list[Message], Any]:
            messages = session.stop() if session is not None else []
            return messages, gr.MultimodalTextbox(interactive=True)

        def on_clear(session: WebSession | None) -> tuple[list[Message], Any, Any]:
            if session is not None:
                session.clear()
            return [], gr.DownloadButton(value=None, interactive=False), gr.MultimodalTextbox(interactive=True)

        taken = box.submit(
            take,
            [box, state, cam_image, cam_video, *settings],
            [box, pending, state, cam_image, cam_video, chatbot],
            queue=False,
        )
        answer = taken.success(
            respond, [pending, state], [chatbot, download], concurrency_id="turn", concurrency_limit=concurrency
        )
        answer.then(lambda: gr.MultimodalTextbox(interactive=True), None, box, queue=False)
        stop.click(on_stop, [state], [chatbot, box], cancels=[answer], queue=False)
        clear.click(on_clear, [state], [chatbot, download, box], cancels=[answer], queue=False)

        for task, dropdown in switches.items():

            def switch(name: str, session: WebSession | None, task: str = task) -> tuple[str, WebSession]:
                session = session_of(session)
                try:
                    gr.Info(session.choose(task, name))
                except Exception as e:
                    raise gr.Error(str(e)) from None
                return zoo_markdown(session.zoo), session

            dropdown.change(switch, [dropdown, state], [zoo_md, state], queue=False)

        if not source.ready:
            demo.load(lambda: _header(source, title), None, header, queue=False)

    demo.queue(default_concurrency_limit=concurrency, max_size=QUEUE_MAX_SIZE)
    _OPTIONS[demo] = WebOptions(out, max_upload_bytes)
    return demo


def _options(blocks: Any) -> WebOptions:
    try:
        return _OPTIONS[blocks]
    except (KeyError, TypeError):  # TypeError: not even weak-referenceable, so not a page
        raise ValueError(f"serve a page made by build_web_app(), not {type(blocks).__name__}") from None


def launch_web(
    blocks: Any, *, host: str = "127.0.0.1", port: int = 7860, block: bool = True, quiet: bool = False
) -> Any:
    """Serve ``blocks`` (from :func:`build_web_app`) on ``http://host:port``; returns Gradio's ``(app, url, _)``.

    ``block=False`` returns at once (the server runs in a thread; ``blocks.close()`` stops it).
    """
    opts = _options(blocks)
    return blocks.launch(
        server_name=host,
        server_port=port,
        prevent_thread_lock=not block,
        quiet=quiet,
        share=False,
        inbrowser=False,
        show_error=True,
        footer_links=[],
        run_history=False,
        allowed_paths=[str(opts.output_dir)],
        max_file_size=opts.max_upload_bytes,
        ssr_mode=False,
        pwa=False,
        mcp_server=False,
        css=CSS,
    )


def mount_web(fastapi_app: Any, blocks: Any, path: str = "/ui") -> Any:
    """Mount ``blocks`` (from :func:`build_web_app`) into ``fastapi_app`` at ``path``; returns the app.

    For ``modaverse serve --ui``: ``mount_web(app, build_web_app(agent), "/ui")`` before uvicorn starts.
    """
    import gradio as gr

    opts = _options(blocks)
    return gr.mount_gradio_app(
        fastapi_app,
        blocks,
        path=path,
        footer_links=[],
        run_history=False,
        allowed_paths=[str(opts.output_dir)],
        max_file_size=opts.max_upload_bytes,
        ssr_mode=False,
        pwa=False,
        mcp_server=False,
        show_error=True,
        css=CSS,
    )


__all__ = [
    "DEFAULT_MAX_UPLOAD_BYTES",
    "WebOptions",
    "build_web_app",
    "launch_web",
    "mount_web",
    "parse_settings",
    "prepare_environment",
]
