"""The zoo as LangChain tools, content blocks -> media, and the agent as a Runnable."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import pytest
from langchain_core.messages import HumanMessage, ToolCall, ToolMessage
from langchain_core.runnables import RunnableLambda
from PIL import Image

from modaverse_agent.agent import FinalResponse, ModaVerseAgent
from modaverse_agent.artifacts import Artifact
from modaverse_agent.chat_content import content_to_parts
from modaverse_agent.errors import MediaError
from modaverse_agent.generators import GenerationRequest, Generator
from modaverse_agent.response import ResponseDone, TextDelta
from modaverse_agent.runnable import AgentRunnable
from modaverse_agent.testing import ScriptedLLM
from modaverse_agent.tools import zoo_tools
from modaverse_agent.zoo import Zoo


def test_one_tool_per_task_with_the_invocation_arguments(echo_zoo: Zoo, tmp_path: Path) -> None:
    tools = {t.name: t for t in zoo_tools(echo_zoo, output_dir=tmp_path)}
    assert sorted(tools) == echo_zoo.tasks()
    assert set(tools["text-to-image"].args) == {"prompt", "args"}
    assert set(tools["image-editing"].args) == {"prompt", "args", "inputs"}


def test_tool_call_returns_content_and_artifact(echo_zoo: Zoo, tmp_path: Path) -> None:
    tool = next(t for t in zoo_tools(echo_zoo, output_dir=tmp_path) if t.name == "text-to-image")
    msg = tool.invoke(
        ToolCall(name="text-to-image", args={"prompt": "a kite", "args": {"width": 16}}, id="c1", type="tool_call")
    )
    assert msg.tool_call_id == "c1" and "echo-image" in msg.content
    [artifact] = msg.artifact
    assert Image.open(artifact.path).size == (16, 64) and str(artifact.path) in msg.content


def test_tool_resolves_media_ids_and_paths(echo_zoo: Zoo, tmp_path: Path, png_file: Path) -> None:
    from modaverse_agent.media import load_media

    tools = zoo_tools(echo_zoo, output_dir=tmp_path, media={"image_1": load_media(png_file)})
    edit = next(t for t in tools if t.name == "image-editing")
    by_id = edit.invoke(
        ToolCall(name="image-editing", args={"prompt": "x", "inputs": ["image_1"]}, id="a", type="tool_call")
    )
    by_path = edit.invoke(
        ToolCall(name="image-editing", args={"prompt": "x", "inputs": [str(png_file)]}, id="b", type="tool_call")
    )
    assert by_id.artifact[0].path.read_bytes() != b"" and by_path.artifact
    bad = edit.invoke(
        ToolCall(name="image-editing", args={"prompt": "x", "inputs": ["image_9"]}, id="c", type="tool_call")
    )
    assert "neither a given media id" in bad.content and bad.status == "error"


def test_tool_errors_come_back_as_content(echo_zoo: Zoo, tmp_path: Path) -> None:
    tool = next(t for t in zoo_tools(echo_zoo, output_dir=tmp_path) if t.name == "text-to-image")
    out = tool.invoke(
        ToolCall(name="text-to-image", args={"prompt": "", "args": {"width": 4}}, id="x", type="tool_call")
    )
    assert out.status == "error" and "invalid arguments" in out.content


def test_content_blocks_to_media(png_file: Path) -> None:
    b64 = base64.b64encode(png_file.read_bytes()).decode()
    text, media = content_to_parts(
        [
            {"type": "text", "text": "edit these"},
            {"type": "image", "url": str(png_file)},
            {"type": "image", "base64": b64, "mime_type": "image/png"},
            {"type": "image", "source_type": "base64", "data": b64, "mime_type": "image/png"},
            {"type": "image", "source_type": "url", "url": f"file://{png_file}"},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{b64}"}},
            {"type": "file", "file_id": "f1"},
        ],
        resolver=lambda fid: png_file,
    )
    assert text == "edit these" and [m.modality for m in media] == ["image"] * 6
    with pytest.raises(MediaError, match="remote URL"):
        content_to_parts([{"type": "image", "url": "https://example.com/a.png"}])
    with pytest.raises(MediaError, match="resolver"):
        content_to_parts([{"type": "file", "file_id": "f1"}])
    with pytest.raises(MediaError, match="unsupported content block"):
        content_to_parts([{"type": "thinking", "thinking": "hmm"}])
    fetched = content_to_parts([{"type": "image", "url": "https://x/a.png"}], fetcher=lambda u: png_file.read_bytes())
    assert fetched[1][0].modality == "image"


def test_agent_runnable_invoke_batch_stream_async_and_lcel(echo_zoo: Zoo, tmp_path: Path, png_file: Path) -> None:
    llm = ScriptedLLM()
    agent = ModaVerseAgent(llm, echo_zoo, output_dir=tmp_path)
    runnable = AgentRunnable(agent)
    plan = {"text": "ok", "invocations": [{"task": "text-to-speech", "prompt": "hi there"}]}
    for _ in range(6):
        llm.enqueue(plan)
    assert runnable.invoke("say hi").artifacts[0].task == "text-to-speech"
    assert all(isinstance(r, FinalResponse) and r.ok for r in runnable.batch(["a", "b"]))
    events = list(runnable.stream("c"))
    assert [e.text for e in events if isinstance(e, TextDelta)] == ["ok"]
    assert isinstance(events[-1], ResponseDone) and events[-1].response.ok and events[-1].response.text == "ok"
    assert asyncio.run(runnable.ainvoke({"instruction": "d", "media": [str(png_file)]})).media[0][0] == "image_1"
    msg = HumanMessage(content=[{"type": "text", "text": "e"}, {"type": "image", "url": str(png_file)}])
    assert runnable.invoke(msg).media[0][1].modality == "image"
    assert llm.history[-1].instruction == "e"
    chain = (
        RunnableLambda(lambda q: q.upper()) | runnable | RunnableLambda(lambda r: [str(a.path) for a in r.artifacts])
    )
    llm.enqueue(plan)
    assert chain.invoke("shout").__len__() == 1 and llm.history[-1].instruction == "SHOUT"


def test_tool_refuses_media_of_the_wrong_modality(echo_zoo: Zoo, tmp_path: Path) -> None:
    import wave

    wav = tmp_path / "a.wav"
    with wave.open(str(wav), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\x00\x00" * 80)
    edit = next(t for t in zoo_tools(echo_zoo, output_dir=tmp_path) if t.name == "image-editing")
    out = edit.invoke(
        ToolCall(name="image-editing", args={"prompt": "x", "inputs": [str(wav)]}, id="w", type="tool_call")
    )
    assert out.status == "error" and "accepts ['image'], not ['a.wav']" in out.content


class _Placeholder(Generator):
    """An untrained generator (as the tiny diffusers pipelines are) that writes one PNG."""

    name = "placeholder-image"
    task = "text-to-image"
    modality = "image"
    description = "Writes a placeholder picture."
    priority = 9

    @property
    def untrained(self) -> bool:
        return True

    def real_weights_hint(self) -> str:
        return "modaverse zoo set text-to-image real -o model=/models/sd15"

    def run(self, request: GenerationRequest) -> list[Artifact]:
        return [self.artifact(request, request.output.write_bytes("p", ".png", b"png"))]


class _Outside(_Placeholder):
    """Returns its own file and /etc/passwd."""

    name = "outside-image"
    priority = 10

    @property
    def untrained(self) -> bool:
        return False

    def run(self, request: GenerationRequest) -> list[Artifact]:
        return [*super().run(request), Artifact("image", Path("/etc/passwd"), "image/png")]


def _call(tool_name: str, zoo: Zoo, tmp_path: Path) -> ToolMessage:
    tool = next(t for t in zoo_tools(zoo, output_dir=tmp_path) if t.name == tool_name)
    return tool.invoke(ToolCall(name=tool_name, args={"prompt": "a kite"}, id="c1", type="tool_call"))


def test_a_tool_result_says_when_its_output_is_a_placeholder(echo_zoo: Zoo, tmp_path: Path) -> None:
    echo_zoo.add(_Placeholder())
    msg = _call("text-to-image", echo_zoo, tmp_path)
    assert "placeholder" in msg.content and "modaverse zoo set text-to-image real" in msg.content
    assert len(msg.artifact) == 1


def test_a_tool_drops_paths_outside_its_output_dir_and_keeps_the_rest(echo_zoo: Zoo, tmp_path: Path) -> None:
    echo_zoo.add(_Outside())
    msg = _call("text-to-image", echo_zoo, tmp_path)
    assert [a.path.parent for a in msg.artifact] == [tmp_path] and "/etc/passwd" in msg.content
    assert msg.status != "error" and "placeholder" not in msg.content
