"""``modaverse serve`` over loopback with real clients: the official ``openai`` package and LangChain's
``ChatOpenAI``, streaming and not, an image attached as a data URL, the files served back; tools; a
conversation whose second turn edits the picture the first made; and every refusal (400 with the path,
401, 413, 429 with Retry-After, 503 while loading), a client that disconnects, failures that stay in
their response, micro-batching."""

from __future__ import annotations

import base64
import io
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from langchain_core.messages import HumanMessage
from langchain_openai import ChatOpenAI
from openai import APIError, AuthenticationError, BadRequestError, NotFoundError, OpenAI, RateLimitError
from PIL import Image

from modaverse_agent import GeneratorError
from modaverse_agent.agent import ModaVerseAgent
from modaverse_agent.llm_io import Completion, LLMRequest
from modaverse_agent.serving.live import serve_in_thread
from modaverse_agent.serving.server import create_app
from modaverse_agent.zoo import Zoo

pytestmark = pytest.mark.allow_hosts(["127.0.0.1"])

DRAW = {
    "text": "Here is a red square, edited.",
    "invocations": [
        {"task": "text-to-image", "prompt": "a red square"},
        {"task": "image-editing", "prompt": "invert it", "inputs": ["image_1"]},
    ],
}
EDIT = {
    "text": "Watercolor.",
    "invocations": [{"task": "image-editing", "prompt": "watercolor", "inputs": ["image_1"]}],
}
FILE_ID = re.compile(r"file-[0-9a-f]{32}")


class PlanLLM:
    """Answers each request with a plan (fixed, or chosen from the request), streamed in small pieces."""

    output_format = "auto"

    def __init__(self, answer: dict[str, Any] | Callable[[LLMRequest], dict[str, Any]], piece: int = 6) -> None:
        self.answer, self.piece = answer, piece
        self.requests: list[LLMRequest] = []

    def _raw(self, request: LLMRequest) -> str:
        self.requests.append(request)
        answer = self.answer(request) if callable(self.answer) else self.answer
        if "fail" in request.instruction:
            raise RuntimeError("the model broke")
        return json.dumps(answer)

    def respond(self, request: LLMRequest) -> str:
        return self._raw(request)

    def stream(self, request: LLMRequest) -> Iterator[str]:
        raw = self._raw(request)
        return iter([raw[i : i + self.piece] for i in range(0, len(raw), self.piece)])


class BatchLLM(PlanLLM):
    """A PlanLLM that decodes batches (slowly, so concurrent requests gather) and fails on 'boom'."""

    def __init__(self, answer: dict[str, Any]) -> None:
        super().__init__(answer)
        self.sizes: list[int] = []

    def complete_batch(self, requests: list[LLMRequest]) -> list[Completion]:
        self.sizes.append(len(requests))
        time.sleep(0.2)
        if any("boom" in r.instruction for r in requests):
            raise RuntimeError("boom")
        return [Completion(self._raw(r), input_tokens=10, output_tokens=5) for r in requests]


def _gate_image(gate: threading.Event, started: list[str]) -> Any:
    import modaverse_echo

    class GateImage(modaverse_echo.EchoImage):
        name = "gate-image"
        task = "gated-image"
        description = "Draws once the test opens the gate."

        def make(self, request: Any, rng: Any) -> Any:
            started.append(request.prompt)
            if not gate.wait(20):
                raise GeneratorError("the gate never opened")
            return super().make(request, rng)

    return GateImage()


def _broken_audio() -> Any:
    import modaverse_echo

    class BrokenAudio(modaverse_echo.EchoAudio):
        name = "broken-audio"

        def make(self, request: Any, rng: Any) -> Any:
            raise GeneratorError("the synthesiser is out of tune")

    return BrokenAudio()


def png_url(color: tuple[int, int, int] = (200, 30, 30)) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (16, 12), color).save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def user(text: str, *images: str) -> dict[str, Any]:
    parts: list[dict[str, Any]] = [{"type": "text", "text": text}]
    parts += [{"type": "image_url", "image_url": {"url": u}} for u in images]
    return {"role": "user", "content": parts}


