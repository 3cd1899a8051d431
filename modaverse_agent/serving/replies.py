"""What a finished or streaming request sends back: completion bodies and server-sent event streams.

A streamed agent answer sends: a first chunk with the role, the answer text as it decodes, a chunk
with the plan (``delta.modaverse.plan``), one chunk per finished invocation (its file links as content,
``delta.modaverse.invocation``), a last chunk with ``finish_reason`` and every file, error and note
(``delta.modaverse``), the usage when asked for, and ``data: [DONE]``. The 200 waits for the first event
(at most ``ping_s``), so a request refused before it is answered (too long, ...) gets the status and error
body a non-streamed one gets; a failure after the stream began is an ``{"error": ...}`` event (OpenAI clients
raise it) before ``[DONE]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
from langchain_core.messages import AIMessage, AIMessageChunk
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from ..errors import RequestError
from ..response import FinalResponse, InvocationDone, PlanReady, ResponseError, TextDelta
from .chunks import Answer, error_body, error_dict, sse, tool_call_entries, usage
from .openai_wire import ChatRequest
from .runs import AgentResult, Served, ToolResult
from .scheduler import END, Job
from .turns import with_media_errors

DONE = "data: [DONE]\n\n"
_PING = object()


class EventStream(StreamingResponse):
    """A streaming response that stops its generator as soon as the client disconnects.

    Starlette only notices a disconnect on its next write under ASGI 2.4; this listens for it all
    along, so a stream waiting on a long generator run is stopped (and its job cancelled) at once.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async with anyio.create_task_group() as group:

            async def stream() -> None:
                with contextlib.suppress(OSError):  # the client went away mid-write
                    await self.stream_response(send)
                group.cancel_scope.cancel()

            group.start_soon(stream)
            await self.listen_for_disconnect(receive)
            group.cancel_scope.cancel()


def _finish(completion_reason: str | None) -> str:
    return "length" if completion_reason == "length" else "stop"


def _answer_failure(response: FinalResponse) -> tuple[int, dict[str, Any]] | None:
    """(status, error body) of an answer the model could not give: 400 for a request the caller must change
    (too long for the model's context, ...), 500 for the model failing; None when it answered."""
    failed = next((e for e in response.errors if e.stage in ("request", "llm")), None)
    if failed is None:
        return None
    if failed.stage == "request":
        message = with_media_errors(failed.message, response.errors)
        return 400, error_body(message, "invalid_request_error", code=failed.code)
    return 500, error_body(failed.message, "server_error", code="model_failed")


def agent_reply(result: AgentResult, served: Served, request_id: str, base_url: str) -> tuple[int, dict[str, Any]]:
    """(status, body) of an agent answer: the text, then a link per file, and the ``modaverse`` field."""
    response = result.response
    failed = _answer_failure(response)
    if failed is not None:
        return failed
    answer = Answer(request_id, served.model_name, served.store, base_url)
    answer.said = bool(response.text)
    content = response.text
    meta = response.meta_response.to_dict() if response.meta_response else None
    for done in result.invocations:
        content += answer.links(answer.register(done.artifacts, meta), done.error)
    message = {"role": "assistant", "content": content, "modaverse": answer.extension(response)}
    reason = result.completion.finish_reason if result.completion else None
    return 200, answer.completion(message, _finish(reason), usage(result.completion))


def _tool_errors(result: ToolResult) -> list[dict[str, Any]]:
    invalid = [
        ResponseError("meta-response", str(c.get("error") or "invalid tool call"))
        for c in result.message.invalid_tool_calls
    ]
    return [error_dict(e) for e in [*result.errors, *invalid]]


def _tool_usage(message: AIMessage) -> dict[str, int] | None:
    u = message.usage_metadata
    if not u:
        return None
    return {
        "prompt_tokens": u["input_tokens"],
        "completion_tokens": u["output_tokens"],
        "total_tokens": u["total_tokens"],
    }


def _tools_finish(called: bool, message: AIMessage) -> str:
    """OpenAI's finish reason: "length" when the budget cut the answer (its calls included, as OpenAI reports a
    tool call cut short), else "tool_calls" when it calls, else "stop"."""
    if message.response_metadata.get("finish_reason") == "length":
        return "length"
    return "tool_calls" if called else "stop"


def _structured(result: ToolResult) -> tuple[str | None, dict[str, Any] | None]:
    """The JSON content of an answer asked with ``response_format`` (its forced call's arguments), or the error
    body when the model gave none."""
    calls = result.message.tool_calls
    if calls:
        return json.dumps(calls[0]["args"], ensure_ascii=False), None
    why = "; ".join(e["message"] for e in _tool_errors(result)) or "no answer"
    return None, error_body(f"the model's answer did not follow the response_format: {why}"[:500], "server_error")


def tools_reply(
    result: ToolResult, served: Served, request_id: str, base_url: str, *, structured: bool = False
) -> tuple[int, dict[str, Any]]:
    """(status, body) of a plain LLM answer: text and OpenAI ``tool_calls`` (``structured``: the JSON asked
    for by ``response_format`` as the content)."""
    answer = Answer(request_id, served.model_name, served.store, base_url)
    msg = result.message
    if structured:
        content, failed = _structured(result)
        if failed is not None:
            return 500, failed
        message = {"role": "assistant", "content": content, "modaverse": {"errors": [], "media": []}}
        return 200, answer.completion(message, _tools_finish(False, msg), _tool_usage(msg))
    calls = tool_call_entries(msg.tool_calls, stream=False)
    text = msg.content if isinstance(msg.content, str) else msg.text
    message: dict[str, Any] = {"role": "assistant", "content": text if (text or not calls) else None}
    if calls:
        message["tool_calls"] = calls
    message["modaverse"] = {"errors": _tool_errors(result), "media": msg.response_metadata.get("media", [])}
    finish = _tools_finish(bool(calls), msg)
    return 200, answer.completion(message, finish, _tool_usage(msg))


