"""Under load nothing is lost: 16 clients send 100 requests (some streamed) to a server that holds at most 8;
every request is answered or cleanly refused (429 with Retry-After), and every file of every answer is on
disk and served."""

from __future__ import annotations

import json
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from modaverse_agent.agent import ModaVerseAgent
from modaverse_agent.serving.live import serve_in_thread
from modaverse_agent.serving.server import create_app
from modaverse_agent.testing import FixedPlanLLM
from modaverse_agent.zoo import Zoo

pytestmark = pytest.mark.allow_hosts(["127.0.0.1"])
CLIENTS, REQUESTS = 16, 100
PLAN = {
    "text": "A picture and a sound.",
    "invocations": [
        {"task": "text-to-image", "prompt": "bands", "args": {"width": 16, "height": 16}},
        {"task": "text-to-audio", "prompt": "chord", "args": {"duration": 0.05}},
    ],
}


def _streamed(r: httpx.Response) -> dict[str, Any]:
    """The last chunk's modaverse field of an SSE answer (and a check that it ended with [DONE])."""
    events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    last = [c for c in chunks if c["choices"]][-1]
    assert last["choices"][0]["finish_reason"] == "stop"
    return last["choices"][0]["delta"]["modaverse"]


def test_every_request_is_answered_or_cleanly_refused_and_no_file_is_lost(echo_zoo: Zoo, tmp_path: Path) -> None:
    out = tmp_path / "out"
    agent = ModaVerseAgent(FixedPlanLLM(json.dumps(PLAN)), echo_zoo, output_dir=out, timeout=30, seed=0)
    app = create_app(agent, workers=4, max_queue=4)
    outcomes: Counter[str] = Counter()
    answered: list[dict[str, Any]] = []
    lock = threading.Lock()
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=60) as http:

        def ask(n: int) -> None:
            body = {"model": "m", "messages": [{"role": "user", "content": f"request {n}"}], "stream": n % 4 == 0}
            with http.stream("POST", "/v1/chat/completions", json=body) as r:
                if r.status_code == 429:
                    assert int(r.headers["retry-after"]) >= 1
                    r.read()
                    assert r.json()["error"]["code"] == "rate_limit_exceeded"
                    kind, ext = "refused", None
                else:
                    assert r.status_code == 200, r.read()
                    if body["stream"]:
                        ext = _streamed(r)
                    else:
                        r.read()
                        ext = r.json()["choices"][0]["message"]["modaverse"]
                    kind = "answered"
            with lock:
                outcomes[kind] += 1
                if ext is not None:
                    answered.append(ext)

        with ThreadPoolExecutor(CLIENTS) as pool:
            list(pool.map(ask, range(REQUESTS)))
        for ext in answered:
            assert ext["errors"] == [] and [a["task"] for a in ext["artifacts"]] == ["text-to-image", "text-to-audio"]
            for a in ext["artifacts"]:
                on_disk = [p for p in out.rglob(a["filename"]) if p.stat().st_size == a["bytes"]]
                assert on_disk, a
                served = http.get(a["url"])
                assert served.status_code == 200 and len(served.content) == a["bytes"]
        health = http.get("/health").json()
    counts = app.state.service.scheduler.counts
    assert outcomes["answered"] + outcomes["refused"] == REQUESTS and outcomes["answered"] >= 8
    assert counts["completed"] == outcomes["answered"] and counts["refused"] == outcomes["refused"]
    assert counts["failed"] == counts["cancelled"] == 0
    assert (health["running"], health["waiting"]) == (0, 0)
    assert len(list(out.rglob("*.png"))) == len(list(out.rglob("*.wav"))) == outcomes["answered"]
