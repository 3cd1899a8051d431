"""The agent pipeline: media -> meta-response -> isolated dispatch -> FinalResponse; nothing is lost."""

from __future__ import annotations

import json
import math
import os
import threading
import time
import wave
from pathlib import Path
from typing import Any

import av
import pytest
from PIL import Image

from modaverse_agent import Artifact, GenerationRequest, Generator
from modaverse_agent.agent import ModaVerseAgent
from modaverse_agent.meta_response import Invocation, MetaResponse
from modaverse_agent.testing import ScriptedLLM
from modaverse_agent.zoo import Zoo


def plan(*invocations: dict[str, Any], text: str = "Done.") -> dict[str, Any]:
    return {"text": text, "invocations": list(invocations)}


def test_every_modality_makes_a_real_file(agent: ModaVerseAgent, llm: ScriptedLLM, png_file: Path) -> None:
    llm.enqueue(
        plan(
            {"task": "text-to-image", "prompt": "a red apple", "args": {"width": 32, "height": 24}},
            {"task": "text-to-audio", "prompt": "rain", "args": {"duration": 0.25}},
            {"task": "text-to-video", "prompt": "waves", "args": {"frames": 4, "fps": 4}},
            {"task": "image-editing", "prompt": "make it green", "inputs": ["image_1"]},
        )
    )
    r = agent.run("do everything", [png_file])
    assert r.ok, r.errors
    assert r.text == "Done."
    by_task = {a.task: a for a in r.artifacts}
    assert Image.open(by_task["text-to-image"].path).size == (32, 24)
    with wave.open(str(by_task["text-to-audio"].path)) as w:
        assert w.getnframes() == 4000
    with av.open(str(by_task["text-to-video"].path)) as c:
        assert len(list(c.decode(video=0))) == 4
    assert Image.open(by_task["image-editing"].path).size == (16, 12)
    assert by_task["text-to-image"].generator == "echo-image" and by_task["text-to-image"].prompt == "a red apple"
    assert by_task["text-to-image"].seed == 0 and by_task["text-to-audio"].seed == 1
    manifest = json.loads(r.manifest.read_text())
    assert [a["task"] for a in manifest["artifacts"]] == [a.task for a in r.artifacts]


def test_llm_sees_instruction_media_ids_and_schema(agent: ModaVerseAgent, llm: ScriptedLLM, png_file: Path) -> None:
    llm.enqueue(plan(text="It is red."))
    r = agent.run("what colour?", [png_file, png_file])
    assert r.ok and r.text == "It is red." and r.artifacts == [] and r.manifest is None
    req = llm.history[0]
    assert req.instruction == "what colour?"
    assert [i for i, _ in req.media] == ["image_1", "image_2"]
    editing = next(
        s
        for s in req.schema["properties"]["invocations"]["items"]["anyOf"]
        if s["properties"]["task"]["const"] == "image-editing"
    )
    assert editing["properties"]["inputs"]["items"] == {"enum": ["image_1", "image_2"]}
    assert {t.task for t in req.tasks} == set(agent.zoo.tasks())


def test_same_seed_same_bytes(agent: ModaVerseAgent, llm: ScriptedLLM, tmp_path: Path) -> None:
    for _ in range(2):
        llm.enqueue(plan({"task": "text-to-image", "prompt": "x", "args": {"seed": 42}}))
    a = agent.run("x", output_dir=tmp_path / "a").artifacts[0]
    b = agent.run("x", output_dir=tmp_path / "b").artifacts[0]
    assert a.seed == b.seed == 42 and a.path.read_bytes() == b.path.read_bytes()


def test_legacy_output_is_understood(agent: ModaVerseAgent, llm: ScriptedLLM) -> None:
    llm.enqueue("Modality: [IMAGE] Prompt: a lighthouse at dusk ###")
    r = agent.run("draw a lighthouse")
    assert r.ok and r.artifacts[0].task == "text-to-image" and r.artifacts[0].prompt == "a lighthouse at dusk"


# -- bad input: each gives a clear error and loses nothing else ---------------------------------------


def test_invalid_json(agent: ModaVerseAgent, llm: ScriptedLLM) -> None:
    llm.enqueue("I think you want a cat picture {oops")
    r = agent.run("cat")
    assert r.artifacts == [] and r.raw.startswith("I think")
    assert r.errors[0].stage == "meta-response" and "no JSON object" in r.errors[0].message


def test_schema_breaking_json_keeps_the_text(agent: ModaVerseAgent, llm: ScriptedLLM) -> None:
    llm.enqueue({"text": "Here.", "invocations": "text-to-image"})
    r = agent.run("cat")
    assert r.text == "Here." and "invocations" in r.errors[0].message


