"""The zoo: task -> generator by priority, TOML config or argument; swapping is a config change."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import pytest

from modaverse_agent import Generator, GeneratorError, ZooError
from modaverse_agent.zoo import Zoo, ZooConfig


class Real(Generator):
    name = "real-image"
    task = "text-to-image"
    modality = "image"
    description = "A real one."
    options_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {"model": {"type": "string"}},
        "additionalProperties": False,
    }


class Other(Generator):
    name = "other-image"
    task = "text-to-image"
    modality = "image"
    description = "Another."
    priority = -5


class Music(Generator):
    name = "music"
    task = "text-to-music"  # a task the core never heard of
    modality = "audio"
    description = "Composes music."


def test_best_priority_serves_when_nothing_is_configured(echo_zoo: Zoo) -> None:
    echo_zoo.add(Real())
    echo_zoo.add(Other())
    assert echo_zoo.generator_for("text-to-image").name == "real-image"
    assert [g.name for g in echo_zoo.candidates("text-to-image")] == ["real-image", "other-image", "echo-image"]


def test_argument_and_config_choose(tmp_path: Path) -> None:
    cfg = ZooConfig(tasks={"text-to-image": "other-image"}, generators={"real-image": {"model": "/m"}})
    zoo = Zoo([Real(), Other()], config=cfg)
    assert zoo.generator_for("text-to-image").name == "other-image"
    assert zoo.get("real-image").options == {"model": "/m"}
    zoo = Zoo([Real(), Other()], config=cfg, choices={"text-to-image": "real-image"})
    assert zoo.generator_for("text-to-image").name == "real-image"


def test_config_round_trips_through_toml(tmp_path: Path) -> None:
    path = tmp_path / "cfg" / "zoo.toml"
    ZooConfig(tasks={"text-to-image": "real-image"}, generators={"real-image": {"model": "x"}}).save(path)
    loaded = ZooConfig.load(path)
    assert loaded.tasks == {"text-to-image": "real-image"} and loaded.generators == {"real-image": {"model": "x"}}
    assert Zoo([Real(), Other()], config=loaded).generator_for("text-to-image").options == {"model": "x"}


def test_env_var_sets_default_config_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "env.toml"
    path.write_text('[tasks]\ntext-to-image = "other-image"\n')
    monkeypatch.setenv("MODAVERSE_ZOO_CONFIG", str(path))
    assert Zoo([Real(), Other()], config=ZooConfig.load()).generator_for("text-to-image").name == "other-image"


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("not = [toml", "not valid TOML"),
        ("tasks = 3", "[tasks]"),
        ("[bogus]\nx=1", "unknown section"),
        ("[generators]\nx = 1", "tables of options"),
    ],
)
def test_bad_config_names_the_file(tmp_path: Path, text: str, words: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ZooError, match=r"bad\.toml") as info:
        ZooConfig.load(path)
    assert words in str(info.value)


def test_choice_errors() -> None:
    zoo = Zoo([Real(), Music()])
    with pytest.raises(ZooError, match="no generator named 'nope'"):
        zoo.choose("text-to-image", "nope")
    with pytest.raises(ZooError, match="serves 'text-to-music'"):
        zoo.choose("text-to-image", "music")
    with pytest.raises(ZooError, match="no generator serves task 'text-to-speech'"):
        zoo.generator_for("text-to-speech")
    with pytest.raises(ZooError, match="two generators are named"):
        zoo.add(Real())
    with pytest.raises(GeneratorError, match="Generator instance"):
        zoo.add(Real)  # type: ignore[arg-type]


def test_bad_options_in_config_are_rejected() -> None:
    with pytest.raises(GeneratorError, match="options of generator 'real-image'"):
        Zoo([Real()], config=ZooConfig(generators={"real-image": {"modle": "typo"}}))


def test_new_task_reaches_the_schema() -> None:
    zoo = Zoo([Real(), Music()])
    assert zoo.tasks() == ["text-to-image", "text-to-music"]
    consts = [s["properties"]["task"]["const"] for s in zoo.schema()["properties"]["invocations"]["items"]["anyOf"]]
    assert consts == ["text-to-image", "text-to-music"]
    assert zoo.task_specs(["text-to-music"])[0].description == "Composes music."


def test_unreadable_configs_name_the_problem(tmp_path: Path) -> None:
    deep = tmp_path / "deep.toml"
    deep.write_text("a = " + "[" * 5000 + "]" * 5000 + "\n")
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"[tasks]\n\xff\xfe = 1\n")
    blocker = tmp_path / "FILE"
    blocker.write_text("x")
    cases = [
        (deep, "nests tables or arrays too deeply"),
        (binary, "is not UTF-8 text (invalid byte at offset 8)"),
        (tmp_path, "is a directory"),
        (blocker / "zoo.toml", "a parent of it is a file"),
    ]
    if Path("/proc/self/mem").exists():
        cases.append((Path("/proc/self/mem"), "cannot read zoo config /proc/self/mem"))
    if Path("/dev/zero").exists():
        cases.append((Path("/dev/zero"), "is not a regular file"))
    for path, words in cases:
        with pytest.raises(ZooError) as info:
            ZooConfig.load(path)
        assert words in str(info.value), (path, info.value)


def test_a_config_too_large_is_refused(tmp_path: Path) -> None:
    from modaverse_agent.zoo import CONFIG_MAX_BYTES

    big = tmp_path / "big.toml"
    big.write_text("# " + "x" * CONFIG_MAX_BYTES + "\n")
    with pytest.raises(ZooError, match="is larger than"):
        ZooConfig.load(big)


def test_save_failures_are_zoo_errors_and_leave_nothing(tmp_path: Path) -> None:
    blocker = tmp_path / "FILE"
    blocker.write_text("keep me")
    cfg = ZooConfig(tasks={"text-to-image": "real-image"})
    with pytest.raises(ZooError, match=r"cannot write zoo config .*FILE/zoo\.toml: .*--zoo-config"):
        cfg.save(blocker / "zoo.toml")
    assert blocker.read_text() == "keep me" and cfg.path is None
    with pytest.raises(ZooError, match="cannot be stored as TOML"):
        ZooConfig(generators={"real-image": {"model": "a\udcff"}}).save(tmp_path / "zoo.toml")
    assert list(tmp_path.iterdir()) == [blocker]


def test_a_failed_rename_removes_the_temporary_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: Path, target: object) -> Path:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "replace", refuse)
    with pytest.raises(ZooError, match="Permission denied"):
        ZooConfig(tasks={"text-to-image": "real-image"}).save(tmp_path / "zoo.toml")
    assert list(tmp_path.iterdir()) == []
