"""The generator base class: declarations validated at subclass time, lazy thread-safe setup, stamping."""

from __future__ import annotations

import json
import math
import re
import threading
import time
from pathlib import Path
from typing import Any, ClassVar

import pytest

from modaverse_agent import Artifact, GenerationRequest, Generator, GeneratorError, OutputDir
from modaverse_agent.generators import ArtifactsRefused, GenerationCancelled, non_finite_numbers


def test_misdeclared_generators_fail_at_class_creation() -> None:
    with pytest.raises(GeneratorError, match="name 'Bad Name'") as info:

        class Bad(Generator):
            name = "Bad Name"
            task = "text-to-image"
            modality = "smell"
            description = "two\nlines"
            args_schema: ClassVar[dict[str, Any]] = {"type": "array"}

    msg = str(info.value)
    assert "modality must be one of" in msg and "one line" in msg and "type 'object'" in msg


class Counting(Generator):
    name = "counting"
    task = "text-to-image"
    modality = "image"
    description = "Counts loads."
    options_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {"model": {"type": "string"}},
        "additionalProperties": False,
    }

    def __init__(self, **options: Any) -> None:
        self.loads = 0
        self.releases = 0
        super().__init__(**options)

    def load(self) -> None:
        self.loads += 1

    def release(self) -> None:
        self.releases += 1

    def run(self, request: GenerationRequest) -> list[Artifact]:
        return [self.artifact(request, request.output.write_bytes("c", ".txt", b"x"))]


def test_listing_never_loads_and_setup_is_once_and_thread_safe() -> None:
    g = Counting()
    g.describe()
    assert g.loads == 0 and not g.loaded
    threads = [threading.Thread(target=g.setup) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert g.loads == 1 and g.loaded
    g.unload()
    g.unload()
    assert g.releases == 1 and not g.loaded


def test_changing_options_drops_the_loaded_model() -> None:
    g = Counting(model="a")
    g.setup()
    g.configure(model="a")
    assert g.loaded
    g.configure(model="b")
    assert not g.loaded and g.options == {"model": "b"}
    with pytest.raises(GeneratorError, match="options of generator 'counting'"):
        g.configure(model=3)


def test_generate_stamps_artifacts(tmp_path: Path) -> None:
    g = Counting()
    [a] = g.generate(GenerationRequest("hello", OutputDir(tmp_path), seed=7))
    assert (a.task, a.generator, a.prompt, a.seed, a.mime_type) == (
        "text-to-image",
        "counting",
        "hello",
        7,
        "text/plain",
    )
    assert set(a.timings) == {"setup_s", "generate_s"}


def test_bad_request_is_refused_before_weights_load(tmp_path: Path) -> None:
    class Strict(Counting):
        name = "strict"
        args_schema: ClassVar[dict[str, Any]] = {
            "type": "object",
            "properties": {"steps": {"type": "integer", "maximum": 50}},
            "additionalProperties": False,
        }

    g = Strict()
    with pytest.raises(GeneratorError, match="args of generator 'strict': steps"):
        g.generate(GenerationRequest("x", OutputDir(tmp_path), args={"steps": 500}))
    with pytest.raises(GeneratorError, match="non-empty prompt"):
        g.generate(GenerationRequest("  ", OutputDir(tmp_path)))
    assert g.loads == 0
    [a] = g.generate(GenerationRequest("x", OutputDir(tmp_path), args={"steps": 5}))
    assert oct(a.path.stat().st_mode & 0o777) == "0o644"


def test_subclasses_of_an_abstract_base_are_still_validated() -> None:
    class Base(Generator):
        __abstract__ = True

    with pytest.raises(GeneratorError, match="modality must be one of"):

        class Child(Base):
            name = "child"
            task = "text-to-image"
            modality = "smell"
            description = "x"


def test_option_falls_back_to_the_schema_default() -> None:
    class WithDefault(Counting):
        name = "with-default"
        options_schema: ClassVar[dict[str, Any]] = {
            "type": "object",
            "properties": {"model": {"type": "string", "default": "m0"}},
            "additionalProperties": False,
        }

    assert WithDefault().option("model") == "m0" and WithDefault(model="m1").option("model") == "m1"
    assert WithDefault().option("missing") is None


# -- hostile arguments, cancellation, hung loads, returned paths (issue 17) -------------------------------


class Numbers(Counting):
    name = "numbers"
    args_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {
            "duration": {"type": "number", "minimum": 0, "maximum": 30},
            "sizes": {"type": "array", "items": {"type": "number"}},
            "label": {"type": "string"},
        },
        "additionalProperties": False,
    }


