"""The two-turn natural set: shipped and well-formed, and the scorer judges the second answer's tasks and inputs."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from modaverse_agent.agent import ModaVerseAgent
from modaverse_agent.testing import ScriptedLLM
from modaverse_agent.training.dataset import DatasetError
from modaverse_agent.training.natural import read_natural
from modaverse_agent.training.natural_turns import (
    CATEGORIES,
    KEYS,
    echo_zoo,
    main,
    print_report,
    read_turns,
    score_turns,
)


def _plan(tasks: list[str], inputs: list[str] | None = None, text: str = "Here you go, I made it.") -> str:
    calls: list[dict[str, Any]] = []
    for t in tasks:
        call: dict[str, Any] = {"task": t, "prompt": "a small test prompt"}
        if t == "image-editing" or inputs:
            call["inputs"] = inputs or ["image_1"]
        calls.append(call)
    return json.dumps({"text": text, "invocations": calls})


def _right(row: dict[str, Any]) -> tuple[str, str]:
    """What a perfect model answers: turn 1 a picture (text for a question), turn 2 the first accepted set."""
    first = _plan([], text="Canberra.") if row["category"] == "speak-the-answer" else _plan(["text-to-image"])
    return first, _plan(row["accept"][0], text="Happy to help with that, here is what I know.")


def _agent(llm: ScriptedLLM, tmp_path: Path) -> ModaVerseAgent:
    return ModaVerseAgent(llm, echo_zoo(), output_dir=tmp_path / "out", timeout=30, seed=0)


def test_the_shipped_set_reads_and_is_labelled_as_planned() -> None:
    rows = read_turns()
    assert len(rows) == 60 and len({r["id"] for r in rows}) == 60
    assert Counter(r["category"] for r in rows) == CATEGORIES
    assert len({(r["first"], r["second"]) for r in rows}) == 60
    for r in rows:
        assert set(r) == KEYS
        if r["category"] == "edit-what-was-made":
            assert ["image-editing"] in r["accept"] and r["inputs"] == "last_image", r["id"]
        elif r["category"] == "question-after-media":
            assert r["accept"] == [[]], r["id"]
        elif r["category"] == "speak-the-answer":
            assert r["accept"] == [["text-to-speech"]] and r["inputs"] == "none", r["id"]
        else:
            assert all(a and "image-editing" not in a for a in r["accept"]) and r["inputs"] == "none", r["id"]


def test_the_single_turn_natural_set_still_reads_beside_it() -> None:
    assert len(read_natural()) >= 300  # the two-turn file lives in a subfolder the single-turn reader skips


def test_a_model_that_answers_right_scores_everything(tmp_path: Path) -> None:
    rows = read_turns()
    llm = ScriptedLLM()
    for row in rows:
        for reply in _right(row):
            llm.enqueue(reply)
    agent = _agent(llm, tmp_path)
    report = score_turns(lambda: agent, rows, tmp_path / "media", progress=False)
    wrong = [(r["id"], r["why"]) for r in report["results"] if not r["correct"]]
    assert wrong == [] and report["accuracy"] == 1.0 and report["n"] == 60
    assert report["validity_first"] == report["validity_second"] == 1.0
    assert set(report["per_category"]) == set(CATEGORIES)
    edit = report["results"][0]
    assert edit["made"] == ["image_1"] and edit["second"]["inputs"] == [["image_1"]]
    # every turn-2 request reached the model with turn 1 in its history and turn 1's media offered
    second_request = llm.history[1]
    assert [t.role for t in second_request.history] == ["user", "assistant"]
    assert [i for i, _ in second_request.media] == ["image_1"]


def _one(rows: list[dict[str, Any]], rid: str) -> list[dict[str, Any]]:
    return [r for r in rows if r["id"] == rid]


def test_wrong_tasks_wrong_inputs_and_broken_answers_are_flagged(tmp_path: Path) -> None:
    rows = read_turns()
    edit, convert, question = _one(rows, "nt-001"), _one(rows, "nt-021"), _one(rows, "nt-049")
    assert edit[0]["inputs"] == "last_image" and convert[0]["accept"] == [["text-to-video"]]
    cases = [
        # turn 1 made two pictures; the edit takes the older one, not the last
        (edit, _plan(["text-to-image", "text-to-image"]), _plan(["image-editing"], ["image_1"]), "not the picture"),
        (edit, _plan(["text-to-image"]), _plan(["text-to-audio"]), "not in"),  # wrong task
        (convert, _plan(["text-to-image"]), _plan(["text-to-video"], ["image_1"]), "wants none"),  # input not wanted
        (question, _plan(["text-to-image"]), _plan(["text-to-image"]), "not in"),  # a picture for a question
        (edit, _plan([], text="I can only talk."), _plan(["image-editing"]), "not in"),  # no image: edit dropped
        (edit, _plan(["text-to-image"]), "this is not json at all {", "not in"),  # a broken answer
    ]
    for n, (row, first, second, why) in enumerate(cases):
        llm = ScriptedLLM(first, second)
        report = score_turns(lambda llm=llm: _agent(llm, tmp_path), row, tmp_path / f"m{n}", progress=False)
        result = report["results"][0]
        assert report["accuracy"] == 0.0 and not result["correct"], n
        assert why in result["why"], (n, result["why"])
    assert report["validity_second"] == 0.0 and report["validity_first"] == 1.0


def test_a_conversation_that_raises_is_recorded_not_fatal(tmp_path: Path) -> None:
    rows = read_turns()[:2]
    llm = ScriptedLLM(*_right(rows[0]), *_right(rows[1]))
    calls = iter([RuntimeError("factory broke"), _agent(llm, tmp_path)])

    def factory() -> ModaVerseAgent:
        got = next(calls)
        if isinstance(got, Exception):
            raise got
        return got

    with pytest.raises(RuntimeError):  # the factory itself failing is the caller's bug: it is not hidden
        score_turns(factory, rows, tmp_path / "m", progress=False)
    llm = ScriptedLLM(_right(rows[0])[0])  # the second turn finds nothing queued: the model "fails"
    report = score_turns(lambda: _agent(llm, tmp_path), rows[:1], tmp_path / "m2", progress=False)
    assert report["n"] == 1 and report["validity_second"] == 0.0 and not report["results"][0]["correct"]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "not a JSON line"),
        ('{"id": "x"}', "expected an object with keys"),
        ("[1, 2]", "expected an object with keys"),
        ({"category": "edit-the-thing"}, "unknown category 'edit-the-thing'"),
        ({"category": ["edit-what-was-made"]}, "unknown category"),
        ({"accept": [[["text-to-image"]]]}, "unknown task(s)"),
        ({"accept": [["text-to-painting"]]}, "unknown task(s) ['text-to-painting']"),
        ({"accept": []}, "non-empty list of task lists"),
        ({"accept": "text-to-image"}, "non-empty list of task lists"),
        ({"inputs": "image_1"}, "`inputs` must be one of"),
        ({"second": "  "}, "`second` must be a non-empty string"),
    ],
)
def test_a_malformed_line_is_refused_naming_the_line(tmp_path: Path, line: Any, message: str) -> None:
    good = read_turns()[0]
    text = line if isinstance(line, str) else json.dumps({**good, **line})
    path = tmp_path / "turns.jsonl"
    path.write_text(json.dumps(good) + "\n\n" + text + "\n", encoding="utf-8")
    with pytest.raises(DatasetError) as err:
        read_turns(path)
    assert f"{path}:3:" in str(err.value) and message in str(err.value) and "\n" not in str(err.value)


def test_duplicates_empty_files_and_the_command_refusing_bad_data(tmp_path: Path, capsys: Any) -> None:
    good = json.dumps(read_turns()[0])
    path = tmp_path / "dup.jsonl"
    path.write_text(f"{good}\n{good}\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"dup\.jsonl:2: duplicate id 'nt-001'"):
        read_turns(path)
    (tmp_path / "empty.jsonl").write_text("\n", encoding="utf-8")
    with pytest.raises(DatasetError, match="no conversations"):
        read_turns(tmp_path / "empty.jsonl")
    assert main(["--model", "default", "--data", str(path)]) == 2  # refused before any model loads
    assert "duplicate id" in capsys.readouterr().err


def test_the_report_prints_as_a_table(tmp_path: Path, capsys: Any) -> None:
    rows = read_turns()[:1]
    llm = ScriptedLLM(*_right(rows[0]))
    report = score_turns(lambda: _agent(llm, tmp_path), rows, tmp_path / "m", progress=False)
    print_report(report)
    out = capsys.readouterr().out
    assert "edit-what-was-made" in out and "valid t2" in out
    last = next(line for line in out.splitlines() if " all " in line)
    assert last.count("100.0%") == 4


def test_the_command_scores_a_model_and_writes_the_report(
    tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import modaverse_agent.cli_model as cli_model

    rows = read_turns()[:2]
    llm = ScriptedLLM(*_right(rows[0]), *_right(rows[1]))
    chosen = []
    monkeypatch.setattr(cli_model, "load_model", lambda choice: chosen.append(choice) or llm)
    out = tmp_path / "report.json"
    assert main(["--model", str(tmp_path / "m"), "--engine", "torch", "--limit", "2", "-o", str(out)]) == 0
    assert chosen[0].directory == str(tmp_path / "m") and chosen[0].engine == "torch"
    report = json.loads(out.read_text(encoding="utf-8"))
    assert (
        report["n"] == 2 and report["accuracy"] == 1.0 and [r["id"] for r in report["results"]] == ["nt-001", "nt-002"]
    )
    assert "edit-what-was-made" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["--model", "default", "--limit", "0"])
