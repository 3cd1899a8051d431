"""ModaVerseAgent as a LangChain Runnable, so it composes in LCEL (invoke, batch, stream, async)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from langchain_core.messages import BaseMessage
from langchain_core.runnables import Runnable, RunnableConfig

from .agent import FinalResponse, ModaVerseAgent

AgentInput = str | Mapping[str, Any] | BaseMessage


def _split_input(value: AgentInput) -> tuple[str, list[Any], Any]:
    if isinstance(value, str):
        return value, [], None
    if isinstance(value, BaseMessage):
        from .chat_content import message_to_instruction

        instruction, media = message_to_instruction(value)
        return instruction, media, None
    if isinstance(value, Mapping):
        if "instruction" not in value:
            raise ValueError("agent input dict needs an `instruction` key (and optionally `media`, `output_dir`)")
        return str(value["instruction"]), list(value.get("media", [])), value.get("output_dir")
    raise TypeError(f"agent input must be a string, a dict or a message, not {type(value).__name__}")


class AgentRunnable(Runnable[AgentInput, FinalResponse]):
    """Runs a ModaVerseAgent on ``"instruction"``, ``{"instruction", "media", "output_dir"}`` or a HumanMessage."""

    def __init__(self, agent: ModaVerseAgent) -> None:
        self.agent = agent

    def invoke(self, input: AgentInput, config: RunnableConfig | None = None, **kwargs: Any) -> FinalResponse:
        """Answer one request (runs inside LangChain's callbacks and tracing)."""
        return self._call_with_config(self._run, input, config, run_type="chain", **kwargs)

    def _run(self, value: AgentInput) -> FinalResponse:
        instruction, media, output_dir = _split_input(value)
        return self.agent.run(instruction, media, output_dir=output_dir)
