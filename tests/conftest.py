"""Fixtures for the core's tests: a clean plugin manager, the echo zoo, a scripted LLM."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from modaverse_agent import plugins
from modaverse_agent.agent import ModaVerseAgent
from modaverse_agent.testing import ScriptedLLM
from modaverse_agent.zoo import Zoo

FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(autouse=True)
def clean_plugins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """Every test starts with no plugin registered and a private zoo config path."""
    monkeypatch.delenv(plugins.ALLOW_ENV, raising=False)
    monkeypatch.setenv("MODAVERSE_ZOO_CONFIG", str(tmp_path / "zoo.toml"))
    plugins.reset()
    yield
    plugins.reset()


@pytest.fixture
def echo_zoo() -> Zoo:
    """A zoo of the echo plugin's generators (registered through the real hook)."""
    import modaverse_echo

    plugins.pm.register(modaverse_echo, name="echo")
    return Zoo.from_plugins()


@pytest.fixture
def llm() -> ScriptedLLM:
    """A scripted LLM with nothing queued."""
    return ScriptedLLM()


@pytest.fixture
def agent(llm: ScriptedLLM, echo_zoo: Zoo, tmp_path: Path) -> ModaVerseAgent:
    """An agent over the scripted LLM and the echo zoo, writing into a temp dir."""
    return ModaVerseAgent(llm, echo_zoo, output_dir=tmp_path / "out", timeout=30, seed=0)


@pytest.fixture
def png_file(tmp_path: Path) -> Path:
    """A small real PNG."""
    from PIL import Image

    path = tmp_path / "in.png"
    Image.new("RGB", (16, 12), (200, 30, 30)).save(path)
    return path


@pytest.fixture
def training_cli() -> Iterator[object]:
    """The `modaverse` group with the built-in training plugin's commands, removed afterwards."""
    from modaverse_agent.cli import cli

    plugins.load_plugins().hook.register_commands(cli=cli)
    yield cli
    for name in ("data", "train", "eval"):
        cli.commands.pop(name, None)
