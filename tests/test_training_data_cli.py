"""``modaverse data ...`` through click's CliRunner, registered via the register_commands hook."""

from __future__ import annotations

import json
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage

from modaverse_agent import plugins
from modaverse_agent.training import plugin as commands
from modaverse_agent.training.dataset import read_samples


@pytest.fixture
def cli() -> Iterator[click.Group]:
    """The modaverse CLI with the training plugin's commands added through the hook."""
    from modaverse_agent import cli as cli_module

    plugins.pm.register(commands, name=commands.PLUGIN_NAME)
    plugins.pm.hook.register_commands(cli=cli_module.cli)
    try:
        yield cli_module.cli
    finally:
        cli_module.cli.commands.pop("data", None)


def _generate(cli: click.Group, tmp_path: Path, *extra: str) -> tuple[Path, Path, str]:
    train, test = tmp_path / "train.jsonl", tmp_path / "test.jsonl"
    args = ["data", "generate", "-o", str(train), "--heldout", str(test), "--size", "150", "--heldout-size", "40"]
    result = CliRunner().invoke(cli, [*args, *extra])
    assert result.exit_code == 0, result.output
    return train, test, result.output


def test_generate_writes_both_splits_and_reports_modality_pairs(cli: click.Group, tmp_path: Path) -> None:
    train, test, output = _generate(cli, tmp_path, "--seed", "2")
    assert len(read_samples(train)) == 150 and len(read_samples(test)) == 40
    assert "== train: 150 samples" in output and "== held-out: 40 samples" in output
    assert "text -> image" in output and "image+text -> image" in output and "dropped:" in output
    again = tmp_path / "again"
    again.mkdir()
    train2, _, _ = _generate(cli, again, "--seed", "2")
    assert train2.read_bytes() == train.read_bytes()


def test_generate_json_and_mix(cli: click.Group, tmp_path: Path) -> None:
    out = tmp_path / "speech.jsonl"
    from modaverse_agent.training.recipe import DEFAULT_MIX

    args = ["data", "generate", "-o", str(out), "--size", "30", "--mix", "speech=1", "--json"]
    for name in DEFAULT_MIX:  # every other maker off (the list grows with the templates)
        args += ["--mix", f"{name}=0"] if name != "speech" else []
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["splits"][0]["stats"]["by_pair"] == {"text -> speech": 30}
    bad = CliRunner().invoke(cli, ["data", "generate", "-o", str(out), "--mix", "speech"])
    assert bad.exit_code == 2 and "MAKER=WEIGHT" in bad.output


def test_validate_and_stats(cli: click.Group, tmp_path: Path) -> None:
    train, _, _ = _generate(cli, tmp_path)
    ok = CliRunner().invoke(cli, ["data", "validate", str(train)])
    assert ok.exit_code == 0 and "150 valid samples, ok" in ok.output
    lines = train.read_text().splitlines()
    broken = json.loads(lines[4])
    broken["response"]["invocations"] = [{"task": "text-to-hologram", "prompt": "x"}]
    bad_file = tmp_path / "bad.jsonl"
    bad_file.write_text("\n".join([*lines[:4], json.dumps(broken), "oops", *lines[5:]]) + "\n")
    bad = CliRunner().invoke(cli, ["data", "validate", str(bad_file)])
    assert bad.exit_code == 1
    assert f"{bad_file}:5: response.invocations[0].task: unknown task 'text-to-hologram'" in bad.output
    assert f"{bad_file}:6: not JSON" in bad.output and "2 invalid" in bad.output
    stats = CliRunner().invoke(cli, ["data", "stats", str(train), "--json"])
    assert stats.exit_code == 0
    counts = json.loads(stats.output)[str(train)]
    assert counts["total"] == 150 and sum(counts["by_pair"].values()) == 150
    text = CliRunner().invoke(cli, ["data", "stats", str(train), "--pools"])
    assert "modality pair:" in text.output and "train.image" in text.output
    refused = CliRunner().invoke(cli, ["data", "stats", str(bad_file)])
    assert refused.exit_code == 2 and "bad.jsonl:5" in refused.output


def test_split_command(cli: click.Group, tmp_path: Path) -> None:
    train, _, _ = _generate(cli, tmp_path)
    result = CliRunner().invoke(cli, ["data", "split", str(train), "-o", str(tmp_path / "s"), "--test-fraction", "0.2"])
    assert result.exit_code == 0, result.output
    a, b = read_samples(tmp_path / "s" / "train.jsonl"), read_samples(tmp_path / "s" / "test.jsonl")
    assert len(a) + len(b) == 150 and b
    assert not {s.source["template"] for s in a} & {s.source["template"] for s in b}