@pytest.mark.parametrize(
    ("args", "where", "shown"),
    [
        ({"duration": math.nan}, "duration", "nan"),
        ({"duration": math.inf}, "duration", "inf"),
        ({"duration": -math.inf}, "duration", "-inf"),
        ({"sizes": [1.0, math.nan]}, "sizes[1]", "nan"),
    ],
)
def test_non_finite_numbers_are_refused_before_weights_load(
    tmp_path: Path, args: dict[str, Any], where: str, shown: str
) -> None:
    g = Numbers()
    with pytest.raises(
        GeneratorError, match=rf"args of generator 'numbers': {re.escape(where)} is {shown}, not a finite"
    ):
        g.generate(GenerationRequest("x", OutputDir(tmp_path), args=args))
    assert g.loads == 0 and list(tmp_path.iterdir()) == []
    assert non_finite_numbers({"a": {"b": [0.5, 1e308]}}) == []
    assert [w for w, _ in non_finite_numbers({"x": math.nan, "y": [math.inf, {"z": -math.inf}]})] == [
        "x",
        "y[0]",
        "y[1].z",
    ]
    deep: Any = math.nan
    for _ in range(100_000):
        deep = [deep]
    assert len(non_finite_numbers({"d": deep})) == 1


def test_lone_surrogates_in_prompt_and_args_are_replaced(tmp_path: Path) -> None:
    g = Numbers()
    req = GenerationRequest("a \ud800 cat", OutputDir(tmp_path), args={"label": "x\udfffy"})
    [a] = g.generate(req)
    assert a.prompt == "a \ufffd cat" and req.args == {"label": "x\ufffdy"}
    json.dumps(a.to_dict(), ensure_ascii=False).encode("utf-8")


def test_a_cancelled_request_stops_before_loading(tmp_path: Path) -> None:
    g = Counting()
    req = GenerationRequest("x", OutputDir(tmp_path))
    req.cancel.set()
    assert req.cancelled
    with pytest.raises(GenerationCancelled, match="cancelled"):
        g.generate(req)
    assert g.loads == 0


class SlowLoad(Counting):
    name = "slow-load"

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.started = threading.Event()
        super().__init__()

    def load(self) -> None:
        self.started.set()
        self.gate.wait(10)
        super().load()


def test_after_a_stalled_load_calls_fail_fast_until_it_finishes_or_reset(tmp_path: Path) -> None:
    g = SlowLoad()
    first = threading.Thread(target=g.setup)
    first.start()
    assert g.started.wait(5) and g.loading
    g.note_timeout()
    t0 = time.perf_counter()
    with pytest.raises(GeneratorError, match="its load did not finish within an earlier invocation's timeout"):
        g.generate(GenerationRequest("x", OutputDir(tmp_path)))
    assert time.perf_counter() - t0 < 1.0
    g.reset()  # forgotten: a call waits for the load again (and stops when its request is cancelled)
    req = GenerationRequest("x", OutputDir(tmp_path))
    outcome: list[BaseException] = []

    def wait() -> None:
        try:
            g.generate(req)
        except BaseException as e:
            outcome.append(e)

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.2)
    assert waiter.is_alive()
    req.cancel.set()
    waiter.join(2)
    assert not waiter.is_alive() and isinstance(outcome[0], GenerationCancelled)
    g.note_timeout()
    g.gate.set()
    first.join(5)
    assert g.loaded and g.loads == 1 and not g.loading
    g.generate(GenerationRequest("x", OutputDir(tmp_path)))  # the load ended: the stall is forgotten
    g.note_timeout()  # nothing loading: a timeout of a loaded generator marks nothing
    g.generate(GenerationRequest("x", OutputDir(tmp_path)))


def test_paths_outside_the_output_dir_are_refused_and_the_others_kept(tmp_path: Path) -> None:
    class Liar(Counting):
        name = "liar"

        def run(self, request: GenerationRequest) -> list[Artifact]:
            good = request.output.write_bytes("good", ".txt", b"x")
            return [Artifact("image", "/etc/passwd", ""), self.artifact(request, good), Artifact("image", None, "")]  # type: ignore[arg-type]

    with pytest.raises(ArtifactsRefused) as info:
        Liar().generate(GenerationRequest("p", OutputDir(tmp_path / "out"), seed=3))
    assert "2 path(s)" in str(info.value) and "/etc/passwd" in str(info.value) and "None" in str(info.value)
    [kept] = info.value.kept
    assert (kept.path.name, kept.generator, kept.prompt, kept.seed) == ("good.txt", "liar", "p", 3)
