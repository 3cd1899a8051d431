"""Registering generators, from a plugin author's side: bad schemas, clashing names and modalities, and hooks that
raise are refused one plugin at a time, named, and reported; every other plugin still loads."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path
from typing import Any, ClassVar

import pytest
from click.testing import CliRunner

from modaverse_agent import Generator, GeneratorError, ZooError, hookimpl, plugins
from modaverse_agent.cli import cli
from modaverse_agent.zoo import Zoo

BAD_SCHEMA = {"type": "object", "properties": {"n": {"type": "integr", "minimum": "ten"}}}
BAD_PATTERN = {"type": "object", "properties": {"s": {"type": "string", "pattern": "(["}}, "required": ["zzz"]}


def make_distribution(site: Path, dist: str, module: str, body: str, ep_name: str) -> None:
    """An importable module plus a dist-info with a modaverse_agent entry point, in ``site``."""
    (site / f"{module}.py").write_text(textwrap.dedent(body))
    info = site / f"{dist.replace('-', '_')}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[modaverse_agent]\n{ep_name} = {module}\n")


class Notes(Generator):
    name = "notes"
    task = "text-to-notes"
    modality = "text"
    description = "Writes notes."

    def run(self, request: Any) -> list[Any]:
        return [self.artifact(request, request.output.write_bytes("notes", ".txt", b"notes\n"))]


class PerInstanceSchema(Generator):
    """A generator whose args_schema is set per instance, past the class-time check."""

    name = "per-instance"
    task = "text-to-per-instance"
    modality = "text"
    description = "Takes its schema per instance."

    def __init__(self, schema: dict[str, Any], **options: Any) -> None:
        super().__init__(**options)
        self.args_schema = schema  # type: ignore[misc]


class Plugin:
    """A plugin object whose ``register_generators`` registers ``items`` (or raises ``error``)."""

    def __init__(self, *items: Any, error: Exception | None = None) -> None:
        self.items, self.error = items, error

    @hookimpl
    def register_generators(self, register: Any) -> None:
        for item in self.items:
            register(item)
        if self.error is not None:
            raise self.error


def install(**named: Any) -> None:
    """Register the echo plugin, then each of ``named`` (plugin name -> plugin object), in that order."""
    import modaverse_echo

    plugins.load_plugins()
    plugins.pm.register(modaverse_echo, name="echo")
    for name, plugin in named.items():
        plugins.pm.register(plugin, name=name)


def failure(name: str) -> str:
    found = [f.error for f in plugins.failures if f.name == name]
    assert len(found) == 1, plugins.failures
    return found[0]


ECHO_TASKS = {"text-to-image", "text-to-audio", "text-to-speech", "text-to-video", "image-editing"}


# -- bug 1: args_schema is validated when the class is defined and when it is registered --------------------------


@pytest.mark.parametrize(
    ("schema", "paths"),
    [
        (BAD_SCHEMA, ["args_schema.properties.n.type: 'integr' is not a JSON Schema type", "properties.n.minimum"]),
        (BAD_PATTERN, ["args_schema.properties.s.pattern: '([' is not a valid regular expression"]),
    ],
)
def test_bad_args_schema_fails_at_class_definition_naming_generator_and_path(
    schema: dict[str, Any], paths: list[str]
) -> None:
    with pytest.raises(GeneratorError) as info:

        class BadSchema(Generator):
            name = "badschema-gen"
            task = "test-badschema"
            modality = "text"
            description = "Invalid args schema."
            args_schema: ClassVar[dict[str, Any]] = schema

    msg = str(info.value)
    assert "BadSchema" in msg and "'badschema-gen'" in msg and __name__ in msg
    for path in paths:
        assert path in msg


def test_bad_options_schema_and_unsatisfiable_required_are_refused() -> None:
    with pytest.raises(GeneratorError, match=r"options_schema.properties.model.type") as info:

        class BadOptions(Generator):
            name = "bad-options"
            task = "test-bad-options"
            modality = "text"
            description = "x"
            args_schema: ClassVar[dict[str, Any]] = {
                "type": "object",
                "properties": {},
                "required": ["zzz"],
                "additionalProperties": False,
            }
            options_schema: ClassVar[dict[str, Any]] = {"type": "object", "properties": {"model": {"type": "str"}}}

    assert "args_schema.required names ['zzz']" in str(info.value)


def test_bad_schema_plugin_is_reported_as_failed_to_load_and_the_others_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site"
    site.mkdir()
    body = f"""
        from modaverse_agent import Generator, hookimpl

        class BadSchema(Generator):
            name = "badschema-gen"
            task = "test-badschema"
            modality = "text"
            description = "Invalid args schema."
            args_schema = {BAD_SCHEMA!r}

        @hookimpl
        def register_generators(register):
            register(BadSchema())
    """
    make_distribution(site, "modaverse-badschema", "mv_badschema", body, "badschema")
    monkeypatch.syspath_prepend(str(site))
    try:
        install()
        plugins.load_entry_points({"badschema"})
        out = CliRunner().invoke(cli, ["plugins"]).output
        assert "badschema  FAILED TO LOAD:" in out and "'badschema-gen'" in out
        assert "args_schema.properties.n.type" in out
        assert set(Zoo.from_plugins().tasks()) >= ECHO_TASKS
    finally:
        sys.modules.pop("mv_badschema", None)


@pytest.mark.parametrize(
    "schema", [BAD_SCHEMA, BAD_PATTERN, {"type": "object", "properties": {"x": {"const": {1, 2}}}}]
)
def test_bad_schema_set_per_instance_is_refused_at_registration(schema: dict[str, Any]) -> None:
    install(dynamic=Plugin(Notes(), PerInstanceSchema(schema)))
    zoo = Zoo.from_plugins()
    assert "text-to-per-instance" not in zoo.tasks() and "text-to-notes" not in zoo.tasks()  # the whole plugin
    assert set(zoo.tasks()) >= ECHO_TASKS
    assert "generator 'per-instance'" in failure("dynamic") and "args_schema" in failure("dynamic")
    assert plugins.pm.get_plugin("dynamic") is None
    json.dumps(zoo.schema())  # the meta-response schema of what is left builds
    with pytest.raises(GeneratorError, match=r"per-instance.*args_schema"):
        Zoo([PerInstanceSchema(schema)])  # a zoo built by hand refuses it too


# -- bug 2: each plugin's registration is isolated ----------------------------------------------------------------


def test_a_raising_register_hook_skips_only_that_plugin() -> None:
    install(badreg=Plugin(Notes(), error=RuntimeError("register hook exploded")))
    zoo = Zoo.from_plugins()
    assert set(zoo.tasks()) == ECHO_TASKS  # Notes, registered before the hook raised, is not kept
    assert failure("badreg") == "its register_generators hook raised RuntimeError: register hook exploded"


def test_registering_a_non_generator_skips_that_plugin() -> None:
    install(badregobj=Plugin("not a generator"))
    assert set(Zoo.from_plugins().tasks()) == ECHO_TASKS
    assert "register() was given 'not a generator', not a Generator instance" in failure("badregobj")


def test_a_clashing_generator_name_skips_the_later_plugin_and_names_both() -> None:
    class Clash(Generator):
        name = "echo-image"
        task = "test-clashname"
        modality = "text"
        description = "Same name as echo's generator."

    install(clashname=Plugin(Clash()))
    zoo = Zoo.from_plugins()
    assert zoo.get("echo-image").task == "text-to-image" and "test-clashname" not in zoo.tasks()
    msg = failure("clashname")
    assert "two generators are named 'echo-image'" in msg and "of plugin 'echo'" in msg and "rename one" in msg
    with pytest.raises(ZooError, match="two generators are named"):
        Zoo([*zoo.generators, Clash()])


def test_two_plugins_giving_one_new_task_two_modalities_the_later_is_skipped() -> None:
    class ChimeAudio(Generator):
        name = "chime-audio"
        task = "text-to-chime"
        modality = "audio"
        description = "A chime."

    class ChimeImage(Generator):
        name = "chime-image"
        task = "text-to-chime"
        modality = "image"
        description = "A picture of a chime."

    install(first=Plugin(ChimeAudio()), second=Plugin(ChimeImage()))
    zoo = Zoo.from_plugins()
    assert [g.name for g in zoo.candidates("text-to-chime")] == ["chime-audio"]
    assert "'chime-image' makes image for task 'text-to-chime', which" in failure("second")


def test_cli_warns_once_per_skipped_plugin_and_still_serves_builtin_tasks(tmp_path: Path) -> None:
    install(badreg=Plugin(error=RuntimeError("register hook exploded")), badregobj=Plugin(42))
    runner = CliRunner()
    res = runner.invoke(cli, ["zoo"])
    assert res.exit_code == 0 and "text-to-image    -> echo-image" in res.stdout
    warnings = res.stderr.splitlines()
    assert len(warnings) == 2 and all(w.startswith("Warning: plugin 'badreg") for w in warnings)
    assert "register hook exploded" in warnings[0] and "see `modaverse plugins`" in warnings[0]
    plan = {"text": "Here.", "invocations": [{"task": "text-to-image", "prompt": "a kite"}]}
    res = runner.invoke(cli, ["run", "draw", "--meta-response", json.dumps(plan), "-o", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "out" / "echo-image.png").exists()
    listed = runner.invoke(cli, ["plugins"]).stdout
    assert "badreg  FAILED TO LOAD: its register_generators hook raised RuntimeError" in listed
    assert "badregobj  FAILED TO LOAD: register() was given 42" in listed and "echo  " in listed


# -- bug 3: a generator cannot declare another output modality for a built-in task ---------------------------------


def test_wrong_modality_for_a_builtin_task_is_refused() -> None:
    with pytest.raises(GeneratorError, match="task 'text-to-image' makes image, not audio"):

        class ClashTask(Generator):
            name = "my-image"
            task = "text-to-image"
            modality = "audio"
            priority = 1000
            description = "Claims text-to-image but outputs audio."


def test_wrong_modality_set_per_instance_cannot_take_over_a_builtin_task() -> None:
    class Sneaky(Generator):
        name = "sneaky"
        task = "text-to-image"
        modality = "image"
        priority = 1000
        description = "Turns into audio once made."

        def __init__(self, **options: Any) -> None:
            super().__init__(**options)
            self.modality = "audio"  # type: ignore[misc]

    install(sneaky=Plugin(Sneaky()))
    zoo = Zoo.from_plugins()
    assert zoo.generator_for("text-to-image").name == "echo-image"
    assert "makes image, not audio" in failure("sneaky")
