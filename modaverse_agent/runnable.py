"""ModaVerseAgent as a LangChain Runnable, so it composes in LCEL (invoke, batch, stream, async)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from langchain_core.callbacks import CallbackManagerForChainRun
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, LLMResult
from langchain_core.prompt_values import PromptValue, StringPromptValue
from langchain_core.runnables import Runnable, RunnableConfig

from .llm_io import ChatTurn
from .response import (
    AgentEvent,
    FinalResponse,
    InvocationDone,
    InvocationStarted,
    PlanReady,
    ResponseDone,
    TextDelta,
    last_response,
)

if TYPE_CHECKING:  # the agent builds its runnable (ModaVerseAgent.as_runnable): no import back at run time
    from .agent import ModaVerseAgent

AgentInput = str | Mapping[str, Any] | BaseMessage | PromptValue | Sequence[BaseMessage]


@dataclass
class _Request:
    instruction: str
    media: list[Any]
    output_dir: Any = None
    history: list[ChatTurn] = field(default_factory=list)


def _from_messages(messages: Sequence[BaseMessage]) -> _Request:
    """The last human message is the request; the messages before it are the conversation so far."""
    from .chat_content import message_to_instruction

    humans = [i for i, m in enumerate(messages) if isinstance(m, HumanMessage)]
    if not humans:
        raise ValueError("the messages hold no human message to answer; add one (a HumanMessage)")
    last = humans[-1]
    instruction, media = message_to_instruction(messages[last])
    roles = {"human": "user", "ai": "assistant", "tool": "tool", "system": "system"}
    history = [ChatTurn(roles.get(m.type, m.type), m.text) for m in messages[:last]]
    return _Request(instruction, list(media), None, history)


def _split_input(value: AgentInput) -> _Request:
    if isinstance(value, str):
        return _Request(value, [])
    if isinstance(value, StringPromptValue):
        return _Request(value.to_string(), [])
    if isinstance(value, PromptValue):  # ChatPromptValue and the like: `ChatPromptTemplate | agent`
        return _from_messages(value.to_messages())
    if isinstance(value, BaseMessage):
        return _from_messages([value])
    if isinstance(value, Mapping):
        if "instruction" not in value:
            raise ValueError("agent input dict needs an `instruction` key (and optionally `media`, `output_dir`)")
        return _Request(str(value["instruction"]), list(value.get("media", [])), value.get("output_dir"))
    if isinstance(value, Sequence) and value and all(isinstance(m, BaseMessage) for m in value):
        return _from_messages(list(value))
    raise TypeError(
        "agent input must be a string, a prompt value, a message or a list of messages, or a dict with "
        f"`instruction`, not {type(value).__name__}"
    )


class AgentRunnable(Runnable[AgentInput, FinalResponse]):
    """Runs a ModaVerseAgent on ``"instruction"``, ``{"instruction", "media", "output_dir"}`` or a HumanMessage."""

    def __init__(self, agent: ModaVerseAgent) -> None:
        self.agent = agent

    def invoke(self, input: AgentInput, config: RunnableConfig | None = None, **kwargs: Any) -> FinalResponse:
        """Answer one request (runs inside LangChain's callbacks and tracing)."""
        return self._call_with_config(self._run, input, config, run_type="chain", **kwargs)

    def _run(self, value: AgentInput, run_manager: CallbackManagerForChainRun | None = None) -> FinalResponse:
        return last_response(self._traced(_split_input(value), run_manager))

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

    def _events(
        self, inputs: Iterator[AgentInput], run_manager: CallbackManagerForChainRun | None = None
    ) -> Iterator[AgentEvent]:
        for value in inputs:
            yield from self._traced(_split_input(value), run_manager)

    def _traced(self, req: _Request, run_manager: CallbackManagerForChainRun | None) -> Iterator[AgentEvent]:
        """The agent's events, reported to LangChain's callbacks as the steps they are: the LLM's answer as
        a chat-model run (``on_chat_model_start``/``on_llm_end``) and each invocation as a tool run."""
        events = self.agent.stream(req.instruction, req.media, output_dir=req.output_dir, history=req.history)
        if run_manager is None:
            yield from events
            return
        callbacks = run_manager.get_child()
        llm_run: Any = callbacks.on_chat_model_start(
            {"name": "ChatModaVerse"}, [[HumanMessage(req.instruction)]], name="ChatModaVerse"
        )[0]
        tools: dict[int, Any] = {}
        for event in events:
            if isinstance(event, TextDelta) and llm_run is not None:
                llm_run.on_llm_new_token(event.text)
            elif isinstance(event, PlanReady):
                meta = event.meta_response
                message = AIMessage(meta.text, response_metadata={"meta_response": meta.to_dict()})
                llm_run.on_llm_end(LLMResult(generations=[[ChatGeneration(message=message)]]))
                llm_run = None
            elif isinstance(event, InvocationStarted):
                tools[event.index] = callbacks.on_tool_start(
                    {"name": event.task or "unknown", "description": event.generator or ""},
                    event.prompt,
                    name=event.task or "unknown",
                    inputs={"prompt": event.prompt},
                )
            elif isinstance(event, InvocationDone) and event.index in tools:
                tool_run = tools.pop(event.index)
                if event.error is not None and not event.artifacts:
                    tool_run.on_tool_error(RuntimeError(str(event.error)))
                else:
                    tool_run.on_tool_end(", ".join(str(a.path) for a in event.artifacts) or "nothing")
            elif isinstance(event, ResponseDone) and llm_run is not None:  # the model failed before a plan
                llm_run.on_llm_error(RuntimeError("; ".join(str(e) for e in event.response.errors) or "no answer"))
            yield event