@contextmanager
def serving(llm: Any, zoo: Zoo, out: Path, **options: Any) -> Iterator[str]:
    agent = ModaVerseAgent(llm, zoo, output_dir=out, timeout=30, seed=0)
    with serve_in_thread(create_app(agent, **options)) as url:
        yield url


def client(url: str, key: str = "none") -> OpenAI:
    return OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=60)


def files_of(content: str) -> list[str]:
    return re.findall(r"\((http://[^)]+/v1/files/file-[0-9a-f]{32}/content)\)", content)


def test_openai_client_gets_the_text_and_the_files_as_urls(echo_zoo: Zoo, tmp_path: Path) -> None:
    llm = PlanLLM(DRAW)
    with serving(llm, echo_zoo, tmp_path / "out") as url:
        raw = client(url).chat.completions.with_raw_response.create(
            model="modaverse", messages=[user("draw a square", png_url())], extra_headers={"x-request-id": "req-42"}
        )
        done = raw.parse()
        assert raw.headers["x-request-id"] == "req-42" and done.id == "chatcmpl-req-42"
        message = done.choices[0].message
        ext = message.model_extra["modaverse"]
        assert [a["task"] for a in ext["artifacts"]] == ["text-to-image", "image-editing"] and ext["errors"] == []
        assert message.content.startswith("Here is a red square, edited.\n\n![text-to-image](")
        urls = files_of(message.content)
        assert urls == [a["url"] for a in ext["artifacts"]]
        for artifact, link in zip(ext["artifacts"], urls, strict=True):
            got = httpx.get(link)
            assert got.status_code == 200 and got.headers["content-type"] == "image/png"
            on_disk = next((tmp_path / "out" / "req-42").rglob(artifact["filename"]))
            assert got.content == on_disk.read_bytes()
        assert [i for i, _ in llm.requests[0].media] == ["image_1"] and done.choices[0].finish_reason == "stop"
        assert client(url).models.list().data[0].id == "modaverse"


def test_openai_client_deletes_a_made_file_from_disk_and_the_rest_stays(echo_zoo: Zoo, tmp_path: Path) -> None:
    with serving(PlanLLM(DRAW), echo_zoo, tmp_path / "out") as url:
        api = client(url)
        done = api.chat.completions.create(model="modaverse", messages=[user("draw a square", png_url())])
        first, second = done.choices[0].message.model_extra["modaverse"]["artifacts"]
        path = next((tmp_path / "out").rglob(first["filename"]))
        assert api.files.retrieve(first["id"]).id == first["id"]
        gone = api.files.delete(first["id"])
        assert gone.deleted is True and gone.id == first["id"]
        assert not path.exists() and httpx.get(first["url"]).status_code == 404
        with pytest.raises(NotFoundError):
            api.files.delete(first["id"])  # once only
        with pytest.raises(NotFoundError):
            api.files.retrieve(first["id"])
        assert httpx.get(second["url"]).status_code == 200  # the answer's other file stays
        assert httpx.delete(f"{url}/v1/files/{second['id']}").status_code == 200
        left = [p.suffix for p in (tmp_path / "out").rglob("*") if p.is_file()]
        assert left == [".json"]  # the answer's manifest: what was made, and how


def _shape(content: str) -> str:
    return FILE_ID.sub("file-ID", content)


def test_openai_stream_sends_text_as_it_decodes_then_the_files(echo_zoo: Zoo, tmp_path: Path) -> None:
    with serving(PlanLLM(DRAW), echo_zoo, tmp_path / "out") as url:
        c = client(url)
        whole = c.chat.completions.create(model="m", messages=[user("draw", png_url())]).choices[0].message.content
        chunks = list(
            c.chat.completions.create(
                model="m", messages=[user("draw", png_url())], stream=True, stream_options={"include_usage": True}
            )
        )
    texts = [ch.choices[0].delta.content for ch in chunks if ch.choices and ch.choices[0].delta.content]
    assert len([t for t in texts if "files/" not in t]) > 3  # the answer text came in pieces
    assert _shape("".join(texts)) == _shape(whole)
    last = [ch for ch in chunks if ch.choices][-1]
    assert last.choices[0].finish_reason == "stop"
    assert len(last.choices[0].delta.model_extra["modaverse"]["artifacts"]) == 2
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert len({ch.id for ch in chunks}) == 1


