"""The server on a tiny real ModaVerse model (torch engine, constrained decoding): the ``openai`` client and
LangChain's ``ChatOpenAI``, streaming and not, with an image attached; the streamed text adds up to the
answer; concurrent answers decoded in one batch equal the answers decoded alone."""

from __future__ import annotations

import base64
import io
import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("xgrammar")

from langchain_core.messages import HumanMessage  # noqa: E402
from langchain_openai import ChatOpenAI  # noqa: E402
from openai import OpenAI  # noqa: E402
from PIL import Image  # noqa: E402

from modaverse_agent.agent import ModaVerseAgent  # noqa: E402
from modaverse_agent.model.modeling import ModaVerseModel  # noqa: E402
from modaverse_agent.model.tiny import save_tiny_base, tiny_config  # noqa: E402
from modaverse_agent.serving.live import serve_in_thread  # noqa: E402
from modaverse_agent.serving.server import create_app  # noqa: E402
from modaverse_agent.zoo import Zoo  # noqa: E402

pytestmark = pytest.mark.allow_hosts(["127.0.0.1"])
torch.set_num_threads(1)


@pytest.fixture
def served(tmp_path: Path, echo_zoo: Zoo) -> Iterator[tuple[str, Any]]:
    base = save_tiny_base(tmp_path / "base", hidden=64)
    torch.manual_seed(0)
    ModaVerseModel.from_config(
        tiny_config(base, blind_media=True, lora_alpha=16), init_lora_weights=False
    ).save_pretrained(tmp_path / "model")
    model = ModaVerseModel.from_pretrained(tmp_path / "model")
    model.options.max_new_tokens = 40
    agent = ModaVerseAgent(model, echo_zoo, output_dir=tmp_path / "out", timeout=60, seed=0)
    app = create_app(agent, max_batch=4, batch_window_s=0.2)
    with serve_in_thread(app) as url:
        yield url, app


def _image() -> str:
    buf = io.BytesIO()
    Image.new("RGB", (16, 12), (20, 120, 220)).save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _shape(text: str) -> str:
    return re.sub(r"file-[0-9a-f]{32}", "file-ID", text)


def test_real_clients_on_a_tiny_model(served: tuple[str, Any]) -> None:
    url = served[0]
    client = OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0, timeout=120)
    content = [
        {"type": "text", "text": "draw me a picture of this"},
        {"type": "image_url", "image_url": {"url": _image()}},
    ]
    messages = [{"role": "user", "content": content}]
    done = client.chat.completions.create(model="modaverse", messages=messages, temperature=0)
    answer = done.choices[0].message
    ext = answer.model_extra["modaverse"]
    assert ext["media"] == [{"id": "image_1", "mime_type": "image/png"}] and ext["meta_response"] is not None
    assert done.usage is not None and done.usage.completion_tokens > 0
    assert any("no media encoder" in n for n in ext["notes"])  # the blind tiny model says it did not see the image
    chunks = list(client.chat.completions.create(model="modaverse", messages=messages, temperature=0, stream=True))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert _shape(streamed) == _shape(answer.content or "")
    chat = ChatOpenAI(base_url=f"{url}/v1", api_key="none", model="modaverse", temperature=0, max_retries=0)
    message = HumanMessage(content)
    assert _shape(str(chat.invoke([message]).content)) == _shape(answer.content or "")
    assert _shape("".join(str(c.content) for c in chat.stream([message]))) == _shape(answer.content or "")


def test_a_batch_of_concurrent_answers_equals_the_answers_alone(served: tuple[str, Any]) -> None:
    url, app = served
    client = OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0, timeout=120)
    prompts = ["say hello", "make a short song", "what is the capital of france", "a video of the sea"]

    def ask(text: str) -> str:
        got = client.chat.completions.create(model="m", messages=[{"role": "user", "content": text}], temperature=0)
        return json.dumps(got.choices[0].message.model_extra["modaverse"]["meta_response"])

    alone = [ask(p) for p in prompts]
    together: dict[str, str] = {}
    threads = [threading.Thread(target=lambda p=p: together.__setitem__(p, ask(p))) for p in prompts]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert [together[p] for p in prompts] == alone
    assert max(app.state.service.served.batcher.sizes) > 1  # they were decoded together


