"""Multi-turn training samples: the ``followup`` maker writes what a live Conversation hands the LLM."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from modaverse_agent.agent import ModaVerseAgent
from modaverse_agent.conversation import Conversation
from modaverse_agent.llm_io import fold_conversation
from modaverse_agent.testing import ScriptedLLM
from modaverse_agent.zoo import Zoo
from training.recipe import Recipe
from training.templates import TemplateEngine

_FOLDED = re.compile(r"Conversation so far:\nuser: (.*)\nassistant: (\{.*\})(?: \[made: [^\]]*\])?\n\n(.*)\Z", re.S)


@pytest.fixture(scope="module")
def followups() -> list:
    return TemplateEngine(seed=3, recipe=Recipe(mix={"followup": 1})).generate("train", 120).samples


def test_followups_cover_every_kind_of_second_turn(followups: list) -> None:
    pools = Counter(s.source["pool"].split(".")[1] for s in followups)
    for pool in ("followup_edit", "followup_to_video", "followup_to_sound", "followup_to_picture", "followup_speak"):
        assert pools[pool] > 0, pools
    unrelated = [s for s in followups if not s.source["pool"].startswith("followups.")]
    assert unrelated, "some second turns must be unrelated requests or questions"
    for s in followups:
        assert s.instruction.startswith("Conversation so far:\nuser: ")
        refs = [r for inv in s.response["invocations"] for r in inv.get("inputs", ())]
        if s.source["pool"] == "followups.followup_edit":  # the picture just made, the last image offered
            assert refs == [[m.id for m in s.media if m.modality == "image"][-1]]
        elif s.source["pool"] == "followups.followup_speak":  # the earlier answer is what gets spoken
            said = json.loads(_FOLDED.match(s.instruction).group(2))["text"]
            assert s.response["invocations"] == [{"task": "text-to-speech", "prompt": said}]
        else:
            assert refs == [], "a second turn that does not refer to the earlier media leaves them alone"


def test_a_followup_sample_is_the_text_a_live_conversation_folds(
    followups: list, echo_zoo: Zoo, tmp_path: Path
) -> None:
    checked = 0
    for n, sample in enumerate(followups[:40]):
        first_text, first_json, second_text = _FOLDED.match(sample.instruction).groups()
        if "[attached:" in first_text:
            continue  # the first turn attached a placeholder photo: no file to attach here
        llm = ScriptedLLM(json.loads(first_json), dict(sample.response))
        conv = Conversation(ModaVerseAgent(llm, echo_zoo, output_dir=tmp_path / str(n), seed=0))
        conv.send(first_text)
        second = conv.send(second_text)
        asked = llm.history[-1]
        assert fold_conversation(asked) == sample.instruction
        assert [i for i, _ in asked.media] == [m.id for m in sample.media]
        assert [i.to_dict()["task"] for i in second.meta_response.invocations] == [
            inv["task"] for inv in sample.response["invocations"]
        ]
        checked += 1
    assert checked >= 20


def test_followups_are_in_the_default_mix_and_the_heldout_split() -> None:
    engine = TemplateEngine(seed=0)
    train, test = engine.generate_splits(400, 100)
    assert any(s.source["maker"] == "followup" for s in train.samples)
    assert any(s.source["maker"] == "followup" for s in test.samples)
    assert not train.shortfall and not test.shortfall
