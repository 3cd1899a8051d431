"""The natural evaluation set: shipped, well-formed, judged by accepted task sets, kept out of training."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

from modaverse_agent.training.dataset import DatasetError
from modaverse_agent.training.evaluate import evaluate, judge
from modaverse_agent.training.natural import NATURAL_DIR, is_natural, is_placeholder_answer, read_natural
from modaverse_agent.training.workflows import load_eval_samples

ROOT = Path(__file__).resolve().parents[1]


def _call(task: str) -> dict[str, object]:
    return {"task": task, "prompt": "a red apple", **({"inputs": ["image_1"]} if task == "image-editing" else {})}


def _answer(tasks: list[str], text: str = "A short real answer about it.") -> str:
    return json.dumps({"text": text, "invocations": [_call(t) for t in tasks]})


def test_the_shipped_set_is_large_varied_and_well_labelled() -> None:
    samples = read_natural()
    assert len(samples) >= 300 and len({s.id for s in samples}) == len(samples)
    kinds = Counter(s.kind for s in samples)
    assert len(kinds) >= 15 and kinds["text->text"] >= 60 and min(kinds.values()) >= 6
    for s in samples:
        for tasks in s.source["accept"]:
            assert "image-editing" not in tasks or any(m.modality == "image" for m in s.media), s.id
    assert is_natural(NATURAL_DIR) and is_natural(next(NATURAL_DIR.glob("*.jsonl")))


def test_no_natural_request_is_in_the_training_corpora() -> None:
    """The set is for evaluation only: none of its requests may appear in the phrasings training draws from."""
    corpus = " ".join(
        " ".join(p.read_text(encoding="utf-8").lower().split()) for p in (ROOT / "prompts").rglob("*") if p.is_file()
    )
    leaked = [s.id for s in read_natural() if " ".join(s.instruction.lower().split()) in corpus]
    assert not leaked


def test_no_short_line_to_say_is_asked_for_in_the_natural_set() -> None:
    """``say.txt`` lines are one to four words, so a coincidence would hand the model an evaluation answer:
    none may appear as a whole phrase in a natural request (13 such lines were dropped when it was written)."""
    import re

    from modaverse_agent.training.corpora import builtin_corpora

    requests = "\n".join(s.instruction.lower() for s in read_natural())
    found = [
        line
        for line in builtin_corpora().say
        if re.search(r"(?<!\w)" + re.escape(line.lower().rstrip("!.")) + r"(?!\w)", requests)
    ]
    assert not found


def test_any_accepted_set_counts_and_order_does_not_matter() -> None:
    either = next(s for s in read_natural() if len(s.source["accept"]) > 1)
    for tasks in either.source["accept"]:
        assert judge(either, _answer(tasks)).tasks_match
    multi = next(s for s in read_natural() if s.kind == "multi" and len(s.source["accept"][0]) > 1)
    assert judge(multi, _answer(list(reversed(multi.source["accept"][0])))).tasks_match
    assert not judge(multi, _answer(multi.source["accept"][0][:1])).tasks_match


@pytest.mark.parametrize(
    ("text", "placeholder"),
    [
        ("Here's the listing.", True),
        ("Here is the image.", True),
        ("Sure!", True),
        ("", True),
        ("how many hrs sleep a 3yo need", True),  # the request echoed
        ("Most three-year-olds need 10 to 13 hours of sleep a day, naps included.", False),
        ("Here is why: parrots copy sounds with their syrinx, not lips, so they can mimic a doorbell.", False),
    ],
)
def test_placeholder_answers_are_told_apart_from_answers(text: str, placeholder: bool) -> None:
    assert is_placeholder_answer(text, "how many hrs sleep a 3yo need") is placeholder


def test_a_report_on_the_natural_set_counts_categories_and_placeholders() -> None:
    samples = read_natural()
    perfect = evaluate(samples, lambda batch: [_answer(s.source["accept"][0]) for s in batch], progress=False)
    assert perfect.task_accuracy == 1.0 and perfect.validity == 1.0 and perfect.placeholder_rate == 0.0
    assert set(perfect.per_kind) == {s.kind for s in samples} and perfect.bleu4 is None
    assert any("reference prompts" in n for n in perfect.notes) and "note: prompt BLEU" in perfect.table()
    lazy = evaluate(samples, lambda batch: [_answer([], "Here's the listing.") for _ in batch], progress=False)
    assert lazy.placeholder_rate == 1.0 and lazy.per_kind["text->text"]["task_accuracy"] == 1.0
    assert lazy.per_kind["text->image"]["task_accuracy"] == 0.0
    assert lazy.results[0].raw and lazy.results[0].text == "Here's the listing."  # what the model wrote is kept


def test_load_eval_samples_checks_before_any_model_loads(tmp_path: Path) -> None:
    samples, base = load_eval_samples("natural", limit=20)
    assert len(samples) == 20 and base == NATURAL_DIR
    with pytest.raises(DatasetError, match="at least 1"):
        load_eval_samples("natural", limit=0)
    with pytest.raises(DatasetError, match="no such file"):
        load_eval_samples(tmp_path / "missing.jsonl")


def test_eval_refuses_a_bad_limit_in_one_line_without_loading_a_model(tmp_path: Path) -> None:
    from modaverse_agent.training.train_commands import evaluate_command

    model_dir = tmp_path / "model"
    model_dir.mkdir()
    result = CliRunner().invoke(evaluate_command, ["--model", str(model_dir), "--data", "natural", "--limit", "0"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.output.strip().splitlines() == ["Error: --limit must be at least 1, not 0"]
