"""Time of the core's light paths and whether they import torch.

Measures, in fresh processes (median of N runs): `modaverse plugins`, `modaverse --help`, and
`modaverse run --meta-response` dispatching an echo image + audio; plus in-process dispatch time.
Goal: no torch on these paths, listing under 0.5 s.

    python benchmarks/bench_core_paths.py [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PLAN = {
    "text": "ok",
    "invocations": [
        {"task": "text-to-image", "prompt": "a kite"},
        {"task": "text-to-audio", "prompt": "wind", "args": {"duration": 0.5}},
    ],
}
PROBE = """
import runpy, sys
sys.argv = ["modaverse", *sys.argv[1:]]
try:
    from modaverse_agent.cli import main
    main()
except SystemExit:
    pass
print("TORCH_IMPORTED=" + str("torch" in sys.modules), file=sys.stderr)
"""


def timed(args: list[str], env: dict[str, str]) -> tuple[float, bool]:
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if res.returncode not in (0,):
        raise SystemExit(f"{args} failed: {res.stderr[-500:]}")
    return wall, "TORCH_IMPORTED=True" in res.stderr


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    out = Path(tempfile.mkdtemp())
    env = {**os.environ, "MODAVERSE_LOAD_PLUGINS": "echo", "MODAVERSE_ZOO_CONFIG": str(out / "zoo.toml")}
    baseline = statistics.median(timed_python(env) for _ in range(a.runs))
    rows = []
    for label, args in [
        ("modaverse --help", ["--help"]),
        ("modaverse plugins", ["plugins"]),
        (
            "modaverse run --meta-response (echo image+audio)",
            ["run", "x", "--meta-response", json.dumps(PLAN), "-o", str(out)],
        ),
    ]:
        samples = [timed(args, env) for _ in range(a.runs)]
        rows.append((label, statistics.median(s[0] for s in samples), any(s[1] for s in samples)))
    print(f"python -c pass (interpreter start): {baseline:.3f} s")
    for label, wall, torch in rows:
        print(f"{label:<52} {wall:.3f} s  (x{wall / baseline:.1f} of bare start)  torch imported: {torch}")

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from modaverse_agent import plugins
    from modaverse_agent.agent import ModaVerseAgent
    from modaverse_agent.testing import ScriptedLLM
    from modaverse_agent.zoo import Zoo

    os.environ["MODAVERSE_LOAD_PLUGINS"] = "echo"
    plugins.load_plugins(entry_points=True)
    zoo = Zoo.from_plugins()
    llm = ScriptedLLM()
    agent = ModaVerseAgent(llm, zoo, output_dir=out / "inproc")
    times = []
    for _ in range(a.runs):
        llm.enqueue(PLAN)
        t0 = time.perf_counter()
        agent.run("x")
        times.append(time.perf_counter() - t0)
    print(f"in-process dispatch of the echo plan: {statistics.median(times) * 1000:.1f} ms (median of {a.runs})")
    goal = rows[1][1] < 0.5 and not any(r[2] for r in rows)
    print(f"goal (no torch, listing < 0.5 s): {'met' if goal else 'NOT met'}")


def timed_python(env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True, env=env)
    return time.perf_counter() - t0


if __name__ == "__main__":
    main()