def test_corpora_command(cli: click.Group) -> None:
    result = CliRunner().invoke(cli, ["data", "corpora"])
    assert result.exit_code == 0 and "image subjects" in result.output and "held out" in result.output
    assert "backgrounds" in result.output and "shorthand" in result.output


def test_generate_puts_the_users_background_first_with_context_p(cli: click.Group, tmp_path: Path) -> None:
    from modaverse_agent.training.corpora import builtin_corpora

    contexts = [c.lower() for c in builtin_corpora().contexts]
    paths = {p: tmp_path / f"{p}.jsonl" for p in ("0", "1")}
    for p, out in paths.items():
        args = ["data", "generate", "-o", str(out), "--size", "20", "--mix", "followup=0", "--context-p", p]
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0, result.output
    framed = [s.instruction.lower() for s in read_samples(paths["1"])]
    plain = [s.instruction.lower() for s in read_samples(paths["0"])]
    assert all(any(i.startswith(c) for c in contexts) for i in framed)
    assert not any(any(i.startswith(c) for c in contexts) for i in plain)
    bad = CliRunner().invoke(cli, ["data", "generate", "-o", str(paths["0"]), "--context-p", "1.5"])
    assert bad.exit_code == 2 and "--context-p" in bad.output


def test_generate_types_requests_casually_with_informal_p(cli: click.Group, tmp_path: Path) -> None:
    out = tmp_path / "casual.jsonl"
    args = ["data", "generate", "-o", str(out), "--size", "30", "--mix", "followup=0", "--informal-p", "1"]
    result = CliRunner().invoke(cli, [*args, "--context-p", "1", "--context-after-p", "1"])
    assert result.exit_code == 0, result.output
    samples = read_samples(out)
    assert len(samples) == 30
    assert sum(s.instruction == s.instruction.lower() for s in samples) >= 20  # typed casually
    bad = CliRunner().invoke(cli, ["data", "generate", "-o", str(out), "--informal-p", "2"])
    assert bad.exit_code == 2 and "--informal-p" in bad.output


def test_generate_with_a_teacher_factory(cli: click.Group, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reply = [
        {
            "candidate": "c1",
            "kind": "output-alignment",
            "instruction": "Draw a red boat.",
            "media": [],
            "response": {"text": "Here.", "invocations": [{"task": "text-to-image", "prompt": "a red boat"}]},
        }
    ]
    module = types.ModuleType("fake_teacher_module")
    replies = [json.dumps(reply), "sorry, no JSON today"]
    module.make = lambda: GenericFakeChatModel(messages=iter(AIMessage(content=r) for r in replies))  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fake_teacher_module", module)
    corpus = tmp_path / "c.csv"
    corpus.write_text("path,caption\n" + "".join(f"img{i}.jpg,A red boat number {i}\n" for i in range(10)))
    out = tmp_path / "teacher.jsonl"
    args = ["data", "generate", "--engine", "teacher", "--teacher-factory", "fake_teacher_module:make"]
    result = CliRunner().invoke(cli, [*args, "--corpus", str(corpus), "--batch-size", "5", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "1 malformed replies" in result.output
    assert [s.instruction for s in read_samples(out)] == ["Draw a red boat."]
    missing = CliRunner().invoke(cli, ["data", "generate", "--engine", "teacher", "-o", str(out)])
    assert missing.exit_code == 2 and "--teacher-model" in missing.output


def test_generate_keeps_a_heldout_family_out_of_training(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from modaverse_agent.training.data_commands import data
    from modaverse_agent.training.dataset import read_samples

    train, test = tmp_path / "train.jsonl", tmp_path / "test.jsonl"
    args = ["generate", "-o", str(train), "--heldout", str(test), "--size", "300", "--heldout-size", "60"]
    res = CliRunner().invoke(data, [*args, "--heldout-family", "picture_asks"])
    assert res.exit_code == 0, res.output
    pools = lambda p: {s.source.get("pool") for s in read_samples(p)}  # noqa: E731
    assert not any(str(p).startswith("picture_asks") for p in pools(train) if p)
    assert all(str(p).startswith("picture_asks") for p in pools(test) if p) and pools(test) - {None}
    bad = CliRunner().invoke(data, [*args, "--heldout-family", "no-such-family"])
    assert bad.exit_code != 0 and "no-such-family" in bad.output
