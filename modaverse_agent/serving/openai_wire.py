"""The OpenAI chat-completions request, read and checked: a body in, a :class:`ChatRequest` out.

Everything wrong with the shape of a request is a :class:`WireError` naming the JSON path that failed
(``messages[1].content[0].image_url.url``), answered 400 before any work starts; so is input no engine could
take (a lone UTF-16 surrogate anywhere, a ``seed`` beyond 64 bits, a tool ``parameters`` that is no valid JSON
Schema). Media bytes are only decoded here (data URLs, base64); whether they are a real picture, sound or video
is checked later, per part, so one bad attachment never loses the rest of the answer.

Content parts: ``text``, ``image_url`` and ``video_url`` (``data:`` URLs; local paths and ``file://``
only with ``allow_local_files``; a URL of a file this server made, ``.../v1/files/<id>/content``),
``input_audio`` (base64 ``data`` + ``format``) and ``file`` (``file_data`` data URL or ``file_id``).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ..errors import MediaError
from ..llm_io import GenerationParams
from ..media_item import MAX_FILE_BYTES
from ..media_source import read_source
from .files import FILE_URL

ROLES = ("system", "developer", "user", "assistant", "tool")
MAX_STOP = 4
_REMOTE = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")
_TOOL_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
#: A UTF-16 surrogate: in a decoded JSON string only a lone one is left (a pair became one character).
_SURROGATE = re.compile("[\ud800-\udfff]")
#: ``seed`` as OpenAI takes it (a signed 64-bit integer); the engines seed torch, which takes this range too.
SEED_RANGE = (-(2**63), 2**63 - 1)


class WireError(Exception):
    """A request the server refuses: HTTP ``status``, an OpenAI error ``type``/``code``, the failing ``param``."""

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        status: int = 400,
        code: str | None = None,
        kind: str = "invalid_request_error",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(f"{param}: {message}" if param else message)
        self.message, self.param, self.status, self.code, self.kind = message, param, status, code, kind
        self.headers = dict(headers or {})


@dataclass
class MediaRef:
    """One attached medium: decoded bytes, a local path (flag-gated), or the id of a file this server made."""

    kind: Literal["bytes", "path", "file"]
    value: bytes | str
    param: str  # where it was in the request, for error messages


@dataclass
class WireMessage:
    """One message: its role, text (text parts joined by newlines), media, and tool-call fields."""

    role: str
    text: str
    media: list[MediaRef] = field(default_factory=list)
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    tool_call_id: str | None = None
    name: str | None = None


@dataclass
class ChatRequest:
    """A checked chat-completions request."""

    messages: list[WireMessage]
    model: str | None = None
    stream: bool = False
    include_usage: bool = False
    params: GenerationParams = field(default_factory=GenerationParams)
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    #: ``response_format`` asked for JSON: answered as a forced call of the one tool in ``tools`` whose
    #: arguments come back as the message content.
    structured: bool = False


def _type_name(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )


def _need(obj: Any, kind: type | tuple[type, ...], path: str, what: str) -> Any:
    """``obj`` when it is of ``kind`` (a bool is no number), else a WireError at ``path``."""
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(obj, kinds) or (isinstance(obj, bool) and bool not in kinds):
        raise WireError(f"must be {what}, got {_type_name(obj)}", param=path)
    return obj


def _number(data: Mapping[str, Any], key: str, lo: float, hi: float, *, open_lo: bool = False) -> float | None:
    value = data.get(key)
    if value is None:
        return None
    _need(value, (int, float), key, "a number")
    if value < lo or value > hi or (open_lo and value == lo):
        bound = f"above {lo}" if open_lo else f"at least {lo}"
        raise WireError(f"must be {bound} and at most {hi}, got {value}", param=key)
    return float(value)


def _integer(data: Mapping[str, Any], key: str, lo: int, hi: int | None = None) -> int | None:
    value = data.get(key)
    if value is None:
        return None
    _need(value, int, key, "an integer")
    if value < lo or (hi is not None and value > hi):
        bound = f"at least {lo}" if hi is None else f"at least {lo} and at most {hi}"
        raise WireError(f"must be {bound}, got {value}", param=key)
    return int(value)


def _refuse_surrogates(data: Any) -> None:
    """A WireError at the first string (or key) holding a lone UTF-16 surrogate (``"\\ud800"``): it is no
    Unicode character and no tokenizer takes it; refused rather than replaced, so the model never reads other
    text than was sent."""
    stack: list[tuple[Any, str]] = [(data, "$")]
    while stack:
        value, path = stack.pop()
        if isinstance(value, dict):
            items = []
            for key, item in value.items():
                where = _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", key)
                where = where if path == "$" else f"{path}.{where}"
                if _SURROGATE.search(key):
                    raise _surrogate(key, f"{where} (the key)")
                items.append((item, where))
            stack.extend(reversed(items))
        elif isinstance(value, list):
            stack.extend((item, f"{path}[{n}]") for n, item in reversed(list(enumerate(value))))
        elif isinstance(value, str) and _SURROGATE.search(value):
            raise _surrogate(value, path)


def _surrogate(text: str, path: str) -> WireError:
    found = _SURROGATE.search(text)
    assert found is not None
    return WireError(
        f"holds a lone UTF-16 surrogate (\\u{ord(found.group()):04x}), which is not valid Unicode; send valid text "
        "(a character outside the BMP as a surrogate pair, or as UTF-8)",
        param=path,
        code="invalid_value",
    )


def _b64(data: str, path: str) -> bytes:
    try:
        return base64.b64decode("".join(data.split()), validate=True)
    except (binascii.Error, ValueError) as e:
        raise WireError(f"is not valid base64 ({e})", param=path) from e


def media_url(url: Any, path: str, *, allow_local_files: bool) -> MediaRef:
    """A media URL of a content part: a data URL, a file this server made, or a local path (flag-gated)."""
    _need(url, str, path, "a string")
    if url.startswith("data:"):
        try:
            data, _, _ = read_source(url, MAX_FILE_BYTES)
        except MediaError as e:
            if isinstance(e.__cause__, binascii.Error | ValueError):  # the reader's words are for Python callers
                raise WireError(
                    f"is a data: URL whose payload is not valid base64 ({e.__cause__}); send "
                    "data:<mime type>;base64,<the file's bytes in base64>",
                    param=path,
                ) from e
            raise WireError(str(e), param=path) from e
        return MediaRef("bytes", data, path)
    made = FILE_URL.search(url)
    if made is not None and (url.startswith(("http://", "https://", "/"))):
        return MediaRef("file", made.group("id"), path)
    if url.startswith(("http://", "https://")):
        raise WireError("remote URLs are not fetched by this server; send the file inline as a data: URL", param=path)
    if _REMOTE.match(url) and not url.startswith("file://"):
        raise WireError(f"unsupported URL scheme in {url[:40]!r}; send a data: URL", param=path)
    if not allow_local_files:
        raise WireError(
            "local file paths are refused; send the file as a data: URL, or start the server with --allow-local-files",
            param=path,
        )
    return MediaRef("path", url, path)


def _part(part: Any, path: str, role: str, allow_local_files: bool) -> str | MediaRef:
    """One content part: its text, or the medium it attaches."""
    if isinstance(part, str):
        return part
    _need(part, dict, path, "an object with a `type`")
    kind = part.get("type")
    if kind == "text" or (kind == "refusal" and role == "assistant"):
        key = "text" if kind == "text" else "refusal"
        return _need(part.get(key), str, f"{path}.{key}", "a string")
    if role != "user":
        raise WireError(f"a {role} message takes text parts only, got {kind!r}", param=f"{path}.type")
    if kind in ("image_url", "video_url"):
        ref = part.get(kind)
        url = ref.get("url") if isinstance(ref, dict) else ref
        where = f"{path}.{kind}.url" if isinstance(ref, dict) else f"{path}.{kind}"
        return media_url(url, where, allow_local_files=allow_local_files)
    if kind == "input_audio":
        audio = _need(part.get("input_audio"), dict, f"{path}.input_audio", "an object with `data` and `format`")
        data = _need(audio.get("data"), str, f"{path}.input_audio.data", "a base64 string")
        _need(audio.get("format"), str, f"{path}.input_audio.format", 'a string such as "wav" or "mp3"')
        return MediaRef("bytes", _b64(data, f"{path}.input_audio.data"), f"{path}.input_audio")
    if kind == "file":
        spec = _need(part.get("file"), dict, f"{path}.file", "an object with `file_data` or `file_id`")
        if isinstance(spec.get("file_id"), str):
            return MediaRef("file", spec["file_id"], f"{path}.file.file_id")
        data = _need(spec.get("file_data"), str, f"{path}.file.file_data", "a data: URL or base64 string")
        if data.startswith("data:"):
            return media_url(data, f"{path}.file.file_data", allow_local_files=False)
        return MediaRef("bytes", _b64(data, f"{path}.file.file_data"), f"{path}.file.file_data")
    shown = kind if isinstance(kind, str) else _type_name(kind)
    raise WireError(
        f"unsupported content part type {shown!r}; use text, image_url, input_audio, video_url or file",
        param=f"{path}.type",
    )


def _tool_calls(value: Any, path: str) -> list[dict[str, Any]]:
    calls = []
    for n, call in enumerate(_need(value, list, path, "an array")):
        where = f"{path}[{n}]"
        _need(call, dict, where, "an object")
        fn = _need(call.get("function"), dict, f"{where}.function", "an object with `name` and `arguments`")
        name = _need(fn.get("name"), str, f"{where}.function.name", "a string")
        raw = fn.get("arguments", "{}")
        _need(raw, str, f"{where}.function.arguments", "a JSON string")
        try:
            args = json.loads(raw) if raw.strip() else {}
        except ValueError as e:
            raise WireError(f"is not JSON ({e})", param=f"{where}.function.arguments") from e
        if not isinstance(args, dict):
            raise WireError("must encode a JSON object", param=f"{where}.function.arguments")
        call_id = call.get("id")
        calls.append({"id": call_id if isinstance(call_id, str) else f"call_{n}", "name": name, "args": args})
    return calls


def _message(msg: Any, path: str, allow_local_files: bool) -> WireMessage:
    _need(msg, dict, path, "an object with `role` and `content`")
    role = msg.get("role")
    if role not in ROLES:
        shown = role if isinstance(role, str) else _type_name(role)
        raise WireError(f"unknown role {shown!r}; use one of {', '.join(ROLES)}", param=f"{path}.role")
    content = msg.get("content")
    texts: list[str] = []
    media: list[MediaRef] = []
    if isinstance(content, list):
        for n, part in enumerate(content):
            got = _part(part, f"{path}.content[{n}]", role, allow_local_files)
            (media if isinstance(got, MediaRef) else texts).append(got)  # type: ignore[arg-type]
    elif isinstance(content, str):
        texts.append(content)
    elif content is not None or role not in ("assistant",):
        raise WireError(
            f"must be a string or an array of content parts, got {_type_name(content)}", param=f"{path}.content"
        )
    out = WireMessage(role, "\n".join(t for t in texts if t), media)
    name = msg.get("name")
    if name is not None:
        out.name = _need(name, str, f"{path}.name", "a string")
    if role == "assistant" and msg.get("tool_calls") is not None:
        out.tool_calls = _tool_calls(msg["tool_calls"], f"{path}.tool_calls")
    if role == "tool":
        out.tool_call_id = _need(msg.get("tool_call_id"), str, f"{path}.tool_call_id", "a string")
    return out


def _tools(data: Mapping[str, Any]) -> tuple[list[dict[str, Any]] | None, str | dict[str, Any] | None]:
    tools = data.get("tools")
    if tools is None:
        if data.get("tool_choice") not in (None, "none", "auto"):
            raise WireError("needs `tools`", param="tool_choice")
        return None, None
    names = []
    for n, tool in enumerate(_need(tools, list, "tools", "an array of tools")):
        _need(tool, dict, f"tools[{n}]", 'an object {"type": "function", "function": {...}}')
        if tool.get("type", "function") != "function":
            raise WireError(f"unsupported tool type {tool.get('type')!r}; use function", param=f"tools[{n}].type")
        fn = _need(tool.get("function"), dict, f"tools[{n}].function", "an object with `name`")
        name = _need(fn.get("name"), str, f"tools[{n}].function.name", "a string")
        if not _TOOL_NAME.match(name):
            raise WireError("must be 1-64 letters, digits, '_', '.' or '-'", param=f"tools[{n}].function.name")
        if fn.get("parameters") is not None:
            path = f"tools[{n}].function.parameters"
            _schema(_need(fn["parameters"], dict, path, "a JSON Schema object"), path)
        names.append(name)
    choice = data.get("tool_choice")
    if choice is None or choice in ("none", "auto", "required"):
        return list(tools), choice
    if isinstance(choice, dict):
        fn = choice.get("function")
        name = fn.get("name") if isinstance(fn, dict) else None
        if name not in names:
            raise WireError(f"names no tool of `tools` (have: {', '.join(names)})", param="tool_choice.function.name")
        return list(tools), {"type": "function", "function": {"name": name}}
    raise WireError(
        'must be "none", "auto", "required" or {"type": "function", "function": {"name": ...}}', param="tool_choice"
    )


def _schema(schema: dict[str, Any], path: str) -> None:
    """A WireError at the first place where a tool's ``parameters`` is no valid JSON Schema (checked against its
    ``$schema``'s metaschema, draft 2020-12 when it names none), before any decoding starts."""
    from jsonschema import Draft202012Validator, SchemaError
    from jsonschema.validators import validator_for

    if "$schema" in schema:
        _need(schema["$schema"], str, f"{path}.$schema", "a string (the metaschema's URI)")
    try:
        validator_for(schema, default=Draft202012Validator).check_schema(schema)
    except SchemaError as e:
        raise WireError(f"is not a valid JSON Schema: {e.message}", param=path + e.json_path[1:]) from e
    except Exception as e:  # the checker faces raw client input: whatever it trips on is the schema's fault
        raise WireError(f"could not be read as a JSON Schema ({type(e).__name__}: {e})", param=path) from e


