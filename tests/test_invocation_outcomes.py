"""What a plugin author meets when a generator misbehaves, through the agent, the CLI and the LangChain tools:
progress outside the CLI, tool timeouts, empty results, a failed invocation's files, manifests, wrong modality."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from langchain_core.messages import ToolCall, ToolMessage

from modaverse_agent import plugins
from modaverse_agent.agent import ModaVerseAgent
from modaverse_agent.artifacts import Artifact
from modaverse_agent.errors import ModaVerseError
from modaverse_agent.generators import GenerationRequest, Generator
from modaverse_agent.testing import ScriptedLLM
from modaverse_agent.tools import generator_tool, zoo_tools
from modaverse_agent.zoo import Zoo

SIBLING = {"task": "text-to-image", "prompt": "a kite", "args": {"width": 16}}


def plan(*invocations: dict[str, Any], text: str = "Done.") -> dict[str, Any]:
    return {"text": text, "invocations": list(invocations)}


class _Text(Generator):
    __abstract__ = True
    task = "text-to-story"
    modality = "text"
    description = "Writes a story."


class Progressing(_Text):
    name = "progressing"

    def run(self, request: GenerationRequest) -> list[Artifact]:
        request.progress(1, 2)
        request.progress(2, 2)
        return [self.artifact(request, request.output.write_bytes("story", ".txt", b"Once upon a time.\n"))]


class Spinning(_Text):
    """Works until cancelled, checking as generators must (gives up by itself after 20 s)."""

    name = "spinning"

    def run(self, request: GenerationRequest) -> list[Artifact]:
        request.output.write_bytes("draft", ".txt", b"a draft")
        end = time.monotonic() + 20
        while time.monotonic() < end:
            request.raise_if_cancelled()
            time.sleep(0.01)
        return []


class NoFile(_Text):
    name = "no-file"

    def run(self, request: GenerationRequest) -> list[Artifact]:
        return []


class WritesThenRaises(_Text):
    name = "writes-then-raises"

    def run(self, request: GenerationRequest) -> list[Artifact]:
        request.output.write_bytes("partial", ".txt", b"half a story")
        raise ValueError("ran out of plot")


class WritesPng(_Text):
    """Declares text, writes a PNG."""

    name = "writes-png"

    def run(self, request: GenerationRequest) -> list[Artifact]:
        import numpy as np

        path = request.output.write_image("img", np.zeros((8, 8, 3), dtype=np.uint8))
        return [self.artifact(request, path)]


class StartsLikeBmp(_Text):
    """Plain text that happens to begin with a bitmap's magic bytes."""

    name = "bmw"

    def run(self, request: GenerationRequest) -> list[Artifact]:
        return [self.artifact(request, request.output.write_bytes("cars", ".txt", b"BMW makes cars.\n"))]


def _agent(zoo: Zoo, generator: Generator, reply: dict[str, Any], out: Path, **kw: Any) -> ModaVerseAgent:
    zoo.add(generator)
    return ModaVerseAgent(ScriptedLLM(reply), zoo, output_dir=out, timeout=30, **kw)


def _tool_call(generator: Generator, out: Path, **kw: Any) -> ToolMessage:
    [tool] = zoo_tools(Zoo([generator]), output_dir=out, **kw)
    return tool.invoke(ToolCall(name=generator.task, args={"prompt": "a tale"}, id="c1", type="tool_call"))


def _files(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if not p.name.startswith("response-"))


# -- 1. request.progress is callable wherever the request was built ---------------------------------------


def test_progress_is_callable_through_the_agent_the_tools_and_a_bare_request(echo_zoo: Zoo, tmp_path: Path) -> None:
    story = {"task": "text-to-story", "prompt": "a tale"}
    r = _agent(echo_zoo, Progressing(), plan(story), tmp_path / "a").run("hi")
    assert r.ok, r.errors
    assert [a.generator for a in r.artifacts] == ["progressing"]
    msg = _tool_call(Progressing(), tmp_path / "t")
    assert msg.status != "error" and "story" in msg.content, msg.content
    from modaverse_agent.artifacts import OutputDir

    assert Progressing().generate(GenerationRequest("a tale", OutputDir(tmp_path / "b")))
    assert Progressing().generate(GenerationRequest("a tale", OutputDir(tmp_path / "c"), progress=None))
    seen: list[tuple[str, int, int]] = []
    listened = ModaVerseAgent(ScriptedLLM(plan(story)), Zoo([Progressing()]), output_dir=tmp_path / "d")
    listened.on_progress = lambda task, done, total: seen.append((task, done, total))
    assert listened.run("hi").ok
    assert seen == [("text-to-story", 1, 2), ("text-to-story", 2, 2)]  # a listener still hears every step


# -- 2. the LangChain tools time out --------------------------------------------------------------------


def test_a_tool_call_past_its_timeout_is_cancelled_and_says_so(tmp_path: Path) -> None:
    t0 = time.perf_counter()
    msg = _tool_call(Spinning(), tmp_path, timeout=0.3)
    assert time.perf_counter() - t0 < 10
    assert msg.status == "error"
    assert "'spinning' did not finish within 0.3 s and was cancelled" in msg.content
    assert "timeout=" in msg.content and "ask for less work" in msg.content
    assert _files(tmp_path) == []  # its draft was deleted