def test_langchain_chatopenai_invokes_and_streams(echo_zoo: Zoo, tmp_path: Path) -> None:
    with serving(PlanLLM(DRAW), echo_zoo, tmp_path / "out") as url:
        chat = ChatOpenAI(base_url=f"{url}/v1", api_key="none", model="modaverse", max_retries=0, temperature=0)
        msg = HumanMessage([{"type": "text", "text": "draw"}, {"type": "image_url", "image_url": {"url": png_url()}}])
        answer = chat.invoke([msg])
        streamed = list(chat.stream([msg]))
    assert len(files_of(str(answer.content))) == 2
    assert len(streamed) > 4 and _shape("".join(str(c.content) for c in streamed)) == _shape(str(answer.content))


def test_a_second_turn_edits_the_picture_the_first_turn_made(echo_zoo: Zoo, tmp_path: Path) -> None:
    draw = {"text": "A cat.", "invocations": [{"task": "text-to-image", "prompt": "a cat"}]}
    llm = PlanLLM(lambda r: EDIT if "watercolor" in r.instruction else draw)
    with serving(llm, echo_zoo, tmp_path / "out") as url:
        c = client(url)
        first = c.chat.completions.create(model="m", messages=[user("draw a cat")]).choices[0].message
        history = [user("draw a cat"), {"role": "assistant", "content": first.content}, user("now a watercolor")]
        second = c.chat.completions.create(model="m", messages=history).choices[0].message
    asked = llm.requests[-1]
    assert [i for i, _ in asked.media] == ["image_1"] and asked.history[-1].text.endswith("[made: image_1]")
    ext = second.model_extra["modaverse"]
    assert ext["errors"] == [] and [a["task"] for a in ext["artifacts"]] == ["image-editing"]


def test_with_tools_the_server_answers_like_a_plain_llm(echo_zoo: Zoo, tmp_path: Path) -> None:
    call = {"text": "", "invocations": [{"task": "get_weather", "args": {"city": "Oslo"}}]}
    llm = PlanLLM(
        lambda r: call if r.tasks and r.tasks[0].task == "get_weather" else {"text": "Sunny.", "invocations": []}
    )
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather of a city.",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
            },
        }
    ]
    with serving(llm, echo_zoo, tmp_path / "out") as url:
        c = client(url)
        got = c.chat.completions.create(model="m", messages=[user("weather in Oslo?")], tools=tools)
        choice = got.choices[0]
        assert choice.finish_reason == "tool_calls" and choice.message.content is None
        assert choice.message.tool_calls[0].function.name == "get_weather"
        assert json.loads(choice.message.tool_calls[0].function.arguments) == {"city": "Oslo"}
        chunks = list(c.chat.completions.create(model="m", messages=[user("weather?")], tools=tools, stream=True))
        calls = [tc for ch in chunks if ch.choices for tc in ch.choices[0].delta.tool_calls or []]
        assert calls[0].function.name == "get_weather" and chunks[-1].choices[0].finish_reason == "tool_calls"
        after = [
            user("weather in Oslo?"),
            choice.message.model_dump(exclude_none=True, exclude={"modaverse"}),
            {"role": "tool", "tool_call_id": choice.message.tool_calls[0].id, "content": "sunny"},
        ]
        final = c.chat.completions.create(model="m", messages=after, tools=tools).choices[0]
        assert final.finish_reason == "stop" and final.message.content == "Sunny."
        chat = ChatOpenAI(base_url=f"{url}/v1", api_key="none", model="m", max_retries=0).bind_tools(tools)
        assert chat.invoke("weather in Oslo?").tool_calls[0]["args"] == {"city": "Oslo"}
    assert not list((tmp_path / "out").rglob("*.png"))  # nothing was run


def test_a_malformed_body_is_a_400_with_the_path(echo_zoo: Zoo, tmp_path: Path) -> None:
    with serving(PlanLLM(DRAW), echo_zoo, tmp_path / "out") as url:
        bad = [user("x"), {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "/etc/passwd"}}]}]
        with pytest.raises(BadRequestError) as info:
            client(url).chat.completions.create(model="m", messages=bad)
        assert info.value.body["param"] == "messages[1].content[0].image_url.url"
        r = httpx.post(f"{url}/v1/chat/completions", content=b'{"messages": [{"role": "user"', timeout=10)
        assert r.status_code == 400 and r.json()["error"]["param"] == "$"
        assert httpx.get(f"{url}/v1/files/file-{'0' * 32}/content").status_code == 404