async def first_event(job: Job, wait_s: float) -> Any:
    """The job's first event, held back before a stream's 200 so a request refused before it is answered gets
    its status code: the event, ``END`` when the job ended without one, a ping marker when ``wait_s`` passed."""
    assert job.events is not None
    try:
        return await asyncio.wait_for(job.events.get(), wait_s)
    except TimeoutError:
        return _PING


def refusal(job: Job) -> tuple[int, dict[str, Any]] | None:
    """(status, error body) of a finished job whose request was refused (400) or failed (500) before any event;
    None when it answered or has not finished."""
    if not job.future.done() or job.future.cancelled():
        return None
    return _failure(job)


async def _items(job: Job, ping_s: float, first: Any = None) -> AsyncIterator[Any]:
    """The job's events until it ends, ``first`` (what :func:`first_event` took) first; a ping marker whenever
    ``ping_s`` pass without one."""
    assert job.events is not None
    if first is END:
        return
    if first is not None:
        yield first
    while True:
        try:
            item = await asyncio.wait_for(job.events.get(), ping_s)
        except TimeoutError:
            if job.future.cancelled():
                return
            yield _PING
            continue
        if item is END:
            return
        yield item


def _failure(job: Job) -> tuple[int, dict[str, Any]] | None:
    """(status, error body) of a job that did not finish, failed, or gave an agent answer the model could not
    give (None when it answered)."""
    if job.future.cancelled() or not job.future.done():
        return 503, error_body("the request was stopped before it finished; retry", "server_error")
    e = job.future.exception()
    if isinstance(e, RequestError):
        return 400, error_body(str(e), "invalid_request_error", code=e.code)
    if e is not None:
        return 500, error_body(f"the server failed: {type(e).__name__}: {e}"[:500], "server_error")
    result = job.future.result()
    return _answer_failure(result.response) if isinstance(result, AgentResult) else None


async def sse_agent(
    job: Job, chat: ChatRequest, served: Served, request_id: str, base_url: str, ping_s: float, first: Any = None
) -> AsyncIterator[str]:
    """The event stream of an agent answer (``first``: its first event, already taken)."""
    answer = Answer(request_id, served.model_name, served.store, base_url)
    meta = None
    try:
        yield sse(answer.chunk({"role": "assistant", "content": ""}))
        async for item in _items(job, ping_s, first):
            if item is _PING:
                yield ": keep-alive\n\n"
            elif isinstance(item, TextDelta) and item.text:
                answer.said = True
                yield sse(answer.chunk({"content": item.text}))
            elif isinstance(item, PlanReady):
                meta = item.meta_response.to_dict()
                plan = [
                    {"index": n, "task": inv.task, "prompt": inv.prompt}
                    for n, inv in enumerate(item.meta_response.invocations)
                ]
                yield sse(answer.chunk({"modaverse": {"plan": plan}}))
            elif isinstance(item, InvocationDone):
                before = len(answer.files)
                links = answer.links(answer.register(item.artifacts, meta), item.error)
                done = {
                    "index": item.index,
                    "task": item.task,
                    "artifacts": answer.files[before:],
                    "error": error_dict(item.error) if item.error else None,
                }
                yield sse(answer.chunk({"content": links, "modaverse": {"invocation": done}}))
        failure = _failure(job)
        result: AgentResult | None = job.future.result() if failure is None else None
        if failure is not None or result is None:
            yield sse(failure[1] if failure else error_body("no answer", "server_error"))
        else:
            reason = result.completion.finish_reason if result.completion else None
            yield sse(answer.chunk({"modaverse": answer.extension(result.response)}, _finish(reason)))
            if chat.include_usage and (u := usage(result.completion)) is not None:
                yield sse(answer.usage_chunk(u))
        yield DONE
    finally:
        job.cancel()  # a client that went away stops its request; a finished one is not affected


async def sse_tools(
    job: Job, chat: ChatRequest, served: Served, request_id: str, base_url: str, ping_s: float, first: Any = None
) -> AsyncIterator[str]:
    """The event stream of a plain LLM answer (text deltas, then the tool calls; ``first``: its first event)."""
    answer = Answer(request_id, served.model_name, served.store, base_url)
    try:
        yield sse(answer.chunk({"role": "assistant", "content": ""}))
        async for item in _items(job, ping_s, first):
            if item is _PING:
                yield ": keep-alive\n\n"
            elif isinstance(item, AIMessageChunk) and isinstance(item.content, str) and item.content:
                yield sse(answer.chunk({"content": item.content}))
        failure = _failure(job)
        if failure is not None:
            yield sse(failure[1])
        else:
            result: ToolResult = job.future.result()
            calls = tool_call_entries(result.message.tool_calls, stream=True)
            if chat.structured:
                content, failed = _structured(result)
                if failed is not None:
                    yield sse(failed)
                    yield DONE
                    return
                yield sse(answer.chunk({"content": content}))
                calls = []
            if calls:
                yield sse(answer.chunk({"tool_calls": calls}))
            finish = _tools_finish(bool(calls), result.message)
            yield sse(answer.chunk({"modaverse": {"errors": _tool_errors(result)}}, finish))
            if chat.include_usage and (u := _tool_usage(result.message)) is not None:
                yield sse(answer.usage_chunk(u))
        yield DONE
    finally:
        job.cancel()


__all__ = ["EventStream", "agent_reply", "first_event", "refusal", "sse_agent", "sse_tools", "tools_reply"]
