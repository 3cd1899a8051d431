"""The work of one request, on a worker thread: the agent's answer, or a plain LLM answer with tool calls.

Both check ``job.cancelled`` before every step they take (the next text piece, the next invocation), so a
client that went away stops its request there (and the request's view of the LLM ends a decode in progress,
see :mod:`.batching`); a stream hands every event to the request's event loop
(``job.emit``) as it comes.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langchain_core.messages import AIMessage, AIMessageChunk

from ..agent import ModaVerseAgent
from ..chat_model import ChatModaVerse
from ..errors import RequestError
from ..llm_io import Completion, MetaResponder
from ..response import FinalResponse, InvocationDone, ResponseDone, ResponseError
from .batching import MicroBatcher, request_llm
from .files import FileStore
from .openai_wire import ChatRequest
from .scheduler import Job
from .turns import agent_call, langchain_messages, with_media_errors


class Stopped(Exception):
    """The client went away before the answer was complete."""


@dataclass
class Served:
    """What the server serves with: the agent, its LLM (batched where it can be), the file store."""

    agent: ModaVerseAgent
    batcher: MicroBatcher | None
    store: FileStore
    model_name: str
    output_root: Path

    @property
    def llm(self) -> MetaResponder:
        """The served LLM."""
        return self.agent.llm


@dataclass
class AgentResult:
    """The agent's answer to one request, and the LLM's completion (token counts) when it reported one."""

    response: FinalResponse
    completion: Completion | None
    invocations: list[InvocationDone] = field(default_factory=list)


@dataclass
class ToolResult:
    """A plain LLM answer (text and tool calls) and the errors of media that could not be loaded."""

    message: AIMessage
    errors: list[ResponseError] = field(default_factory=list)


def _steps(events: Iterator[Any], job: Job) -> Iterator[Any]:
    """``events`` until the job is cancelled; checked before each next step, and the iterator closed after."""
    try:
        while not job.cancelled.is_set():
            try:
                event = next(events)
            except StopIteration:
                return
            yield event
        raise Stopped()
    finally:
        close = getattr(events, "close", None)
        if close is not None:
            close()


def run_agent(served: Served, request: ChatRequest, request_id: str, job: Job) -> AgentResult:
    """Answer ``request`` with the agent (its invocations run); a stream emits every event as it comes."""
    call = agent_call(request, served.store)
    view = request_llm(served.llm, served.batcher, stream=request.stream, cancelled=job.cancelled)
    agent = copy.copy(served.agent)  # this request's view of the LLM; everything else is shared
    agent.llm = view
    events = agent.stream(
        call.instruction,
        call.media,
        output_dir=served.output_root / request_id,
        params=request.params,
        history=call.history,
    )
    response, done = None, []
    for event in _steps(events, job):
        if isinstance(event, ResponseDone):
            response = event.response
            response.errors[:0] = call.errors
            continue  # the result carries it; a refused request thus ends its stream with no event
        if isinstance(event, InvocationDone):
            done.append(event)
        if request.stream:
            job.emit(event)
    if response is None:
        raise RuntimeError("the agent's event stream ended without a response")
    return AgentResult(response, view.completion, done)


def _chat_model(served: Served, request: ChatRequest, media: dict[str, Any], job: Job) -> Any:
    p = request.params
    view = request_llm(served.llm, served.batcher, stream=request.stream, cancelled=job.cancelled)
    chat = ChatModaVerse(
        backend=view,
        zoo=served.agent.zoo,
        model_name=served.model_name,
        temperature=p.temperature,
        top_p=p.top_p,
        max_tokens=p.max_new_tokens,
        stop=list(p.stop) or None,
        seed=p.seed,
        resolver=lambda key: media[key].data,
    )
    return chat.bind_tools(request.tools or [], tool_choice=request.tool_choice)


def run_tools(served: Served, request: ChatRequest, job: Job) -> ToolResult:
    """Answer ``request`` as a plain LLM with the client's ``tools``: text and tool calls, nothing run."""
    messages, media, errors = langchain_messages(request, served.store)
    model = _chat_model(served, request, media, job)
    if not request.stream:
        if job.cancelled.is_set():
            raise Stopped()
        try:
            return ToolResult(model.invoke(messages), errors)
        except RequestError as e:  # refused: say which media were skipped, as the agent path does
            raise RequestError(with_media_errors(str(e), errors), code=e.code) from e
    total: AIMessageChunk | None = None
    try:
        for chunk in _steps(iter(model.stream(messages)), job):
            job.emit(chunk)
            total = chunk if total is None else total + chunk
    except RequestError as e:
        raise RequestError(with_media_errors(str(e), errors), code=e.code) from e
    if total is None:
        raise RuntimeError("the model's stream ended without a message")
    return ToolResult(total, errors)  # the aggregate: its tool_calls are parsed from the chunks


__all__ = ["AgentResult", "Served", "Stopped", "ToolResult", "run_agent", "run_tools"]
