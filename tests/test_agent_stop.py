"""Stop strings on the agent path end the answer text, never the raw meta-response JSON."""

from __future__ import annotations

from pathlib import Path

from modaverse_agent.agent import ModaVerseAgent
from modaverse_agent.llm_io import GenerationParams
from modaverse_agent.response import TextDelta
from modaverse_agent.testing import ScriptedLLM, StreamingScriptedLLM
from modaverse_agent.zoo import Zoo

REPLY = {
    "text": "The capital of France is Paris. It lies on the Seine.",
    "invocations": [{"task": "text-to-image", "prompt": "the Eiffel tower", "inputs": [], "args": {}}],
}


def test_a_stop_string_cuts_the_answer_text_and_the_calls_still_run(echo_zoo: Zoo, tmp_path: Path) -> None:
    llm = ScriptedLLM(REPLY)
    r = ModaVerseAgent(llm, echo_zoo, output_dir=tmp_path).run("capital?", params=GenerationParams(stop=("Paris",)))
    assert r.text == "The capital of France is "
    assert not r.errors, r.errors
    assert [a.modality for a in r.artifacts] == ["image"]
    assert llm.history[0].params.stop == ()  # the model is asked without it: cut JSON is no meta-response


def test_a_streamed_answer_never_shows_text_from_the_stop_string_on(echo_zoo: Zoo, tmp_path: Path) -> None:
    llm = StreamingScriptedLLM(REPLY, piece=3)
    agent = ModaVerseAgent(llm, echo_zoo, output_dir=tmp_path)
    events = list(agent.stream("capital?", params=GenerationParams(stop=(" lies", "Paris"))))
    shown = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert shown == "The capital of France is "
    final = events[-1].response  # type: ignore[attr-defined]
    assert final.text == shown and not final.errors
