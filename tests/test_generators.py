"""The generator base class: declarations validated at subclass time, lazy thread-safe setup, stamping."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, ClassVar

import pytest

from modaverse_agent import Artifact, GenerationRequest, Generator, GeneratorError, OutputDir


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
