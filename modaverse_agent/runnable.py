"""ModaVerseAgent as a LangChain Runnable, so it composes in LCEL (invoke, batch, stream, async)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from langchain_core.messages import BaseMessage
from langchain_core.runnables import Runnable, RunnableConfig

from .response import AgentEvent, FinalResponse

if TYPE_CHECKING:  # the agent builds its runnable (ModaVerseAgent.as_runnable): no import back at run time
    from .agent import ModaVerseAgent

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

    def stream(self, input: AgentInput, config: RunnableConfig | None = None, **kwargs: Any) -> Iterator[AgentEvent]:
        """The answer as events: text deltas as they are decoded, the plan, each invocation's files as its
        generator finishes, and the :class:`~.response.ResponseDone` with the whole response last."""
        yield from self._transform_stream_with_config(iter([input]), self._events, config, run_type="chain")

    async def astream(
        self, input: AgentInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> AsyncIterator[AgentEvent]:
        """:meth:`stream` for asyncio: each event is awaited from a worker thread."""
        loop, done = asyncio.get_running_loop(), object()
        events = self.stream(input, config, **kwargs)
        try:
            while (event := await loop.run_in_executor(None, next, events, done)) is not done:
                yield event  # type: ignore[misc]
        finally:
            events.close()

    def _events(self, inputs: Iterator[AgentInput]) -> Iterator[AgentEvent]:
        for value in inputs:
            instruction, media, output_dir = _split_input(value)
            yield from self.agent.stream(instruction, media, output_dir=output_dir)
