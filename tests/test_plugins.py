"""The plugin manager: entry points, built-ins, the allow-list, broken plugins, and hook meta-tests."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from modaverse_agent import hookspecs, plugins
from modaverse_agent.generators import Generator
from modaverse_agent.zoo import Zoo

ROOT = Path(__file__).resolve().parents[1]


def make_distribution(site: Path, dist: str, module: str, body: str, ep_name: str) -> None:
    """Write an importable module plus a dist-info with a modaverse_agent entry point into ``site``."""
    (site / f"{module}.py").write_text(textwrap.dedent(body))
    info = site / f"{dist.replace('-', '_')}-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.2.3\n")
    (info / "entry_points.txt").write_text(f"[modaverse_agent]\n{ep_name} = {module}\n")


GOOD_PLUGIN = """
    from modaverse_agent import Generator, hookimpl

    class Chime(Generator):
        name = "chime"
        task = "text-to-chime"
        modality = "audio"
        description = "Rings a chime."

    @hookimpl
    def register_generators(register):
        register(Chime())
"""


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temporary site dir with one good plugin, one broken plugin and one that must never be imported."""
    site = tmp_path / "site"
    site.mkdir()
    make_distribution(site, "modaverse-chime", "mv_chime", GOOD_PLUGIN, "chime")
    make_distribution(site, "modaverse-broken", "mv_broken", "raise ImportError('needs libfoo 9')", "broken")
    make_distribution(site, "modaverse-spy", "mv_spy", "import os; os.environ['MV_SPY_IMPORTED'] = '1'", "spy")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delenv("MV_SPY_IMPORTED", raising=False)
    yield site
    for m in ("mv_chime", "mv_broken", "mv_spy"):
        sys.modules.pop(m, None)


def test_no_entry_point_autoload_under_tests(site: Path) -> None:
    plugins.load_plugins()
    assert plugins.pm.get_plugin("chime") is None


def test_entry_points_load_and_broken_plugin_is_reported(site: Path) -> None:
    plugins.load_plugins(entry_points=True)
    assert plugins.pm.get_plugin("chime") is not None
    info = {p["name"]: p for p in plugins.plugin_info()}
    assert info["chime"]["distribution"] == "modaverse-chime" and info["chime"]["version"] == "1.2.3"
    assert info["chime"]["hooks"] == ["register_generators"]
    assert info["broken"]["error"] == "ImportError: needs libfoo 9"
    assert "text-to-chime" in Zoo.from_plugins().tasks()


@pytest.mark.parametrize(
    ("allow", "loaded"),
    [("", set()), ("chime", {"chime"}), ("modaverse-chime, echo", {"chime", "echo"}), ("spy", {"spy"})],
)
def test_allow_list(site: Path, monkeypatch: pytest.MonkeyPatch, allow: str, loaded: set[str]) -> None:
    monkeypatch.setenv(plugins.ALLOW_ENV, allow)
    plugins.load_plugins(entry_points=True)
    names = {plugins.pm.get_name(p) for p in plugins.pm.get_plugins()} - {n for _, n in plugins.DEFAULT_PLUGINS}
    assert names == loaded
    import os

    assert (os.environ.get("MV_SPY_IMPORTED") == "1") == ("spy" in loaded)  # a plugin not allowed is never imported
    assert not plugins.failures


def test_builtins_register_like_external_plugins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "mv_builtin_demo.py").write_text(textwrap.dedent(GOOD_PLUGIN))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(plugins, "DEFAULT_PLUGINS", (("mv_builtin_demo", "demo"),))
    plugins.load_plugins()
    assert [p["name"] for p in plugins.plugin_info()] == ["demo"]
    monkeypatch.setenv(plugins.ALLOW_ENV, "")  # the allow-list governs installed plugins, not built-ins
    plugins.reset()
    plugins.load_plugins(entry_points=True)
    assert [p["name"] for p in plugins.plugin_info()] == ["demo"]
    sys.modules.pop("mv_builtin_demo", None)


def test_echo_is_discovered_through_its_installed_entry_point() -> None:
    plugins.load_plugins(entry_points=True)
    info = {p["name"]: p for p in plugins.plugin_info()}
    assert info["echo"]["distribution"] == "modaverse-echo"
    assert {"echo-image", "echo-audio", "echo-speech", "echo-video", "echo-edit"} <= {
        g.name for g in Zoo.from_plugins().generators
    }


# -- every hook is documented and tested (datasette's meta-tests) -----------------------------------

HOOKS = [
    name
    for name in vars(hookspecs)
    if callable(getattr(hookspecs, name)) and hasattr(getattr(hookspecs, name), "modaverse_agent_spec")
]


def test_hooks_exist() -> None:
    assert set(HOOKS) == {"register_generators", "register_commands"}


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_docstring_and_docs(hook: str) -> None:
    assert (getattr(hookspecs, hook).__doc__ or "").strip()
    assert f"`{hook}(" in (ROOT / "docs" / "plugins.md").read_text()


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_test(hook: str) -> None:
    assert f"def test_hook_{hook}" in Path(__file__).read_text()


def test_hook_register_generators() -> None:
    class Plugin:
        @hookspecs.hookimpl
        def register_generators(self, register: Any) -> None:
            class G(Generator):
                name = "hooked"
                task = "text-to-image"
                modality = "image"
                description = "Registered through the hook."

            register(G())

    plugins.pm.register(Plugin(), name="p")
    assert Zoo.from_plugins().get("hooked").description == "Registered through the hook."


def test_hook_register_commands() -> None:
    from modaverse_agent import cli as cli_module

    class Plugin:
        @hookspecs.hookimpl
        def register_commands(self, cli: click.Group) -> None:
            @cli.command(name="hello-plugin")
            def hello() -> None:
                click.echo("hello from a plugin")

    plugins.pm.register(Plugin(), name="cmds")
    try:
        plugins.pm.hook.register_commands(cli=cli_module.cli)
        result = CliRunner().invoke(cli_module.cli, ["hello-plugin"])
        assert result.output == "hello from a plugin\n"
    finally:
        cli_module.cli.commands.pop("hello-plugin", None)
