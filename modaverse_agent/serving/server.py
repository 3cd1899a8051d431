"""``create_app``: an OpenAI-compatible HTTP server (FastAPI) over one :class:`ModaVerseAgent`.

Routes: ``GET /health``, ``GET /v1/models``, ``POST /v1/chat/completions`` (``stream`` as server-sent
events in OpenAI's chunk format, ending with ``data: [DONE]``), ``GET /v1/files``, ``GET /v1/files/{id}``,
``GET /v1/files/{id}/content`` and ``DELETE /v1/files/{id}`` (the files answers made; their ids are
unguessable, so the content URL works without the API key and a markdown link opens in a browser).

One model is served: a request's ``model`` is not checked (its answer names the served model). By
default a request is answered by the agent: its invocations run and the files come back as URLs
(see :mod:`.chunks`). A request with ``tools`` is answered like a plain LLM: OpenAI ``tool_calls``, nothing
run. Every request gets an id (``x-request-id``, echoed, and the completion id); an API key (Bearer)
is checked when one is set; CORS is off unless origins are given. Under load: a bounded queue (429 with
``Retry-After`` when full, see :mod:`.scheduler`), bodies over ``max_body_bytes`` 413, malformed bodies 400
with the JSON path that failed, a client that disconnects stops its request at the next step (the decode
in progress too, where the model can stop one: see :mod:`.batching`). An unexpected failure is a 500 with an
OpenAI error body, and the connection stays open.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..agent import ModaVerseAgent
from ..errors import RequestError
from ..llm_io import BatchResponder
from .batching import MicroBatcher
from .chunks import error_body
from .files import PURPOSE, FileStore, StoredFile, file_url
from .openai_wire import WireError, parse_chat_request
from .replies import EventStream, agent_reply, first_event, refusal, sse_agent, sse_tools, tools_reply
from .runs import Served, run_agent, run_tools
from .scheduler import END, QueueFull, Scheduler

logger = logging.getLogger(__name__)
DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024
#: A client's request id is kept when it is this tame (it names the request's output folder).
_REQUEST_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,63}$")
#: Bodies larger than this are parsed on a worker thread, not on the event loop.
_PARSE_INLINE_BYTES = 256 * 1024
#: The most files one ``GET /v1/files`` lists (OpenAI's limit; its default too).
_LIST_LIMIT = 10_000
AgentSource = ModaVerseAgent | Callable[[], ModaVerseAgent]


@dataclass
class ServeOptions:
    """How the server serves (every field has a ``modaverse serve`` option)."""

    model_name: str = "modaverse"
    api_key: str | None = None
    cors_origins: tuple[str, ...] = ()
    workers: int = 8
    max_queue: int = 64
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    allow_local_files: bool = False
    max_batch: int = 8
    batch_window_s: float = 0.002
    public_url: str | None = None
    output_dir: str | Path | None = None  # None: the agent's output_dir
    ping_s: float = 15.0  # an SSE comment this often while a stream waits (keeps proxies from timing out)


class _Service:
    """The served agent (loaded in the background when given as a factory), its queue and its files."""

    def __init__(self, source: AgentSource, options: ServeOptions) -> None:
        self.options = options
        self.scheduler = Scheduler(workers=options.workers, max_queue=options.max_queue)
        self.served: Served | None = None
        self.status, self.error = "loading", None
        self.started = int(time.time())  # the models' ``created``
        self._source = source
        if isinstance(source, ModaVerseAgent):
            self._serve(source)

    def load(self) -> None:
        """Call the factory (on a background thread); a failure is reported by /health and every request."""
        try:
            self._serve(self._source())  # type: ignore[operator]
        except Exception as e:
            logger.exception("the agent could not be loaded")
            self.status, self.error = "error", f"{type(e).__name__}: {e}"

    def _serve(self, agent: ModaVerseAgent) -> None:
        o = self.options
        batcher = None
        if o.max_batch > 1 and isinstance(agent.llm, BatchResponder):
            batcher = MicroBatcher(agent.llm, max_batch=o.max_batch, window_s=o.batch_window_s)
        root = Path(o.output_dir if o.output_dir is not None else agent.output_dir).expanduser().resolve()
        self.served = Served(agent, batcher, FileStore(root), o.model_name, root)
        self.status = "ok"

    def ready(self) -> Served:
        """The served agent, or a 503 saying why there is none yet."""
        if self.served is not None:
            return self.served
        if self.status == "error":
            raise WireError(
                f"the model failed to load ({self.error}); fix it and restart", status=503, kind="server_error"
            )
        raise WireError(
            "the model is still loading; retry shortly", status=503, kind="server_error", headers={"Retry-After": "5"}
        )

    def close(self) -> None:
        self.scheduler.shutdown()
        if self.served is not None and self.served.batcher is not None:
            self.served.batcher.close()


class RequestIdMiddleware:
    """Gives every HTTP request an id (the client's ``x-request-id`` when sane) and echoes it in the reply; an
    unexpected exception becomes a 500 with an OpenAI error body, the traceback logged.

    Starlette's handler for ``Exception`` sends its response and then re-raises, and uvicorn then closes the
    connection, so a client's next request on the same pooled connection failed; this answers and returns.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")
        rid = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid

        sent = {"started": False, "ended": False}

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                sent["started"] = True
                message = {**message, "headers": [*message.get("headers", []), (b"x-request-id", rid.encode())]}
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                sent["ended"] = True
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as e:
            if sent["started"] and not sent["ended"]:
                raise  # a response cut short: only closing the connection tells the client (uvicorn logs it)
            logger.error("request %s failed", rid, exc_info=e)
            if not sent["started"]:
                body = error_body(f"the server failed: {type(e).__name__}: {e}"[:500], "server_error")
                await JSONResponse(body, 500)(scope, receive, send_with_id)


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 past ``limit`` bytes (before reading it when Content-Length says so)."""
    too_big = WireError(
        f"the body is larger than {limit} bytes; send smaller media or start the server with a larger --max-body-bytes",
        status=413,
        code="request_too_large",
    )
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_big
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_big
        chunks.append(chunk)
    return b"".join(chunks)


async def _client_gone(request: Request) -> None:
    """Returns when the client disconnects (call it once the body has been read)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _wait(job: Any, request: Request) -> Any:
    """The job's result; cancels the job when the client disconnects first (None then)."""
    result = asyncio.wrap_future(job.future)
    gone = asyncio.ensure_future(_client_gone(request))
    try:
        await asyncio.wait({result, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
    if not result.done():
        job.cancel()
        result.cancel()
        return None
    if result.cancelled():
        raise WireError("the server stopped before answering; retry", status=503, kind="server_error")
    return result.result()


def create_app(agent: AgentSource, options: ServeOptions | None = None, **overrides: Any) -> FastAPI:
    """The server's ASGI app over ``agent`` (or a zero-argument factory, loaded in the background at
    startup while /health says "loading"). ``overrides`` set fields of :class:`ServeOptions`."""
    known = {f.name for f in fields(ServeOptions)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise TypeError(f"unknown server option(s) {unknown}; see ServeOptions")
    opts = ServeOptions(**{**(options.__dict__ if options else {}), **overrides})
    service = _Service(agent, opts)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        if service.served is None and service.status == "loading":
            threading.Thread(target=service.load, name="modaverse-load", daemon=True).start()
        yield
        service.close()

    app = FastAPI(title="ModaVerse", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.service = service
    app.add_middleware(RequestIdMiddleware)
    if opts.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(opts.cors_origins),
            allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
            allow_headers=["authorization", "content-type", "x-request-id"],
            expose_headers=["x-request-id", "retry-after"],
        )

    def check_key(request: Request) -> None:
        if opts.api_key is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), opts.api_key.encode()):
            raise WireError(
                "missing or wrong API key; send it as `Authorization: Bearer <key>`",
                status=401,
                code="invalid_api_key",
                headers={"WWW-Authenticate": "Bearer"},
            )

    @app.exception_handler(WireError)
    async def wire_error(request: Request, e: WireError) -> JSONResponse:
        return JSONResponse(error_body(str(e), e.kind, e.param, e.code), e.status, headers=e.headers)

    @app.exception_handler(RequestError)
    async def request_error(request: Request, e: RequestError) -> JSONResponse:
        return JSONResponse(error_body(str(e), "invalid_request_error", code=e.code), 400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
        kind = "not_found_error" if e.status_code == 404 else "invalid_request_error"
        return JSONResponse(error_body(str(e.detail), kind), e.status_code, headers=e.headers)

    @app.get("/health")
    async def health() -> JSONResponse:
        body = {"status": service.status, "model": opts.model_name, **service.scheduler.load(), "error": service.error}
        batcher = service.served.batcher if service.served is not None else None
        body["batches"] = {str(k): v for k, v in sorted(batcher.sizes.items())} if batcher is not None else None
        return JSONResponse(body, 200 if service.status == "ok" else 503)

    @app.get("/v1/models", dependencies=[Depends(check_key)])
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [_model_card(opts.model_name, service.started)]}

    @app.get("/v1/models/{model_id:path}", dependencies=[Depends(check_key)])
    async def model(model_id: str) -> dict[str, Any]:
        if model_id != opts.model_name:
            raise WireError(
                f"model {model_id!r} is not served here (serving {opts.model_name!r})",
                status=404,
                code="model_not_found",
            )
        return _model_card(opts.model_name, service.started)

    def no_file(file_id: str) -> WireError:
        return WireError(
            f"no file {file_id!r} on this server", status=404, code="file_not_found", kind="not_found_error"
        )

    def stored(file_id: str) -> Any:
        record = service.ready().store.get(file_id)
        if record is None:
            raise no_file(file_id)
        return record

    @app.get("/v1/files", dependencies=[Depends(check_key)])
    async def file_list(request: Request) -> dict[str, Any]:
        found, more = await asyncio.to_thread(_list_files, service.ready().store, request.query_params)
        base = opts.public_url or str(request.base_url)
        data = [record.describe(file_url(base, record.id)) for record in found]
        first, last = (data[0]["id"], data[-1]["id"]) if data else (None, None)
        return {"object": "list", "data": data, "first_id": first, "last_id": last, "has_more": more}

    @app.get("/v1/files/{file_id}", dependencies=[Depends(check_key)])
    async def file_info(file_id: str, request: Request) -> dict[str, Any]:
        return stored(file_id).describe(file_url(opts.public_url or str(request.base_url), file_id))

    @app.delete("/v1/files/{file_id}", dependencies=[Depends(check_key)])
    async def file_delete(file_id: str) -> dict[str, Any]:
        if not service.ready().store.delete(stored(file_id).id):  # deleted by another request meanwhile
            raise no_file(file_id)
        return {"id": file_id, "object": "file", "deleted": True}

    @app.get("/v1/files/{file_id}/content")
    async def file_content(file_id: str) -> Response:
        record = stored(file_id)
        return FileResponse(record.path, media_type=record.mime_type, filename=record.path.name)

    @app.post("/v1/chat/completions", dependencies=[Depends(check_key)])
    async def chat_completions(request: Request) -> Response:
        body = await _read_body(request, opts.max_body_bytes)
        if len(body) > _PARSE_INLINE_BYTES:  # decoding megabytes of base64 media must not stall other requests
            chat = await asyncio.to_thread(parse_chat_request, body, allow_local_files=opts.allow_local_files)
        else:
            chat = parse_chat_request(body, allow_local_files=opts.allow_local_files)
        served = service.ready()
        rid = request.state.request_id
        base = opts.public_url or str(request.base_url)
        tools = chat.tools is not None
        work = (lambda job: run_tools(served, chat, job)) if tools else (lambda job: run_agent(served, chat, rid, job))
        try:
            job = service.scheduler.submit(work, loop=asyncio.get_running_loop() if chat.stream else None)
        except QueueFull as e:
            raise WireError(
                str(e),
                status=429,
                code="rate_limit_exceeded",
                kind="rate_limit_error",
                headers={"Retry-After": str(e.retry_after)},
            ) from e
        if chat.stream:
            # held until the first event (or ping_s): a request refused before it is answered gets its status
            first = await first_event(job, opts.ping_s)
            if first is END and (refused := refusal(job)) is not None:
                return JSONResponse(refused[1], refused[0])
            events = (sse_tools if tools else sse_agent)(job, chat, served, rid, base, opts.ping_s, first)
            return EventStream(
                events, media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
            )
        result = await _wait(job, request)
        if result is None:
            return JSONResponse(error_body("the client disconnected", "invalid_request_error"), 499)
        if tools:
            status, payload = tools_reply(result, served, rid, base, structured=chat.structured)
        else:
            status, payload = agent_reply(result, served, rid, base)
        return JSONResponse(payload, status)

    return app


def _list_files(store: FileStore, query: Mapping[str, str]) -> tuple[list[StoredFile], bool]:
    """The stored files ``GET /v1/files`` asks for (OpenAI's ``purpose``, ``order``, ``limit`` and ``after``),
    newest first by default, and whether more follow."""
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise WireError(f'must be "asc" or "desc", got {order[:20]!r}', param="order")
    limit = query.get("limit", str(_LIST_LIMIT))
    if not (re.fullmatch("[0-9]{1,6}", limit) and 1 <= int(limit) <= _LIST_LIMIT):
        raise WireError(f"must be an integer from 1 to {_LIST_LIMIT}, got {limit[:20]!r}", param="limit")
    records = store.records()
    if order == "desc":
        records.reverse()
    after = query.get("after")
    if after is not None:
        at = next((n for n, r in enumerate(records) if r.id == after), None)
        if at is None:
            raise WireError(f"names no file on this server ({after[:60]!r})", param="after")
        records = records[at + 1 :]
    if query.get("purpose", PURPOSE) != PURPOSE:
        return [], False
    found: list[StoredFile] = []
    for record in records:
        if record.path.is_file():  # one removed from disk since is left out, as files.retrieve does
            found.append(record)
            if len(found) > int(limit):
                return found[:-1], True
    return found, False


def _model_card(name: str, created: int) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": created, "owned_by": "modaverse"}


__all__ = ["DEFAULT_MAX_BODY_BYTES", "ServeOptions", "create_app"]
