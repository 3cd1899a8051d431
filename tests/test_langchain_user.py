"""ChatModaVerse and the agent runnable as a LangChain developer meets them (issue 20), from the user's side."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.load import dumpd, dumps, load, loads
from langchain_core.prompts import ChatPromptTemplate, PromptTemplate
from langchain_core.tools import tool

from modaverse_agent.agent import ModaVerseAgent
from modaverse_agent.testing import ScriptedLLM
from modaverse_agent.zoo import Zoo

PLAN = {"text": "Here it is. More text.", "invocations": [{"task": "text-to-image", "prompt": "a cat"}]}


@tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return "sunny"


def test_the_chat_model_imports_from_the_package_and_takes_a_model_reference() -> None:
    from modaverse_agent import ChatModaVerse

    chat = ChatModaVerse(model="default")  # nothing loads until it is used
    assert chat.backend is None and chat.model_name == "default" and chat.engine == "auto"
    with pytest.raises(ValueError, match="give `model`"):
        ChatModaVerse()


def test_it_serialises_by_reference_and_loads_back() -> None:
    from modaverse_agent import ChatModaVerse

    chat = ChatModaVerse(model="/models/my-modaverse", engine="llama.cpp", temperature=0.3, backend=ScriptedLLM())
    data = dumpd(chat)
    assert data["kwargs"] == {
        "model": "/models/my-modaverse",
        "engine": "llama.cpp",
        "model_name": "/models/my-modaverse",
        "temperature": 0.3,
    }
    assert json.loads(chat.model_dump_json())["model"] == "/models/my-modaverse"
    again = loads(dumps(chat), valid_namespaces=["modaverse_agent"], allowed_objects=[ChatModaVerse])
    assert isinstance(again, ChatModaVerse) and again.model == chat.model and again.backend is None
    assert load(data, valid_namespaces=["modaverse_agent"], allowed_objects=[ChatModaVerse]).temperature == 0.3


def test_stop_strings_cut_the_answer_text_not_the_json(echo_zoo: Zoo) -> None:
    from modaverse_agent import ChatModaVerse

    chat = ChatModaVerse(backend=ScriptedLLM(PLAN, PLAN), zoo=echo_zoo)
    msg = chat.invoke("draw a cat", stop=["."])
    assert msg.content == "Here it is" and msg.tool_calls[0]["args"]["prompt"] == "a cat"
    assert msg.response_metadata["finish_reason"] == "stop" and not msg.invalid_tool_calls
    streamed = "".join(str(c.content) for c in chat.stream("draw a cat", stop=["."]))
    assert streamed == "Here it is"


def test_an_unknown_tool_choice_raises(echo_zoo: Zoo) -> None:
    from modaverse_agent import ChatModaVerse

    chat = ChatModaVerse(backend=ScriptedLLM(), zoo=echo_zoo)
    with pytest.raises(ValueError, match="nonexistent"):
        chat.bind_tools([get_weather], tool_choice="nonexistent")
    chat.bind_tools([get_weather], tool_choice="get_weather")  # a bound tool's name is fine


def test_identical_duplicate_calls_come_back_once(echo_zoo: Zoo) -> None:
    from modaverse_agent import ChatModaVerse

    call = {"task": "get_weather", "args": {"city": "Paris"}}
    twice = {"text": "", "invocations": [call, call, {"task": "get_weather", "args": {"city": "Rome"}}]}
    chat = ChatModaVerse(backend=ScriptedLLM(twice), zoo=echo_zoo).bind_tools([get_weather])
    msg = chat.invoke("weather in paris and rome?")
    assert [c["args"]["city"] for c in msg.tool_calls] == ["Paris", "Rome"]


def test_get_num_tokens_uses_the_models_tokenizer(echo_zoo: Zoo) -> None:
    from modaverse_agent import ChatModaVerse

    class Counting(ScriptedLLM):
        def count_tokens(self, text: str) -> int:
            return len(text.split()) * 10

    assert ChatModaVerse(backend=Counting(), zoo=echo_zoo).get_num_tokens("hello world") == 20


def test_prompt_templates_pipe_into_the_agent(echo_zoo: Zoo, tmp_path: Path) -> None:
    llm = ScriptedLLM(PLAN, PLAN)
    runnable = ModaVerseAgent(llm, echo_zoo, output_dir=tmp_path).as_runnable()
    chat_prompt = ChatPromptTemplate.from_messages([("system", "be brief"), ("human", "draw a {animal}")])
    response = (chat_prompt | runnable).invoke({"animal": "cat"})
    assert response.ok and llm.history[-1].instruction == "draw a cat"
    assert [(t.role, t.text) for t in llm.history[-1].history] == [("system", "be brief")]
    (PromptTemplate.from_template("draw a {animal}") | runnable).invoke({"animal": "dog"})
    assert llm.history[-1].instruction == "draw a dog"


class _Recorder(BaseCallbackHandler):
    def __init__(self) -> None:
        self.seen: list[str] = []

    def on_chain_start(self, *args: Any, **kwargs: Any) -> None:
        self.seen.append("chain_start")

    def on_chat_model_start(self, *args: Any, **kwargs: Any) -> None:
        self.seen.append("chat_model_start")

    def on_llm_end(self, *args: Any, **kwargs: Any) -> None:
        self.seen.append("llm_end")

    def on_tool_start(self, serialized: dict[str, Any], input_str: str, **kwargs: Any) -> None:
        self.seen.append(f"tool_start:{serialized['name']}")

    def on_tool_end(self, output: Any, **kwargs: Any) -> None:
        self.seen.append("tool_end")

    def on_chain_end(self, *args: Any, **kwargs: Any) -> None:
        self.seen.append("chain_end")


@pytest.mark.parametrize("streamed", [False, True])
def test_callbacks_see_the_model_and_each_tool_inside_the_runnable(
    echo_zoo: Zoo, tmp_path: Path, streamed: bool
) -> None:
    runnable = ModaVerseAgent(ScriptedLLM(PLAN), echo_zoo, output_dir=tmp_path).as_runnable()
    recorder = _Recorder()
    config = {"callbacks": [recorder]}
    if streamed:
        list(runnable.stream("draw a cat", config=config))
    else:
        runnable.invoke("draw a cat", config=config)
    assert recorder.seen == [
        "chain_start",
        "chat_model_start",
        "llm_end",
        "tool_start:text-to-image",
        "tool_end",
        "chain_end",
    ]