def test_api_key(echo_zoo: Zoo, tmp_path: Path) -> None:
    with serving(PlanLLM(DRAW), echo_zoo, tmp_path / "out", api_key="sesame") as url:
        for key in ("none", "sesame2"):
            with pytest.raises(AuthenticationError):
                client(url, key).chat.completions.create(model="m", messages=[user("draw", png_url())])
        assert httpx.get(f"{url}/v1/models").status_code == 401
        done = client(url, "sesame").chat.completions.create(model="m", messages=[user("draw", png_url())])
        link = files_of(done.choices[0].message.content)[0]
        assert httpx.get(link).status_code == 200  # a file URL is a capability: links open in a browser
        assert httpx.get(f"{url}/health").json()["status"] == "ok"


def test_an_oversized_body_is_a_413(echo_zoo: Zoo, tmp_path: Path) -> None:
    with serving(PlanLLM(DRAW), echo_zoo, tmp_path / "out", max_body_bytes=4096) as url:
        big = json.dumps({"messages": [user("x" * 5000)]}).encode()
        r = httpx.post(f"{url}/v1/chat/completions", content=big, timeout=10)
        assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
        r = httpx.post(f"{url}/v1/chat/completions", content=iter([big[:3000], big[3000:]]), timeout=10)  # chunked
        assert r.status_code == 413
        assert httpx.post(f"{url}/v1/chat/completions", json={"messages": [user("x")]}, timeout=30).status_code == 200


def test_a_full_queue_is_a_429_with_retry_after(echo_zoo: Zoo, tmp_path: Path) -> None:
    gate, started = threading.Event(), []
    zoo = Zoo([*[echo_zoo.get(n) for n in ("echo-image", "echo-edit")], _gate_image(gate, started)])
    plan = {"text": "ok", "invocations": [{"task": "gated-image", "prompt": "p"}]}
    with serving(PlanLLM(plan), zoo, tmp_path / "out", workers=1, max_queue=1) as url:
        results: list[int] = []

        def ask() -> None:
            results.append(
                httpx.post(f"{url}/v1/chat/completions", json={"messages": [user("x")]}, timeout=60).status_code
            )

        threads = [threading.Thread(target=ask) for _ in range(2)]
        threads[0].start()
        while not started:
            time.sleep(0.01)
        threads[1].start()
        deadline = time.monotonic() + 10
        while httpx.get(f"{url}/health").json()["waiting"] < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        with pytest.raises(RateLimitError) as info:
            client(url).chat.completions.create(model="m", messages=[user("x")])
        assert int(info.value.response.headers["retry-after"]) >= 1
        gate.set()
        for t in threads:
            t.join(30)
        assert results == [200, 200]


def test_a_client_that_disconnects_mid_stream_frees_its_slot(echo_zoo: Zoo, tmp_path: Path) -> None:
    gate, started = threading.Event(), []
    zoo = Zoo([echo_zoo.get("echo-image"), _gate_image(gate, started)])
    plan = {
        "text": "Two pictures.",
        "invocations": [{"task": "gated-image", "prompt": "one"}, {"task": "gated-image", "prompt": "two"}],
    }
    with serving(PlanLLM(plan), zoo, tmp_path / "out", workers=1, max_queue=0) as url:
        body = {"messages": [user("draw two")], "stream": True}
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=30) as r:
            # keep the line iterator referenced: a dropped one is closed at once, and httpcore then closes the
            # connection (the client would leave before the first picture starts, not while it is drawn)
            lines = r.iter_lines()
            for line in lines:
                if '"plan"' in line:
                    break
            deadline = time.monotonic() + 10
            while not started and time.monotonic() < deadline:
                time.sleep(0.01)
            assert started == ["one"], "the first picture never started while the client was connected"
        # the client is gone while the first picture is being drawn
        time.sleep(0.3)
        gate.set()
        deadline = time.monotonic() + 10
        while httpx.get(f"{url}/health").json()["running"] and time.monotonic() < deadline:
            time.sleep(0.02)
        assert httpx.get(f"{url}/health").json()["running"] == 0
        assert started == ["one"]  # the second invocation never started
        again = httpx.post(f"{url}/v1/chat/completions", json={"messages": [user("again")]}, timeout=30)
        assert again.status_code == 200  # one worker, no queue: the slot is free again
        assert sorted(started) == ["one", "one", "two"]


