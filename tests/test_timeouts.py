"""Timeouts stop the work: cooperative cancellation, no late files, hung loads fail fast, a clean exit."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from modaverse_agent import Artifact, GenerationRequest, Generator
from modaverse_agent import invocation as agent_module
from modaverse_agent.agent import ModaVerseAgent
from modaverse_agent.testing import ScriptedLLM
from modaverse_agent.zoo import Zoo

ROOT = Path(__file__).resolve().parents[1]


def plan(*invocations: dict[str, Any]) -> dict[str, Any]:
    return {"text": "Done.", "invocations": list(invocations)}


class Stubborn(Generator):
    """Ignores cancellation: sleeps past the timeout, then writes a file (a busy or careless plugin)."""

    name = "stubborn"
    task = "text-to-video"
    modality = "video"
    description = "Ignores cancellation."
    priority = 10

    def __init__(self, delay: float) -> None:
        self.delay = delay
        super().__init__()

    def run(self, request: GenerationRequest) -> list[Artifact]:
        time.sleep(self.delay)
        return [self.artifact(request, request.output.write_bytes("late", ".mp4", b"late"))]


class WritesThenWaits(Generator):
    """Writes one file, then works until cancelled (checking, as generators must)."""

    name = "writes-then-waits"
    task = "text-to-video"
    modality = "video"
    description = "Writes, then waits for cancellation."
    priority = 10

    def run(self, request: GenerationRequest) -> list[Artifact]:
        first = request.output.write_bytes("first", ".mp4", b"early")
        while not request.cancelled:
            time.sleep(0.005)
        request.raise_if_cancelled()
        return [self.artifact(request, first)]


def _files(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if not p.name.startswith("response-"))


def test_a_late_write_never_lands(echo_zoo: Zoo, tmp_path: Path) -> None:
    echo_zoo.add(Stubborn(delay=0.4))
    llm = ScriptedLLM(plan({"task": "text-to-video", "prompt": "v"}, {"task": "text-to-image", "prompt": "i"}))
    agent = ModaVerseAgent(llm, echo_zoo, output_dir=tmp_path, timeout=0.1)
    agent.cancel_grace = 0.05
    r = agent.run("go")
    assert [a.task for a in r.artifacts] == ["text-to-image"]
    assert "was cancelled" in r.errors[0].message and "still running" in r.errors[0].message
    workers = [t for t in agent_module.abandoned_workers() if t.name == "modaverse-stubborn"]
    assert len(workers) == 1
    workers[0].join(5)  # let it try its late write
    assert not workers[0].is_alive()
    assert _files(tmp_path) == ["echo-image.png"]  # no late.mp4, no .partial- file
    assert [a["path"] for a in json.loads(r.manifest.read_text())["artifacts"]] == [str(r.artifacts[0].path)]


def test_files_written_before_the_timeout_are_removed(echo_zoo: Zoo, tmp_path: Path) -> None:
    echo_zoo.add(WritesThenWaits())
    llm = ScriptedLLM(plan({"task": "text-to-video", "prompt": "v"}, {"task": "text-to-image", "prompt": "i"}))
    t0 = time.perf_counter()
    r = ModaVerseAgent(llm, echo_zoo, output_dir=tmp_path, timeout=0.2).run("go")
    assert time.perf_counter() - t0 < 2.0  # the cancelled worker stopped within the grace
    assert "did not finish within 0.2 s and was cancelled" in r.errors[0].message
    assert "still running" not in r.errors[0].message
    assert _files(tmp_path) == ["echo-image.png"]
    assert not [t for t in agent_module.abandoned_workers() if t.name == "modaverse-writes-then-waits"]


class HungLoad(Generator):
    """A load that hangs (a stuck download, a lock held elsewhere) until ``gate`` opens."""

    name = "hung-load"
    task = "text-to-image"
    modality = "image"
    description = "Its load hangs."
    priority = 10

    def __init__(self) -> None:
        self.gate = threading.Event()
        super().__init__()

    def load(self) -> None:
        self.gate.wait(30)

    def run(self, request: GenerationRequest) -> list[Artifact]:
        return [self.artifact(request, request.output.write_bytes("img", ".png", b"x"))]


def test_a_hung_load_makes_later_calls_fail_fast_without_leaking_threads(echo_zoo: Zoo, tmp_path: Path) -> None:
    gen = HungLoad()
    echo_zoo.add(gen)
    llm = ScriptedLLM()
    agent = ModaVerseAgent(llm, echo_zoo, output_dir=tmp_path, timeout=0.3)
    agent.cancel_grace = 0.05
    try:
        llm.enqueue(plan({"task": "text-to-image", "prompt": "a"}))
        first = agent.run("go")
        assert "was cancelled; its model was still loading" in first.errors[0].message
        for _ in range(3):
            llm.enqueue(plan({"task": "text-to-image", "prompt": "a"}, {"task": "text-to-audio", "prompt": "b"}))
            t0 = time.perf_counter()
            later = agent.run("go")
            assert time.perf_counter() - t0 < 0.3  # fails at once instead of timing out
            assert "its load did not finish" in later.errors[0].message
            assert [a.task for a in later.artifacts] == ["text-to-audio"]
        hung = [t for t in threading.enumerate() if t.name == "modaverse-hung-load"]
        assert len(hung) == 1  # the first call's worker, still in load(); no thread per later call
    finally:
        gen.gate.set()
    hung[0].join(5)
    assert gen.loaded
    llm.enqueue(plan({"task": "text-to-image", "prompt": "a"}))
    assert agent.run("go").ok  # the load finished: the generator works again


class Cooperative(Generator):
    """Loops until cancelled, checking ``request.cancelled`` as the first-party generators do."""

    name = "cooperative"
    task = "text-to-video"
    modality = "video"
    description = "Checks for cancellation."
    priority = 10

    def run(self, request: GenerationRequest) -> list[Artifact]:
        while True:
            request.raise_if_cancelled()
            time.sleep(0.002)


def test_a_cooperative_generator_stops_and_its_thread_ends(echo_zoo: Zoo, tmp_path: Path) -> None:
    echo_zoo.add(Cooperative())
    r = ModaVerseAgent(
        ScriptedLLM(plan({"task": "text-to-video", "prompt": "v"})), echo_zoo, output_dir=tmp_path, timeout=0.1
    ).run("go")
    assert "was cancelled" in r.errors[0].message and "still running" not in r.errors[0].message
    assert not [t for t in threading.enumerate() if t.name == "modaverse-cooperative"]


def test_the_timeout_must_be_a_finite_positive_number(echo_zoo: Zoo) -> None:
    from modaverse_agent.errors import ModaVerseError

    for bad in (float("nan"), float("inf"), 0, -1, True):
        with pytest.raises(ModaVerseError, match="timeout must be a finite number"):
            ModaVerseAgent(ScriptedLLM(), echo_zoo, timeout=bad)


# -- the process exits cleanly -----------------------------------------------------------------------------

_SCRIPT_HEAD = """
import json, os, sys, time
os.environ["HF_HUB_OFFLINE"] = "1"
import torch
torch.set_num_threads(1)
from modaverse_agent import Artifact, GenerationRequest, Generator
from modaverse_agent import invocation as agent_module
from modaverse_agent.agent import ModaVerseAgent
from modaverse_agent.testing import ScriptedLLM
from modaverse_agent.zoo import Zoo
"""


def _run_script(body: str, tmp_path: Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "script.py"
    script.write_text(_SCRIPT_HEAD + textwrap.dedent(body))
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_a_cancelled_diffusers_pipeline_stops_and_the_process_exits_cleanly(tmp_path: Path) -> None:
    pytest.importorskip("diffusers")
    proc = _run_script(
        """
        from modaverse_agent import diffusion as d
        import modaverse_stable_diffusion  # registers the tiny "stable-diffusion" kind

        class TinyImage(d.DiffusersGenerator):
            name = "tiny-image"
            task = "text-to-image"
            modality = "image"
            description = "Tiny random Stable Diffusion."
            default_model = d.TINY_RANDOM
            pipeline_classes = ("StableDiffusionPipeline",)
            tiny_kind = "stable-diffusion"

            def run(self, request):
                with self.progress(request, 900) as bar:
                    self.pipeline.pipe(request.prompt, num_inference_steps=900, callback_on_step_end=bar.on_step_end)
                raise AssertionError("900 steps finished within the timeout")

        gen = TinyImage(device="cpu")
        gen.setup()  # loaded: the timeout falls among the denoising steps
        plan = {"text": "x", "invocations": [{"task": "text-to-image", "prompt": "a cat"}]}
        agent = ModaVerseAgent(ScriptedLLM(plan), Zoo([gen]), output_dir="out", timeout=1.0)
        r = agent.run("go")
        print(json.dumps({"errors": [e.message for e in r.errors], "abandoned": len(agent_module.abandoned_workers()),
                          "files": [f for f in os.listdir("out") if not f.startswith("response-")]}))
        """,
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "terminate called" not in proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["abandoned"] == 0 and out["files"] == []
    assert "was cancelled" in out["errors"][0] and "still running" not in out["errors"][0]


_BUSY_TORCH = """
class Busy(Generator):
    name = "busy"
    task = "text-to-image"
    modality = "image"
    description = "Multiplies matrices and never checks for cancellation."

    def run(self, request):
        end = time.monotonic() + float(os.environ.get("BUSY_S", "60"))
        while time.monotonic() < end:
            torch.randn(128, 128) @ torch.randn(128, 128)
        return []