def test_generator_tool_takes_a_timeout_too_and_refuses_a_bad_one(echo_zoo: Zoo, tmp_path: Path) -> None:
    tool = generator_tool(Spinning(), output_dir=tmp_path, timeout=0.2)
    msg = tool.invoke(ToolCall(name="text-to-story", args={"prompt": "x"}, id="c", type="tool_call"))
    assert msg.status == "error" and "did not finish within 0.2 s" in msg.content
    for bad in (0, -1, float("nan"), float("inf"), True):
        with pytest.raises(ModaVerseError, match="timeout must be a finite number"):
            zoo_tools(echo_zoo, output_dir=tmp_path, timeout=bad)


# -- 3. an invocation that made no file is an error -------------------------------------------------------


def test_an_invocation_that_made_nothing_is_an_error_and_the_rest_goes_on(echo_zoo: Zoo, tmp_path: Path) -> None:
    r = _agent(echo_zoo, NoFile(), plan({"task": "text-to-story", "prompt": "p"}, SIBLING), tmp_path).run("go")
    assert [a.task for a in r.artifacts] == ["text-to-image"]
    [err] = r.errors
    assert (err.task, err.index) == ("text-to-story", 0)
    assert "'no-file' made no file" in err.message and "request.output" in err.message
    msg = _tool_call(NoFile(), tmp_path / "t")
    assert msg.status == "error" and "'no-file' made no file" in msg.content


# -- 4. a failed invocation's files are deleted ------------------------------------------------------------


def test_a_failed_invocations_files_are_deleted_and_its_siblings_kept(echo_zoo: Zoo, tmp_path: Path) -> None:
    agent = _agent(echo_zoo, WritesThenRaises(), plan({"task": "text-to-story", "prompt": "p"}, SIBLING), tmp_path)
    r = agent.run("go")
    assert "ValueError: ran out of plot" in r.errors[0].message
    assert _files(tmp_path) == ["echo-image.png"]  # no partial.txt
    msg = _tool_call(WritesThenRaises(), tmp_path / "t")
    assert msg.status == "error" and "ran out of plot" in msg.content
    assert _files(tmp_path / "t") == []


# -- 5. a manifest whenever the response ran invocations or met errors ------------------------------------------


def test_a_response_whose_only_invocation_failed_still_has_a_manifest(echo_zoo: Zoo, tmp_path: Path) -> None:
    r = _agent(echo_zoo, WritesThenRaises(), plan({"task": "text-to-story", "prompt": "p"}), tmp_path).run("go")
    assert r.artifacts == [] and r.manifest is not None
    record = json.loads(r.manifest.read_text())
    assert record["artifacts"] == [] and record["errors"][0]["message"] == r.errors[0].message
    assert record["meta_response"]["invocations"][0]["task"] == "text-to-story"


def test_a_text_answer_with_errors_has_a_manifest_and_one_without_has_none(echo_zoo: Zoo, tmp_path: Path) -> None:
    dropped = plan({"task": "text-to-smell", "prompt": "roses"}, text="Here.")  # the parser drops it, with an error
    r = ModaVerseAgent(ScriptedLLM(dropped), echo_zoo, output_dir=tmp_path / "e").run("go")
    assert r.text == "Here." and r.errors and r.manifest is not None
    assert json.loads(r.manifest.read_text())["errors"][0]["stage"] == "meta-response"
    r = ModaVerseAgent(ScriptedLLM(plan(text="Just words.")), echo_zoo, output_dir=tmp_path / "ok").run("go")
    assert r.ok and r.manifest is None and not (tmp_path / "ok").exists()


def test_a_failing_model_leaves_a_manifest_with_the_error(echo_zoo: Zoo, tmp_path: Path) -> None:
    r = ModaVerseAgent(ScriptedLLM(), echo_zoo, output_dir=tmp_path).run("go")  # nothing queued: the LLM raises
    assert r.errors[0].stage == "llm" and r.manifest is not None
    record = json.loads(r.manifest.read_text())
    assert record["meta_response"] is None and "language model failed" in record["errors"][0]["message"]


def test_cli_json_names_the_manifest_of_a_response_that_made_nothing(tmp_path: Path) -> None:
    import modaverse_echo

    from modaverse_agent.cli import cli

    plugins.load_plugins()
    plugins.pm.register(modaverse_echo, name="echo")
    bad = json.dumps(plan({"task": "nope", "prompt": "p"}))
    res = CliRunner().invoke(cli, ["run", "x", "--meta-response", bad, "-o", str(tmp_path), "--json"])
    data = json.loads(res.stdout)
    assert res.exit_code == 1 and data["manifest"] is not None
    assert "unknown task 'nope'" in json.loads(Path(data["manifest"]).read_text())["errors"][0]["message"]


# -- 6. files must be of the modality their artifact declares -----------------------------------------------


def test_a_file_of_another_modality_is_refused_and_deleted(echo_zoo: Zoo, tmp_path: Path) -> None:
    r = _agent(echo_zoo, WritesPng(), plan({"task": "text-to-story", "prompt": "p"}, SIBLING), tmp_path).run("go")
    assert [a.task for a in r.artifacts] == ["text-to-image"]
    [err] = r.errors
    assert err.task == "text-to-story"
    assert "'writes-png' declared img.png as text, but the file is image (image/png by its content)" in err.message
    assert "declare modality 'image'" in err.message
    assert _files(tmp_path) == ["echo-image.png"]
    assert [a["task"] for a in json.loads(r.manifest.read_text())["artifacts"]] == ["text-to-image"]
    msg = _tool_call(WritesPng(), tmp_path / "t")
    assert msg.status == "error" and "declared img.png as text" in msg.content
    plain = _tool_call(StartsLikeBmp(), tmp_path / "b")  # text that begins like a bitmap's magic bytes is text
    assert plain.status != "error" and plain.artifact[0].path.read_bytes() == b"BMW makes cars.\n"
