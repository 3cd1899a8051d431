"""Evaluation metrics on scripted predictions: validity, task sets, prompt similarity, text-only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modaverse_agent.training.dataset import MediaInput, Sample
from modaverse_agent.training.evaluate import evaluate, judge, write_report


def sample(sid: str, kind: str, tasks_prompts: list[tuple[str, str]], media: tuple[MediaInput, ...] = ()) -> Sample:
    invs = [
        {"task": t, "prompt": p, **({"inputs": ["image_1"]} if t == "image-editing" else {})} for t, p in tasks_prompts
    ]
    return Sample(sid, kind, "instr", media, {"text": "ok" if invs else "Paris.", "invocations": invs}, {})


IMG = MediaInput("image_1", "image", None, "a cat")
SAMPLES = [
    sample("a", "output-alignment", [("text-to-image", "a red kite in a blue sky")]),
    sample("b", "output-alignment", [("text-to-audio", "rain on a tin roof")]),
    sample("c", "text-only", []),
    sample("d", "editing", [("image-editing", "make the cat black")], (IMG,)),
    sample("e", "reasoning", [("text-to-image", "a dog"), ("text-to-audio", "barking")]),
]


def out(*invs: tuple[str, str], text: str = "ok") -> str:
    return json.dumps(
        {
            "text": text,
            "invocations": [
                {"task": t, "prompt": p, **({"inputs": ["image_1"]} if t == "image-editing" else {})} for t, p in invs
            ],
        }
    )


def test_perfect_predictions_score_perfectly() -> None:
    preds = {
        "a": out(("text-to-image", "a red kite in a blue sky")),
        "b": out(("text-to-audio", "rain on a tin roof")),
        "c": out(text="Paris."),
        "d": out(("image-editing", "make the cat black")),
        "e": out(("text-to-audio", "barking"), ("text-to-image", "a dog")),  # order does not matter
    }
    report = evaluate(SAMPLES, lambda batch: [preds[s.id] for s in batch], batch_size=2, progress=False)
    assert (report.validity, report.task_accuracy, report.tool_decision, report.text_only_accuracy) == (1, 1, 1, 1)
    assert report.bleu4 == pytest.approx(100) and report.chrf == pytest.approx(100)
    assert (report.prompt_exact, report.prompt_additions) == (1, 0)


def test_errors_are_counted_where_they_belong(tmp_path: Path) -> None:
    preds = {
        "a": "garbage",
        "b": out(("text-to-image", "rain on a tin roof")),  # wrong task
        "c": out(("text-to-speech", "Paris")),  # a tool when none was wanted
        "d": out(("image-editing", "turn the cat black")),  # right task, different words
        "e": out(("text-to-image", "a dog")),  # lost the second output
    }
    report = evaluate(SAMPLES, lambda batch: [preds[s.id] for s in batch], progress=False)
    assert report.validity == pytest.approx(0.8) and report.task_accuracy == pytest.approx(0.2)
    assert report.text_only_accuracy == 0 and report.tool_decision == pytest.approx(0.6)
    assert 0 < report.chrf < 100
    assert report.per_kind["editing"]["task_accuracy"] == 1
    assert "no JSON object" in (report.results[0].error or "")
    data = json.loads(write_report(report, tmp_path / "r.json").read_text())
    assert data["n"] == 5 and "task accuracy" in report.table()


def test_prompt_additions_are_told_apart_from_rewordings() -> None:
    speech = [
        sample("s1", "output-alignment", [("text-to-speech", "Good morning to everyone.")]),
        sample("s2", "output-alignment", [("text-to-speech", "See you soon.")]),
        sample("s3", "output-alignment", [("text-to-speech", "Hello there.")]),
        sample("s4", "output-alignment", [("text-to-speech", "Welcome home.")]),
    ]
    preds = {
        "s1": out(("text-to-speech", "Good morning to everyone. Here's the recording.")),  # a sentence added
        "s2": out(("text-to-speech", "see you soon")),  # the same words
        "s3": out(("text-to-speech", "Hi there.")),  # reworded, nothing added
        "s4": out(("text-to-audio", "Welcome home. And more.")),  # wrong task: not paired, not counted
    }
    report = evaluate(speech, lambda batch: [preds[s.id] for s in batch], progress=False)
    assert report.prompt_exact == pytest.approx(1 / 3) and report.prompt_additions == pytest.approx(1 / 3)
    assert "prompt additions  " in report.table()


def test_invalid_media_reference_is_invalid() -> None:
    bad = out(("image-editing", "x")).replace("image_1", "image_2")
    assert not judge(SAMPLES[3], bad).valid


def test_predict_must_answer_every_sample() -> None:
    with pytest.raises(ValueError, match="outputs for"):
        evaluate(SAMPLES, lambda batch: [], progress=False)