def test_a_request_the_model_cannot_take_is_a_400_the_client_does_not_retry(served: tuple[str, Any]) -> None:
    """Too long for the model's context, or a NUL in the text: OpenAI's 400 with its error code (a 500 made the
    openai client retry the same request twice more), for the agent and the tools path, streaming or not."""
    import openai

    url = served[0]
    calls: list[int] = []
    client = OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=2, timeout=120)
    client._client.event_hooks["request"].append(lambda r: calls.append(1))
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    long = [{"role": "user", "content": "summarize " + "blah " * 6000}]
    for extra in ({}, {"tools": tools}, {"stream": True}, {"tools": tools, "stream": True}):
        calls.clear()
        # a stream holds its 200 until the first event, so a refused one is the same 400
        with pytest.raises(openai.BadRequestError) as e:
            out = client.chat.completions.create(model="modaverse", messages=long, **extra)  # type: ignore[call-overload]
            list(out) if extra.get("stream") else out
        assert e.value.code == "context_length_exceeded" and "shorten the instruction" in str(e.value), extra
        assert e.value.type == "invalid_request_error" and calls == [1], extra  # not retried
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="modaverse", messages=[{"role": "user", "content": "a\x00b"}])
    assert e.value.code == "invalid_value" and "NUL" in str(e.value)
    ok = client.chat.completions.create(model="modaverse", messages=[{"role": "user", "content": "a cat"}])
    assert ok.choices[0].message is not None  # the server goes on serving


def test_a_long_history_on_the_agent_path_is_fitted_with_a_note(served: tuple[str, Any]) -> None:
    """The server's per-request view of the model forwards ``check_prompt``, so the agent fits the history."""
    client = OpenAI(base_url=f"{served[0]}/v1", api_key="none", max_retries=0, timeout=120)
    turns: list[Any] = []
    for _ in range(30):
        turns += [
            {"role": "user", "content": "tell me about cats " * 60},
            {"role": "assistant", "content": "Cats are small."},
        ]
    done = client.chat.completions.create(model="modaverse", messages=[*turns, {"role": "user", "content": "a cat"}])
    notes = done.choices[0].message.model_extra["modaverse"]["notes"]
    assert any("oldest of 60 earlier turns were left out" in n for n in notes), notes


def _local_addr(response: Any) -> Any:
    """The client end of the connection a response came on (equal for two responses: one kept-alive connection)."""
    return response.extensions["network_stream"].get_extra_info("client_addr")


def test_input_the_engines_cannot_take_is_a_400_the_client_does_not_retry_on_the_same_connection(
    served: tuple[str, Any],
) -> None:
    """A seed past 64 bits made torch raise, a lone surrogate the tokenizer, an invalid tool schema xgrammar: each
    was a 500 (retried twice by the openai client) and on the tools path the server dropped the connection. Now
    each is refused before any work, naming the param, and the connection serves the next request."""
    import openai

    url = served[0]
    calls: list[int] = []
    ends: list[Any] = []
    client = OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=2, timeout=120)
    client._client.event_hooks["request"].append(lambda r: calls.append(1))
    client._client.event_hooks["response"].append(lambda r: ends.append(_local_addr(r)))
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    wat = [{"type": "function", "function": {"name": "f", "parameters": {"type": "wat"}}}]
    hi = [{"role": "user", "content": "hi"}]
    cases: list[tuple[dict[str, Any], str]] = [
        ({"seed": 2**64, "temperature": 1}, "seed"),
        ({"seed": 2**64, "temperature": 1, "tools": tools}, "seed"),
        ({"seed": 2**64, "temperature": 1, "tools": tools, "stream": True}, "seed"),
        ({"tools": wat}, "tools[0].function.parameters.type"),
        ({"tools": wat, "stream": True}, "tools[0].function.parameters.type"),
    ]
    for extra, param in cases:
        calls.clear()
        with pytest.raises(openai.BadRequestError) as e:
            out = client.chat.completions.create(model="modaverse", messages=hi, **extra)  # type: ignore[call-overload]
            list(out) if extra.get("stream") else out
        assert e.value.param == param and e.value.type == "invalid_request_error" and calls == [1], extra
    assert client.chat.completions.create(model="modaverse", messages=hi).choices[0].message is not None
    assert len(set(ends)) == 1  # every request on one connection: none was dropped
    with httpx.Client(base_url=url, timeout=120) as http:  # the openai client cannot even encode a lone surrogate
        ends.clear()
        for extra in ({}, {"tools": tools}, {"stream": True}, {"tools": tools, "stream": True}):
            raw = json.dumps({"messages": [{"role": "user", "content": "hi \ud800"}], **extra})  # sent as \ud800
            r = http.post("/v1/chat/completions", content=raw, headers={"content-type": "application/json"})
            assert r.status_code == 400 and r.json()["error"]["param"] == "messages[0].content", (extra, r.text)
            assert "surrogate" in r.json()["error"]["message"]
            ends.append(_local_addr(r))
        r = http.post("/v1/chat/completions", json={"messages": hi})
        assert r.status_code == 200 and {_local_addr(r)} == set(ends)


