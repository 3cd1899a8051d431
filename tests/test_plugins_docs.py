"""docs/plugins.md's code runs as written: every Python block executes, the Chime and Haiku generators make their
files through the real hook and zoo, and the command the docs name is the one the example registers."""

from __future__ import annotations

import re
import types
import wave
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from modaverse_agent import GenerationRequest, GeneratorError, OutputDir, plugins
from modaverse_agent.zoo import Zoo

DOC = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)


def run_block(marker: str) -> types.ModuleType:
    """Execute the one Python block of the docs that contains ``marker``, as a module."""
    found = [b for b in BLOCKS if marker in b]
    assert len(found) == 1, f"{len(found)} blocks contain {marker!r}"
    module = types.ModuleType(f"docs_block_{abs(hash(marker))}")
    exec(compile(found[0], f"{DOC}:{marker}", "exec"), module.__dict__)
    return module


def test_every_python_block_runs_and_what_it_registers_works(tmp_path: Path) -> None:
    group = click.Group("modaverse")
    for index, block in enumerate(BLOCKS):
        module = types.ModuleType(f"docs_block_{index}")
        exec(compile(block, f"{DOC}[{index}]", "exec"), module.__dict__)
        plugins.pm.register(module, name=f"docs-{index}")
        if hasattr(module, "register_commands"):
            module.register_commands(cli=group)
    zoo = Zoo.from_plugins()
    assert not plugins.failures and len(zoo.generators) >= 2
    for g in zoo.generators:
        assert make(zoo, g.task, tmp_path, "a small test").is_file(), g.name
    assert group.commands
    for name in group.commands:
        assert CliRunner().invoke(group, [name]).exit_code == 0, name


def make(zoo: Zoo, task: str, tmp_path: Path, prompt: str, **args: Any) -> Path:
    request = GenerationRequest(prompt=prompt, output=OutputDir(tmp_path), args=args, seed=0)
    (artifact,) = zoo.generator_for(task).generate(request)
    return Path(artifact.path)


def test_chime_example_writes_a_wav_through_the_hook(tmp_path: Path) -> None:
    plugins.pm.register(run_block("class Chime("), name="chime")
    zoo = Zoo.from_plugins()
    path = make(zoo, "text-to-chime", tmp_path, "a high, bright chime", seconds=0.25)
    with wave.open(str(path)) as w:
        assert (w.getframerate(), w.getnframes()) == (16000, 4000)
    zoo.get("chime").configure(pitch_hz=660)  # the documented zoo option
    assert make(zoo, "text-to-chime", tmp_path, "a low chime").suffix == ".wav"
    for seconds in (0, -1, 11):  # bounded on both sides
        with pytest.raises(GeneratorError, match="seconds"):
            make(zoo, "text-to-chime", tmp_path, "a chime", seconds=seconds)


def test_text_example_writes_a_txt_file(tmp_path: Path) -> None:
    plugins.pm.register(run_block("class Haiku("), name="haiku")
    path = make(Zoo.from_plugins(), "text-to-haiku", tmp_path, "autumn wind")
    assert path.suffix == ".txt" and path.read_text(encoding="utf-8").startswith("autumn wind\n")


def test_register_commands_example_registers_the_command_the_docs_name() -> None:
    named = re.findall(r"runs as\s+`modaverse ([\w-]+)`", DOC.read_text(encoding="utf-8"))
    assert named == ["chime-info"]
    group = click.Group("modaverse")
    plugins.pm.register(run_block("def register_commands"), name="chime-cmds")
    plugins.pm.hook.register_commands(cli=group)
    result = CliRunner().invoke(group, named)
    assert result.exit_code == 0 and "chime" in result.output


def test_docs_say_how_priority_chooses_and_that_schemas_are_checked() -> None:
    text = " ".join(DOC.read_text(encoding="utf-8").split())
    assert "only by declaring a higher `priority`" in text and "`modaverse zoo set`" in text
    assert "meta-schema" in text and '`"pattern"`' in text
    assert "`.data`" in text and "`.name`" in text and "`.modality`" in text
