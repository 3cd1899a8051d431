"""`modaverse train` / `eval` as a newcomer meets them (issue 21): each command a user runs, and what it
must print or refuse. Tiny random models from configs; nothing is downloaded."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any

import click
import pytest
import torch
from click.testing import CliRunner, Result

from modaverse_agent import plugins
from modaverse_agent.model.tiny import save_tiny_base

torch.set_num_threads(1)


@pytest.fixture
def cli(training_cli: click.Group) -> click.Group:
    """The `modaverse` group with the training commands (conftest's ``training_cli``)."""
    return training_cli


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_base(tmp_path_factory.mktemp("base"))


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from modaverse_agent.training.data_commands import data as data_group

    out = tmp_path_factory.mktemp("data")
    args = ["generate", "-o", str(out / "train.jsonl"), "--heldout", str(out / "test.jsonl")]
    res = CliRunner().invoke(data_group, [*args, "--size", "120", "--heldout-size", "30"])
    assert res.exit_code == 0, res.output
    return out / "train.jsonl", out / "test.jsonl"


def _run(cli: click.Group, *args: str) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args])


def _train(cli: click.Group, data: Path, out: Path, *extra: Any, base: Path | str | None = None) -> Result:
    llm = ["--llm", str(base)] if base is not None else []
    return _run(cli, "train", "--data", data, "-o", out, *llm, "--batch-size", "4", "--blind-media", *extra)


