"""`modaverse train --decision-weight`: the tokens that route a request weigh more in the loss."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from modaverse_agent.cli import cli
from modaverse_agent.model.config import ModaVerseConfig
from modaverse_agent.model.modeling import ModaVerseModel
from modaverse_agent.model.splice import IGNORE_INDEX
from modaverse_agent.model.tiny import save_tiny_base
from modaverse_agent.training.batches import Collator, TargetLoss
from modaverse_agent.training.dataset import Sample, read_samples
from modaverse_agent.training.decision_tokens import decision_spans, decision_weights

torch.set_num_threads(1)

TWO_CALLS = (
    '{"text": "Here you go.", "invocations": [{"task": "text-to-image", "prompt": "a cat, \\"inked\\""}, '
    '{"task": "image-editing", "prompt": "make it blue", "inputs": ["image_1"]}]}'
)


def test_the_decision_spans_are_the_first_word_the_list_the_task_names_and_what_follows_each_call() -> None:
    pieces = [TWO_CALLS[a:b] for a, b in decision_spans(TWO_CALLS)]
    assert pieces == ["H", "{", "text-to-image", ",", "image-editing", "]"]
    answer = '{"text": "Paris.", "invocations": []}'
    assert [answer[a:b] for a, b in decision_spans(answer)] == ["P", "]"]
    empty = '{"text": "", "invocations": [{"task": "text-to-speech", "prompt": "hi"}]}'
    assert [empty[a:b] for a, b in decision_spans(empty)] == ['"', "{", "text-to-speech", "]"]


@pytest.mark.parametrize(
    "target",
    [
        "Modality: [IMAGE] Prompt: a cat",  # the legacy output format
        '{"invocations": [], "text": "x"}',  # keys in another order
        '{"text":"x","invocations":[]}',  # not the canonical separators
    ],
)
def test_a_target_it_cannot_read_is_refused_not_weighted_wrongly(target: str) -> None:
    with pytest.raises(ValueError, match="decision weighting needs"):
        decision_spans(target)


@pytest.fixture(scope="module")
def model_and_samples(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModaVerseModel, list[Sample], Path]:
    from modaverse_agent.training.data_commands import data as data_group

    base = save_tiny_base(tmp_path_factory.mktemp("base"))
    out = tmp_path_factory.mktemp("data")
    res = CliRunner().invoke(data_group, ["generate", "-o", str(out / "train.jsonl"), "--size", "120"])
    assert res.exit_code == 0, res.output
    torch.manual_seed(0)
    config = ModaVerseConfig(llm=str(base), blind_media=True, encoder_dim=16, lora_dropout=0.0)
    model = ModaVerseModel.from_config(config, init_lora_weights=False).eval()
    samples = read_samples(out / "train.jsonl")
    multi = [s for s in samples if len(s.response["invocations"]) > 1][:2]
    text = [s for s in samples if not s.response["invocations"]][:2]
    assert multi and text
    return model, [*multi, *text, *samples[:4]], base


def test_the_collator_weighs_exactly_the_decision_tokens(model_and_samples: tuple) -> None:
    model, samples, _ = model_and_samples
    batch = Collator(model, decision_weight=5.0)(samples)
    assert "label_weights" not in Collator(model)(samples)  # weight 1: the batch is as before
    labels, weights = batch["labels"], batch["label_weights"]
    assert (weights[labels == IGNORE_INDEX] == 0).all()
    for row, sample in enumerate(samples):
        heavy = labels[row][weights[row] == 5.0].tolist()
        text = model.tokenizer.decode(heavy)
        for inv in sample.response["invocations"]:
            assert inv["task"].split("-")[-1] in text  # every task name weighs more
        n_calls = len(sample.response["invocations"])
        assert text.count("]") >= 1  # the list's end
        assert len(heavy) < (labels[row] != IGNORE_INDEX).sum() // 2 or n_calls > 1


def test_the_weighted_loss_is_the_weighted_mean_of_token_losses(model_and_samples: tuple) -> None:
    model, samples, _ = model_and_samples
    batch = Collator(model, decision_weight=3.0)(samples)
    with torch.no_grad():
        logits = model(**{k: v for k, v in batch.items() if k != "label_weights"}).logits
        targets = batch["labels"][:, 1:]
        keep = targets != IGNORE_INDEX
        ce = F.cross_entropy(logits[:, :-1][keep].float(), targets[keep], reduction="none")
        w = batch["label_weights"][:, 1:][keep]
        expected = (ce * w).sum() / w.sum()
        assert not torch.allclose(expected, ce.mean())  # the weighting changes the loss
        assert torch.allclose(TargetLoss(model, share_prefix=False)(**batch), expected, atol=1e-5)
        assert torch.allclose(TargetLoss(model)(**batch), expected, atol=1e-5)
        total, count = TargetLoss(model, reduction="sum")(**batch)
        assert torch.allclose(total / count, expected, atol=1e-5)
        assert float(count) == pytest.approx(float(w.sum()))


class _Lossy:
    """A tokenizer whose decode does not give the text back (one character a token, lower-cased)."""

    def decode(self, ids: list[int]) -> str:
        return "".join(chr(i) for i in ids).lower()


def test_a_tokenizer_that_does_not_decode_the_target_back_is_refused() -> None:
    target = '{"text": "Paris.", "invocations": []}'
    ids = [ord(c) for c in target]
    assert decision_weights(_Lossy(), [ord(c) for c in target.lower()], target.lower(), 2.0)[10] == 2.0
    with pytest.raises(ValueError, match="decodes the target back unchanged"):
        decision_weights(_Lossy(), ids, target, 2.0)


def test_the_cli_trains_with_it_and_records_it(model_and_samples: tuple, tmp_path: Path, training_cli: object) -> None:
    _, samples, base = model_and_samples
    data = tmp_path / "train.jsonl"
    unique = {s.id: s for s in samples}.values()
    data.write_text("".join(json.dumps(s.to_dict()) + "\n" for s in unique))
    out = tmp_path / "model"
    args = ["train", "--data", str(data), "--output", str(out), "--llm", str(base), "--steps", "2"]
    args += ["--batch-size", "4", "--blind-media", "--no-tokenizer", "--decision-weight", "4"]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    assert "decision tokens weigh 4x" in res.output
    card = json.loads((out / "training.json").read_text())
    assert card["train"]["extra"] == {"decision_weight": 4.0}
    res = CliRunner().invoke(cli, [*args[:-1], "0", "--overwrite"])
    assert res.exit_code == 2 and "decision-weight" in res.output