def test_a_waiting_request_whose_client_left_never_runs(echo_zoo: Zoo, tmp_path: Path) -> None:
    gate, started = threading.Event(), []
    zoo = Zoo([echo_zoo.get("echo-image"), _gate_image(gate, started)])
    llm = PlanLLM({"text": "ok", "invocations": [{"task": "gated-image", "prompt": "p"}]})
    with serving(llm, zoo, tmp_path / "out", workers=1, max_queue=4) as url:
        first = threading.Thread(
            target=httpx.post,
            args=(f"{url}/v1/chat/completions",),
            kwargs={"json": {"messages": [user("first")]}, "timeout": 60},
        )
        first.start()
        while not started:
            time.sleep(0.01)
        with pytest.raises(httpx.ReadTimeout):  # waits behind the first, then gives up
            httpx.post(f"{url}/v1/chat/completions", json={"messages": [user("second")]}, timeout=0.5)
        deadline = time.monotonic() + 10
        while httpx.get(f"{url}/health").json()["waiting"] and time.monotonic() < deadline:
            time.sleep(0.02)
        assert httpx.get(f"{url}/health").json()["waiting"] == 0  # it left the queue when its client left
        gate.set()
        first.join(30)
    assert [r.instruction for r in llm.requests] == ["first"] and started == ["p"]


def test_a_bad_attachment_is_reported_and_the_good_one_is_used(echo_zoo: Zoo, tmp_path: Path) -> None:
    llm = PlanLLM(DRAW)
    broken = "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\n broken").decode()
    with serving(llm, echo_zoo, tmp_path / "out") as url:
        msg = client(url).chat.completions.create(model="m", messages=[user("edit", broken, png_url())])
    ext = msg.choices[0].message.model_extra["modaverse"]
    assert [e["stage"] for e in ext["errors"]] == ["media"] and "messages[0].content[1]" in ext["errors"][0]["message"]
    assert [i for i, _ in llm.requests[0].media] == ["image_1"] and len(ext["artifacts"]) == 2


def test_failures_stay_in_their_response(echo_zoo: Zoo, tmp_path: Path) -> None:
    zoo = Zoo([echo_zoo.get("echo-image"), _broken_audio()])
    plan = {
        "text": "A picture and a tune.",
        "invocations": [{"task": "text-to-image", "prompt": "p"}, {"task": "text-to-audio", "prompt": "q"}],
    }
    with serving(PlanLLM(plan), zoo, tmp_path / "out") as url:
        c = client(url)
        msg = c.chat.completions.create(model="m", messages=[user("go")]).choices[0].message
        ext = msg.model_extra["modaverse"]
        assert [a["task"] for a in ext["artifacts"]] == ["text-to-image"]
        assert ext["errors"][0]["task"] == "text-to-audio" and "out of tune" in ext["errors"][0]["message"]
        assert "_text-to-audio failed: " in msg.content
        with pytest.raises(APIError, match="the model broke"):
            c.chat.completions.create(model="m", messages=[user("fail now")])
        with pytest.raises(APIError, match="the model broke"):
            list(c.chat.completions.create(model="m", messages=[user("fail now")], stream=True))
        assert c.chat.completions.create(model="m", messages=[user("go")]).choices[0].finish_reason == "stop"