def _stop(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    _need(value, list, "stop", "a string or an array of strings")
    if len(value) > MAX_STOP:
        raise WireError(f"takes at most {MAX_STOP} strings, got {len(value)}", param="stop")
    return tuple(_need(s, str, f"stop[{n}]", "a string") for n, s in enumerate(value))


def _refuse_unsupported(data: Mapping[str, Any]) -> None:
    n = data.get("n")
    if n is not None and n != 1:
        raise WireError("this server answers one choice per request; set n to 1 or leave it out", param="n")
    if data.get("logprobs") or data.get("top_logprobs"):
        raise WireError("log probabilities are not available from this server; leave logprobs out", param="logprobs")


def _response_format(data: Mapping[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """(name, JSON Schema) the answer must follow, from ``response_format``; None for plain text."""
    fmt = data.get("response_format")
    if fmt is None:
        return None
    _need(fmt, dict, "response_format", 'an object {"type": "text" | "json_object" | "json_schema", ...}')
    kind = fmt.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return "json_object", {"type": "object"}
    if kind != "json_schema":
        raise WireError('must be "text", "json_object" or "json_schema"', param="response_format.type")
    spec = _need(fmt.get("json_schema"), dict, "response_format.json_schema", "an object with `name` and `schema`")
    name = _need(spec.get("name"), str, "response_format.json_schema.name", "a string")
    if not _TOOL_NAME.match(name):
        raise WireError("must be 1-64 letters, digits, '_', '.' or '-'", param="response_format.json_schema.name")
    path = "response_format.json_schema.schema"
    schema = _need(spec.get("schema", {"type": "object"}), dict, path, "a JSON Schema object")
    _schema(schema, path)
    if schema.get("type", "object") != "object":
        raise WireError("must describe a JSON object at its top level (`type`: object) here", param=f"{path}.type")
    return name, schema


def _structured_tools(data: Mapping[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any]] | None:
    """``response_format`` as one tool and a tool choice forcing it (None for plain text)."""
    asked = _response_format(data)
    if asked is None:
        return None
    if data.get("tools") is not None:
        raise WireError("can't be combined with `tools` on this server; send one of them", param="response_format")
    name, schema = asked
    tool = {"type": "function", "function": {"name": name, "description": "the answer", "parameters": schema}}
    return [tool], {"type": "function", "function": {"name": name}}


def parse_chat_request(body: bytes, *, allow_local_files: bool = False) -> ChatRequest:
    """Read and check a chat-completions body (WireError with the failing JSON path when it is malformed)."""

    def refuse_constant(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    try:
        data = json.loads(body, parse_constant=refuse_constant)
    except RecursionError as e:
        raise WireError("the body is nested too deeply", param="$") from e
    except ValueError as e:  # includes UnicodeDecodeError
        raise WireError(f"the body is not valid JSON ({e}); send a JSON object", param="$") from e
    _need(data, dict, "$", "a JSON object")
    _refuse_surrogates(data)
    model = data.get("model")
    if model is not None:
        _need(model, str, "model", "a string")
    messages = _need(data.get("messages"), list, "messages", "an array of messages")
    if not messages:
        raise WireError("must hold at least one message", param="messages")
    parsed = [_message(m, f"messages[{n}]", allow_local_files) for n, m in enumerate(messages)]
    _refuse_unsupported(data)
    stream = data.get("stream", False)
    _need(stream, bool, "stream", "true or false")
    options = data.get("stream_options")
    include_usage = False
    if options is not None:
        if not stream:
            raise WireError("is only allowed when `stream` is true", param="stream_options")
        _need(options, dict, "stream_options", "an object")
        include_usage = bool(
            _need(options.get("include_usage", False), bool, "stream_options.include_usage", "true or false")
        )
    tokens = _integer(data, "max_completion_tokens", 1) or _integer(data, "max_tokens", 1)
    seed = _integer(data, "seed", *SEED_RANGE)
    params = GenerationParams(
        max_new_tokens=tokens,
        temperature=_number(data, "temperature", 0, 2),
        top_p=_number(data, "top_p", 0, 1, open_lo=True),
        stop=_stop(data.get("stop")),
        seed=seed,
    )
    structured = _structured_tools(data)
    tools, choice = structured if structured is not None else _tools(data)
    if tools is None and not any(m.role == "user" for m in parsed):
        raise WireError("needs a user message to answer", param="messages")
    return ChatRequest(parsed, model, stream, include_usage, params, tools, choice, structured=structured is not None)


__all__ = ["ChatRequest", "MediaRef", "WireError", "WireMessage", "media_url", "parse_chat_request"]
