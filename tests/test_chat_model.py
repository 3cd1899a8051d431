"""ChatModaVerse over a scripted backend: content blocks in, tool calls out, tool loop ends, bind_tools."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.tools import tool
from pydantic import BaseModel

from modaverse_agent.agent import Completion, LLMRequest
from modaverse_agent.chat_model import ChatModaVerse
from modaverse_agent.testing import ScriptedLLM, StreamingScriptedLLM
from modaverse_agent.zoo import Zoo

IMAGE_PLAN = {"text": "Here it is.", "invocations": [{"task": "text-to-image", "prompt": "a green apple"}]}


@pytest.fixture
def chat(echo_zoo: Zoo, llm: ScriptedLLM) -> ChatModaVerse:
    return ChatModaVerse(backend=llm, zoo=echo_zoo)


def test_tool_calls_mirror_the_meta_response(chat: ChatModaVerse, llm: ScriptedLLM) -> None:
    llm.enqueue(IMAGE_PLAN)
    msg = chat.invoke("draw a green apple")
    assert msg.content == "Here it is."
    [call] = msg.tool_calls
    assert call["name"] == "text-to-image" and call["args"] == {
        "prompt": "a green apple",
        "args": {},
    }  # no `inputs`: the task takes no media
    assert call["id"].startswith("call_")
    assert msg.response_metadata["meta_response"] == json.loads(
        json.dumps(
            {
                "text": "Here it is.",
                "invocations": [{"task": "text-to-image", "prompt": "a green apple", "inputs": [], "args": {}}],
            }
        )
    )
    assert msg.usage_metadata is not None and msg.invalid_tool_calls == []


def test_invalid_output_goes_to_invalid_tool_calls(chat: ChatModaVerse, llm: ScriptedLLM) -> None:
    llm.enqueue('{"text": "hm", "invocations": [{"task": "text-to-smell", "prompt": "roses"}]}')
    msg = chat.invoke("smell")
    assert msg.tool_calls == [] and msg.content == "hm"
    [bad] = msg.invalid_tool_calls
    assert "unknown task 'text-to-smell'" in bad["error"] and "roses" in bad["args"]
    llm.enqueue("not json at all")
    assert "no JSON object" in chat.invoke("x").invalid_tool_calls[0]["error"]


def test_media_blocks_reach_the_model_with_ids(
    chat: ChatModaVerse, llm: ScriptedLLM, png_file: Path, tmp_path: Path
) -> None:
    import wave

    wav = tmp_path / "s.wav"
    with wave.open(str(wav), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\x01\x00" * 800)
    llm.enqueue({"text": "ok", "invocations": [{"task": "image-editing", "prompt": "greener", "inputs": ["image_1"]}]})
    msg = chat.invoke(
        [
            HumanMessage(
                content=[
                    {"type": "text", "text": "make the apple green"},
                    {"type": "image", "url": str(png_file)},
                    {"type": "audio", "url": str(wav), "mime_type": "audio/wav"},
                ]
            )
        ]
    )
    req = llm.history[0]
    assert [(i, m.modality, m.data) for i, m in req.media] == [
        ("image_1", "image", png_file.read_bytes()),
        ("audio_1", "audio", wav.read_bytes()),
    ]
    assert req.instruction == "make the apple green"
    assert msg.tool_calls[0]["args"]["inputs"] == ["image_1"]


def test_system_history_and_params_reach_the_backend(chat: ChatModaVerse, llm: ScriptedLLM) -> None:
    llm.enqueue({"text": "Paris.", "invocations": []})
    chat.invoke(
        [SystemMessage("Be brief."), HumanMessage("hi"), AIMessage("hello"), HumanMessage("capital of France?")],
        temperature=0.7,
        max_tokens=20,
        stop=["###"],
    )
    req = llm.history[0]
    assert req.system == "Be brief." and req.instruction == "capital of France?"
    assert [(t.role, t.text) for t in req.history] == [
        ("user", "hi"),
        ("assistant", '{"text": "hello", "invocations": []}'),
    ]
    # stop strings cut the answer text, not the raw JSON: the model decodes its whole meta-response
    assert (req.params.temperature, req.params.max_new_tokens, req.params.stop) == (0.7, 20, ())


def test_after_tool_results_the_model_answers_in_text(chat: ChatModaVerse, llm: ScriptedLLM) -> None:
    llm.enqueue({"text": "Done: see the file.", "invocations": []})
    call = {"name": "text-to-image", "args": {"prompt": "a kite", "inputs": [], "args": {}}, "id": "c1"}
    msg = chat.invoke(
        [
            HumanMessage("draw a kite"),
            AIMessage("", tool_calls=[call]),
            ToolMessage("made image /tmp/k.png", tool_call_id="c1", name="text-to-image"),
        ]
    )
    req = llm.history[0]
    assert req.schema["properties"]["invocations"]["maxItems"] == 0 and req.tasks == []
    assert req.history[-1].role == "tool" and "/tmp/k.png" in req.history[-1].text
    assert msg.tool_calls == [] and msg.content == "Done: see the file."


def test_bind_tools_restricts_the_schema(chat: ChatModaVerse, llm: ScriptedLLM, echo_zoo: Zoo) -> None:
    from modaverse_agent.tools import zoo_tools

    @tool
    def get_weather(city: str) -> str:
        """Look up the weather of a city."""
        return "sunny"

    image_tool = next(t for t in zoo_tools(echo_zoo) if t.name == "text-to-image")
    bound = chat.bind_tools([image_tool, get_weather])
    llm.enqueue({"text": "", "invocations": [{"task": "get_weather", "args": {"city": "Oslo"}}]})
    msg = bound.invoke("weather in Oslo?")
    tasks = [
        s["properties"]["task"]["const"] for s in llm.history[0].schema["properties"]["invocations"]["items"]["anyOf"]
    ]
    assert tasks == ["get_weather", "text-to-image"]
    assert msg.tool_calls[0]["name"] == "get_weather" and msg.tool_calls[0]["args"] == {"city": "Oslo"}
    llm.enqueue(IMAGE_PLAN)
    chat.bind_tools([image_tool], tool_choice="any").invoke("x")
    assert llm.history[-1].schema["properties"]["invocations"]["minItems"] == 1


def test_with_structured_output(chat: ChatModaVerse, llm: ScriptedLLM) -> None:
    class Person(BaseModel):
        name: str
        age: int

    llm.enqueue({"text": "", "invocations": [{"task": "Person", "args": {"name": "Ada", "age": 36}}]})
    assert chat.with_structured_output(Person).invoke("who?") == Person(name="Ada", age=36)


def test_stream_aggregates_to_the_invoke_message(chat: ChatModaVerse, echo_zoo: Zoo) -> None:
    streaming = ChatModaVerse(backend=StreamingScriptedLLM(IMAGE_PLAN, piece=7), zoo=echo_zoo)
    chunks = list(streaming.stream("draw"))
    assert len(chunks) > 3 and "".join(c.additional_kwargs.get("raw_delta", "") for c in chunks) == json.dumps(
        IMAGE_PLAN
    )
    total = chunks[0]
    for c in chunks[1:]:
        total += c
    assert total.content == "Here it is." and total.tool_calls[0]["args"]["prompt"] == "a green apple"
    streamed = [str(c.content) for c in chunks[:-1] if c.content]
    assert len(streamed) >= 2 and "".join(streamed) == "Here it is."  # the text arrives as it is decoded
    assert chunks[-1].content == "" and chunks[-1].tool_call_chunks  # the last chunk: calls and usage


def test_usage_comes_from_complete(echo_zoo: Zoo) -> None:
    class Counting:
        def respond(self, request: LLMRequest) -> str:
            raise AssertionError("complete() should be preferred")

        def complete(self, request: LLMRequest) -> Completion:
            return Completion(json.dumps(IMAGE_PLAN), input_tokens=11, output_tokens=5, model_name="tiny")

    msg = ChatModaVerse(backend=Counting(), zoo=echo_zoo).invoke("x")
    assert msg.usage_metadata == {"input_tokens": 11, "output_tokens": 5, "total_tokens": 16}
    assert msg.response_metadata["model_name"] == "modaverse"  # the name the user gave, not the engine's file
    assert msg.response_metadata["engine_model"] == "tiny"


def test_create_agent_loop_with_zoo_tools_ends_and_returns_artifacts(
    chat: ChatModaVerse, llm: ScriptedLLM, echo_zoo: Zoo, tmp_path: Path
) -> None:
    from langchain.agents import create_agent

    from modaverse_agent.artifacts import Artifact
    from modaverse_agent.tools import zoo_tools

    llm.enqueue(
        {
            "text": "Drawing it and making a sound.",
            "invocations": [
                {"task": "text-to-image", "prompt": "a red kite"},
                {"task": "text-to-audio", "prompt": "wind", "args": {"duration": 0.5}},
            ],
        }
    )
    llm.enqueue({"text": "Here are your kite picture and the wind sound.", "invocations": []})
    agent = create_agent(chat, zoo_tools(echo_zoo, output_dir=tmp_path))
    result = agent.invoke({"messages": [HumanMessage("draw a red kite and make a wind sound")]})
    messages = result["messages"]
    tools = [m for m in messages if isinstance(m, ToolMessage)]
    assert [t.name for t in tools] == ["text-to-image", "text-to-audio"] and all(t.status == "success" for t in tools)
    artifacts = [a for t in tools for a in t.artifact]
    assert all(isinstance(a, Artifact) and Path(a.path).is_file() for a in artifacts)
    assert [a.modality for a in artifacts] == ["image", "audio"]
    final = messages[-1]
    assert isinstance(final, AIMessage) and final.tool_calls == []
    assert final.content == "Here are your kite picture and the wind sound."
    assert len(llm.history) == 2 and llm.history[1].tasks == []  # the second call may invoke nothing
