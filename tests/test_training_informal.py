"""Texting-style requests (``informal.tsv``) and backgrounds written after a request."""

from __future__ import annotations

import json
import random

import pytest

from modaverse_agent.training.corpora import builtin_corpora
from modaverse_agent.training.dataset import Sample
from modaverse_agent.training.informal import Informalizer, parse_informal
from modaverse_agent.training.templates import Recipe, TemplateEngine

TABLE = {"please": ("pls",), "you": ("u",), "picture": ("pic",), "thank you": ("ty",)}


def test_shorthand_lowercase_and_typos_leave_quotes_and_kept_lines_alone() -> None:
    rewrite = Informalizer(TABLE)
    text = 'Please, could you read "Thank You, Please Come Again" aloud and draw a Picture? Thank you. Say Hello Friend'
    outs = [rewrite(text, random.Random(seed), keep=["Hello Friend"]) for seed in range(40)]
    for out in outs:
        assert '"Thank You, Please Come Again"' in out and out.endswith(("Hello Friend", "Hello Friend."))
        assert "Please," not in out  # outside the kept spans everything is lower case
    joined = " ".join(outs)
    assert "pls," in joined and " u " in joined and " pic?" in joined and "ty." in joined
    assert "please," in joined  # each phrase is shortened only some of the time
    assert "thank u" not in joined  # the longest phrase wins: "thank you" -> "ty", never "thank u"


def test_overlapping_kept_spans_lose_nothing() -> None:
    text = 'Read "Good Night Moon" to Me aloud'
    for seed in range(10):
        out = Informalizer({})(text, random.Random(seed), keep=['Moon" to Me'])
        assert out.startswith('read "Good Night Moon" to Me alo'), out


def test_typos_keep_the_first_and_last_letters_of_long_words() -> None:
    rewrite = Informalizer({})
    words = ["wonderful", "absolutely", "mountains", "landscape"]
    typos = set()
    for seed in range(200):
        for original, out in zip(words, rewrite(" ".join(words), random.Random(seed)).split(), strict=True):
            if out != original:
                typos.add(out)
                assert out[0] == original[0] and out[-1] == original[-1] and len(original) - len(out) in (0, 1)
    assert typos  # they do happen
    assert Informalizer({})("Go to sea.", random.Random(0)).rstrip(".") == "go to sea"  # short words never change


def test_a_bad_table_line_names_its_place() -> None:
    assert parse_informal(["please\tpls", "please\tplz", "you\tu", ""]) == {"please": ("pls", "plz"), "you": ("u",)}
    with pytest.raises(ValueError, match=r"informal\.tsv:2: expected `formal<TAB>informal`"):
        parse_informal(["please\tpls", "you u"])


def test_the_shipped_table_is_loaded() -> None:
    table = builtin_corpora().informal
    assert len(table) >= 150
    assert all(casual != formal for formal, options in table.items() for casual in options)


def _run(recipe: Recipe, split: str = "train") -> list[Sample]:
    return TemplateEngine(seed=5, recipe=recipe).generate(split, 120).samples


MIX = {"image": 1, "question": 1, "speech": 2, "followup": 1, "multi": 1, "edit": 1}


def _answers(samples: list[Sample]) -> list[str]:
    return sorted(json.dumps(s.response, sort_keys=True) for s in samples)


def test_informal_requests_change_the_words_not_the_answers() -> None:
    plain = _run(Recipe(mix=MIX))
    assert [s.to_dict() for s in _run(Recipe(mix=MIX, informal_p=0.0))] == [s.to_dict() for s in plain]
    casual = _run(Recipe(mix=MIX, informal_p=1.0))
    # the informal stream is its own: the same drafts, only the words typed differ
    overlap = set(_answers(casual)) & set(_answers(plain))
    assert len(overlap) >= 0.8 * len(plain)
    changed = 0
    for s in casual:
        lines = [i["prompt"] for i in s.response["invocations"] if i["task"] == "text-to-speech"]
        assert all(line.rstrip(".") in s.instruction for line in lines if s.source["maker"] == "speech"), s.instruction
        if s.source["maker"] != "followup":
            changed += s.instruction not in {p.instruction for p in plain}
            assert s.instruction == s.instruction.lower() or '"' in s.instruction or lines
    assert changed >= 0.5 * len(casual)


def test_backgrounds_after_the_request() -> None:
    contexts = builtin_corpora().contexts
    samples = _run(Recipe(mix={"image": 1, "question": 1}, context_p=1.0, context_after_p=1.0))
    assert all(any(s.instruction.endswith(c) for c in contexts) for s in samples)
    assert not any(any(s.instruction.startswith(c) for c in contexts) for s in samples)
    before = _run(Recipe(mix={"image": 1, "question": 1}, context_p=1.0))
    unchanged = _run(Recipe(mix={"image": 1, "question": 1}, context_p=1.0, context_after_p=0.0))
    assert [s.to_dict() for s in before] == [s.to_dict() for s in unchanged]


def test_the_say_maker_speaks_short_lines_verbatim() -> None:
    """``--mix say=N``: a word, a name or a greeting from ``say.txt`` in the speech phrasings, spoken as written."""
    say = builtin_corpora().say
    assert len(say) >= 150 and all(len(line.split()) <= 4 for line in say)
    samples = TemplateEngine(seed=2, recipe=Recipe(mix={"say": 1})).generate("train", 60).samples
    assert len(samples) == 60
    for s in samples:
        (call,) = s.response["invocations"]
        assert call["task"] == "text-to-speech" and call["prompt"] in say and call["prompt"] in s.instruction
    held = TemplateEngine(seed=2, recipe=Recipe(mix={"say": 1})).generate("test", 20).samples
    said = {s.response["invocations"][0]["prompt"] for s in samples}
    assert held and not said & {s.response["invocations"][0]["prompt"] for s in held}  # held out by content
    default_run = TemplateEngine(seed=2).generate("train", 200).samples
    assert all(s.source["maker"] != "say" for s in default_run)  # off by default
