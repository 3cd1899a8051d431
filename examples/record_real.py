"""Run every example with ``--real`` (the built-in default model) and write what it answered into
examples/README.md, between the ``real-outputs`` markers of its "On the default model" section.

Rerun after the default model changes (``modaverse_agent/weights/default``):

    python examples/record_real.py            # about 4 model loads and a handful of answers
    python examples/record_real.py --dry-run  # print the section, leave the README alone

The echo plugin serves every task (``MODAVERSE_LOAD_PLUGINS=echo``: real diffusion weights are not assumed
to be downloaded); the third-party chime plugin is added for ``show_plugin.py``, made visible without
installing it by a dist-info on ``PYTHONPATH``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
README = HERE / "README.md"
START, END = "<!-- real-outputs:start -->", "<!-- real-outputs:end -->"


def run(script: str, workdir: Path, plugins: str = "echo", pythonpath: Sequence[Path] = ()) -> dict[str, Any]:
    """``script --output-dir WORKDIR/out --real`` with only ``plugins`` loaded; its last stdout line as JSON."""
    workdir.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "MODAVERSE_ZOO_CONFIG": str(workdir / "zoo.toml"),
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "MODAVERSE_LOAD_PLUGINS": plugins,
        "PYTHONPATH": os.pathsep.join([*map(str, pythonpath), os.environ.get("PYTHONPATH", "")]),
    }
    command = [sys.executable, str(HERE / script), "--output-dir", str(workdir / "out"), "--real"]
    done = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise SystemExit(f"{script} --real failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def chime_site(workdir: Path) -> list[Path]:
    """The chime plugin visible to ``importlib.metadata`` as if installed (what ``pip install -e`` would do)."""
    info = workdir / "site" / "modaverse_chime-0.1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: modaverse-chime\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text("[modaverse_agent]\nchime = modaverse_chime\n")
    return [workdir / "site", HERE / "third_party_plugin"]


def files(paths: Sequence[str]) -> str:
    """File names with sizes (the folders are temporary)."""
    return ", ".join(f"`{Path(p).name}` ({Path(p).stat().st_size} B)" for p in paths) or "none"


def calls(tool_calls: Sequence[dict[str, Any]]) -> str:
    """Tool calls as ``name(args)`` in JSON."""
    shown = [f"`{c['name']}` {json.dumps(c['args'], ensure_ascii=False)}" for c in tool_calls]
    return "; ".join(shown) or "none"


def model_id() -> str:
    """The shipped adapter's first 12 hex digits of SHA-256: which default model answered."""
    from modaverse_agent.default_model import default_model_dir

    adapter = default_model_dir() / "adapter" / "adapter_model.safetensors"
    return hashlib.sha256(adapter.read_bytes()).hexdigest()[:12]


def record(workdir: Path) -> str:
    """Run the four examples with ``--real`` and render their answers as Markdown."""
    out: list[str] = [f"Recorded with `python examples/record_real.py` (adapter sha256 `{model_id()}`).", ""]
    lcel = run("lcel_chain.py", workdir / "lcel")
    out += [
        "**`python examples/lcel_chain.py --real`** (forced `text-to-image`, prompt *Draw a lighthouse at dusk"
        " for a postcard.*)",
        "",
        f"- text: {json.dumps(lcel['text'], ensure_ascii=False)}",
        f"- tool calls: {calls(lcel['tool_calls'])}",
        f"- files: {files(lcel['files'])}",
        "",
    ]
    agent = run("langchain_agent.py", workdir / "agent")
    out += [
        "**`python examples/langchain_agent.py --real`** (`create_agent`, request *Draw a red kite and give me"
        " the sound of wind.*)",
        "",
    ]
    for step in agent["steps"][1:]:
        if step["type"] == "ai":
            out.append(f"- ai: {json.dumps(step['text'], ensure_ascii=False)}; calls: {calls(step['tool_calls'])}")
        else:
            out.append(f"- {step['type']}: {json.dumps(step['text'], ensure_ascii=False)}")
    generated = ", ".join(f"{a['modality']} by `{a['generator']}`" for a in agent["artifacts"]) or "none"
    out += [f"- artifacts: {generated}", ""]
    swap = run("swap_generator.py", workdir / "swap")
    out += [
        "**`python examples/swap_generator.py --real`** (forced `text-to-image`, request *Draw a lighthouse.*)",
        "",
        f"- meta-response: `{json.dumps(swap['meta_response'], ensure_ascii=False)}`",
    ]
    for choice, made in swap["runs"].items():
        out.append(f"- dispatched with `text-to-image = {choice}`: {files([m['path'] for m in made])}")
    chime = run("third_party_plugin/show_plugin.py", workdir / "chime", "echo,chime", chime_site(workdir / "chime"))[
        "real"
    ]
    out += [
        "",
        "**`python examples/third_party_plugin/show_plugin.py --real`** (the echo plugin's five tasks and"
        " `text-to-chime` on offer; request *Ring a high, bright chime.*)",
        "",
        f"- text: {json.dumps(chime['text'], ensure_ascii=False)}",
        f"- tool calls: {calls(chime['tool_calls'])}",
        f"- files: {files(chime['files'])}",
    ]
    return "\n".join(out).replace(f"{workdir}/", "")  # paths in tool messages, relative to the run's folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="print the section; do not write the README")
    args = parser.parse_args()
    text = README.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"{README} has no {START} ... {END} markers; put them where the outputs belong")
    with tempfile.TemporaryDirectory(prefix="modaverse-real-") as tmp:
        section = record(Path(tmp))
    print(section)
    if not args.dry_run:
        head, rest = text.split(START, 1)
        README.write_text(f"{head}{START}\n{section}\n{END}{rest.split(END, 1)[1]}")
        print(f"wrote {README}")


if __name__ == "__main__":
    main()
