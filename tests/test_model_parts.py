"""Model parts on their own: config, projector, splice, prompts (tiny offline tokenizer)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from modaverse_agent.errors import ModelError  # noqa: E402
from modaverse_agent.meta_response import TaskSpec  # noqa: E402
from modaverse_agent.model.config import CONFIG_NAME, ModaVerseConfig  # noqa: E402
from modaverse_agent.model.llm import add_tokens, prepare_tokenizer  # noqa: E402
from modaverse_agent.model.projector import MediaProjector  # noqa: E402
from modaverse_agent.model.prompting import Prompter, render_system_prompt  # noqa: E402
from modaverse_agent.model.splice import IGNORE_INDEX, splice_media  # noqa: E402
from modaverse_agent.model.tiny import tiny_tokenizer  # noqa: E402

torch.set_num_threads(1)

TASKS = [
    TaskSpec(
        "text-to-image",
        "Draws pictures.",
        "image",
        {"type": "object", "properties": {"width": {"type": "integer", "maximum": 512}}, "additionalProperties": False},
    ),
    TaskSpec("image-editing", "Edits a picture.", "image", input_modalities=("image",)),
]


# -- config ---------------------------------------------------------------------------------------------
def test_config_round_trips_and_splits_gguf_paths(tmp_path: Path) -> None:
    cfg = ModaVerseConfig(llm="/models/gemma.gguf", lora_r=8, extra_tokens=["[IMAGE]"], modalities=("image",))
    assert (cfg.llm, cfg.gguf_file) == ("/models", "gemma.gguf")
    cfg.save(tmp_path)
    again = ModaVerseConfig.load(tmp_path)
    assert again == cfg and again.added_tokens == ["<|media_start|>", "<|media_end|>", "[IMAGE]", "<|media|>"]


def test_config_unknown_keys_warn_newer_version_fails(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = {**ModaVerseConfig(llm="x").to_dict(), "from_the_future": 1}
    (tmp_path / CONFIG_NAME).write_text(json.dumps(data))
    with caplog.at_level(logging.WARNING):
        assert ModaVerseConfig.load(tmp_path).llm == "x"
    assert "from_the_future" in caplog.text
    (tmp_path / CONFIG_NAME).write_text(json.dumps({**data, "version": 99}))
    with pytest.raises(ModelError, match="newer"):
        ModaVerseConfig.load(tmp_path)
    with pytest.raises(ModelError, match="missing"):
        ModaVerseConfig.load(tmp_path / "nowhere")
    with pytest.raises(ModelError, match="prompt_format"):
        ModaVerseConfig(llm="x", prompt_format="fancy")


# -- projector -------------------------------------------------------------------------------------------
def test_projector_per_modality_and_shared() -> None:
    per = MediaProjector(16, 32, ("image", "audio"), num_tokens=3)
    assert sorted(per.proj) == ["audio", "image"]
    assert per("image", torch.randn(2, 16)).shape == (2, 3, 32)
    feats = torch.randn(3, 16)
    mixed = per.project_items(["image", "audio", "image"], feats)
    assert mixed.shape == (9, 32)
    assert torch.allclose(mixed[3:6], per("audio", feats[1:2])[0])
    shared = MediaProjector(16, 32, ("image", "audio", "video"), shared=True)
    assert list(shared.proj) == ["shared"] and shared.layer("video") is shared.layer("image")
    with pytest.raises(ValueError, match="no projector for modality 'depth'"):
        per("depth", feats)
    with pytest.raises(ValueError, match=r"shape \(n, 16\)"):
        per("image", torch.randn(2, 8))


# -- splice ----------------------------------------------------------------------------------------------
P = 9  # placeholder id


def test_splice_places_features_in_reading_order_and_masks_labels() -> None:
    ids = torch.tensor([[1, P, 2, P], [P, 3, 4, 5]])
    embeds = torch.zeros(2, 4, 6)
    media = torch.arange(18, dtype=torch.float32).view(3, 6) + 1
    labels = ids.clone()
    out, masked = splice_media(embeds, ids, media, P, labels)
    assert torch.equal(out[0, 1], media[0]) and torch.equal(out[0, 3], media[1]) and torch.equal(out[1, 0], media[2])
    assert out[0, 0].abs().sum() == 0 and embeds.abs().sum() == 0  # pure: the input is untouched
    assert masked is not None and masked[ids == P].eq(IGNORE_INDEX).all() and masked[ids != P].eq(ids[ids != P]).all()


def test_splice_count_mismatch_both_ways() -> None:
    ids = torch.tensor([[1, P, 2]])
    with pytest.raises(ValueError, match=r"1 media placeholder token.* but 2 media feature"):
        splice_media(torch.zeros(1, 3, 4), ids, torch.ones(2, 4), P)
    with pytest.raises(ValueError, match=r"1 media placeholder token.* but 0 media feature"):
        splice_media(torch.zeros(1, 3, 4), ids, None, P)
    with pytest.raises(ValueError, match=r"0 media placeholder token.* but 1 media feature"):
        splice_media(torch.zeros(1, 3, 4), torch.tensor([[1, 2, 3]]), torch.ones(1, 4), P)


# -- prompts ---------------------------------------------------------------------------------------------
def test_system_prompt_lists_tasks_descriptions_args_and_inputs() -> None:
    text = render_system_prompt(TASKS)
    assert "- text-to-image: Draws pictures. Output: image." in text
    assert '"width": {"type": "integer", "maximum": 512}' in text
    assert "- image-editing: Edits a picture. Output: image. Input media: image" in text
    assert '"invocations"' in text
    empty = render_system_prompt([])
    assert "text only" in empty
    assert "Modality: [IMAGE]" in render_system_prompt(TASKS, output_format="legacy")


def _prompter(chat: bool, **overrides: object) -> Prompter:
    tok = tiny_tokenizer(chat_template=chat)
    prepare_tokenizer(tok)
    cfg = ModaVerseConfig(llm="x", **overrides)  # type: ignore[arg-type]
    add_tokens(tok, cfg)
    return Prompter(tok, cfg, max_prompt_tokens=4096)


def test_chat_template_is_used_when_present() -> None:
    p = _prompter(chat=True)
    assert p.format == "chat"
    text = p.text("draw a cat", ["image_1"], TASKS)
    assert text.startswith("<|system|>\nYou are ModaVerse")
    assert "<|user|>\nimage_1: <|media_start|><|media|><|media_end|>\ndraw a cat</s>\n<|assistant|>\n" in text
    ids = p.ids("draw a cat", ["image_1"], TASKS)
    assert ids.count(p.tokenizer.convert_tokens_to_ids("<|media|>")) == 1


def test_plain_template_without_chat_template() -> None:
    p = _prompter(chat=False, num_media_tokens=2)
    assert p.format == "plain"
    text = p.text("hi", ["image_1", "audio_1"], TASKS)
    assert text.endswith(
        "### Human: image_1: <|media_start|><|media|><|media|><|media_end|>\n"
        "audio_1: <|media_start|><|media|><|media|><|media_end|>\nhi\n### Assistant:"
    )
    ids = p.ids("hi", ["image_1", "audio_1"], TASKS)
    assert ids[0] == p.tokenizer.bos_token_id and ids.count(p.tokenizer.convert_tokens_to_ids("<|media|>")) == 4


def test_legacy_prompt_is_the_releases() -> None:
    p = _prompter(
        chat=True,
        prompt_format="legacy",
        output_format="legacy",
        media_start_token="<Media>",
        media_end_token="</Media>",
        extra_tokens=["[TEXT]", "[IMAGE]", "[AUDIO]", "[VIDEO]"],
    )
    tok = p.tokenizer
    ids = p.ids("draw a cat", ["image_1"], TASKS)
    start, ph, end = tok.convert_tokens_to_ids(["<Media>", "<|media|>", "</Media>"])
    head = tok("### Human:", add_special_tokens=False).input_ids
    tail = tok("draw a cat\n### Assistant:", add_special_tokens=False).input_ids
    assert ids == [tok.bos_token_id, *head, start, ph, end, *tail]
    no_media = p.ids("draw a cat", [], TASKS)
    assert no_media == [
        tok.bos_token_id,
        *tok("### Human:  draw a cat\n### Assistant:", add_special_tokens=False).input_ids,
    ]


def test_bad_instructions_are_refused_clearly() -> None:
    p = _prompter(chat=False)
    with pytest.raises(ModelError, match="empty and no media"):
        p.ids("   ", [], TASKS)
    assert p.ids("", ["image_1"], TASKS)  # media alone is a request
    with pytest.raises(ModelError, match="reserved media token '<\\|media\\|>'"):
        p.ids("sneak <|media|> in", [], TASKS)
    long = "cat " * 50_000
    with pytest.raises(ModelError, match=r"over this model's limit of 4096 .* shorten the instruction by at least"):
        p.ids(long, [], TASKS)


def test_training_example_masks_the_prompt() -> None:
    for chat in (True, False):
        p = _prompter(chat=chat)
        ids, labels = p.example("draw", ["image_1"], TASKS, '{"text":"ok","invocations":[]}')
        prompt = p.ids("draw", ["image_1"], TASKS)
        assert ids[: len(prompt)] == prompt and labels[: len(prompt)] == [IGNORE_INDEX] * len(prompt)
        answer = p.tokenizer.decode(ids[len(prompt) :])
        assert answer.startswith('{"text":"ok"') and answer.endswith("</s>")
