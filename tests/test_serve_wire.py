"""The OpenAI request, read and checked: malformed bodies name the JSON path that failed; messages map onto
the agent's instruction, media and history like ChatModaVerse and Conversation do."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from modaverse_agent.artifacts import Artifact
from modaverse_agent.serving.files import FileStore
from modaverse_agent.serving.openai_wire import WireError, parse_chat_request
from modaverse_agent.serving.turns import agent_call, langchain_messages, split_links


def png_bytes(color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 12), color).save(buf, "PNG")
    return buf.getvalue()


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def body(**fields: Any) -> bytes:
    fields.setdefault("messages", [{"role": "user", "content": "hi"}])
    return json.dumps(fields).encode()


def refused(raw: bytes, **kw: Any) -> WireError:
    with pytest.raises(WireError) as info:
        parse_chat_request(raw, **kw)
    assert info.value.status == 400
    return info.value


@pytest.mark.parametrize(
    ("raw", "param", "words"),
    [
        (b"{not json", "$", "not valid JSON"),
        (b"\xff\xfe", "$", "not valid JSON"),
        (b"[1, 2]", "$", "a JSON object"),
        (b'{"messages": [], "temperature": NaN}', "$", "NaN is not JSON"),
        (body(messages=[]), "messages", "at least one"),
        (body(messages="hi"), "messages", "an array"),
        (body(messages=[{"role": "robot", "content": "x"}]), "messages[0].role", "unknown role"),
        (body(messages=[{"role": "user", "content": 5}]), "messages[0].content", "a string or an array"),
        (
            body(messages=[{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "image_url"}]}]),
            "messages[0].content[1].image_url",
            "a string",
        ),
        (
            body(
                messages=[
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,%%%"}}],
                    }
                ]
            ),
            "messages[0].content[0].image_url.url",
            "base64",
        ),
        (
            body(
                messages=[
                    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x.org/a.png"}}]}
                ]
            ),
            "messages[0].content[0].image_url.url",
            "remote URLs are not fetched",
        ),
        (
            body(
                messages=[
                    {
                        "role": "user",
                        "content": [{"type": "input_audio", "input_audio": {"data": "!!", "format": "wav"}}],
                    }
                ]
            ),
            "messages[0].content[0].input_audio.data",
            "base64",
        ),
        (
            body(messages=[{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "AAAA"}}]}]),
            "messages[0].content[0].input_audio.format",
            "a string",
        ),
        (
            body(messages=[{"role": "user", "content": [{"type": "hologram"}]}]),
            "messages[0].content[0].type",
            "unsupported",
        ),
        (
            body(messages=[{"role": "system", "content": [{"type": "image_url", "image_url": {"url": "data:,x"}}]}]),
            "messages[0].content[0].type",
            "text parts only",
        ),
        (body(messages=[{"role": "tool", "content": "r"}]), "messages[0].tool_call_id", "a string"),
        (body(messages=[{"role": "system", "content": "be brief"}]), "messages", "needs a user message"),
        (
            body(
                messages=[
                    {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [{"function": {"name": "f", "arguments": "{"}}],
                    }
                ]
            ),
            "messages[0].tool_calls[0].function.arguments",
            "is not JSON",
        ),
        (body(temperature=3), "temperature", "at most 2"),
        (body(temperature=True), "temperature", "a number"),
        (body(top_p=0), "top_p", "above 0"),
        (body(max_tokens=0), "max_tokens", "at least 1"),
        (body(max_tokens=1.5), "max_tokens", "an integer"),
        (body(stop=["a", "b", "c", "d", "e"]), "stop", "at most 4"),
        (body(stop=[1]), "stop[0]", "a string"),
        (body(stream="yes"), "stream", "true or false"),
        (body(n=2), "n", "one choice"),
        (body(logprobs=True), "logprobs", "leave logprobs out"),
        (body(response_format={"type": "xml"}), "response_format.type", "json_schema"),
        (body(response_format={"type": "json_schema"}), "response_format.json_schema", "an object"),
        (
            body(response_format={"type": "json_schema", "json_schema": {"name": "w", "schema": {"type": "array"}}}),
            "response_format.json_schema.schema.type",
            "a JSON object",
        ),
        (
            body(
                response_format={"type": "json_object"},
                tools=[{"type": "function", "function": {"name": "f"}}],
            ),
            "response_format",
            "combined with `tools`",
        ),
        (body(tools=[{"type": "function", "function": {}}]), "tools[0].function.name", "a string"),
        (body(tools=[{"type": "retrieval"}]), "tools[0].type", "function"),
        (
            body(
                tools=[{"type": "function", "function": {"name": "f"}}],
                tool_choice={"type": "function", "function": {"name": "g"}},
            ),
            "tool_choice.function.name",
            "names no tool",
        ),
        (body(tool_choice="required"), "tool_choice", "needs `tools`"),
    ],
)
def test_a_malformed_body_is_refused_with_the_path_that_failed(raw: bytes, param: str, words: str) -> None:
    e = refused(raw)
    assert e.param == param and words in e.message


def test_local_paths_need_the_flag(png_file: Path) -> None:
    part = {"type": "image_url", "image_url": {"url": str(png_file)}}
    raw = body(messages=[{"role": "user", "content": [part]}])
    assert "--allow-local-files" in refused(raw).message
    got = parse_chat_request(raw, allow_local_files=True)
    assert got.messages[0].media[0].kind == "path"


def test_parts_params_and_tools_are_read() -> None:
    png, wav = png_bytes(), b"RIFF....WAVE"
    raw = body(
        model="m",
        messages=[
            {"role": "developer", "content": [{"type": "text", "text": "be brief"}]},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "look"},
                    {"type": "image_url", "image_url": {"url": data_url(png)}},
                    {"type": "input_audio", "input_audio": {"data": base64.b64encode(wav).decode(), "format": "wav"}},
                    {"type": "video_url", "video_url": {"url": data_url(b"vid", "video/mp4")}},
                    {"type": "file", "file": {"file_data": data_url(png)}},
                    {"type": "text", "text": "closely"},
                ],
            },
        ],
        stream=True,
        stream_options={"include_usage": True},
        temperature=0.5,
        top_p=0.9,
        max_completion_tokens=64,
        stop="END",
        seed=7,
        tools=[{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
        tool_choice="required",
        user="someone",  # fields the server does not use are ignored
    )
    got = parse_chat_request(raw)
    user = got.messages[1]
    assert user.text == "look\nclosely"
    assert [r.value for r in user.media] == [png, wav, b"vid", png]
    assert got.stream and got.include_usage and got.model == "m"
    p = got.params
    assert (p.temperature, p.top_p, p.max_new_tokens, p.stop, p.seed) == (0.5, 0.9, 64, ("END",), 7)
    assert got.tools is not None and got.tool_choice == "required"


def _stored(store: FileStore, tmp_path: Path, meta: dict[str, Any]) -> str:
    out = store.root / "r1"
    out.mkdir(parents=True)
    path = out / "made.png"
    path.write_bytes(png_bytes((0, 200, 0)))
    return store.add(Artifact("image", path, "image/png", task="text-to-image", prompt="a cat"), meta).id


def test_earlier_turns_become_history_and_linked_files_become_media(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "served")
    meta = {"text": "A cat.", "invocations": [{"task": "text-to-image", "prompt": "a cat"}]}
    made = _stored(store, tmp_path, meta)
    answer = f"A cat.\n\n![text-to-image](http://127.0.0.1:9/v1/files/{made}/content)"
    raw = body(
        messages=[
            {"role": "system", "content": "be brief"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "draw a cat like this"},
                    {"type": "image_url", "image_url": {"url": data_url(png_bytes())}},
                ],
            },
            {"role": "assistant", "content": answer},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "now a watercolor"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0K"}},
                ],
            },
        ]
    )
    call = agent_call(parse_chat_request(raw), store)
    assert call.instruction == "now a watercolor"
    assert [m.mime_type for m in call.media] == ["image/png", "image/png"]  # attached, then the one the server made
    assert [(t.role, t.text) for t in call.history] == [
        ("system", "be brief"),
        ("user", "draw a cat like this [attached: image_1]"),
        ("assistant", json.dumps(meta) + " [made: image_2]"),
    ]
    assert [e.stage for e in call.errors] == ["media"] and "messages[3].content[1]" in call.errors[0].message


def test_an_unknown_file_id_is_a_media_error_and_the_rest_stays(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "served")
    part = {"type": "file", "file": {"file_id": "file-" + "0" * 32}}
    raw = body(messages=[{"role": "user", "content": [{"type": "text", "text": "edit"}, part]}])
    call = agent_call(parse_chat_request(raw), store)
    assert call.instruction == "edit" and call.media == []
    assert "unknown to this server" in call.errors[0].message


def test_split_links_keeps_the_text_and_finds_the_files() -> None:
    a, b = "file-" + "a" * 32, "file-" + "b" * 32
    text = f"Done.\n\n![x](http://h/v1/files/{a}/content)\n\n[audio: s.wav](http://h/v1/files/{b}/content)"
    assert split_links(text) == ("Done.", [a, b])
    assert split_links("see /v1/files/ for more") == ("see /v1/files/ for more", [])


def test_langchain_messages_carry_tool_calls_and_media(tmp_path: Path) -> None:
    raw = body(
        messages=[
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": data_url(png_bytes())}}]},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}}],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "42"},
        ],
        tools=[{"type": "function", "function": {"name": "f"}}],
    )
    messages, media, errors = langchain_messages(parse_chat_request(raw), FileStore(tmp_path))
    assert [m.type for m in messages] == ["human", "ai", "tool"] and not errors
    assert messages[1].tool_calls[0]["args"] == {"x": 1} and messages[2].tool_call_id == "c1"
    assert list(media) == ["media-0"] and messages[0].content == [{"type": "file", "file_id": "media-0"}]


def test_the_store_serves_only_files_inside_its_root(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "served")
    outside = tmp_path / "secret.png"
    outside.write_bytes(png_bytes())
    with pytest.raises(ValueError, match="outside"):
        store.add(Artifact("image", outside, "image/png"))
    made = _stored(store, tmp_path, {})
    assert store.get(made) is not None and store.get("file-" + "f" * 32) is None
    (store.root / "r1" / "made.png").unlink()
    assert store.get(made) is None  # deleted on disk: no longer served


def _tool(parameters: Any) -> list[dict[str, Any]]:
    return [{"type": "function", "function": {"name": "f", "parameters": parameters}}]


def _image_part(url: str) -> dict[str, Any]:
    return {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}


@pytest.mark.parametrize(
    ("raw", "param", "words"),
    [
        # beyond OpenAI's signed 64-bit seed (torch failed on it: "Overflow when unpacking long long", a 500)
        (body(seed=2**64), "seed", "at most 9223372036854775807"),
        # a lone surrogate: no tokenizer takes it (a 500 from the model before), escaped or as raw UTF-8 bytes
        (b'{"messages": [{"role": "user", "content": "hi \\ud800"}]}', "messages[0].content", "lone UTF-16 surrogate"),
        (b'{"messages": [{"role": "user", "content": "hi \xed\xa0\x80"}]}', "messages[0].content", "surrogate"),
        (
            b'{"messages": [{"role": "user", "content": [{"type": "text", "text": "\\ud83d\\ude00 \\udc00"}]}]}',
            "messages[0].content[0].text",
            "(\\udc00)",
        ),
        (body(tools=_tool({"type": "wat"})), "tools[0].function.parameters.type", "not a valid JSON Schema"),
        (
            body(tools=_tool({"type": "object", "properties": {"x": {"type": "wat"}}})),
            "tools[0].function.parameters.properties.x.type",
            "not a valid JSON Schema",
        ),
        (body(tools=_tool({"type": "object", "required": "x"})), "tools[0].function.parameters.required", "array"),
        (body(tools=_tool({"$schema": {}})), "tools[0].function.parameters.$schema", "a string"),
        (body(stream_options={"include_usage": True}), "stream_options", "only allowed when `stream` is true"),
        (body(stream=False, stream_options={}), "stream_options", "only allowed when `stream` is true"),
        (
            body(messages=[_image_part("data:image/png;base64,@@@@")]),
            "messages[0].content[0].image_url.url",
            "send data:<mime type>;base64,",
        ),
    ],
)
def test_input_no_engine_can_take_is_refused_before_any_work(raw: bytes, param: str, words: str) -> None:
    e = refused(raw)
    assert e.param == param and words in e.message and "pass a path" not in e.message, e.message
    json.dumps(e.message, ensure_ascii=False).encode()  # the error body itself must be valid UTF-8


def test_the_checks_stop_exactly_at_the_edges_of_what_is_taken() -> None:
    assert parse_chat_request(body(seed=2**63 - 1)).params.seed == 2**63 - 1
    assert parse_chat_request(body(seed=-(2**63))).params.seed == -(2**63)
    assert refused(body(seed=2**63)).param == refused(body(seed=-(2**63) - 1)).param == "seed"
    pair = parse_chat_request(b'{"messages": [{"role": "user", "content": "\\ud83d\\ude00"}]}')  # a surrogate pair
    assert pair.messages[0].text == "\U0001f600"
    assert refused(b'{"messages": [{"role": "user", "content": "\\ude00\\ud83d"}]}').param == "messages[0].content"
    schema = {"type": "object", "properties": {"city": {"type": ["string", "null"]}}, "required": ["city"]}
    assert parse_chat_request(body(tools=_tool(schema))).tools is not None
    assert parse_chat_request(body(stream=True, stream_options={"include_usage": True})).include_usage
