"""What `modaverse data generate/validate`, `train` and `eval` refuse or report about their files and options, as
a user meets them on the command line: outputs that would be overwritten, sizes below 1, media files that are
missing, JSON errors with their real column, input references to media that are not attached."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result


@pytest.fixture
def cli(training_cli: click.Group) -> click.Group:
    """The `modaverse` group with the training commands (conftest's ``training_cli``)."""
    return training_cli


def _run(cli: click.Group, *args: Any) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args])


def _line(n: int, media: Sequence[dict[str, Any]] = (), inputs: Sequence[str] | None = None) -> dict[str, Any]:
    """One valid sample line: an edit of the attached image, or a text-to-image request without media."""
    if media:
        invocation: dict[str, Any] = {"task": "image-editing", "prompt": f"make it blue {n}", "inputs": ["image_1"]}
        kind = "editing"
    else:
        invocation, kind = {"task": "text-to-image", "prompt": f"a red boat {n}"}, "output-alignment"
    if inputs is not None:
        invocation["inputs"] = list(inputs)
    return {
        "id": f"s-{n}",
        "kind": kind,
        "instruction": f"Request number {n}.",
        "media": list(media),
        "response": {"text": "Here it is.", "invocations": [invocation]},
        "source": {"engine": "manual"},
    }


def _image(path: str | None) -> dict[str, Any]:
    return {"id": "image_1", "modality": "image", "path": path}


def _write(path: Path, lines: Sequence[dict[str, Any] | str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines), encoding="utf-8")
    return path


# -- 1. data generate: outputs and sizes ---------------------------------------------------------------------
def test_generate_refuses_the_same_file_for_training_and_heldout(cli: click.Group, tmp_path: Path) -> None:
    out = tmp_path / "same.jsonl"
    for heldout in (out, tmp_path / "sub" / ".." / "same.jsonl"):
        (tmp_path / "sub").mkdir(exist_ok=True)
        res = _run(cli, "data", "generate", "-o", out, "--heldout", heldout, "--size", "5", "--heldout-size", "5")
        assert res.exit_code == 2 and "-o and --heldout are the same file" in res.output, res.output
    assert not out.exists()


def test_generate_refuses_to_replace_an_existing_file_without_overwrite(cli: click.Group, tmp_path: Path) -> None:
    out, held = tmp_path / "train.jsonl", tmp_path / "test.jsonl"
    out.write_text("precious\n" * 100)
    res = _run(cli, "data", "generate", "-o", out, "--size", "5")
    assert res.exit_code == 2 and f"{out} already exists" in res.output and "--overwrite" in res.output
    assert out.read_text() == "precious\n" * 100
    # the held-out file is protected too, and nothing is written when either exists
    fresh = tmp_path / "new.jsonl"
    held.write_text("mine\n")
    res = _run(cli, "data", "generate", "-o", fresh, "--heldout", held, "--size", "5", "--heldout-size", "5")
    assert res.exit_code == 2 and f"{held} already exists" in res.output
    assert not fresh.exists() and held.read_text() == "mine\n"
    res = _run(
        cli, "data", "generate", "-o", out, "--heldout", held, "--size", "5", "--heldout-size", "3", "--overwrite"
    )
    assert res.exit_code == 0, res.output
    assert len(out.read_text().splitlines()) == 5 and len(held.read_text().splitlines()) == 3


def test_generate_checks_its_other_options_before_the_outputs(cli: click.Group, tmp_path: Path) -> None:
    out = tmp_path / "train.jsonl"
    out.write_text("x\n")
    res = _run(cli, "data", "generate", "-o", out, "--mix", "speech")
    assert res.exit_code == 2 and "MAKER=WEIGHT" in res.output


