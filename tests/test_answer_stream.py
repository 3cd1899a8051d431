"""The incremental answer-text reader: any split of the raw output gives the parsed text, nothing else."""

from __future__ import annotations

import json
import random

import pytest

from modaverse_agent.answer_stream import AnswerTextReader

TEXTS = [
    "Here is a cat.",
    'He said "hi"\nthen left \\ back',
    "Emoji 😀 and accents café, tab\there",
    "",
    "{not json} [brackets] , commas: colons",
]


def _meta(text: str, ascii_only: bool) -> str:
    invs = [{"task": "text-to-image", "prompt": "a cat", "args": {"text": "not the answer"}}]
    return json.dumps({"text": text, "invocations": invs}, ensure_ascii=ascii_only)


@pytest.mark.parametrize("text", TEXTS)
@pytest.mark.parametrize("ascii_only", [True, False])
def test_every_split_gives_the_text_exactly(text: str, ascii_only: bool) -> None:
    raw = _meta(text, ascii_only)
    rng = random.Random(0)
    for _ in range(30):
        reader, got, i = AnswerTextReader(), [], 0
        while i < len(raw):
            n = rng.randint(1, 7)
            got.append(reader.feed(raw[i : i + n]))
            i += n
        assert "".join(got) == text == reader.text
    one_by_one = AnswerTextReader()
    assert "".join(one_by_one.feed(c) for c in raw) == text


def test_text_arrives_before_the_json_ends() -> None:
    reader = AnswerTextReader()
    assert reader.feed('{"text": "Hel') == "Hel"
    assert reader.feed("lo \\u00e9") == "lo é"
    assert reader.feed('", "invocations": [{"task": "x", "prompt": "text"}]}') == ""
    assert reader.done


def test_the_field_may_come_after_others_and_nested_text_keys_are_ignored() -> None:
    raw = '{"invocations": [{"text": "no", "prompt": "a"}], "extra": {"text": "no"}, "text": "yes"}'
    assert AnswerTextReader().feed(raw) == "yes"


def test_output_that_is_not_json_yields_nothing_and_broken_surrogates_are_replaced() -> None:
    assert AnswerTextReader().feed("Modality: [IMAGE] Prompt: a cat ###") == ""
    assert AnswerTextReader().feed('{"text": "a\\ud800b\\udc00c"}') == "a\ufffdb\ufffdc"
    assert AnswerTextReader().feed('{"text": "x\\ud83d\\ude00"}') == "x😀"
    assert AnswerTextReader().feed('```json\n{"text": "fenced"}\n```') == "fenced"
