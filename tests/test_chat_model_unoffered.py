"""ChatModaVerse asking with the zoo's whole task list when fewer tools are offered (``route_with_zoo``):
a request for a task not offered is answered in text that says so, never "Here's the image." with no call."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from modaverse_agent.chat_model import ChatModaVerse
from modaverse_agent.meta_response import TaskSpec
from modaverse_agent.testing import ScriptedLLM, StreamingScriptedLLM
from modaverse_agent.tools import zoo_tools
from modaverse_agent.training.tasks import STANDARD_TASKS
from modaverse_agent.unoffered import UNAVAILABLE
from modaverse_agent.zoo import Zoo, ZooConfig

DRAW = {"text": "Here's the image.", "invocations": [{"task": "text-to-image", "prompt": "a cat"}]}


class _Trained(ScriptedLLM):
    """A scripted model that says which tasks it was trained on (as a ``modaverse train`` output does)."""

    @property
    def trained_tasks(self) -> list[TaskSpec]:
        return list(STANDARD_TASKS)


def _chat(zoo: Zoo, llm: Any, **kw: Any) -> ChatModaVerse:
    return ChatModaVerse(backend=llm, zoo=zoo, route_with_zoo=True, **kw)


@pytest.mark.parametrize("bind", ["no tools", "tool_choice none"])
def test_with_nothing_offered_a_picture_request_is_answered_in_text_that_says_so(
    echo_zoo: Zoo, bind: str, tmp_path: Any
) -> None:
    llm = ScriptedLLM(DRAW)
    chat = _chat(echo_zoo, llm)
    bound = chat.bind_tools([]) if bind == "no tools" else chat.bind_tools(zoo_tools(echo_zoo), tool_choice="none")
    msg = bound.invoke("Draw a cat.")
    assert msg.tool_calls == [] and msg.content == UNAVAILABLE["text-to-image"]
    assert msg.response_metadata["unoffered"] == ["text-to-image"]
    [asked] = llm.history  # the model was asked with the zoo's whole list, as it was trained
    assert sorted(t.task for t in asked.tasks) == sorted(echo_zoo.tasks())


def test_what_is_offered_is_called_and_the_rest_is_named(echo_zoo: Zoo) -> None:
    plan = {
        "text": "Here you go.",
        "invocations": [
            {"task": "text-to-speech", "prompt": "Good night."},
            {"task": "text-to-image", "prompt": "a moon"},
        ],
    }
    llm = ScriptedLLM(plan)
    msg = (
        _chat(echo_zoo, llm)
        .bind_tools(zoo_tools(echo_zoo, tasks=["text-to-image"]))
        .invoke("Say good night, draw a moon.")
    )
    assert [c["name"] for c in msg.tool_calls] == ["text-to-image"]
    assert "can't speak aloud" in msg.content and "Good night." in msg.content
    assert msg.response_metadata["unoffered"] == ["text-to-speech"]


def test_off_by_default_for_other_models_and_never_when_a_call_is_forced(echo_zoo: Zoo) -> None:
    llm = ScriptedLLM({"text": "Here's the image.", "invocations": []})
    ChatModaVerse(backend=llm, zoo=echo_zoo).bind_tools([]).invoke("Draw a cat.")
    assert llm.history[-1].tasks == []  # the list the user bound
    trained = _Trained(DRAW)  # a model that records the tasks it was trained on: on by default
    msg = ChatModaVerse(backend=trained, zoo=echo_zoo).bind_tools([]).invoke("Draw a cat.")
    assert msg.content == UNAVAILABLE["text-to-image"] and not msg.tool_calls
    llm.enqueue({"text": "Here.", "invocations": [{"task": "text-to-speech", "prompt": "a cat"}]})
    forced = _chat(echo_zoo, llm).bind_tools(zoo_tools(echo_zoo), tool_choice="text-to-speech").invoke("Draw a cat.")
    assert [t.task for t in llm.history[-1].tasks] == ["text-to-speech"]
    assert [c["name"] for c in forced.tool_calls] == ["text-to-speech"]
    llm.enqueue(DRAW)  # every zoo task bound: nothing to widen
    whole = _chat(echo_zoo, llm).bind_tools(zoo_tools(echo_zoo)).invoke("Draw a cat.")
    assert "unoffered" not in whole.response_metadata and whole.tool_calls


def test_streaming_holds_the_text_until_it_is_known(echo_zoo: Zoo) -> None:
    chunks = list(_chat(echo_zoo, StreamingScriptedLLM(DRAW)).bind_tools([]).stream("Draw a cat."))
    assert all(c.content == "" for c in chunks[:-1])  # "Here's the image." is never shown
    total = chunks[0]
    for c in chunks[1:]:
        total += c
    assert total.content == UNAVAILABLE["text-to-image"] and not total.tool_calls


def _zoo_without_video() -> Zoo:
    import modaverse_echo

    from modaverse_agent import plugins

    plugins.pm.register(modaverse_echo, name="echo")
    found: list[Any] = []
    plugins.pm.hook.register_generators(register=found.append)
    zoo = Zoo([g for g in found if g.task != "text-to-video"], config=ZooConfig())
    assert "text-to-video" not in zoo.tasks() and "text-to-image" in zoo.tasks()
    return zoo


def test_the_agent_answers_in_text_for_a_trained_task_no_generator_serves(tmp_path: Path) -> None:
    from modaverse_agent.agent import ModaVerseAgent

    zoo = _zoo_without_video()
    plan = {"text": "Here's the clip.", "invocations": [{"task": "text-to-video", "prompt": "waves on a beach"}]}
    llm = _Trained(plan)
    response = ModaVerseAgent(llm, zoo, output_dir=tmp_path).run("Make a video of waves on a beach.")
    assert response.text == UNAVAILABLE["text-to-video"] and not response.artifacts and not response.errors
    assert any("text-to-video" in n and "no installed generator" in n for n in response.notes)
    assert "text-to-video" in [t.task for t in llm.history[-1].tasks]  # asked with the list it learned
    events = list(ModaVerseAgent(_Trained(plan), zoo, output_dir=tmp_path).stream("Make a video of waves."))
    texts = [e.text for e in events if type(e).__name__ == "TextDelta"]
    assert texts == [UNAVAILABLE["text-to-video"]]  # "Here's the clip." is never streamed


def test_a_forced_call_comes_alone_never_beside_text_about_another_output(echo_zoo: Zoo) -> None:
    """``tool_choice`` naming speech for "Draw a cat.": the text written before a call the model was made to
    make spoke of the picture it wanted ("Here's the image."); a forced call is answered by the call alone,
    as OpenAI's models answer a forced function."""
    llm = ScriptedLLM({"text": "Here's the image.", "invocations": [{"task": "text-to-speech", "prompt": "A cat."}]})
    chat = ChatModaVerse(backend=llm, zoo=echo_zoo)
    for choice in ("text-to-speech", "any", "required", {"type": "function", "function": {"name": "text-to-speech"}}):
        msg = chat.bind_tools(zoo_tools(echo_zoo), tool_choice=choice).invoke("Draw a cat.")
        assert msg.content == "" and [c["name"] for c in msg.tool_calls] == ["text-to-speech"], choice
        assert msg.invalid_tool_calls == []  # the backend wrote text anyway: dropped, not an error
        assert llm.history[-1].schema["properties"]["text"]["maxLength"] == 0  # the grammar asks for none
        llm.enqueue({"text": "Here's the image.", "invocations": [{"task": "text-to-speech", "prompt": "A cat."}]})
    auto = chat.bind_tools(zoo_tools(echo_zoo)).invoke("Draw a cat.")  # not forced: the text is the model's
    assert auto.content == "Here's the image." and llm.history[-1].schema["properties"]["text"]["maxLength"] > 0


