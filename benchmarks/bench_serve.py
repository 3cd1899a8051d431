"""``modaverse serve`` under load, and what the server costs over calling the agent in-process.

Part 1 (always): a fast scripted LLM (``--meta-response``: one picture per answer) and the echo plugin.
The server runs as its own process (``modaverse serve``, as users start it); this process is the clients.

* overhead: the median latency of one client's sequential HTTP requests minus the median of
  ``agent.run`` in-process on the same plan and generators;
* load: ``--clients`` concurrent clients send ``--requests`` requests (every 4th streamed); prints p50/p99
  latency of the answered ones, refusals (429), throughput, the server's peak RSS, and checks that every
  file of every answer is on disk.

Part 2 (``--default-model``): the built-in default model behind the server, warm: time to the first text
token vs the whole answer (streamed), and aggregate decode tokens/s of 8 concurrent clients vs one.

    OMP_NUM_THREADS=1 python benchmarks/bench_serve.py [--clients 64 --requests 1000] [--default-model]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # measure this checkout

PLAN = {"text": "Here is your picture.", "invocations": [{"task": "text-to-image", "prompt": "bands"}]}
PROMPTS = [
    "draw a picture of a cat on a sofa",
    "what is the capital of France?",
    "make a short song about the sea",
    "say hello to my friend",
    "write a haiku about autumn",
    "generate a video of waves at sunset",
    "read this sentence aloud: good morning",
    "describe a mountain village in two sentences",
]


def pct(values: list[float], q: float) -> float:
    """The q-quantile (0..1) of ``values``, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def start_server(args: list[str], workdir: Path, timeout: float) -> tuple[subprocess.Popen[str], str]:
    """``modaverse serve`` on a free port (echo generators only); returns the process and its /v1 URL."""
    env = {**os.environ, "MODAVERSE_LOAD_PLUGINS": "echo", "MODAVERSE_ZOO_CONFIG": str(workdir / "zoo.toml")}
    cmd = [sys.executable, "-m", "modaverse_agent.cli", "serve", "--port", "0", "--log-level", "warning", *args]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    deadline = time.monotonic() + timeout
    assert proc.stderr is not None
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line and proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}")
        if line.startswith("serving "):
            threading.Thread(target=proc.stderr.read, daemon=True).start()  # keep draining its log
            return proc, line.split(" on ")[1].split()[0]
    proc.kill()
    raise RuntimeError("the server did not start in time")


