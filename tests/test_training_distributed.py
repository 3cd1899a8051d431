"""`modaverse train` in two processes (accelerate launch, gloo on the CPU) trains like one process.

One launch of two processes trains a tiny model (checkpoint at step 3, end at step 6), then resumes from
the two-process checkpoint into a second run folder and finishes; the same command runs in this process
with the same global batch. All three give the same weights (float rounding apart), and only the main
process writes (one metrics line per step, one model folder, one log line each).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from modaverse_agent.cli import cli
from modaverse_agent.model.tiny import save_tiny_base
from modaverse_agent.training.trainer import CHECKPOINT_STATE, CHECKPOINT_TENSORS

torch.set_num_threads(1)

BIN = Path(sys.executable).parent
STEPS = 6
#: The same global batch for one and two processes: 4 samples a micro-batch (2 per process), 2 micro-batches a step.
TRAIN = [
    *("--steps", str(STEPS), "--batch-size", "4", "--grad-accum", "2", "--lr", "1e-2", "--warmup", "2"),
    *("--blind-media", "--no-tokenizer", "--threads", "1", "--device", "cpu", "--lora-dropout", "0"),
    *("--lora-targets", "q_proj,v_proj,lm_head", "--lora-r", "4", "--lora-alpha", "8"),
]
#: Run by each launched process: the CLI trains, then resumes from the two-process checkpoint at step 3.
DRIVER = """
import sys
from modaverse_agent.cli import main

train, work = sys.argv[1:-1], sys.argv[-1]
first = main([*train, "-o", f"{work}/two", "--save-every", "3"])
if first:
    sys.exit(first)
resume = ["--resume", f"{work}/two.run/checkpoint-3", "--run-dir", f"{work}/resumed.run"]
sys.exit(main([*train, "-o", f"{work}/resumed", *resume, "--save-every", "0"]))
"""


def _free_port() -> int:
    """A free localhost port (asked of a child process: this one may not open sockets)."""
    code = "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])"
    return int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)


def _params(run: Path) -> dict[str, torch.Tensor]:
    tensors = load_file(str(run / f"checkpoint-{STEPS}" / CHECKPOINT_TENSORS))
    return {k: v for k, v in tensors.items() if k.startswith("param.")}


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys() and a
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _steps_per_s(run: Path) -> float:
    later = [m["step_s"] for m in _metrics(run)[1:]]  # the first step warms up
    return len(later) / sum(later)


def test_two_processes_train_like_one_and_resume(tmp_path: Path, training_cli: object) -> None:
    base = save_tiny_base(tmp_path / "base", hidden=32, layers=2)
    data = tmp_path / "train.jsonl"
    res = CliRunner().invoke(cli, ["data", "generate", "-o", str(data), "--size", "40"])
    assert res.exit_code == 0, res.output
    train = ["train", "--data", str(data), "--llm", str(base), *TRAIN]

    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "CUDA_VISIBLE_DEVICES": "",
        "MASTER_ADDR": "127.0.0.1",
        "GLOO_SOCKET_IFNAME": "lo",
    }
    (tmp_path / "driver.py").write_text(DRIVER)
    launch = [
        str(BIN / "accelerate"),
        *("launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1"),  # torchrun's launcher
        *("--mixed_precision", "no", "--dynamo_backend", "no", "--num_cpu_threads_per_process", "1"),
        *("--main_process_ip", "127.0.0.1", "--main_process_port", str(_free_port())),
        *(str(tmp_path / "driver.py"), *train, str(tmp_path)),
    ]
    t0 = time.perf_counter()
    two = subprocess.run(launch, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=400)
    launched_s = time.perf_counter() - t0
    assert two.returncode == 0, two.stdout[-3000:] + two.stderr[-6000:]
    assert "2 process(es)" in two.stderr
    # only the main process logs and writes
    assert two.stderr.count("training samples from") == 2, two.stderr[-3000:]  # one line per run, not per process
    assert [m["step"] for m in _metrics(tmp_path / "two.run")] == list(range(1, STEPS + 1))
    assert [m["step"] for m in _metrics(tmp_path / "resumed.run")] == list(range(4, STEPS + 1))
    assert json.loads((tmp_path / "two.run" / "checkpoint-3" / CHECKPOINT_STATE).read_text())["processes"] == 2
    assert not list(tmp_path.glob(".two.writing-*")) and (tmp_path / "two" / "training.json").is_file()

    res = CliRunner().invoke(cli, [*train, "-o", str(tmp_path / "one"), "--save-every", "0"])
    assert res.exit_code == 0, res.output
    assert "1 process(es)" in res.output

    one, two_w, resumed = (_params(tmp_path / f"{n}.run") for n in ("one", "two", "resumed"))
    d_two, d_resumed = _max_diff(one, two_w), _max_diff(two_w, resumed)
    moved = _max_diff(one, {k: v * 0 for k, v in one.items()})
    r1, r2 = _steps_per_s(tmp_path / "one.run"), _steps_per_s(tmp_path / "two.run")
    print(
        f"\nmax |w| {moved:.3g}; max weight difference 2 processes vs 1: {d_two:.3g}; resumed vs straight "
        f"(2 processes): {d_resumed:.3g}; steps/s: 1 process {r1:.2f}, 2 processes {r2:.2f} "
        f"(launch of both 2-process runs: {launched_s:.0f} s)"
    )
    assert d_two < 1e-4 and d_resumed < 1e-4
    losses_one = [m["loss"] for m in _metrics(tmp_path / "one.run")]
    losses_two = [m["loss"] for m in _metrics(tmp_path / "two.run")]
    assert losses_one == pytest.approx(losses_two, rel=1e-5)  # the logged loss is the global batch's too
    assert losses_one[-1] < losses_one[0]  # it trained


@pytest.mark.parametrize(("engine", "name"), [("DEEPSPEED", "DeepSpeed"), ("FSDP", "FSDP")])
def test_a_deepspeed_or_fsdp_launch_on_the_cpu_is_refused_not_run_as_ddp(
    tmp_path: Path, training_cli: object, monkeypatch: pytest.MonkeyPatch, engine: str, name: str
) -> None:
    """accelerate drops a DeepSpeed or FSDP config on the CPU without a word; `modaverse train` says so and stops."""
    base = save_tiny_base(tmp_path / "base", hidden=32, layers=2)
    data = tmp_path / "train.jsonl"
    assert CliRunner().invoke(cli, ["data", "generate", "-o", str(data), "--size", "8"]).exit_code == 0
    monkeypatch.setenv(f"ACCELERATE_USE_{engine}", "true")  # what `accelerate launch` sets for such a config
    res = CliRunner().invoke(cli, ["train", "--data", str(data), "--llm", str(base), *TRAIN, "-o", str(tmp_path / "m")])
    assert res.exit_code != 0
    assert f"asks for {name}" in res.output and "GPUs only" in res.output and "ddp.yaml" in res.output, res.output
    assert "Traceback" not in res.output and not (tmp_path / "m").exists()
