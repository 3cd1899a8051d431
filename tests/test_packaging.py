"""Packaging: every package listed, prompts shipped as package data, light paths never import torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_dir_is_listed_in_pyproject() -> None:
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed, dirs = set(cfg["packages"]), cfg["package-dir"]
    found = set()
    for pkg, rel in dirs.items():
        base = ROOT / rel
        for init in base.rglob("__init__.py"):
            sub = init.parent.relative_to(base).parts
            name = ".".join((pkg, *sub))
            if not any(name.startswith(other + ".") and other != pkg and other in dirs for other in dirs):
                found.add(name)
    assert found <= listed, f"packages missing from pyproject.toml: {sorted(found - listed)}"


def test_prompts_are_package_data() -> None:
    from importlib.resources import files

    assert files("modaverse_agent.prompts").joinpath("__init__.py").is_file()
    assert (ROOT / "modaverse_agent" / "py.typed").is_file()


LIGHT = """
import json, sys, time
t = time.perf_counter()
from modaverse_agent.plugins import load_plugins, plugin_info
from modaverse_agent.zoo import Zoo
from modaverse_agent.agent import ModaVerseAgent
from modaverse_agent.testing import ScriptedLLM
import modaverse_echo
load_plugins().register(modaverse_echo, name="echo")
plugin_info()
zoo = Zoo.from_plugins()
zoo.schema()
llm = ScriptedLLM({"text": "hi", "invocations": [{"task": "text-to-speech", "prompt": "hello"}]})
r = ModaVerseAgent(llm, zoo, output_dir=sys.argv[1]).run("say hello")
assert r.ok, r.errors
print(json.dumps(sorted(m for m in ("torch", "transformers", "diffusers", "langchain_core") if m in sys.modules)))
"""


def test_light_paths_do_not_import_torch(tmp_path: Path) -> None:
    env = {**os.environ, "MODAVERSE_LOAD_PLUGINS": ""}
    out = subprocess.run([sys.executable, "-c", LIGHT, str(tmp_path)], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_help_does_not_import_torch() -> None:
    code = (
        "import sys; from modaverse_agent.cli import cli\n"
        "try: cli(['--help'])\nexcept SystemExit: pass\nprint('torch' in sys.modules)"
    )
    env = {**os.environ, "MODAVERSE_LOAD_PLUGINS": ""}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.strip().endswith("False")