def stop_server(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


def peak_rss_mb(pid: int) -> float:
    """The peak resident memory of process ``pid`` (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def body(text: str, stream: bool = False) -> dict[str, Any]:
    return {"model": "modaverse", "messages": [{"role": "user", "content": text}], "stream": stream, "temperature": 0}


def read_answer(r: httpx.Response, stream: bool) -> dict[str, Any]:
    """The modaverse extension field of a (streamed or not) answer."""
    if not stream:
        return r.json()["choices"][0]["message"]["modaverse"]
    events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]", events[-1:]
    last = [c for c in map(json.loads, events[:-1]) if c["choices"]][-1]
    return last["choices"][0]["delta"]["modaverse"]


def in_process_ms(n: int, out: Path) -> list[float]:
    """Latencies of ``agent.run`` on the same plan and echo generators, in this process."""
    import modaverse_echo

    from modaverse_agent.agent import ModaVerseAgent
    from modaverse_agent.testing import FixedPlanLLM
    from modaverse_agent.zoo import Zoo

    zoo = Zoo([modaverse_echo.EchoImage(), modaverse_echo.EchoAudio()])
    agent = ModaVerseAgent(FixedPlanLLM(json.dumps(PLAN)), zoo, output_dir=out, timeout=60)
    times = []
    for i in range(n + 10):
        t = time.perf_counter()
        response = agent.run(f"request {i}")
        assert response.ok and response.artifacts, response.errors
        if i >= 10:  # the first ones warm up
            times.append((time.perf_counter() - t) * 1000)
    return times


def part_scripted(a: argparse.Namespace, work: Path) -> None:
    out = work / "served"
    flags = ["--meta-response", json.dumps(PLAN), "-o", str(out), "--workers", str(a.workers)]
    proc, url = start_server([*flags, "--max-queue", str(a.max_queue)], work, 120)
    try:
        base = url.removesuffix("/v1")
        with httpx.Client(base_url=base, timeout=120, limits=httpx.Limits(max_connections=a.clients + 8)) as http:
            seq = []
            for i in range(a.sequential + 10):
                t = time.perf_counter()
                r = http.post("/v1/chat/completions", json=body(f"request {i}"))
                assert r.status_code == 200, r.text
                if i >= 10:
                    seq.append((time.perf_counter() - t) * 1000)
            local = in_process_ms(a.sequential, work / "inproc")
            rss_idle = peak_rss_mb(proc.pid)
            results: list[tuple[int, float, str, dict[str, Any] | None]] = []
            lock = threading.Lock()

            def ask(n: int) -> None:
                stream = n % 4 == 0
                t = time.perf_counter()
                with http.stream("POST", "/v1/chat/completions", json=body(f"load {n}", stream)) as r:
                    if r.status_code == 429:
                        r.read()
                        ext = None
                    else:
                        if not stream:
                            r.read()
                        ext = read_answer(r, stream) if r.status_code == 200 else None
                took = (time.perf_counter() - t) * 1000
                with lock:
                    results.append((r.status_code, took, r.headers.get("x-request-id", ""), ext))

            t0 = time.perf_counter()
            with ThreadPoolExecutor(a.clients) as pool:
                list(pool.map(ask, range(a.requests)))
            wall = time.perf_counter() - t0
        rss_peak = peak_rss_mb(proc.pid)
    finally:
        stop_server(proc)
    codes: dict[int, int] = {}
    for code, *_ in results:
        codes[code] = codes.get(code, 0) + 1
    answered = [(ms, rid, ext) for code, ms, rid, ext in results if code == 200]
    missing = sum(
        1
        for _, rid, ext in answered
        for art in (ext or {}).get("artifacts", [])
        if not any(p.stat().st_size == art["bytes"] for p in (out / rid).rglob(art["filename"]))
    )
    files = sum(len((ext or {}).get("artifacts", [])) for _, _, ext in answered)
    lat = [ms for ms, _, _ in answered]
    print(f"\n== scripted LLM + echo: {a.clients} clients, {a.requests} requests (every 4th streamed)")
    print(f"status codes: {dict(sorted(codes.items()))}  (refused with 429: {codes.get(429, 0)})")
    print(f"latency of answered: p50 {pct(lat, 0.5):.1f} ms  p99 {pct(lat, 0.99):.1f} ms  max {max(lat):.1f} ms")
    print(f"throughput: {len(answered) / wall:.1f} answers/s over {wall:.1f} s")
    print(f"files: {files} listed, {missing} missing on disk")
    print(f"server peak RSS: {rss_idle:.0f} MiB before the load, {rss_peak:.0f} MiB after")
    p_http, p_local = statistics.median(seq), statistics.median(local)
    print(f"\n== one client, {a.sequential} sequential requests (warm)")
    print(
        f"HTTP p50 {p_http:.2f} ms (mean {statistics.fmean(seq):.2f}); in-process agent.run p50 {p_local:.2f} ms "
        f"(mean {statistics.fmean(local):.2f})"
    )
    print(
        f"server overhead per request: {p_http - p_local:.2f} ms (p50), "
        f"{statistics.fmean(seq) - statistics.fmean(local):.2f} ms (mean)"
    )


def part_default_model(a: argparse.Namespace, work: Path) -> None:
    flags = ["-o", str(work / "dm"), "--workers", "8", "--engine", a.engine]
    if a.max_batch:
        flags += ["--max-batch", str(a.max_batch)]
    t = time.perf_counter()
    proc, url = start_server(flags, work, 900)
    base = url.removesuffix("/v1")
    try:
        with httpx.Client(base_url=base, timeout=900) as http:
            http.post("/v1/chat/completions", json=body(PROMPTS[0])).raise_for_status()  # warm up
            print(f"\n== default model ({a.engine} engine): loaded and warm after {time.perf_counter() - t:.1f} s")
            first, text_done, whole = [], [], []
            for prompt in PROMPTS[: a.ttft_runs]:
                t = time.perf_counter()
                t_first = t_text = None
                with http.stream("POST", "/v1/chat/completions", json=body(prompt, True)) as r:
                    for line in r.iter_lines():
                        if not line.startswith("data: {"):
                            continue
                        delta = (json.loads(line[6:])["choices"] or [{}])[0].get("delta", {})
                        if t_first is None and delta.get("content"):
                            t_first = time.perf_counter()
                        if t_text is None and "plan" in delta.get("modaverse", {}):
                            t_text = time.perf_counter()
                whole.append(time.perf_counter() - t)
                first.append((t_first or time.perf_counter()) - t)
                text_done.append((t_text or time.perf_counter()) - t)
            print(
                f"time to first text token: median {statistics.median(first) * 1000:.0f} ms; answer text complete "
                f"{statistics.median(text_done) * 1000:.0f} ms; whole answer incl. generators "
                f"{statistics.median(whole) * 1000:.0f} ms  ({a.ttft_runs} streamed requests)"
            )

            def ask(prompt: str) -> int:
                r = http.post("/v1/chat/completions", json=body(prompt))
                r.raise_for_status()
                return int(r.json()["usage"]["completion_tokens"])

            for n in range(a.rounds):  # alternated, so a machine whose load drifts shows it
                t = time.perf_counter()
                one = sum(ask(p) for p in PROMPTS)
                one_s = time.perf_counter() - t
                t = time.perf_counter()
                with ThreadPoolExecutor(8) as pool:
                    eight = sum(pool.map(ask, PROMPTS))
                eight_s = time.perf_counter() - t
                print(
                    f"round {n + 1}: 1 client {one / one_s:.1f} tokens/s ({one} tokens, {one_s:.1f} s); 8 concurrent "
                    f"clients {eight / eight_s:.1f} tokens/s aggregate ({eight} tokens, {eight_s:.1f} s)"
                )
        batches = httpx.get(f"{base}/health").json()["batches"]
        print(f"server peak RSS: {peak_rss_mb(proc.pid):.0f} MiB; decode batches (size: count): {batches}")
    finally:
        stop_server(proc)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=64)
    p.add_argument("--requests", type=int, default=1000)
    p.add_argument("--sequential", type=int, default=200, help="Requests of the one-client overhead measurement.")
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--max-queue", type=int, default=64)
    p.add_argument("--default-model", action="store_true", help="Also measure the built-in default model.")
    p.add_argument("--skip-scripted", action="store_true", help="Only the default-model part.")
    p.add_argument("--engine", default="auto", choices=["auto", "torch", "llama.cpp"])
    p.add_argument("--max-batch", type=int, default=None, help="Server --max-batch for the default model.")
    p.add_argument("--ttft-runs", type=int, default=4)
    p.add_argument("--rounds", type=int, default=2, help="Alternated 1-client / 8-client throughput rounds.")
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if not a.skip_scripted:
            part_scripted(a, Path(tmp))
        if a.default_model:
            part_default_model(a, Path(tmp))


if __name__ == "__main__":
    main()
