"""LangChain's standard chat-model integration suite on ChatModaVerse over the built-in default model
(Gemma 3 270M + the shipped adapter, engine auto: llama.cpp on a CPU), the zoo of the installed plugins.

Slow (the model loads for ~30 s, then a few seconds per answer), so it runs only with
``MODAVERSE_SLOW_TESTS=1``. Each xfail is strict (a pass fails the run) and its reason quotes what the
model actually answered, so a retrained model that does better shows up at once.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_tests.integration_tests import ChatModelIntegrationTests

from modaverse_agent import plugins
from modaverse_agent.zoo import Zoo, ZooConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from chat_model_suite import ModaVerseCapabilities, OfflineMediaInputs, xfail

pytestmark = pytest.mark.skipif(not os.environ.get("MODAVERSE_SLOW_TESTS"), reason="slow: set MODAVERSE_SLOW_TESTS=1")
_STATE: dict[str, Any] = {}

# What the model answered when these marks were written (the stage-6 adapter, sha256 0bbfde33e182):
# greedy decoding, so the same model answers the same. A retrained model that passes turns the mark into a
# strict XPASS failure: drop the mark then.
WEATHER = (
    "the 270M model answers a question it can answer in words instead of calling a bound function with "
    "tool_choice 'auto' (it was trained to call media tasks): 'What is the weather in San Francisco, CA?' "
    "with get_weather bound gives the text 'Hot, sunny, and sometimes windy.' and no call"
)


@pytest.fixture(scope="module", autouse=True)
def default_model() -> Iterator[None]:
    """The built-in default model, loaded once, and the installed plugins' zoo (the tasks it was trained on)."""
    from modaverse_agent.default_model import load_default_model

    plugins.load_plugins(entry_points=True)  # the suite's tests only see the specs; no generator runs
    zoo = Zoo.from_plugins(config=ZooConfig())
    assert "text-to-image" in zoo.tasks(), f"the built-in plugins are not installed (zoo: {zoo.tasks()})"
    _STATE.update(backend=load_default_model(), zoo=zoo)
    yield
    _STATE.clear()


class TestChatModaVerseDefaultModel(ModaVerseCapabilities, OfflineMediaInputs, ChatModelIntegrationTests):
    """The integration suite on the default model; xfails quote what the 270M model answers instead."""

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"backend": _STATE["backend"], "zoo": _STATE["zoo"], "model": "default"}

    test_agent_loop = xfail("test_agent_loop", WEATHER)
    test_unicode_tool_call_integration = xfail(
        "test_unicode_tool_call_integration",
        "the 270M model writes the English gloss, not the Chinese or Japanese name, into the forced call: "
        "'Create a customer named '你好啊集团' (Hello Group) ...' gives customer_name 'Hello Group', "
        "'... 'こんにちは株式会社' (Hello Corporation) ...' gives 'Hello Corporation'",
    )


def _default_chat() -> Any:
    from modaverse_agent.chat_model import ChatModaVerse

    return ChatModaVerse(backend=_STATE["backend"], zoo=_STATE["zoo"], model="default")


@pytest.mark.parametrize("bind", ["bind_tools([])", "tool_choice='none'"])
def test_with_no_tool_offered_the_default_model_says_it_cannot_draw(bind: str) -> None:
    from modaverse_agent.tools import zoo_tools

    chat = _default_chat()
    bound = (
        chat.bind_tools([])
        if bind == "bind_tools([])"
        else chat.bind_tools(zoo_tools(_STATE["zoo"]), tool_choice="none")
    )
    msg = bound.invoke("Draw a cat.")
    assert msg.tool_calls == []
    assert "can't make pictures" in msg.content, msg.content  # not "Here's the image." with no image
    assert "Paris" in bound.invoke("What is the capital of France?").content  # a plain question is still answered


def test_with_only_speech_offered_a_picture_request_is_not_answered_with_a_recording() -> None:
    from modaverse_agent.tools import zoo_tools

    msg = _default_chat().bind_tools(zoo_tools(_STATE["zoo"], tasks=["text-to-speech"])).invoke("Draw a cat.")
    assert msg.tool_calls == [] and "can't make pictures" in msg.content, (msg.content, msg.tool_calls)


def test_a_forced_speech_call_for_a_picture_request_is_not_captioned_as_a_picture() -> None:
    """Forced to speech, "Draw a cat." was answered "Here is your picture." beside a speech call; a forced
    call now comes alone (empty content), as OpenAI's models answer one."""
    from modaverse_agent.tools import zoo_tools

    chat = _default_chat().bind_tools(zoo_tools(_STATE["zoo"]), tool_choice="text-to-speech")
    msg = chat.invoke("Draw a cat.")
    assert msg.content == "" and [c["name"] for c in msg.tool_calls] == ["text-to-speech"], msg
    assert msg.tool_calls[0]["args"]["prompt"].strip(), msg.tool_calls


@pytest.mark.xfail(
    strict=True,
    reason="issue 20 item 6, the model's speech/text decision (issue 14: text->speech 72.2%): in create_agent "
    "with the zoo's tools, 'say hello out loud' is answered in text, \"Hi, I'm ModaVerse. I'm here to help you "
    'create a new media project.", with no speech call (stage 19 adapter e82f0fccfa0c; stage 12 answered "Hi, '
    "I'm ModaVerse.\"); a model that speaks it turns this into a strict XPASS: drop the mark",
)
def test_say_hello_out_loud_in_an_agent_loop_speaks_hello(tmp_path: Any) -> None:
    from langchain.agents import create_agent
    from langchain_core.messages import HumanMessage

    from modaverse_agent.tools import zoo_tools

    agent = create_agent(_default_chat(), zoo_tools(_STATE["zoo"], output_dir=tmp_path))
    messages = agent.invoke({"messages": [HumanMessage("say hello out loud")]}, {"recursion_limit": 6})["messages"]
    calls = [c for m in messages for c in getattr(m, "tool_calls", [])]
    spoken = [c["args"].get("prompt", "") for c in calls if c["name"] == "text-to-speech"]
    assert spoken and all("hello" in p.lower() for p in spoken), messages
