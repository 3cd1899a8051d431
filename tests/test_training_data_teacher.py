"""The teacher engine with scripted fake LangChain chat models (good, malformed and invalid replies)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import Field

from modaverse_agent.training.corpora import CaptionedItem
from modaverse_agent.training.dataset import DatasetError
from modaverse_agent.training.teacher import TeacherEngine, builtin_candidates, parse_reply


class ScriptedChat(BaseChatModel):
    """Returns queued replies in order (an Exception is raised) and records every request."""

    replies: list[Any]
    requests: list[list[BaseMessage]] = Field(default_factory=list)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        self.requests.append(messages)
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=reply))])

    @property
    def _llm_type(self) -> str:
        return "scripted"


CANDIDATES = [
    CaptionedItem("image", "A red boat on a calm lake.", "/data/boat.jpg", "coco"),
    CaptionedItem("audio", "A dog barks twice.", "/data/dog.wav", "audiocaps"),
    CaptionedItem("video", "A man juggles three balls.", None, "msrvtt"),
]


def _item(**overrides: Any) -> dict[str, Any]:
    item = {
        "candidate": "c3",
        "kind": "output-alignment",
        "instruction": "Make a clip of a man juggling.",
        "media": [],
        "response": {
            "text": "Here.",
            "invocations": [{"task": "text-to-video", "prompt": "a man juggling three balls"}],
        },
    }
    return {**item, **overrides}


GOOD = [
    _item(),
    _item(
        candidate="c1",
        kind="input-alignment",
        instruction="Describe this photo.",
        media=["c1"],
        response={"text": "A red boat on a calm lake.", "invocations": []},
    ),
    _item(
        candidate="c2",
        kind="reasoning",
        instruction="Draw what you hear, and edit the photo to add a dog.",
        media=["c2", "c1"],
        response={
            "text": "Here.",
            "invocations": [
                {"task": "text-to-image", "prompt": "a dog barking, highly detailed"},
                {"task": "image-editing", "prompt": "add a dog", "inputs": ["image_1"]},
            ],
        },
    ),
]
INVALID = [
    _item(instruction="Paint it.", response={"text": "", "invocations": [{"task": "text-to-painting", "prompt": "x"}]}),
    _item(instruction="Show c9.", media=["c9"]),
    _item(instruction="Show the video.", media=["c3"]),
    {k: v for k, v in _item(instruction="No response.").items() if k != "response"},
    "not an object",
]


def _engine(model: BaseChatModel, **kwargs: Any) -> TeacherEngine:
    return TeacherEngine(model, batch_size=3, per_candidate=2, **kwargs)


def test_good_replies_become_validated_samples_and_the_request_has_everything() -> None:
    fenced = "Sure! Here they are:\n```json\n" + json.dumps(GOOD) + "\n```"
    model = ScriptedChat(replies=[fenced], requests=[])
    result = _engine(model).generate(CANDIDATES)
    assert len(result.samples) == 3 and result.rejected == 0 and result.malformed_replies == 0
    two_media = result.samples[2]
    assert [(m.id, m.path) for m in two_media.media] == [("audio_1", "/data/dog.wav"), ("image_1", "/data/boat.jpg")]
    assert all(s.source["engine"] == "teacher" and s.source["model"] == "ScriptedChat" for s in result.samples)
    system = model.requests[0][0].content
    assert "c1 [image, media file]: A red boat on a calm lake." in system
    assert "c3 [video]: A man juggles three balls." in system
    assert "Language references" in system and "image:" in system and "speech:" in system
    assert "Sample: {" in system and "text-to-speech: Speaks text aloud" in system
    assert "Write 6 samples" in model.requests[0][1].content


def test_malformed_and_invalid_replies_are_rejected_and_counted() -> None:
    replies = [
        "I cannot help with that.",  # no JSON at all
        '[{"candidate": "c1", "kind": ',  # truncated JSON
        json.dumps([*INVALID, GOOD[0]]),  # some items invalid, one good
        RuntimeError("rate limited"),
        json.dumps([GOOD[0]]),  # a duplicate of an already kept sample
    ]
    model = ScriptedChat(replies=replies, requests=[])
    items = CANDIDATES * 5  # five batches of three
    result = _engine(model).generate(items)
    assert result.requests == 5 and result.failed_requests == 1 and result.malformed_replies == 2
    assert len(result.samples) == 1 and result.duplicates == 1
    assert result.rejected == 5
    reasons = " ".join(result.invalid)
    for reason in ("unknown task", "unknown candidate 'c9'", "has no media file", "response", "not an object"):
        assert reason in reasons, reason
    summary = result.summary()
    assert summary["malformed_replies"] == 2 and summary["invalid"] == 5


def test_when_every_request_fails_the_error_is_raised() -> None:
    model = ScriptedChat(replies=[ConnectionError("no network")], requests=[])
    with pytest.raises(DatasetError, match=r"every request to the teacher failed.*ConnectionError: no network"):
        _engine(model).generate(CANDIDATES)


def test_generic_fake_chat_model_works_as_a_teacher() -> None:
    model = GenericFakeChatModel(messages=iter([AIMessage(content=json.dumps(GOOD[:1]))]))
    result = _engine(model, seed=1).generate(builtin_candidates()[:3])
    assert len(result.samples) == 1 and result.samples[0].source["split"] == "train"


def test_parse_reply_accepts_arrays_fences_and_json_lines() -> None:
    assert parse_reply('[{"a": 1}]') == [{"a": 1}]
    assert parse_reply('Here: [note] then [{"a": 1}, {"b": 2}] done') == [{"a": 1}, {"b": 2}]
    assert parse_reply('{"a": 1}\n{"b": 2}\n') == [{"a": 1}, {"b": 2}]
    assert parse_reply('{"samples": [{"a": 1}]}') == [{"a": 1}]
    assert parse_reply("no json here") is None
    assert parse_reply("[1, 2]") is None