def test_a_request_whose_only_image_cannot_be_read_is_refused_with_that_images_error(
    served: tuple[str, Any],
) -> None:
    """Nothing left to answer: a 400, for the agent and the tools path alike, that says which image was skipped
    and why (it said only "the instruction is empty and no media were given")."""
    import openai

    client = OpenAI(base_url=f"{served[0]}/v1", api_key="none", max_retries=0, timeout=120)
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    broken = "data:image/png;base64," + base64.b64encode(b"xx" * 10).decode()
    only = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": broken}}]}]
    for extra in ({}, {"tools": tools}, {"stream": True}, {"tools": tools, "stream": True}):
        with pytest.raises(openai.BadRequestError) as e:
            out = client.chat.completions.create(model="modaverse", messages=only, **extra)  # type: ignore[call-overload]
            list(out) if extra.get("stream") else out
        message = str(e.value.message)
        assert "nothing to respond to" in message and "messages[0].content[0].image_url.url skipped" in message, extra


def test_the_engine_ends_a_decode_when_asked_and_otherwise_answers_as_before(served: tuple[str, Any]) -> None:
    """``should_stop`` (what the server passes for a request whose client left) ends the decode at the next token;
    while it says go on, a batch decodes exactly as without it."""
    from modaverse_agent.llm_io import GenerationParams, LLMRequest
    from modaverse_agent.model.streaming import DecodeCancelled

    agent = served[1].state.service.served.agent
    model, schema, specs = agent.llm, agent.zoo.schema(media_ids=[]), agent.zoo.task_specs()
    params = GenerationParams(max_new_tokens=12, temperature=0)
    requests = [LLMRequest(text, [], schema, specs, params=params) for text in ("say hello", "draw a cat")]
    asked: list[int] = []

    def after_three() -> bool:
        asked.append(1)
        return len(asked) > 3

    with pytest.raises(DecodeCancelled):
        model.complete_batch(requests, should_stop=after_three)
    assert len(asked) == 4  # checked before the decode and at each token, stopped at the first "yes"
    plain = model.complete_batch(requests)
    assert [c.text for c in model.complete_batch(requests, should_stop=lambda: False)] == [c.text for c in plain]


def test_langchain_structured_output_through_response_format(served: tuple[str, Any]) -> None:
    """``ChatOpenAI(...).with_structured_output(Model)`` sends ``response_format`` (json_schema by default, or
    json_object): the answer is the JSON asked for, as the message content, streamed or not; it was a 400."""
    from pydantic import BaseModel, Field

    class Weather(BaseModel):
        """Weather in a city."""

        city: str = Field(max_length=40)
        degrees: int = Field(ge=-80, le=60)

    chat = ChatOpenAI(
        base_url=f"{served[0]}/v1", api_key="none", model="m", temperature=0, max_retries=0, max_tokens=400
    )  # room for the random model's whole object: a cut one is OpenAI's LengthFinishReasonError
    ask = "Rome is 25 degrees today"
    for method in ("json_schema", "json_mode"):
        shaped = chat.with_structured_output(Weather, method=method)  # type: ignore[arg-type]
        if method == "json_schema":
            got = shaped.invoke(ask)
            assert isinstance(got, Weather) and -80 <= got.degrees <= 60
            streamed = list(shaped.stream(ask))
            assert streamed and isinstance(streamed[-1], Weather)
        else:  # any JSON object may come back: LangChain returns it parsed (the schema is not enforced)
            raw = chat.with_structured_output(None, method="json_mode").invoke(ask)  # type: ignore[arg-type]
            assert isinstance(raw, dict)
    client = OpenAI(base_url=f"{served[0]}/v1", api_key="none", max_retries=0, timeout=120)
    done = client.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": ask}],
        max_tokens=400,
        response_format={"type": "json_schema", "json_schema": {"name": "w", "schema": Weather.model_json_schema()}},
    )
    assert done.choices[0].finish_reason in ("stop", "length") and not done.choices[0].message.tool_calls
    Weather.model_validate_json(done.choices[0].message.content or "")


def test_a_tool_call_cut_by_max_tokens_finishes_with_length_not_tool_calls(served: tuple[str, Any]) -> None:
    """``tool_choice="required", max_tokens=2``: the call's arguments were made up by the closing route, and the
    answer said "tool_calls" as if they were the model's; OpenAI says "length" for a call cut short."""
    client = OpenAI(base_url=f"{served[0]}/v1", api_key="none", max_retries=0, timeout=120)
    weather = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": weather}}]
    asked = {"model": "m", "messages": [{"role": "user", "content": "weather in Rome?"}], "tools": tools}
    cut = client.chat.completions.create(**asked, tool_choice="required", max_tokens=2, temperature=0)  # type: ignore[call-overload]
    assert cut.choices[0].finish_reason == "length"
    chunks = list(
        client.chat.completions.create(**asked, tool_choice="required", max_tokens=2, temperature=0, stream=True)  # type: ignore[call-overload]
    )
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["length"]