@pytest.mark.parametrize(
    ("option", "value"), [("--size", "-3"), ("--size", "0"), ("--heldout-size", "0"), ("--limit", "-1")]
)
def test_generate_refuses_sizes_below_one(cli: click.Group, tmp_path: Path, option: str, value: str) -> None:
    out = tmp_path / "train.jsonl"
    res = _run(cli, "data", "generate", "-o", out, "--heldout", tmp_path / "test.jsonl", option, value)
    assert res.exit_code == 2 and f"Invalid value for '{option}'" in res.output and "x>=1" in res.output
    assert not out.exists()


# -- 2. missing media files ------------------------------------------------------------------------------------
@pytest.fixture
def media_data(tmp_path: Path) -> Path:
    """A dataset in its own folder whose line 3 names a media file that is not there (the others are)."""
    folder = tmp_path / "ds"
    (folder / "media").mkdir(parents=True)
    (folder / "media" / "a.png").write_bytes(b"not checked here")
    lines = [_line(1), _line(2, [_image("media/a.png")]), _line(3, [_image("media/nope.png")]), _line(4)]
    return _write(folder / "d.jsonl", lines)


def test_validate_reports_a_missing_media_file_by_line(cli: click.Group, media_data: Path) -> None:
    res = _run(cli, "data", "validate", media_data)  # run from another folder: paths start at the dataset's
    assert res.exit_code == 1, res.output
    missing = media_data.parent / "media" / "nope.png"
    assert f"{media_data}:3: media[0] (image_1): {missing} does not exist" in res.output
    assert "3 valid samples, 1 invalid" in res.output
    skipped = _run(cli, "data", "validate", "--no-media", media_data)
    assert skipped.exit_code == 0 and "4 valid samples, ok" in skipped.output


def test_validate_accepts_placeholders_and_absolute_paths(cli: click.Group, tmp_path: Path) -> None:
    pic = tmp_path / "pic.png"
    pic.write_bytes(b"x")
    data = _write(tmp_path / "d.jsonl", [_line(1, [_image(None)]), _line(2, [_image(str(pic))])])
    res = _run(cli, "data", "validate", data)
    assert res.exit_code == 0 and "2 valid samples, ok" in res.output, res.output


def test_eval_refuses_a_missing_media_file_by_line_before_the_model_loads(
    cli: click.Group, media_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the model was loaded before the data was checked")

    monkeypatch.setattr("modaverse_agent.model.llamacpp.load_engine", refuse)
    (tmp_path / "model").mkdir()
    res = _run(cli, "eval", "--model", tmp_path / "model", "--data", media_data)
    assert res.exit_code == 2, res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"Error: {media_data}:3: media[0] (image_1)"), res.output


def test_eval_reports_media_that_will_not_load_as_that_samples_error(tmp_path: Path) -> None:
    from modaverse_agent.training.workflows import evaluate_model

    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    data = _write(tmp_path / "d.jsonl", [_line(1), _line(2, [_image("broken.png")]), _line(3)])

    class Model:
        def __init__(self) -> None:
            self.asked: list[str] = []

        def respond_batch(self, requests: Sequence[Any]) -> list[str]:
            self.asked += [r.instruction for r in requests]
            return [
                json.dumps({"text": "Here.", "invocations": [{"task": "text-to-image", "prompt": "a boat"}]})
            ] * len(requests)

    model = Model()
    report = evaluate_model(model, data)
    assert model.asked == ["Request number 1.", "Request number 3."]
    by_id = {r.id: r for r in report.results}
    assert by_id["s-1"].valid and by_id["s-1"].tasks_match and by_id["s-3"].tasks_match
    assert not by_id["s-2"].valid and by_id["s-2"].error.startswith("not asked: ")
    assert "broken.png" in by_id["s-2"].error
    assert report.n == 3 and any("1 of 3 samples were not asked" in n and "s-2" in n for n in report.notes)


