"""The server on the built-in default model (Gemma 3 270M + the shipped adapter), with the ``openai`` client
and LangChain's ``ChatOpenAI``, streaming and not, an image attached. Slow (the model loads for ~30 s and
answers in seconds on a CPU), so it runs only with ``MODAVERSE_SLOW_TESTS=1``."""

from __future__ import annotations

import base64
import io
import os
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from langchain_core.messages import HumanMessage
from langchain_openai import ChatOpenAI
from openai import OpenAI
from PIL import Image

from modaverse_agent.agent import ModaVerseAgent
from modaverse_agent.serving.live import serve_in_thread
from modaverse_agent.serving.server import create_app
from modaverse_agent.zoo import Zoo

pytestmark = [
    pytest.mark.allow_hosts(["127.0.0.1"]),
    pytest.mark.skipif(not os.environ.get("MODAVERSE_SLOW_TESTS"), reason="slow: set MODAVERSE_SLOW_TESTS=1"),
]


@pytest.fixture
def url(tmp_path: Path, echo_zoo: Zoo) -> Iterator[str]:
    from modaverse_agent.default_model import load_default_model

    agent = ModaVerseAgent(load_default_model(), echo_zoo, output_dir=tmp_path / "out", timeout=120, seed=0)
    with serve_in_thread(create_app(agent)) as served:
        yield served


def _shape(text: str) -> str:
    return re.sub(r"file-[0-9a-f]{32}", "file-ID", text)


def test_real_clients_on_the_default_model(url: str) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (230, 40, 40)).save(buf, "PNG")
    image = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    content = [
        {"type": "text", "text": "draw a cat in this colour"},
        {"type": "image_url", "image_url": {"url": image}},
    ]
    client = OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0, timeout=600)
    done = client.chat.completions.create(
        model="modaverse", messages=[{"role": "user", "content": content}], temperature=0
    )
    answer = done.choices[0].message
    ext = answer.model_extra["modaverse"]
    assert answer.content and ext["media"] == [{"id": "image_1", "mime_type": "image/png"}]
    assert done.usage is not None and done.usage.completion_tokens > 0
    for artifact in ext["artifacts"]:  # whatever the model chose to make is served
        got = httpx.get(artifact["url"])
        assert got.status_code == 200 and len(got.content) == artifact["bytes"]
    chunks = list(
        client.chat.completions.create(
            model="modaverse", messages=[{"role": "user", "content": content}], temperature=0, stream=True
        )
    )
    texts = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(texts) > 1 and _shape("".join(texts)) == _shape(answer.content)
    chat = ChatOpenAI(base_url=f"{url}/v1", api_key="none", model="modaverse", temperature=0, max_retries=0)
    assert _shape(str(chat.invoke([HumanMessage(content)]).content)) == _shape(answer.content)
    assert _shape("".join(str(c.content) for c in chat.stream([HumanMessage(content)]))) == _shape(answer.content)