@pytest.mark.parametrize(
    ("bad", "words"),
    [
        ({"task": "text-to-smell", "prompt": "roses"}, "unknown task 'text-to-smell'"),
        ({"task": "text-to-image"}, "'prompt' is missing"),
        ({"task": "text-to-image", "prompt": "x" * 1_000_000}, "over the limit"),
        (
            {"task": "image-editing", "prompt": "green", "inputs": ["image_1"]},
            "needs an input image and none was given",
        ),
    ],
)
def test_bad_invocation_does_not_lose_the_good_one(
    agent: ModaVerseAgent, llm: ScriptedLLM, bad: dict[str, Any], words: str
) -> None:
    llm.enqueue(plan(bad, {"task": "text-to-audio", "prompt": "bell", "args": {"duration": 0.1}}))
    r = agent.run("go")
    assert [a.task for a in r.artifacts] == ["text-to-audio"]
    assert len(r.errors) == 1 and words in r.errors[0].message
    assert len(r.errors[0].message) < 400
    assert json.loads(r.manifest.read_text())["errors"][0]["message"] == r.errors[0].message


def test_bad_media_file_is_skipped_and_reported(
    agent: ModaVerseAgent, llm: ScriptedLLM, tmp_path: Path, png_file: Path
) -> None:
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"definitely not an image")
    llm.enqueue(plan({"task": "image-editing", "prompt": "invert", "inputs": ["image_1"]}))
    r = agent.run("edit", [junk, tmp_path / "missing.jpg", png_file])
    assert [e.stage for e in r.errors] == ["media", "media"]
    assert "input 1" in r.errors[0].message and "does not exist" in r.errors[1].message
    assert [i for i, _ in r.media] == ["image_1"] and r.artifacts[0].task == "image-editing"


class Boom(Generator):
    name = "boom"
    task = "text-to-image"
    modality = "image"
    description = "Always fails."
    priority = 10

    def run(self, request: GenerationRequest) -> list[Artifact]:
        raise RuntimeError("CUDA out of memory")


class Hang(Generator):
    name = "hang"
    task = "text-to-video"
    modality = "video"
    description = "Never finishes until cancelled."
    priority = 10
    release_event = threading.Event()

    def run(self, request: GenerationRequest) -> list[Artifact]:
        while not (request.cancelled or self.release_event.is_set()):
            time.sleep(0.01)
        return []


def test_generator_that_raises_or_hangs(echo_zoo: Zoo, llm: ScriptedLLM, tmp_path: Path) -> None:
    echo_zoo.add(Boom())
    echo_zoo.add(Hang())
    agent = ModaVerseAgent(llm, echo_zoo, output_dir=tmp_path, timeout=0.3)
    llm.enqueue(
        plan(
            {"task": "text-to-image", "prompt": "a"},
            {"task": "text-to-video", "prompt": "b"},
            {"task": "text-to-speech", "prompt": "hello there"},
        )
    )
    try:
        r = agent.run("go")
    finally:
        Hang.release_event.set()
    assert [a.task for a in r.artifacts] == ["text-to-speech"]
    assert [(e.task, e.index) for e in r.errors] == [("text-to-image", 0), ("text-to-video", 1)]
    assert "boom' failed: RuntimeError: CUDA out of memory" in r.errors[0].message
    assert "did not finish within 0.3 s and was cancelled" in r.errors[1].message and "--timeout" in r.errors[1].message
    assert "still running" not in r.errors[1].message


def test_unwritable_output_dir_keeps_the_text(echo_zoo: Zoo, llm: ScriptedLLM) -> None:
    agent = ModaVerseAgent(llm, echo_zoo, output_dir="/proc/modaverse-outputs")
    llm.enqueue(plan({"task": "text-to-image", "prompt": "a"}, text="Here is a picture."))
    r = agent.run("go")
    assert r.text == "Here is a picture." and r.artifacts == []
    assert r.errors[0].stage == "output" and "--output-dir" in r.errors[0].message


def test_llm_that_raises(echo_zoo: Zoo, tmp_path: Path) -> None:
    class Broken:
        def respond(self, request: Any) -> str:
            raise ConnectionError("model server down")

    r = ModaVerseAgent(Broken(), echo_zoo, output_dir=tmp_path).run("hi")
    assert r.errors[0].stage == "llm" and "model server down" in r.errors[0].message


def test_generator_returning_garbage(echo_zoo: Zoo, llm: ScriptedLLM, tmp_path: Path) -> None:
    class Garbage(Generator):
        name = "garbage"
        task = "text-to-image"
        modality = "image"
        description = "Returns a string."
        priority = 5

        def run(self, request: GenerationRequest) -> Any:
            return "not artifacts"

    echo_zoo.add(Garbage())
    llm.enqueue(plan({"task": "text-to-image", "prompt": "a"}))
    r = ModaVerseAgent(llm, echo_zoo, output_dir=tmp_path).run("go")
    assert "not a list of Artifact" in r.errors[0].message


