"""Narrowed task lists (`--narrow-p`, `modaverse eval --offer`): a system prompt that offers fewer generators,
answered in text that says what can't be made, trained in batches of one task list, judged the same way."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from modaverse_agent.cli import cli
from modaverse_agent.llm_io import LLMRequest
from modaverse_agent.model.config import ModaVerseConfig
from modaverse_agent.model.modeling import ModaVerseModel
from modaverse_agent.model.tiny import save_tiny_base
from modaverse_agent.training.batches import Collator, TargetLoss
from modaverse_agent.training.dataset import DatasetError, make_sample, validate_sample
from modaverse_agent.training.evaluate import judge
from modaverse_agent.training.narrowing import offer_only
from modaverse_agent.training.natural import read_natural
from modaverse_agent.training.templates import Recipe, TemplateEngine
from modaverse_agent.training.trainer import batch_order
from modaverse_agent.training.workflows import evaluate_model
from modaverse_agent.unoffered import UNAVAILABLE, narrow

torch.set_num_threads(1)

DRAW = {"task": "text-to-image", "prompt": "a cat"}
SAY = {"task": "text-to-speech", "prompt": "Good morning, everyone."}


def test_a_task_not_offered_leaves_the_answer_and_the_text_says_so() -> None:
    text, kept = narrow("Here's the image.", [DRAW], offered=())
    assert kept == []
    assert text == UNAVAILABLE["text-to-image"]
    assert narrow("Here's the image.", [DRAW], offered=("text-to-image",)) == ("Here's the image.", [DRAW])


def test_what_is_offered_stays_and_a_line_to_speak_is_given_in_writing() -> None:
    text, kept = narrow("Here you go.", [SAY, DRAW], offered=("text-to-image", "text-to-video"))
    assert kept == [DRAW]
    assert "can't speak aloud" in text and "Good morning, everyone." in text
    assert text.endswith("Here's what I could make.")


def _engine(narrow_p: float) -> TemplateEngine:
    return TemplateEngine(recipe=Recipe(narrow_p=narrow_p), seed=3)


def test_generated_narrowed_samples_invoke_only_what_they_offer_and_nothing_else_moves() -> None:
    plain = _engine(0.0).generate("train", 300).samples
    narrowed = _engine(0.5).generate("train", 300).samples
    assert all(s.offered is None for s in plain)
    assert [s.instruction for s in narrowed] == [s.instruction for s in plain]  # own random stream
    offered = [s for s in narrowed if s.offered is not None]
    assert 100 < len(offered) < 200
    assert Counter(len(s.offered) for s in offered)[0] > 30  # the empty list: bind_tools([]), tool_choice="none"
    refused = [s for s in offered if "can't" in s.response["text"] and "available" in s.response["text"]]
    assert len(refused) > 30
    for s in offered:
        assert set(s.tasks) <= set(s.offered)
        assert validate_sample(json.loads(s.to_json())).offered == s.offered  # the line round-trips and validates
    pairs = zip(plain, narrowed, strict=True)
    same_answer = [(a, b) for a, b in pairs if b.offered is not None and a.response == b.response]
    assert same_answer and all(a.id != b.id for a, b in same_answer)  # the task list is part of a sample's identity


def test_a_sample_may_not_invoke_a_task_it_was_not_offered() -> None:
    answer = {"text": "Here.", "invocations": [DRAW]}
    sample = make_sample("output-alignment", "Draw a cat.", answer, source={"engine": "manual"}, offered=())
    with pytest.raises(DatasetError, match="invocations"):
        validate_sample(sample.to_dict())
    line = {**sample.to_dict(), "offered": ["text-to-imagine"]}
    with pytest.raises(DatasetError, match="unknown task"):
        validate_sample(line)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> ModaVerseModel:
    base = save_tiny_base(tmp_path_factory.mktemp("base"))
    torch.manual_seed(0)
    config = ModaVerseConfig(llm=str(base), blind_media=True, encoder_dim=16, lora_dropout=0.0)
    return ModaVerseModel.from_config(config, init_lora_weights=False).eval()


def test_a_narrowed_sample_is_trained_on_a_prompt_listing_only_its_tasks(model: ModaVerseModel) -> None:
    ask = {"text": "A cat is a small furry animal.", "invocations": []}
    full = make_sample("text-only", "What is a cat?", ask)
    none = make_sample("text-only", "What is a cat?", ask, offered=())
    audio = make_sample("text-only", "What is a cat?", ask, offered=("text-to-audio",))
    collate = Collator(model)
    text = [model.prompter.tokenizer.decode(collate.example(s)[0]) for s in (full, none, audio)]
    assert "- text-to-image:" in text[0] and "No generative models are installed" not in text[0]
    assert "No generative models are installed" in text[1] and "- text-to-" not in text[1]
    assert "- text-to-audio:" in text[2] and "- text-to-image:" not in text[2]
    batch = collate([full, none, audio])  # rows that share less of the system prompt: the loss is still exact
    with torch.no_grad():
        assert torch.allclose(TargetLoss(model)(**batch), model(**batch).loss, atol=1e-5)


def test_batches_hold_one_task_list_each_and_one_list_keeps_the_plain_order() -> None:
    groups = [None] * 30 + [()] * 7 + [("text-to-audio",)] * 5
    batches = batch_order(len(groups), 4, seed=1, epoch=2, groups=groups)
    assert sorted(i for b in batches for i in b) == list(range(len(groups)))
    assert all(len({groups[i] for i in b}) == 1 for b in batches)
    assert len(batches) == 8 + 2 + 2
    assert batch_order(42, 4, 1, 2, groups=[None] * 42) == batch_order(42, 4, 1, 2)
    assert batch_order(42, 4, 1, 2, groups=groups) == batches  # seeded


def test_eval_offer_narrows_the_references_and_the_prompt() -> None:
    natural = {s.id: s for s in read_natural()}
    either = next(s for s in natural.values() if len(s.source["accept"]) > 1 and all(s.source["accept"]))
    only_text = offer_only(either, ())
    assert only_text.source["accept"] == [[]] and only_text.offered == ()
    schema_less = judge(only_text, json.dumps({"text": "Here's the image.", "invocations": []}))
    assert schema_less.valid and schema_less.tasks_match and schema_less.placeholder  # filler text is counted
    called = judge(only_text, json.dumps({"text": "Here.", "invocations": [DRAW]}))
    assert not called.valid  # a call of a task not offered is not a valid answer
    with pytest.raises(DatasetError, match="unknown task"):
        offer_only(either, ("text-to-imagine",))


class _Recorder:
    """A model that records its requests and answers every one in text."""

    def __init__(self) -> None:
        self.requests: list[LLMRequest] = []

    def respond_batch(self, requests: list[LLMRequest]) -> list[str]:
        self.requests += requests
        return [json.dumps({"text": "I can't make pictures here.", "invocations": []}) for _ in requests]


def test_evaluating_with_an_offer_asks_the_model_with_that_task_list_only() -> None:
    recorder = _Recorder()
    report = evaluate_model(recorder, "natural", limit=12, offered=("text-to-audio",))
    assert {tuple(t.task for t in r.tasks) for r in recorder.requests} == {("text-to-audio",)}
    assert all(len(task_names(r.schema)) <= 1 for r in recorder.requests)
    assert report.validity == 1.0


def task_names(schema: dict) -> list[str]:
    items = schema["properties"]["invocations"]["items"]
    return [s["properties"]["task"]["const"] for s in items.get("anyOf", [])]


def test_eval_refuses_an_unknown_task_to_offer(tmp_path: Path, training_cli: object) -> None:
    model_dir = tmp_path / "m"
    model_dir.mkdir()
    args = ["eval", "--model", str(model_dir), "--data", "natural", "--offer", "text-to-imagine"]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 2
    assert "unknown task" in res.output and "text-to-imagine" in res.output


def test_the_kinds_of_narrower_list_can_be_chosen(tmp_path: Path) -> None:
    from modaverse_agent.training.data_commands import data as data_group

    out = tmp_path / "t.jsonl"
    args = ["generate", "-o", str(out), "--size", "200", "--narrow-p", "0.5", "--narrow-to", "none"]
    res = CliRunner().invoke(data_group, args)
    assert res.exit_code == 0, res.output
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    offered = [line["offered"] for line in lines if "offered" in line]
    assert len(offered) > 60 and all(o == [] for o in offered)
    res = CliRunner().invoke(data_group, [*args[:-1], "everything"])
    assert res.exit_code == 2 and "everything" in res.output