# -- 3. JSON errors name the real column -------------------------------------------------------------------------
def test_a_json_error_names_its_real_line_and_column(cli: click.Group, tmp_path: Path) -> None:
    truncated = '{"id": "x", "instruction": "hi",'  # 32 characters: the object ends early, at column 33
    data = _write(tmp_path / "d.jsonl", [_line(1), _line(2), truncated, '{"id": 1, oops}'])
    res = _run(cli, "data", "validate", data)
    assert res.exit_code == 1
    assert f"{data}:3: not JSON (Expecting property name enclosed in double quotes at column 33" in res.output
    assert "the end of the line" in res.output
    assert f"{data}:4: not JSON (Expecting property name enclosed in double quotes at column 11)" in res.output
    stats = _run(cli, "data", "stats", data)  # the readers of train, eval and stats say the same
    assert stats.exit_code == 2 and f"{data}:3: not JSON" in stats.output and "column 33" in stats.output


# -- 4. an input that names no attached medium --------------------------------------------------------------------
def test_an_input_naming_no_attached_medium_says_which_are_attached(cli: click.Group, tmp_path: Path) -> None:
    none_attached = _line(1, inputs=["image_9"])
    none_attached["response"]["invocations"][0]["task"] = "image-editing"
    one_attached = _line(2, [_image(None)], inputs=["image_9"])
    data = _write(tmp_path / "d.jsonl", [none_attached, one_attached])
    res = _run(cli, "data", "validate", data)
    assert res.exit_code == 1
    assert (
        f"{data}:1: response.invocations[0].inputs: 'image_9' names no attached medium (the sample has no media)"
        in (res.output)
    )
    assert f"{data}:2: response.invocations[0].inputs: 'image_9' names no attached medium (attached: image_1)" in (
        res.output
    )
    assert "none was given" not in res.output


# -- 5 and 6. train's options ----------------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["-5", "0"])
def test_train_refuses_max_samples_below_one(cli: click.Group, media_data: Path, tmp_path: Path, value: str) -> None:
    res = _run(cli, "train", "--data", media_data, "-o", tmp_path / "m", "--llm", "x", "--max-samples", value)
    assert res.exit_code == 2 and "Invalid value for '--max-samples'" in res.output and "x>=1" in res.output
    assert "population" not in res.output and "generate a dataset first" not in res.output


def test_bad_lora_targets_name_the_cli_flag(cli: click.Group, tmp_path: Path) -> None:
    from modaverse_agent.model.tiny import save_tiny_base

    base = save_tiny_base(tmp_path / "base")
    data = _write(tmp_path / "d.jsonl", [_line(1), _line(2)])
    args = ["train", "--data", data, "-o", tmp_path / "m", "--llm", base, "--blind-media", "--steps", "1"]
    res = _run(cli, *args, "--lora-targets", "q_proj,nope")
    assert res.exit_code == 2, res.output
    assert "LoRA targets ['nope']" in res.output and "--lora-targets" in res.output and "Traceback" not in res.output


# -- 7. the documented format is the validator's ---------------------------------------------------------------
def test_docs_describe_every_field_kind_task_and_limit_of_the_format() -> None:
    from modaverse_agent import meta_schema
    from modaverse_agent.training.dataset import KINDS, sample_schema
    from modaverse_agent.training.tasks import STANDARD_TASKS

    doc = (Path(__file__).parents[1] / "docs" / "training.md").read_text(encoding="utf-8")
    schema = sample_schema()
    for name in [*schema["properties"], *schema["properties"]["source"]["properties"], *KINDS]:
        assert f"`{name}`" in doc, name
    for task in STANDARD_TASKS:
        assert f"`{task.task}`" in doc, task.task
    assert (
        f"at most {meta_schema.MAX_INVOCATIONS} calls" in doc
        and f"1 to {meta_schema.PROMPT_MAX_CHARS} characters" in doc
    )
    assert f"`text` is at most {meta_schema.TEXT_MAX_CHARS} characters" in doc
    assert f"at most {schema['properties']['media']['maxItems']}" in doc
    assert "save_tiny_base('base')" in doc and "--llm base --blind-media" in doc