plan = {"text": "x", "invocations": [{"task": "text-to-image", "prompt": "a cat"}]}
agent = ModaVerseAgent(ScriptedLLM(plan), Zoo([Busy()]), output_dir="out", timeout=0.2)
agent.cancel_grace = 0.05
r = agent.run("go")
print(json.dumps([e.message for e in r.errors]), flush=True)
"""


def test_exit_waits_for_a_worker_that_ignores_cancellation(tmp_path: Path) -> None:
    proc = _run_script("os.environ['BUSY_S'] = '1.5'\n" + _BUSY_TORCH, tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "still running" in json.loads(proc.stdout.strip().splitlines()[-1])[0]
    assert "terminate called" not in proc.stderr and "ignored cancellation" not in proc.stderr


def test_exit_ends_a_worker_that_never_stops_with_the_documented_status(tmp_path: Path) -> None:
    t0 = time.perf_counter()
    proc = _run_script("agent_module.EXIT_GRACE_S = 0.3\n" + _BUSY_TORCH, tmp_path)
    assert time.perf_counter() - t0 < 60
    assert proc.returncode == agent_module.EXIT_ABANDONED, proc.stderr[-2000:]
    assert "modaverse-busy ignored cancellation and still ran 0.3 s after exit began" in proc.stderr
    assert "still running" in json.loads(proc.stdout.strip().splitlines()[-1])[0]  # printed before the exit