def _one_error_line(res: Result, *needles: str) -> str:
    assert res.exit_code == 2, res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), res.output  # no traceback, no noise
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def _steps(run_dir: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


# -- 1. a trained model is never replaced silently; one run per run folder ---------------------------------
def test_training_into_a_model_folder_is_refused_until_overwrite(
    cli: click.Group, base: Path, data: tuple[Path, Path], tmp_path: Path
) -> None:
    out, run = tmp_path / "m", tmp_path / "m.run"
    assert _train(cli, data[0], out, "--steps", "3", base=base).exit_code == 0
    card = (out / "training.json").read_text()
    again = _train(cli, data[0], out, "--steps", "2", base=base)
    _one_error_line(again, "already holds a trained model", "--overwrite")
    assert (out / "training.json").read_text() == card and _steps(run) == [1, 2, 3]  # nothing touched

    res = _train(cli, data[0], out, "--steps", "2", "--overwrite", base=base)
    assert res.exit_code == 0, res.output
    assert "cleared the previous run" in res.output and f"replaced {out}" in res.output
    assert json.loads((out / "training.json").read_text())["train"]["max_steps"] == 2
    assert _steps(run) == [1, 2] and sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-2"]


def test_a_run_folder_holds_one_run_and_resuming_continues_it(
    cli: click.Group, base: Path, data: tuple[Path, Path], tmp_path: Path
) -> None:
    out, run = tmp_path / "m", tmp_path / "m.run"
    assert _train(cli, data[0], out, "--steps", "4", "--save-every", "2", base=base).exit_code == 0
    # another model into the same run folder: refused, naming both ways on
    res = _train(cli, data[0], tmp_path / "other", "--run-dir", run, "--steps", "2", base=base)
    _one_error_line(res, "holds an earlier run", "--overwrite", f"--resume {run / 'checkpoint-4'}")
    # resuming from step 2 drops the later steps of the old continuation instead of appending after them
    res = _train(cli, data[0], out, "--steps", "4", "--resume", run / "checkpoint-2", base=base)
    assert res.exit_code == 0, res.output
    assert "continuing from step 2: dropped 1 later checkpoint(s) and 2 later metrics line(s)" in res.output
    assert _steps(run) == [1, 2, 3, 4]


def test_a_failed_overwrite_leaves_the_old_model_whole(
    cli: click.Group, base: Path, data: tuple[Path, Path], tmp_path: Path
) -> None:
    out = tmp_path / "m"
    assert _train(cli, data[0], out, "--steps", "2", base=base).exit_code == 0
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    broken = tmp_path / "checkpoint-9"
    broken.mkdir()
    res = _train(cli, data[0], out, "--steps", "2", "--overwrite", "--resume", broken, base=base)
    assert res.exit_code == 2 and "has no trainer_state.json" in res.output, res.output
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_a_folder_with_other_files_is_never_written_into(
    cli: click.Group, base: Path, data: tuple[Path, Path], tmp_path: Path
) -> None:
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("mine")
    res = _train(cli, data[0], tmp_path / "notes", "--steps", "2", "--overwrite", base=base)
    _one_error_line(res, "is not empty and holds no model")
    assert [p.name for p in (tmp_path / "notes").iterdir()] == ["todo.txt"]


# -- 2. eval checks arguments and data before the model loads ------------------------------------------------
@pytest.fixture
def no_model_load(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading a model fails the test: these refusals must come first."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr("modaverse_agent.model.llamacpp.load_engine", refuse)


@pytest.fixture(scope="module")
def tiny_model(base: Path, data: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    from modaverse_agent.cli import cli as group

    plugins.load_plugins().hook.register_commands(cli=group)
    out = tmp_path_factory.mktemp("trained") / "m"
    try:
        res = _train(group, data[0], out, "--steps", "2", base=base)
    finally:
        for name in ("data", "train", "eval"):
            group.commands.pop(name, None)
    assert res.exit_code == 0, res.output
    return out


def test_eval_refuses_bad_arguments_and_data_in_one_line_before_loading(
    cli: click.Group, tiny_model: Path, data: tuple[Path, Path], tmp_path: Path, no_model_load: None
) -> None:
    res = _run(cli, "eval", "--model", tiny_model, "--data", data[1], "--limit", "0")
    _one_error_line(res, "--limit", "at least 1")
    csv = tmp_path / "d.csv"
    csv.write_text("instruction,task\ndraw a cat,text-to-image\n")
    _one_error_line(_run(cli, "eval", "--model", tiny_model, "--data", csv), "d.csv:1: not JSON")
    binary = tmp_path / "d.bin"
    binary.write_bytes(bytes(range(128, 256)) * 4)
    _one_error_line(_run(cli, "eval", "--model", tiny_model, "--data", binary), "not UTF-8 text", "JSONL")
    _one_error_line(_run(cli, "eval", "--model", tiny_model, "--data", tmp_path / "nope.jsonl"), "no such file")
    res = _run(cli, "eval", "--model", tiny_model, "--data", data[1], "--batch-size", "0")
    assert res.exit_code == 2 and "--batch-size" in res.output and "Traceback" not in res.output
    # train says the same about the same data
    _one_error_line(_run(cli, "train", "--data", binary, "-o", tmp_path / "m", "--llm", "x"), "not UTF-8 text")


# -- 7. messages that name the real problem ------------------------------------------------------------------
def test_eval_of_a_folder_that_is_not_a_model_says_so(
    cli: click.Group, tiny_model: Path, data: tuple[Path, Path], tmp_path: Path, no_model_load: None
) -> None:
    (tmp_path / "empty").mkdir()
    res = _run(cli, "eval", "--model", tmp_path / "empty", "--data", data[1])
    _one_error_line(res, "is not a model folder written by `modaverse train`", "modaverse_config.json")
    run = tiny_model.with_name("m.run")
    _one_error_line(_run(cli, "eval", "--model", run, "--data", data[1]), "is a training run folder", "train -o")


def test_editing_without_an_image_says_it_needs_an_input_image(cli: click.Group, tmp_path: Path) -> None:
    line = {
        "id": "e-1",
        "kind": "output-alignment",
        "instruction": "Add a rainbow over the hills.",
        "media": [],
        "response": {"text": "Done.", "invocations": [{"task": "image-editing", "prompt": "add a rainbow"}]},
        "source": {"engine": "manual"},
    }
    (tmp_path / "d.jsonl").write_text(json.dumps(line) + "\n")
    res = _run(cli, "data", "validate", tmp_path / "d.jsonl")
    assert res.exit_code == 1 and "'image-editing' needs an input image" in res.output, res.output


# -- 4 and 6. eval summarises the budget once and keeps what the model wrote -------------------------------------
def test_eval_counts_answers_cut_at_the_budget_once_and_keeps_the_raw_output(
    cli: click.Group, tiny_model: Path, data: tuple[Path, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    report = tmp_path / "r.json"
    args = ["--limit", "6", "--batch-size", "3", "--max-new-tokens", "12", "-o", report]
    with caplog.at_level(logging.INFO):
        res = _run(cli, "eval", "--model", tiny_model, "--data", data[1], *args)
    assert res.exit_code == 0, res.output
    per_answer = [r for r in caplog.records if "token budget" in r.getMessage()]
    assert not per_answer and "reached the token budget" not in res.output  # no line per answer
    result = json.loads(report.read_text())
    cut = sum(r["finish_reason"] == "length" for r in result["results"])
    assert cut > 0 and result["closed_early"] == cut  # an untrained model writes on until the budget
    assert res.output.count(f"note: {cut} of 6 answers ran to the token budget") == 1
    assert "train it longer" in res.output
    for r in result["results"]:  # what the model wrote, per sample
        assert r["raw"].startswith("{") and "text" in r and r["finish_reason"] in ("stop", "length")
    # prompt metrics absent: the report says why
    assert result["bleu4"] is None and "note: prompt BLEU/chrF/exact/additions are absent" in res.output


def test_eval_on_the_natural_set_says_it_has_no_reference_prompts(
    cli: click.Group, tiny_model: Path, tmp_path: Path
) -> None:
    res = _run(cli, "eval", "--model", tiny_model, "--data", "natural", "--limit", "2", "--max-new-tokens", "8")
    assert res.exit_code == 0, res.output
    assert "these samples have no reference prompts (the natural set carries task labels only)" in res.output


# -- 4. no deprecation noise from training ---------------------------------------------------------------------
def test_training_shows_no_past_key_values_deprecation(
    cli: click.Group, base: Path, data: tuple[Path, Path], tmp_path: Path
) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = _train(cli, data[0], tmp_path / "m", "--steps", "2", base=base)
    assert res.exit_code == 0, res.output
    assert not [w for w in caught if "past_key_values" in str(w.message)]


# -- 5. warmup: no silent change -------------------------------------------------------------------------------
def test_warmup_longer_than_the_run_is_refused_and_the_default_scales(
    cli: click.Group, base: Path, data: tuple[Path, Path], tmp_path: Path
) -> None:
    res = _train(cli, data[0], tmp_path / "a", "--steps", "8", "--warmup", "10", base=base)
    _one_error_line(res, "--warmup 10 is not below --steps 8", "never decay", "0.05")
    assert not (tmp_path / "a").exists()
    res = _train(cli, data[0], tmp_path / "b", "--steps", "8", base=base)  # the default: 5% of the steps
    assert res.exit_code == 0, res.output
    assert "starts at once and decays (cosine) to 0.1x by step 8" in res.output
    res = _train(cli, data[0], tmp_path / "c", "--steps", "8", "--warmup", "0.25", base=base)
    assert res.exit_code == 0 and "rises over 2 warmup step(s)" in res.output, res.output
    assert json.loads((tmp_path / "c" / "training.json").read_text())["train"]["warmup_steps"] == 2


# -- 8. a model on a built-in base refers to the base's tokenizer ------------------------------------------------
def test_a_model_on_a_built_in_base_does_not_copy_its_tokenizer(
    cli: click.Group, base: Path, data: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from modaverse_agent import default_model
    from modaverse_agent.model.modeling import ModaVerseModel

    def folder(log: Any = None) -> Path:
        return base

    monkeypatch.setitem(default_model.BUILTIN_LLMS, "tiny-test", (folder, folder))
    res = _train(cli, data[0], tmp_path / "builtin", "--steps", "2", base="modaverse:tiny-test")
    assert res.exit_code == 0, res.output
    assert "the tokenizer is not saved: it is rebuilt from the built-in base" in res.output
    assert not (tmp_path / "builtin" / "tokenizer").exists()
    res = _train(cli, data[0], tmp_path / "kept", "--steps", "2", "--tokenizer", base="modaverse:tiny-test")
    assert res.exit_code == 0 and (tmp_path / "kept" / "tokenizer").is_dir(), res.output
    res = _train(cli, data[0], tmp_path / "local", "--steps", "2", base=base)  # a local base: saved as before
    assert res.exit_code == 0 and (tmp_path / "local" / "tokenizer").is_dir(), res.output
    rebuilt = ModaVerseModel.from_pretrained(tmp_path / "builtin").tokenizer
    saved = ModaVerseModel.from_pretrained(tmp_path / "kept").tokenizer
    text = "draw a cat <|media_start|><|media|><|media_end|> please"
    assert rebuilt(text).input_ids == saved(text).input_ids
