"""Every script in examples/ runs offline, on a tiny model or a scripted backend, and does what it says."""

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


def run_example(script: Path, cwd: Path, *, plugins: str = "echo", pythonpath: Sequence[Path] = ()) -> dict[str, Any]:
    """Run ``script --output-dir out`` in ``cwd`` and return its last stdout line as JSON."""
    env = {
        **os.environ,
        "MODAVERSE_LOAD_PLUGINS": plugins,
        "MODAVERSE_ZOO_CONFIG": str(cwd / "zoo.toml"),
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": os.pathsep.join([*map(str, pythonpath), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [sys.executable, str(script), "--output-dir", str(cwd / "out")],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_lcel_chain(tmp_path: Path) -> None:
    out = run_example(EXAMPLES / "lcel_chain.py", tmp_path)
    assert out["calls"] and set(out["calls"]) == {"text-to-image"}
    assert out["files"] and all(Path(p).is_file() and p.endswith(".png") for p in out["files"])


def test_langchain_agent(tmp_path: Path) -> None:
    out = run_example(EXAMPLES / "langchain_agent.py", tmp_path)
    assert out["answer"] == "Here are the kite picture and the wind sound."
    assert [a["modality"] for a in out["artifacts"]] == ["image", "audio"]
    assert all(Path(a["path"]).is_file() for a in out["artifacts"])


def test_swap_generator_same_meta_response_different_generator(tmp_path: Path) -> None:
    out = run_example(EXAMPLES / "swap_generator.py", tmp_path)
    n = len(out["meta_response"]["invocations"])
    assert n >= 1
    assert [a["generator"] for a in out["runs"]["echo-image"]] == ["echo-image"] * n
    assert [a["generator"] for a in out["runs"]["stripes-image"]] == ["stripes-image"] * n
    first, second = out["runs"]["echo-image"][0]["path"], out["runs"]["stripes-image"][0]["path"]
    assert Path(first).read_bytes() != Path(second).read_bytes()


def test_third_party_plugin_appears_in_zoo_and_system_prompt(tmp_path: Path) -> None:
    """The plugin is 'installed' as a dist-info on PYTHONPATH (no pip in tests; the README shows pip)."""
    site = tmp_path / "site"
    info = site / "modaverse_chime-0.1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: modaverse-chime\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text("[modaverse_agent]\nchime = modaverse_chime\n")
    plugin_dir = EXAMPLES / "third_party_plugin"
    assert 'chime = "modaverse_chime"' in (plugin_dir / "pyproject.toml").read_text()
    out = run_example(plugin_dir / "show_plugin.py", tmp_path, plugins="chime", pythonpath=[site, plugin_dir])
    assert out["plugin"] == {"name": "chime", "distribution": "modaverse-chime", "hooks": ["register_generators"]}
    assert "text-to-chime" in out["tasks"] and out["generator"] == "chime" and out["in_system_prompt"]
    assert [Path(p).suffix for p in out["files"]] == [".wav"] and Path(out["files"][0]).stat().st_size > 1000