def test_structured_output_raw_message_has_no_filler(echo_zoo: Zoo) -> None:
    from pydantic import BaseModel

    class Person(BaseModel):
        name: str
        age: int

    llm = ScriptedLLM(
        {"text": "Here's the recording.", "invocations": [{"task": "Person", "args": {"name": "Ada", "age": 36}}]}
    )
    out = ChatModaVerse(backend=llm, zoo=echo_zoo).with_structured_output(Person, include_raw=True).invoke("Who?")
    assert out["parsed"] == Person(name="Ada", age=36) and out["parsing_error"] is None
    assert out["raw"].content == ""


def test_a_forced_call_streams_no_text(echo_zoo: Zoo) -> None:
    plan = {"text": "Here's the image.", "invocations": [{"task": "text-to-speech", "prompt": "A cat."}]}
    chat = ChatModaVerse(backend=StreamingScriptedLLM(plan), zoo=echo_zoo)
    chunks = list(chat.bind_tools(zoo_tools(echo_zoo), tool_choice="any").stream("Draw a cat."))
    total = chunks[0]
    for c in chunks[1:]:
        total += c
    assert all(c.content == "" for c in chunks) and [c["name"] for c in total.tool_calls] == ["text-to-speech"]


@pytest.mark.allow_hosts(["127.0.0.1"])
def test_the_server_agent_path_also_answers_in_text_for_a_trained_task_no_generator_serves(tmp_path: Path) -> None:
    """The server's per-request view of the model says which tasks it was trained on, as the model does."""
    from openai import OpenAI

    from modaverse_agent.agent import ModaVerseAgent
    from modaverse_agent.serving.live import serve_in_thread
    from modaverse_agent.serving.server import create_app

    plan = {"text": "Here's the clip.", "invocations": [{"task": "text-to-video", "prompt": "waves on a beach"}]}
    llm = _Trained(plan)
    agent = ModaVerseAgent(llm, _zoo_without_video(), output_dir=tmp_path, timeout=30)
    with serve_in_thread(create_app(agent)) as url:
        client = OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0, timeout=60)
        done = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "Make a video."}])
    message = done.choices[0].message
    assert message.content == UNAVAILABLE["text-to-video"]
    assert any("no installed generator" in n for n in message.model_extra["modaverse"]["notes"])
    assert "text-to-video" in [t.task for t in llm.history[-1].tasks]
