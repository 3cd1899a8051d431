"""The web page's sessions without a browser: a turn streams, files and notes show, bad uploads are reported,
stop ends an answer, zoo switches and constrained decoding are per tab, and the page mounts into FastAPI."""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import pytest

pytest.importorskip("gradio")

from modaverse_echo import EchoImage

from modaverse_agent.agent import ModaVerseAgent
from modaverse_agent.conversation import Conversation
from modaverse_agent.llm_io import Completion, LLMRequest, PieceStream
from modaverse_agent.serving.web_render import DETAILS_TITLE, TurnSettings
from modaverse_agent.serving.web_session import AgentSource, WebSession, constrained_applies
from modaverse_agent.zoo import Zoo

REPLIES = {
    "draw": ("Here is your picture.", "text-to-image"),
    "sound": ("Listen to this.", "text-to-audio"),
    "video": ("A short clip.", "text-to-video"),
    "slow": ("This answer takes its time " * 20, "text-to-image"),
}


class KeywordLLM:
    """Streams a meta-response picked by a keyword of the request, a few characters at a time."""

    output_format = "json"
    sees_media = False

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.requests: list[LLMRequest] = []

    def respond(self, request: LLMRequest) -> str:
        self.requests.append(request)
        for word, (text, task) in REPLIES.items():
            if word in request.instruction.lower():
                return json.dumps({"text": text, "invocations": [{"task": task, "prompt": request.instruction}]})
        return json.dumps({"text": "Hello! I can draw, play sounds and make videos.", "invocations": []})

    def stream(self, request: LLMRequest) -> PieceStream:
        raw = self.respond(request)
        delay = 0.05 if "slow" in request.instruction.lower() else self.delay

        def pieces() -> Iterator[str]:
            for i in range(0, len(raw), 3):
                time.sleep(delay)
                yield raw[i : i + 3]

        return PieceStream(pieces())