def test_concurrent_answers_are_decoded_in_batches_and_a_bad_one_fails_alone(echo_zoo: Zoo, tmp_path: Path) -> None:
    llm = BatchLLM({"text": "Hi.", "invocations": []})
    with serving(llm, echo_zoo, tmp_path / "out", workers=8, max_batch=8, batch_window_s=0.05) as url:
        codes: dict[str, int] = {}
        usages: list[dict[str, int]] = []

        def ask(text: str) -> None:
            r = httpx.post(f"{url}/v1/chat/completions", json={"messages": [user(text)]}, timeout=60)
            codes[text] = r.status_code
            if r.status_code == 200:
                usages.append(r.json()["usage"])

        threads = [threading.Thread(target=ask, args=(t,)) for t in ["boom", *[f"hello {i}" for i in range(7)]]]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        batches = httpx.get(f"{url}/health").json()["batches"]
    assert max(llm.sizes) > 1 and max(int(k) for k in batches) > 1
    assert codes.pop("boom") == 500 and set(codes.values()) == {200} and len(codes) == 7
    assert usages == [{"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}] * 7


def test_cors_is_off_unless_an_origin_is_given(echo_zoo: Zoo, tmp_path: Path) -> None:
    preflight = {"Origin": "http://ui.example", "Access-Control-Request-Method": "POST"}
    with serving(PlanLLM(DRAW), echo_zoo, tmp_path / "a") as url:
        r = httpx.options(f"{url}/v1/chat/completions", headers=preflight)
        assert "access-control-allow-origin" not in r.headers
    with serving(PlanLLM(DRAW), echo_zoo, tmp_path / "b", cors_origins=("http://ui.example",)) as url:
        r = httpx.options(f"{url}/v1/chat/completions", headers=preflight)
        assert r.headers["access-control-allow-origin"] == "http://ui.example"
        r = httpx.options(f"{url}/v1/chat/completions", headers={**preflight, "Origin": "http://evil.example"})
        assert "access-control-allow-origin" not in r.headers


def test_a_factory_loads_in_the_background(echo_zoo: Zoo, tmp_path: Path) -> None:
    ready = threading.Event()

    def load() -> ModaVerseAgent:
        ready.wait(20)
        return ModaVerseAgent(PlanLLM(DRAW), echo_zoo, output_dir=tmp_path / "out", timeout=30)

    with serve_in_thread(create_app(load)) as url:
        assert httpx.get(f"{url}/health").json()["status"] == "loading"
        r = httpx.post(f"{url}/v1/chat/completions", json={"messages": [user("x")]})
        assert r.status_code == 503 and r.headers["retry-after"] == "5"
        ready.set()
        deadline = time.monotonic() + 10
        while httpx.get(f"{url}/health").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert httpx.post(f"{url}/v1/chat/completions", json={"messages": [user("x")]}, timeout=30).status_code == 200

    def broken() -> ModaVerseAgent:
        raise OSError("no weights here")

    with serve_in_thread(create_app(broken)) as url:
        deadline = time.monotonic() + 10
        while httpx.get(f"{url}/health").json()["status"] == "loading" and time.monotonic() < deadline:
            time.sleep(0.02)
        health = httpx.get(f"{url}/health")
        assert health.status_code == 503 and "no weights here" in health.json()["error"]
        r = httpx.post(f"{url}/v1/chat/completions", json={"messages": [user("x")]})
        assert r.status_code == 503 and "failed to load" in r.json()["error"]["message"]


def test_a_reply_does_not_wait_for_a_delayed_ack(echo_zoo: Zoo, tmp_path: Path) -> None:
    """Nagle is off on the server's connections: a small reply takes about a millisecond, not ~40 ms."""
    with serving(PlanLLM(DRAW), echo_zoo, tmp_path / "out") as url, httpx.Client(base_url=url) as http:
        times = []
        for _ in range(21):
            t = time.perf_counter()
            assert http.get("/health").status_code == 200
            times.append(time.perf_counter() - t)
    assert sorted(times)[10] < 0.02


class SlowLLM(PlanLLM):
    """Decodes a "slow" request for ``seconds`` unless told to stop (``should_stop``, as the engines take it);
    anything else is answered at once."""

    def __init__(self, seconds: float) -> None:
        super().__init__({"text": "Hi.", "invocations": []})
        self.seconds = seconds
        self.stopped: list[float] = []

    def respond(self, request: LLMRequest) -> str:
        return self.complete_batch([request])[0].text

    def complete_batch(self, requests: list[LLMRequest], *, should_stop: Any = None) -> list[Completion]:
        start = time.monotonic()
        while any("slow" in r.instruction for r in requests) and time.monotonic() < start + self.seconds:
            if should_stop is not None and should_stop():
                self.stopped.append(time.monotonic() - start)
                raise RuntimeError("stopped")  # the engines raise DecodeCancelled
            time.sleep(0.01)
        return [Completion(self._raw(r), input_tokens=10, output_tokens=5) for r in requests]


WEATHER = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]


@pytest.mark.parametrize("max_batch", [8, 1])
@pytest.mark.parametrize("tools", [False, True], ids=["agent", "tools"])
def test_a_client_that_leaves_before_a_non_streamed_answer_stops_its_decode(
    echo_zoo: Zoo, tmp_path: Path, max_batch: int, tools: bool
) -> None:
    """The client times out during a long decode: the decode ends at once and the slot is free (it ran to its end,
    holding the only worker, while the next request waited or was refused)."""
    llm = SlowLLM(seconds=10)
    extra = {"tools": WEATHER} if tools else {}
    with serving(llm, echo_zoo, tmp_path / "out", workers=1, max_queue=0, max_batch=max_batch) as url:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{url}/v1/chat/completions", json={"messages": [user("slow")], **extra}, timeout=0.5)
        deadline = time.monotonic() + 3
        while (not llm.stopped or httpx.get(f"{url}/health").json()["running"]) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert llm.stopped and llm.stopped[0] < 2 and httpx.get(f"{url}/health").json()["running"] == 0
        start = time.monotonic()
        r = httpx.post(f"{url}/v1/chat/completions", json={"messages": [user("quick")], **extra}, timeout=30)
        assert r.status_code == 200 and time.monotonic() - start < 3
        assert llm.stopped == llm.stopped[:1]  # the quick one was not stopped


def test_an_unexpected_failure_is_a_500_and_the_connection_stays_open(echo_zoo: Zoo, tmp_path: Path) -> None:
    """Starlette's catch-all handler re-raised after its 500, so uvicorn dropped the connection and the client's
    next request on it failed ("Connection reset by peer")."""
    with serving(PlanLLM(DRAW), echo_zoo, tmp_path / "out") as url, httpx.Client(base_url=url, timeout=30) as http:
        body = {"messages": [user("fail now")], "tools": WEATHER}
        failed = http.post("/v1/chat/completions", json=body, headers={"x-request-id": "req-boom"})
        assert failed.status_code == 500 and failed.headers["x-request-id"] == "req-boom"
        error = failed.json()["error"]
        assert error["type"] == "server_error" and "the model broke" in error["message"]
        after = http.post("/v1/chat/completions", json={"messages": [user("draw")]})
        assert after.status_code == 200
        ends = {r.extensions["network_stream"].get_extra_info("client_addr") for r in (failed, after)}
        assert len(ends) == 1  # the same kept-alive connection


def test_the_openai_client_lists_the_files_and_the_model_says_when_it_started(echo_zoo: Zoo, tmp_path: Path) -> None:
    start = int(time.time())
    with serving(PlanLLM(DRAW), echo_zoo, tmp_path / "out", api_key="k") as url:
        api = client(url, "k")
        assert api.files.list().data == []
        made = api.chat.completions.create(model="m", messages=[user("draw", png_url())])
        first, second = (a["id"] for a in made.choices[0].message.model_extra["modaverse"]["artifacts"])
        page = api.files.list()
        assert [f.id for f in page.data] == [second, first] and page.has_more is False  # newest first
        assert page.data[0].purpose == "assistants_output" and page.data[0].model_extra["url"].endswith("/content")
        assert [f.id for f in api.files.list(order="asc")] == [first, second]
        one = api.files.list(limit=1)
        assert [f.id for f in one.data] == [second] and one.has_more is True
        assert [f.id for f in api.files.list(limit=1)] == [second, first]  # the client pages on with `after`
        assert api.files.list(purpose="batch").data == []
        with pytest.raises(BadRequestError) as info:
            api.files.list(order="sideways")
        assert info.value.param == "order"
        api.files.delete(first)
        assert [f.id for f in api.files.list()] == [second]
        with pytest.raises(AuthenticationError):
            client(url, "wrong").files.list()
        created = api.models.list().data[0].created
        assert start <= created <= time.time() and api.models.retrieve("modaverse").created == created