def test_input_media_of_the_wrong_modality(agent: ModaVerseAgent, llm: ScriptedLLM, tmp_path: Path) -> None:
    wav = tmp_path / "a.wav"
    with wave.open(str(wav), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\x00\x00" * 800)
    llm.enqueue(
        plan(
            {"task": "image-editing", "prompt": "x", "inputs": ["audio_1"]},
            {"task": "text-to-image", "prompt": "y", "inputs": ["audio_1"]},
        )
    )
    r = agent.run("go", [wav])
    # the schema already rules out an edit with no image; the generator's own check catches the rest
    assert r.errors[0].stage == "meta-response" and "needs an input image" in r.errors[0].message
    assert "accepts no input media" in r.errors[1].message


# -- hostile input never escapes agent.run (issue 17) ----------------------------------------------------


def test_a_parser_crash_becomes_an_error_and_keeps_the_media(
    agent: ModaVerseAgent, llm: ScriptedLLM, png_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import modaverse_agent.agent as agent_module

    def crash(raw: str, schema: dict[str, Any], fmt: str = "json") -> Any:
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(agent_module, "parse_output", crash)
    llm.enqueue("{" * 5000)
    r = agent.run("go", [png_file])
    assert [e.stage for e in r.errors] == ["meta-response"]
    assert "RecursionError" in r.errors[0].message and len(r.errors[0].message) <= 300
    assert [i for i, _ in r.media] == ["image_1"] and r.raw == "{" * 5000


def test_an_unexpected_media_failure_keeps_the_good_attachments(
    agent: ModaVerseAgent, llm: ScriptedLLM, png_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import modaverse_agent.agent as agent_module

    real = agent_module.load_media
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"root:x:0:0:root")

    def flaky(src: Any) -> Any:
        if Path(src) == secret:
            raise PermissionError(13, "Permission denied", str(src))
        return real(src)

    monkeypatch.setattr(agent_module, "load_media", flaky)
    llm.enqueue(plan({"task": "image-editing", "prompt": "invert", "inputs": ["image_1"]}))
    r = agent.run("edit", [secret, png_file])
    assert [e.stage for e in r.errors] == ["media"]
    assert "input 1 skipped" in r.errors[0].message and "PermissionError" in r.errors[0].message
    assert "root:x" not in r.errors[0].message
    assert [i for i, _ in r.media] == ["image_1"] and [a.task for a in r.artifacts] == ["image-editing"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files without read permission")
def test_an_unreadable_attachment_is_skipped(
    agent: ModaVerseAgent, llm: ScriptedLLM, png_file: Path, tmp_path: Path
) -> None:
    locked = tmp_path / "locked.png"
    locked.write_bytes(png_file.read_bytes())
    locked.chmod(0)
    llm.enqueue(plan(text="ok"))
    r = agent.run("look", [locked, png_file])
    assert [e.stage for e in r.errors] == ["media"] and [i for i, _ in r.media] == ["image_1"]


def _tool_call(*invocations: Invocation) -> MetaResponse:
    """A meta-response as a LangChain tool call delivers it: no JSON parser in between, so NaN gets through."""
    return MetaResponse(text="Here.", invocations=invocations)


def test_non_finite_numbers_are_refused_naming_the_argument(agent: ModaVerseAgent) -> None:
    r = agent.dispatch(
        _tool_call(
            Invocation("text-to-audio", "rain", args={"duration": math.nan}),
            Invocation("text-to-audio", "wind", args={"duration": math.inf}),
            Invocation("text-to-image", "a red apple", args={"width": 16, "height": 16}),
        )
    )
    assert [a.task for a in r.artifacts] == ["text-to-image"]
    assert [(e.index, e.stage) for e in r.errors] == [(0, "invocation"), (1, "invocation")]
    assert "duration is nan, not a finite number" in r.errors[0].message
    assert "duration is inf, not a finite number" in r.errors[1].message
    json.loads(r.manifest.read_text(), parse_constant=_no_constants)  # strict JSON, no bare NaN


def _no_constants(name: str) -> Any:
    raise AssertionError(f"the manifest holds a bare {name}")


def test_lone_surrogates_never_crash_and_everything_is_writable_as_utf8(
    agent: ModaVerseAgent, llm: ScriptedLLM
) -> None:
    llm.enqueue('{"text": "Here \ud800.", "invocations": [{"task": "text-to-image", "prompt": "a \udfff cat"}]}')
    r = agent.run("draw \ud800")
    assert r.ok, r.errors
    assert r.text == "Here \ufffd." and r.artifacts[0].prompt == "a \ufffd cat"
    json.dumps(r.to_dict(), ensure_ascii=False).encode("utf-8")  # no UnicodeEncodeError
    manifest = json.loads(r.manifest.read_bytes().decode("utf-8"))
    assert manifest["artifacts"][0]["prompt"] == "a \ufffd cat" and manifest["text"] == "Here \ufffd."


@pytest.mark.parametrize(
    "raw",
    [
        "Modality: [\ud800] Prompt: x ###",
        '{"text": "Here \\ud800.", "invocations": [{"task": "text-to-image", "prompt": "a \\udfff cat"}]}',
        '{"text": "ok", "invocations": [{"task": "text-to-\\ud800", "prompt": "x"}]}',
    ],
)
def test_surrogates_in_errors_and_raw_output_are_replaced(agent: ModaVerseAgent, llm: ScriptedLLM, raw: str) -> None:
    llm.enqueue(raw)  # raw surrogates, and JSON escapes of them that a parser may decode
    r = agent.run("go")
    assert "\ud800" not in r.raw and all("\ud800" not in e.message for e in r.errors)
    json.dumps(r.to_dict(), ensure_ascii=False).encode("utf-8")
    if r.manifest is not None:
        r.manifest.read_bytes().decode("utf-8")


def test_non_finite_metadata_still_gives_a_strict_json_manifest(
    echo_zoo: Zoo, llm: ScriptedLLM, tmp_path: Path
) -> None:
    class Odd(Generator):
        name = "odd"
        task = "text-to-image"
        modality = "image"
        description = "Records odd numbers."
        priority = 5

        def run(self, request: GenerationRequest) -> list[Artifact]:
            path = request.output.write_bytes("odd", ".png", b"x")
            return [self.artifact(request, path, guidance=math.nan, scale=-math.inf, note="\udc80")]

    echo_zoo.add(Odd())
    llm.enqueue(plan({"task": "text-to-image", "prompt": "a"}))
    r = ModaVerseAgent(llm, echo_zoo, output_dir=tmp_path).run("go")
    assert r.ok, r.errors
    data = json.loads(r.manifest.read_bytes().decode("utf-8"), parse_constant=_no_constants)
    assert data["artifacts"][0]["metadata"] == {"guidance": "NaN", "scale": "-Infinity", "note": "\ufffd"}
    assert json.dumps(r.to_dict(), allow_nan=False)


class Liar(Generator):
    """Returns a file it wrote, /etc/passwd and a symlink out of the output dir."""

    name = "liar"
    task = "text-to-image"
    modality = "image"
    description = "Returns paths outside the output directory."
    priority = 5

    def run(self, request: GenerationRequest) -> list[Artifact]:
        good = request.output.write_bytes("good", ".png", b"x")
        link = request.output.root / "link.png"
        link.symlink_to("/etc/hostname")
        return [
            Artifact("image", Path("/etc/passwd"), "image/png"),
            self.artifact(request, good),
            Artifact("image", link, "image/png"),
        ]


def test_only_files_inside_the_output_dir_count(echo_zoo: Zoo, llm: ScriptedLLM, tmp_path: Path) -> None:
    echo_zoo.add(Liar())
    llm.enqueue(plan({"task": "text-to-image", "prompt": "a"}, {"task": "text-to-audio", "prompt": "b"}))
    r = ModaVerseAgent(llm, echo_zoo, output_dir=tmp_path / "out").run("go")
    assert [a.path.name for a in r.artifacts] == ["good.png", "echo-audio.wav"]
    assert [(e.stage, e.task, e.index) for e in r.errors] == [("invocation", "text-to-image", 0)]
    assert "/etc/passwd" in r.errors[0].message and "link.png" in r.errors[0].message
    assert "2 path(s)" in r.errors[0].message
    text = r.manifest.read_text()
    assert "/etc/passwd" not in json.dumps(json.loads(text)["artifacts"])
    assert r.artifacts[0].generator == "liar" and r.artifacts[0].prompt == "a"


def test_a_bad_legacy_entry_drops_only_itself(agent: ModaVerseAgent, llm: ScriptedLLM) -> None:
    llm.enqueue("Modality: [SMELL] Prompt: roses Modality: [IMAGE] Prompt: a lighthouse ###")
    r = agent.run("go")
    assert [a.prompt for a in r.artifacts] == ["a lighthouse"]
    assert [e.stage for e in r.errors] == ["meta-response"] and "Modality[0]" in r.errors[0].message


def test_invocation_errors_name_the_models_index_after_a_dropped_sibling(
    echo_zoo: Zoo, llm: ScriptedLLM, tmp_path: Path
) -> None:
    echo_zoo.add(Boom())
    llm.enqueue(plan({"task": "text-to-smell", "prompt": "x"}, {"task": "text-to-image", "prompt": "y"}))
    r = ModaVerseAgent(llm, echo_zoo, output_dir=tmp_path).run("go")
    assert [(e.stage, e.task, e.index) for e in r.errors] == [
        ("meta-response", None, None),
        ("invocation", "text-to-image", 1),
    ]
