"""A conversation longer than the model's context keeps going: the oldest turns are left out of the prompt
(with a note), never every later turn refused with "shorten the instruction"."""

from __future__ import annotations

from pathlib import Path

import pytest

from modaverse_agent.errors import RequestError
from modaverse_agent.llm_io import ChatTurn, LLMRequest, fit_history
from modaverse_agent.meta_response import build_schema
from modaverse_agent.zoo import Zoo


class _Budget:
    """A PromptChecker whose context holds ``limit`` characters of history + instruction."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.checked = 0

    def check_prompt(self, request: LLMRequest) -> None:
        self.checked += 1
        size = len(request.instruction) + sum(len(t.text) for t in request.history)
        if size > self.limit:
            raise RequestError(f"{size} > {self.limit}", code="context_length_exceeded")


def _ask(history: list[ChatTurn], instruction: str = "x" * 10) -> LLMRequest:
    return LLMRequest(instruction, [], build_schema([]), [], history)


def _turns(n: int) -> list[ChatTurn]:
    return [ChatTurn("user" if i % 2 == 0 else "assistant", str(i) * 10) for i in range(n)]


def test_the_fewest_oldest_turns_are_left_out_and_the_rest_starts_with_the_user() -> None:
    history = _turns(10)  # 100 characters of history
    fits, left = fit_history(_Budget(200), _ask(history))
    assert left == 0 and fits.history == history  # it fits: unchanged
    for limit, want in ((75, 4), (70, 4), (65, 6), (15, 10)):  # 75: drop 3 turns -> round up to a user turn
        fits, left = fit_history(_Budget(limit), _ask(history))
        assert left == want and fits.history == history[want:], limit
        assert not fits.history or fits.history[0].role == "user"
    request = _ask(history, "y" * 50)
    assert fit_history(_Budget(40), request) == (request, 0)  # too long even alone: the engine refuses it
    nul = _Budget(10**6)
    assert fit_history(nul, _ask([]))[1] == 0 and nul.checked == 0  # no history: nothing to check


def test_a_long_conversation_on_the_tiny_model_still_answers(tmp_path: Path, echo_zoo: Zoo) -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip("xgrammar")
    from modaverse_agent.agent import ModaVerseAgent
    from modaverse_agent.conversation import Conversation
    from modaverse_agent.model.modeling import ModaVerseModel
    from modaverse_agent.model.tiny import save_tiny_base, tiny_config

    torch.set_num_threads(1)
    base = save_tiny_base(tmp_path / "base")
    torch.manual_seed(0)
    config = tiny_config(base, blind_media=True, max_prompt_tokens=2300, max_new_tokens=24)
    model = ModaVerseModel.from_config(config, init_lora_weights=False).eval()
    conv = Conversation(ModaVerseAgent(model, echo_zoo, output_dir=tmp_path / "out", seed=0))
    turn = "tell me about cats " * 20
    notes = []
    for _ in range(8):
        response = conv.send(turn)
        assert not [e for e in response.errors if e.stage in ("request", "llm")], response.errors
        notes += [n for n in response.notes if "longer than the model's context" in n]
    assert notes, "eight long turns should have outgrown a 2300-token prompt"
    assert len(conv.turns) == 16  # every turn is still in the conversation
    alone = ModaVerseAgent(model, echo_zoo, output_dir=tmp_path / "out2").run(turn, history=conv.history())
    assert not [e for e in alone.errors if e.stage in ("request", "llm")]  # the agent itself fits a history
    assert any("oldest of 16 earlier turns were left out" in n for n in alone.notes), alone.notes
