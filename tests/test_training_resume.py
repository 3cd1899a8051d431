"""`modaverse train` checkpoints, resume and the run folder as a user meets them when things go wrong: a resume
that cannot work loses nothing, checkpoints are whole or absent, one training per run folder, options changed
on resume are refused or applied (never half), Ctrl-C says where to resume, paths saved absolute.
Tiny random models; each training is a few steps."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click
import pytest
import torch
from click.testing import CliRunner, Result

from modaverse_agent.model.tiny import save_tiny_base

torch.set_num_threads(1)
BIN = Path(sys.executable).parent


@pytest.fixture
def cli(training_cli: click.Group) -> click.Group:
    """The `modaverse` group with the training commands (conftest's ``training_cli``)."""
    return training_cli


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_base(tmp_path_factory.mktemp("base"))


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from modaverse_agent.training.data_commands import data as data_group

    out = tmp_path_factory.mktemp("data")
    res = CliRunner().invoke(data_group, ["generate", "-o", str(out / "train.jsonl"), "--size", "60"])
    assert res.exit_code == 0, res.output
    return out / "train.jsonl"


def _train(cli: click.Group, data: Path, out: Path, *extra: Any, base: Path | str | None = None) -> Result:
    llm = ["--llm", str(base)] if base is not None else []
    args = ["train", "--data", data, "-o", out, *llm, "--batch-size", "4", "--blind-media", *extra]
    return CliRunner().invoke(cli, [str(a) for a in args])


def _error(res: Result, *needles: str) -> str:
    assert res.exit_code == 2, res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("Error: "), res.output
    assert "Traceback" not in res.output, res.output
    for needle in needles:
        assert needle in lines[-1], lines[-1]
    return lines[-1]


def _snapshot(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != ".lock"}


def _metrics(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture
def trained(cli: click.Group, base: Path, data: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A 6-step run with a checkpoint every 2 steps (lr 1e-3, warmup 1)."""
    out = tmp_path / "m"
    res = _train(cli, data, out, "--steps", "6", "--save-every", "2", "--lr", "1e-3", "--warmup", "1", base=base)
    assert res.exit_code == 0, res.output
    return out, tmp_path / "m.run"


# -- 1. a resume that cannot work touches nothing -------------------------------------------------------------
def test_a_resume_with_other_adapter_options_is_refused_before_anything_is_dropped(
    cli: click.Group, base: Path, data: Path, trained: tuple[Path, Path]
) -> None:
    out, run = trained
    before = _snapshot(run)
    res = _train(cli, data, out, "--resume", run / "checkpoint-2", "--lora-r", "4", base=base)
    _error(res, "--lora-r 4 (checkpoint: 16)")
    assert "dropped" not in res.output
    assert _snapshot(run) == before  # checkpoints 4 and 6 and all 6 metrics lines are still there


def test_a_corrupt_checkpoint_is_named_with_the_previous_one_and_loses_nothing(
    cli: click.Group, base: Path, data: Path, trained: tuple[Path, Path]
) -> None:
    out, run = trained
    tensors = run / "checkpoint-4" / "trainer_state.safetensors"
    tensors.write_bytes(tensors.read_bytes()[:100])  # cut short
    before = _snapshot(run)
    res = _train(cli, data, out, "--resume", run / "checkpoint-4", base=base)
    _error(res, f"{tensors} is corrupt", f"--resume {run / 'checkpoint-2'}")
    assert "SafetensorError" not in res.output.split("(")[0]
    assert _snapshot(run) == before


def test_a_resume_that_trains_drops_the_abandoned_tail_only_then(
    cli: click.Group, base: Path, data: Path, trained: tuple[Path, Path]
) -> None:
    out, run = trained
    res = _train(cli, data, out, "--resume", run / "checkpoint-2", base=base)
    assert res.exit_code == 0, res.output
    assert "dropped 2 later checkpoint(s) and 4 later metrics line(s)" in res.output
    assert [m["step"] for m in _metrics(run)] == [1, 2, 3, 4, 5, 6]


# -- 2. checkpoints are whole or absent; advice names only whole ones -------------------------------------------
def test_checkpoints_are_written_whole_and_advice_skips_a_broken_one(
    cli: click.Group, base: Path, data: Path, trained: tuple[Path, Path], tmp_path: Path
) -> None:
    out, run = trained
    assert not [p.name for p in run.iterdir() if p.name.startswith(".checkpoint-")]  # no scratch left
    # a run killed while writing (the old way): checkpoint-8 has tensors but no JSON; a scratch folder too
    (run / "checkpoint-8").mkdir()
    (run / "checkpoint-8" / "trainer_state.safetensors").write_bytes(b"half")
    (run / ".checkpoint-10.partial").mkdir()
    res = _train(cli, data, tmp_path / "other", "--run-dir", run, "--steps", "2", base=base)
    _error(res, f"--resume {run / 'checkpoint-6'} to continue it")
    # resuming the last whole one clears the scratch folder and the broken later checkpoint
    res = _train(cli, data, out, "--resume", run / "checkpoint-6", "--steps", "7", base=base)
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in run.iterdir() if "checkpoint" in p.name) == [
        "checkpoint-2",
        "checkpoint-4",
        "checkpoint-6",
        "checkpoint-7",
    ]


def test_a_checkpoint_cut_short_leaves_no_checkpoint_folder(
    cli: click.Group, base: Path, data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import modaverse_agent.training.trainer as trainer

    calls = {"n": 0}
    real = trainer.asdict

    def dies_on_the_second_checkpoint(obj: Any) -> Any:  # the JSON state is made after the tensors are written
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk full")
        return real(obj)

    monkeypatch.setattr(trainer, "asdict", dies_on_the_second_checkpoint)
    res = _train(cli, data, tmp_path / "m", "--steps", "4", "--save-every", "2", base=base)
    assert res.exit_code != 0
    run = tmp_path / "m.run"
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-2"]


# -- 3. one training per run folder; 6. Ctrl-C says where to resume -----------------------------------------------
def test_a_second_training_into_a_busy_run_folder_is_refused_and_ctrl_c_names_the_checkpoint(
    cli: click.Group, base: Path, data: Path, tmp_path: Path
) -> None:
    out, run = tmp_path / "m", tmp_path / "m.run"
    args = ["train", "--data", data, "-o", out, "--llm", base, "--batch-size", "4", "--blind-media"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    first = subprocess.Popen(
        [str(BIN / "modaverse"), *map(str, args), "--steps", "100000", "--warmup", "0", "--save-every", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        deadline = time.monotonic() + 120
        while not (run / "checkpoint-2").is_dir():
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()
            time.sleep(0.2)
        res = _train(cli, data, out, "--steps", "2", "--overwrite", base=base)
        _error(res, f"run folder {run} is in use by another training (pid {first.pid})")
        assert (run / "checkpoint-2").is_dir()  # its --overwrite cleared nothing
    finally:
        first.send_signal(signal.SIGINT)
        _, err = first.communicate(timeout=60)
    assert first.returncode == 130, err
    last = sorted(int(p.name.split("-")[1]) for p in run.glob("checkpoint-*"))[-1]
    assert f"; resume with --resume {run / f'checkpoint-{last}'}" in err and "interrupted at step " in err, err
    # the lock went with the process
    res = _train(cli, data, out, "--resume", run / f"checkpoint-{last}", "--steps", str(last + 1), base=base)
    assert res.exit_code == 0, res.output


def test_ctrl_c_before_the_first_checkpoint_says_so(
    cli: click.Group, base: Path, data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from modaverse_agent.training.trainer import Trainer

    real = Trainer._log

    def interrupted(self: Trainer, record: dict[str, Any]) -> None:
        real(self, record)
        if record["step"] == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "_log", interrupted)
    res = _train(cli, data, tmp_path / "a", "--steps", "9", "--save-every", "2", base=base)
    assert res.exit_code == 130
    assert f"interrupted at step 3; resume with --resume {tmp_path / 'a.run' / 'checkpoint-2'}" in res.output
    res = _train(cli, data, tmp_path / "b", "--steps", "9", "--save-every", "5", base=base)
    assert res.exit_code == 130 and "interrupted at step 3; no checkpoint was written yet" in res.output


# -- 4. local paths are saved absolute -----------------------------------------------------------------------------
def test_a_relative_llm_is_saved_absolute(
    cli: click.Group, base: Path, data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from modaverse_agent import default_model
    from modaverse_agent.model.config import ModaVerseConfig

    def folder(log: Any = None) -> Path:
        return base

    monkeypatch.setitem(default_model.BUILTIN_LLMS, "tiny-test", (folder, folder))
    monkeypatch.chdir(base.parent)
    res = _train(cli, data, tmp_path / "m", "--steps", "1", base=base.name)
    assert res.exit_code == 0, res.output
    monkeypatch.chdir(tmp_path)
    assert ModaVerseConfig.load(tmp_path / "m").llm == str(base.resolve())
    res = _train(cli, data, tmp_path / "hub", "--steps", "1", base="modaverse:tiny-test")
    assert res.exit_code == 0, res.output
    assert ModaVerseConfig.load(tmp_path / "hub").llm == "modaverse:tiny-test"


# -- 5. options on resume: left out = the checkpoint's; different = refused; --steps moves the end ----------------
def test_options_changed_on_resume_are_refused_naming_each(
    cli: click.Group, base: Path, data: Path, trained: tuple[Path, Path], tmp_path: Path
) -> None:
    out, run = trained
    before = _snapshot(run)
    other = tmp_path / "other.jsonl"
    other.write_text("".join(data.read_text().splitlines(keepends=True)[:30]))
    ck = run / "checkpoint-4"
    res = _train(cli, data, out, "--resume", ck, "--lr", "1e-2", "--batch-size", "8", base=base)
    _error(res, "--lr 0.01 (checkpoint: 0.001)", "--batch-size 8 (checkpoint: 4)")
    _error(_train(cli, other, out, "--resume", ck, base=base), f"--data {other}", "other content")
    _error(_train(cli, data, out, "--resume", ck, "--steps", "3", base=base), "the checkpoint is at step 4")
    assert _snapshot(run) == before


def test_a_resume_keeps_the_checkpoints_options_and_more_steps_stretch_the_schedule(
    cli: click.Group, base: Path, data: Path, trained: tuple[Path, Path]
) -> None:
    out, run = trained
    straight = _metrics(run)
    res = _train(cli, data, out, "--resume", run / "checkpoint-4", base=base)  # lr 1e-3, 6 steps: from it
    assert res.exit_code == 0, res.output
    assert _metrics(run) == [{**a, "step_s": b["step_s"]} for a, b in zip(straight, _metrics(run), strict=True)]
    res = _train(cli, data, out, "--resume", run / "checkpoint-6", "--steps", "10", base=base)
    assert res.exit_code == 0, res.output
    assert "the cosine decay is stretched to end there" in res.output
    lrs = [m["lr"] for m in _metrics(run)]
    card = json.loads((out / "training.json").read_text())["train"]
    assert card["max_steps"] == 10 and card["lr"] == 1e-3 and card["save_every"] == 2
    # the new curve from step 6 on: warmup 1, cosine from 1e-3 to 1e-4 over steps 1..10
    import math

    expected = [1e-4 + 0.9e-3 * 0.5 * (1 + math.cos(math.pi * (s - 1) / 9)) for s in range(7, 11)]
    assert lrs[6:] == pytest.approx(expected)


def test_init_from_refuses_adapter_options_it_would_ignore(
    cli: click.Group, data: Path, trained: tuple[Path, Path], tmp_path: Path
) -> None:
    out, _ = trained
    res = _train(cli, data, tmp_path / "s2", "--init-from", out, "--lora-r", "4", "--prompt-format", "chat")
    _error(res, "--lora-r 4 (", ": 16)", "--prompt-format chat (")
    assert not (tmp_path / "s2").exists()


# -- 7. small ones ------------------------------------------------------------------------------------------------
def test_save_every_keep_checkpoints_and_a_batch_larger_than_the_data(
    cli: click.Group, base: Path, data: Path, tmp_path: Path
) -> None:
    res = _train(cli, data, tmp_path / "a", "--steps", "2", "--save-every", "-1", base=base)
    assert res.exit_code == 2 and "--save-every" in res.output
    res = _train(cli, data, tmp_path / "b", "--steps", "5", "--save-every", "1", "--keep-checkpoints", "2", base=base)
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (tmp_path / "b.run").glob("checkpoint-*")) == ["checkpoint-4", "checkpoint-5"]
    res = _train(cli, data, tmp_path / "c", "--steps", "1", "--max-samples", "3", base=base)  # --batch-size 4
    assert res.exit_code == 0, res.output
    assert "--batch-size 4 is more than the 3 training samples: batches of 3" in res.output
    assert json.loads((tmp_path / "c" / "training.json").read_text())["train"]["batch_size"] == 3