class FakeEngine(KeywordLLM):
    """A stand-in for a ModaVerse engine: ``options.constrained`` and ``complete``; records the schema asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.options = SimpleNamespace(constrained=True)

    def complete(self, request: LLMRequest) -> Completion:
        return Completion(self.respond(request))


class AltImage(EchoImage):
    """A second text-to-image generator, on "untrained" weights, to switch to."""

    name = "echo-image-alt"
    description = "The echo image generator under another name (untrained, for the zoo switch)."
    priority: ClassVar[int] = -200

    @property
    def untrained(self) -> bool:
        return True

    def real_weights_hint(self) -> str | None:
        return "modaverse zoo set text-to-image echo-image"


@pytest.fixture
def zoo(echo_zoo: Zoo) -> Zoo:
    return Zoo([*echo_zoo.generators, AltImage()])


def _session(llm: Any, zoo: Zoo, out: Path, max_upload: int = 1 << 20) -> WebSession:
    agent = ModaVerseAgent(llm, zoo, output_dir=out, timeout=30)
    return WebSession(AgentSource(agent), zoo, out, max_upload_bytes=max_upload)


def _run(session: WebSession, text: str, files: list[str] | None = None, **settings: Any) -> list[list[dict]]:
    return list(session.turn(text, files or [], TurnSettings(**settings)))


def _texts(messages: list[dict]) -> list[str]:
    return [m["content"] for m in messages if isinstance(m["content"], str)]


def _files(messages: list[dict], role: str = "assistant") -> list[dict]:
    return [m["content"] for m in messages if isinstance(m["content"], dict) and m["role"] == role]


def test_a_turn_streams_text_then_shows_the_file_notes_and_closed_details(
    zoo: Zoo, tmp_path: Path, png_file: Path
) -> None:
    session = _session(KeywordLLM(delay=0.03), zoo, tmp_path / "out")  # 7 pieces over ~0.2 s: several frames
    frames = _run(session, "please draw a cat", [str(png_file)], seed=7)
    first = frames[0]
    assert first[0] == {"role": "user", "content": "please draw a cat"}
    assert _files(first, "user") == [{"path": str(png_file), "mime_type": "image/png"}]
    answers = [next((t for t in _texts(f) if t.startswith("Here")), "") for f in frames]
    partial = [a for a in answers if a and a != "Here is your picture."]
    assert partial, "the answer text never showed partially: it did not stream"
    last = frames[-1]
    assert "Here is your picture." in _texts(last)
    [made] = _files(last)
    assert made["mime_type"] == "image/png" and Path(made["path"]).is_file()
    assert Path(made["path"]).is_relative_to(session.dir)
    assert any("no media encoder" in t and t.startswith("ℹ **Note:**") for t in _texts(last))
    details = last[-1]
    assert details["metadata"]["title"] == DETAILS_TITLE and details["metadata"]["status"] == "done"
    body = details["content"]
    assert "| 0 | text-to-image | echo-image | echo-image.png |" in body
    assert "seed 7" in body and '"task": "text-to-image"' in body and "first text" in body
    saved = json.loads((session.dir / "conversation.json").read_text())
    assert [t["role"] for t in saved["turns"]] == ["user", "assistant"] and session.saved is not None


def test_bad_uploads_are_named_and_the_rest_of_the_message_goes_on(zoo: Zoo, tmp_path: Path, png_file: Path) -> None:
    corrupt = tmp_path / "photo.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0" + b"\x00garbage" * 50)
    notes = tmp_path / "notes.txt"
    notes.write_text("just some words\n")
    big = tmp_path / "big.png"
    big.write_bytes(png_file.read_bytes() + b"\x00" * 5000)
    session = _session(KeywordLLM(), zoo, tmp_path / "out", max_upload=4000)
    last = _run(session, "draw a dog", [str(corrupt), str(notes), str(big), str(png_file)])[-1]
    [problem] = [t for t in _texts(last) if t.startswith("⚠ **Not attached**")]
    assert "`photo.jpg`" in problem and "`notes.txt`" in problem and "`big.png`" in problem
    assert "larger than" in problem or "bytes" in problem
    assert _files(last, "user") == [{"path": str(png_file), "mime_type": "image/png"}]
    assert "Here is your picture." in _texts(last) and len(_files(last)) == 1
    # only bad files and no text: nothing is sent, the message says why, and the next turn works
    before = len(session.conversation.turns) if session.conversation else 0
    only_bad = _run(session, "", [str(corrupt)])[-1]
    assert "`photo.jpg`" in _texts(only_bad)[-1] and len(session.conversation.turns) == before
    assert "Hello!" in _texts(_run(session, "hi")[-1])[-1]


def test_stop_ends_the_answer_before_any_generator_and_the_chat_goes_on(zoo: Zoo, tmp_path: Path) -> None:
    session = _session(KeywordLLM(), zoo, tmp_path / "out")
    frames = session.turn("a slow one, please", [], TurnSettings())
    shown = ""
    for frame in frames:
        shown = next((t for t in _texts(frame) if t.startswith("This answer")), "")
        if len(shown) > 10:
            break
    stopped = session.stop()
    assert any(t.startswith("**Stopped.**") for t in _texts(stopped))
    rest = list(frames)  # the page's generator ends right away
    assert len(rest) <= 1
    session._worker.join(5)  # the worker closes the stream at the next piece of text
    assert not session.busy
    assert not any((tmp_path / "out").rglob("*.png")), "a generator ran after stop"
    turns = session.conversation.turns  # the stopped turn keeps its text; the history still alternates
    assert [t.role for t in turns] == ["user", "assistant"] and any("stopped" in e for e in turns[-1].errors)
    assert turns[-1].text.startswith("This answer") and len(turns[-1].text) < len(REPLIES["slow"][0])
    last = _run(session, "draw again")[-1]
    assert "Here is your picture." in _texts(last) and len(_files(last)) == 1


def test_clear_forgets_the_conversation(zoo: Zoo, tmp_path: Path) -> None:
    session = _session(KeywordLLM(), zoo, tmp_path / "out")
    _run(session, "draw a cat")
    assert session.clear() == [] and session.snapshot() == [] and session.conversation is None
    llm = session.source.get().llm
    _run(session, "hello")
    assert llm.requests[-1].history == [] and [t.role for t in session.conversation.turns] == ["user", "assistant"]


def test_zoo_switches_are_per_tab_and_apply_to_the_next_answer(zoo: Zoo, tmp_path: Path) -> None:
    llm = KeywordLLM()
    agent = ModaVerseAgent(llm, zoo, output_dir=tmp_path / "out", timeout=30)
    source = AgentSource(agent)
    a = WebSession(source, zoo, tmp_path / "out", max_upload_bytes=1 << 20)
    b = WebSession(source, zoo, tmp_path / "out", max_upload_bytes=1 << 20)
    assert "untrained" in a.choose("text-to-image", "echo-image-alt")
    last_a = _run(a, "draw a boat")[-1]
    last_b = _run(b, "draw a boat")[-1]
    assert (
        Path(_files(last_a)[0]["path"]).name.startswith("echo-image")
        and "| echo-image-alt (untrained) |" in (last_a[-1]["content"])
    )
    assert any("echo-image-alt on untrained tiny weights" in t for t in _texts(last_a))
    assert "| echo-image |" in last_b[-1]["content"] and zoo.generator_for("text-to-image").name == "echo-image"
    with pytest.raises(Exception, match="serves"):
        a.choose("text-to-audio", "echo-image")


def test_constrained_decoding_off_is_per_turn_and_leaves_the_engine_alone(zoo: Zoo, tmp_path: Path) -> None:
    engine = FakeEngine()
    assert constrained_applies(engine) and not constrained_applies(KeywordLLM())
    session = _session(engine, zoo, tmp_path / "out")
    last = _run(session, "hello", constrained=False)[-1]
    assert engine.requests[-1].schema is None and engine.options.constrained is True
    assert "constrained decoding off" in last[-1]["content"]
    _run(session, "hello again", constrained=True)
    assert engine.requests[-1].schema is not None and "invocations" in json.dumps(engine.requests[-1].schema)


def test_a_factory_runs_once_on_the_first_message_and_its_failure_shows(zoo: Zoo, tmp_path: Path) -> None:
    calls: list[int] = []

    def factory() -> ModaVerseAgent:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("the model files are missing")
        return ModaVerseAgent(KeywordLLM(), zoo, output_dir=tmp_path / "out")

    source = AgentSource(factory)
    session = WebSession(source, zoo, tmp_path / "out", max_upload_bytes=1 << 20)
    frames = _run(session, "hello")
    assert any(t.startswith("loading the model") for t in _texts(frames[0]))
    assert "the model files are missing" in _texts(frames[-1])[-1]
    assert "Hello!" in _texts(_run(session, "hello")[-1])[-1] and len(calls) == 2
    _run(session, "hello")
    assert len(calls) == 2 and source.ready


def test_two_tabs_answer_at_the_same_time(zoo: Zoo, tmp_path: Path) -> None:
    llm = KeywordLLM(delay=0.005)
    source = AgentSource(ModaVerseAgent(llm, zoo, output_dir=tmp_path / "out", timeout=30))
    sessions = [WebSession(source, zoo, tmp_path / "out", max_upload_bytes=1 << 20) for _ in range(3)]
    results: dict[int, list[dict]] = {}

    def tab(n: int) -> None:
        results[n] = _run(sessions[n], f"draw tab {n}")[-1]

    threads = [threading.Thread(target=tab, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(results) == [0, 1, 2]
    for n, last in results.items():
        assert _texts(last)[0] == f"draw tab {n}" and len(_files(last)) == 1
    assert len({s.dir for s in sessions}) == 3


def test_settings_are_checked_with_a_message_that_says_what_to_type() -> None:
    import gradio as gr

    from modaverse_agent.serving.web import parse_settings

    assert parse_settings(0.7, " 64 ", "", True) == TurnSettings(0.7, 64, None, True)
    for bad, words in [((3, "", "", True), "Temperature"), ((0, "0", "", True), "answer budget"),
                       ((0, "lots", "", True), "answer budget"), ((0, "", "-1", True), "seed")]:  # fmt: skip
        with pytest.raises(gr.Error, match=words):
            parse_settings(*bad)


def test_the_page_mounts_into_fastapi_offline_and_keeps_gradio_files_in_the_output_dir(
    zoo: Zoo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from modaverse_agent.serving.web import build_web_app, mount_web

    for key in ("GRADIO_TEMP_DIR", "GRADIO_ANALYTICS_ENABLED", "HF_HUB_DISABLE_TELEMETRY"):
        monkeypatch.setenv(key, "unset")  # restored after the test: build_web_app sets them for the process
    out = tmp_path / "out"
    page = build_web_app(ModaVerseAgent(KeywordLLM(), zoo, output_dir=out))
    assert os.environ["GRADIO_TEMP_DIR"] == str((out / ".gradio").resolve())
    assert os.environ["GRADIO_ANALYTICS_ENABLED"] == "False" and page.analytics_enabled is False
    app = mount_web(FastAPI(), page, "/ui")
    with TestClient(app) as client:
        html = client.get("/ui/")
        assert html.status_code == 200 and "gradio" in html.text.lower()
        config = client.get("/ui/config").json()
        ids = {c.get("props", {}).get("elem_id") for c in config["components"]}
        assert {"chat", "prompt", "stop", "clear", "download", "zoo-text-to-image"} <= ids
        fetched = re.findall(r"""(?:src|href)\s*=\s*["']?(https?:)?//""", html.text, flags=re.I)
        assert not [f for f in fetched if f], "the page loads something from another host"
    with pytest.raises(ValueError, match="build_web_app"):
        mount_web(FastAPI(), object(), "/ui")
    calls: list[int] = []

    def factory() -> ModaVerseAgent:
        calls.append(1)
        return ModaVerseAgent(KeywordLLM(), zoo, output_dir=out)

    lazy = mount_web(FastAPI(), build_web_app(factory, zoo=zoo, output_dir=out), "/ui")
    with TestClient(lazy) as client:
        assert client.get("/ui/").status_code == 200 and client.get("/ui/config").status_code == 200
    assert calls == []  # the model loads on the first message, not when the page is built or opened


def test_conversation_download_is_the_chat_json(zoo: Zoo, tmp_path: Path) -> None:
    session = _session(KeywordLLM(), zoo, tmp_path / "out")
    _run(session, "draw a cat")
    loaded = Conversation.load(session.saved, session.source.get())
    assert [t.text for t in loaded.turns] == ["draw a cat", "Here is your picture."]
    assert [r.origin for r in loaded.records] == ["generated"]


def test_the_web_command_checks_its_options_before_loading_anything() -> None:
    from click.testing import CliRunner

    from modaverse_agent.cli import cli

    runner = CliRunner()
    shown = runner.invoke(cli, ["web", "--help"])
    assert shown.exit_code == 0
    for option in ("--model", "--port", "--host", "--concurrency", "--max-upload-mb", "--output-dir", "--use"):
        assert option in shown.output
    too_big = runner.invoke(cli, ["web", "--max-upload-mb", "500"])
    assert too_big.exit_code == 2 and "--max-upload-mb" in too_big.output
    both = runner.invoke(cli, ["web", "--meta-response", "{}", "--model", "x"])
    assert both.exit_code == 2 and "not both" in both.output
