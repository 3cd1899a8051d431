"""Every script in examples/ runs offline, on a tiny model or a scripted backend, and does what it says.

With ``MODAVERSE_SLOW_TESTS=1`` each also runs with ``--real``: on the built-in default model (the echo
plugin still serving the tasks), and ends with the structure it promises whatever the 270M model chose to say.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("langchain")
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
slow = pytest.mark.skipif(not os.environ.get("MODAVERSE_SLOW_TESTS"), reason="slow: set MODAVERSE_SLOW_TESTS=1")


def run_example(
    script: Path,
    cwd: Path,
    *,
    plugins: str = "echo",
    pythonpath: Sequence[Path] = (),
    real: bool = False,
) -> dict[str, Any]:
    """Run ``script --output-dir out`` (plus ``--real``) in ``cwd`` with only ``plugins`` loaded and return its
    last stdout line as JSON."""
    env = {
        **os.environ,
        "MODAVERSE_ZOO_CONFIG": str(cwd / "zoo.toml"),
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "MODAVERSE_LOAD_PLUGINS": plugins,
        "PYTHONPATH": os.pathsep.join([*map(str, pythonpath), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [sys.executable, str(script), "--output-dir", str(cwd / "out"), *(["--real"] if real else [])],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600 if real else 240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def check_lcel(out: dict[str, Any]) -> None:
    """The forced text-to-image call came back with a prompt and the tool wrote PNG files."""
    assert out["calls"] and set(out["calls"]) == {"text-to-image"}
    assert all(c["args"]["prompt"].strip() for c in out["tool_calls"])
    assert out["files"] and all(Path(p).is_file() and p.endswith(".png") for p in out["files"])


def test_lcel_chain(tmp_path: Path) -> None:
    check_lcel(run_example(EXAMPLES / "lcel_chain.py", tmp_path))


def test_langchain_agent(tmp_path: Path) -> None:
    out = run_example(EXAMPLES / "langchain_agent.py", tmp_path)
    assert out["answer"] == "Here are the kite picture and the wind sound."
    assert [a["modality"] for a in out["artifacts"]] == ["image", "audio"]
    assert all(Path(a["path"]).is_file() for a in out["artifacts"])


def check_swap(out: dict[str, Any]) -> None:
    """One meta-response, dispatched to echo-image and then stripes-image: two different pictures."""
    n = len(out["meta_response"]["invocations"])
    assert n >= 1
    assert [a["generator"] for a in out["runs"]["echo-image"]] == ["echo-image"] * n
    assert [a["generator"] for a in out["runs"]["stripes-image"]] == ["stripes-image"] * n
    first, second = out["runs"]["echo-image"][0]["path"], out["runs"]["stripes-image"][0]["path"]
    assert Path(first).read_bytes() != Path(second).read_bytes()


def test_swap_generator_same_meta_response_different_generator(tmp_path: Path) -> None:
    check_swap(run_example(EXAMPLES / "swap_generator.py", tmp_path))


def chime_site(tmp_path: Path) -> list[Path]:
    """The chime plugin 'installed' as a dist-info on PYTHONPATH (no pip in tests; the README shows pip)."""
    site = tmp_path / "site"
    info = site / "modaverse_chime-0.1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: modaverse-chime\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text("[modaverse_agent]\nchime = modaverse_chime\n")
    plugin_dir = EXAMPLES / "third_party_plugin"
    assert 'chime = "modaverse_chime"' in (plugin_dir / "pyproject.toml").read_text()
    return [site, plugin_dir]


def test_third_party_plugin_appears_in_zoo_and_system_prompt(tmp_path: Path) -> None:
    show = EXAMPLES / "third_party_plugin" / "show_plugin.py"
    out = run_example(show, tmp_path, plugins="chime", pythonpath=chime_site(tmp_path))
    assert "real" not in out
    assert out["plugin"] == {"name": "chime", "distribution": "modaverse-chime", "hooks": ["register_generators"]}
    assert "text-to-chime" in out["tasks"] and out["generator"] == "chime" and out["in_system_prompt"]
    assert [Path(p).suffix for p in out["files"]] == [".wav"] and Path(out["files"][0]).stat().st_size > 1000


@slow
def test_lcel_chain_on_the_default_model(tmp_path: Path) -> None:
    check_lcel(run_example(EXAMPLES / "lcel_chain.py", tmp_path, real=True))


@slow
def test_langchain_agent_on_the_default_model(tmp_path: Path) -> None:
    """The loop ends with a text answer, no call left open; every file a tool reported exists."""
    out = run_example(EXAMPLES / "langchain_agent.py", tmp_path, real=True)
    steps = out["steps"]
    assert steps[0]["type"] == "human" and steps[-1]["type"] == "ai" and not steps[-1]["tool_calls"]
    assert out["answer"].strip() and out["answer"] == steps[-1]["text"]
    calls = [c for s in steps if s["type"] == "ai" for c in s["tool_calls"]]
    assert sum(s["type"] == "tool" for s in steps) == len(calls)
    assert all(Path(a["path"]).is_file() for a in out["artifacts"])


@slow
def test_swap_generator_on_the_default_model(tmp_path: Path) -> None:
    out = run_example(EXAMPLES / "swap_generator.py", tmp_path, real=True)
    check_swap(out)
    assert all(i["task"] == "text-to-image" and i["prompt"].strip() for i in out["meta_response"]["invocations"])


@slow
def test_third_party_plugin_on_the_default_model(tmp_path: Path) -> None:
    """The echo tasks and text-to-chime on offer: whatever the model calls is a zoo task and its files exist."""
    show = EXAMPLES / "third_party_plugin" / "show_plugin.py"
    out = run_example(show, tmp_path, plugins="echo,chime", pythonpath=chime_site(tmp_path), real=True)
    assert "text-to-chime" in out["tasks"] and "text-to-image" in out["tasks"]
    real = out["real"]
    assert isinstance(real["text"], str) and (real["text"].strip() or real["tool_calls"])
    assert all(c["name"] in out["tasks"] for c in real["tool_calls"])
    assert all(Path(p).is_file() for p in real["files"])
