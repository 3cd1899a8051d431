"""``ChatModaVerse``: the ModaVerse LLM as a LangChain chat model.

Content blocks in (text, image/audio/video/file in LangChain v1 or v0 form, OpenAI ``image_url``),
an ``AIMessage`` out whose ``content`` is the meta-response's text and whose ``tool_calls`` are its
invocations (name = task, args = prompt/inputs/args). Output that fails validation lands in
``invalid_tool_calls`` with the raw text and the error. After tool results (``ToolMessage``) the
model is asked for text only, so an agent loop ends.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.messages.tool import invalid_tool_call, tool_call
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import ConfigDict, Field, model_validator

from .agent import assign_media_ids, parse_output
from .answer_stream import AnswerTextReader, StopHoldBack, cut_at_stop
from .chat_content import content_to_parts
from .llm_io import (
    ChatTurn,
    Completion,
    GenerationParams,
    LLMRequest,
    StreamingResponder,
    TokenCounter,
    as_text_stream,
    complete,
    output_format,
    trained_tasks,
)
from .media import MediaItem
from .meta_response import EMPTY_ARGS, MetaResponse, TaskSpec, build_schema
from .unoffered import narrow_meta, unserved
from .zoo import Zoo


def _tool_spec(tool: Any, zoo: Zoo | None) -> TaskSpec:
    """A TaskSpec for a bound tool: a zoo task keeps its generator's spec; anything else is a function."""
    name = getattr(tool, "name", None) if not isinstance(tool, dict) else tool.get("name")
    if zoo is not None and isinstance(name, str) and name in zoo.tasks():
        return zoo.task_specs([name])[0]
    fn = convert_to_openai_tool(tool)["function"]
    params = dict(fn.get("parameters") or EMPTY_ARGS)
    params.setdefault("type", "object")
    return TaskSpec(fn["name"], (fn.get("description") or fn["name"]).splitlines()[0], "text", params, kind="function")


def _invocation_args(spec: TaskSpec | None, inv: Any) -> dict[str, Any]:
    """Tool-call arguments shaped like the tool's schema (``inputs`` only for tasks that take media)."""
    if spec is not None and spec.kind == "function":
        return dict(inv.args)
    args: dict[str, Any] = {"prompt": inv.prompt, "args": dict(inv.args)}
    if inv.inputs or spec is None or spec.input_modalities:
        args["inputs"] = list(inv.inputs)
    return args


@dataclass
class _Asked:
    """A request and, when the model is asked with the zoo's whole list, the tasks actually offered."""

    request: LLMRequest
    offered: list[str] | None = None
    forced: bool = False
    """A call was forced (``tool_choice`` any/required/a name): the answer is the calls alone, no text."""


def _assistant_text(message: AIMessage) -> str:
    """An earlier AI turn rendered back as the meta-response it stood for."""
    invocations = []
    for call in message.tool_calls:
        args = dict(call["args"])
        if "prompt" in args:
            invocations.append({"task": call["name"], **args})
        else:
            invocations.append({"task": call["name"], "args": args})
    text = message.content if isinstance(message.content, str) else message.text
    return json.dumps({"text": text, "invocations": invocations}, ensure_ascii=False)


class ChatModaVerse(BaseChatModel):
    """ModaVerse as a LangChain chat model.

    ``backend`` is anything with ``respond(LLMRequest) -> str`` (a ModaVerseModel, or a scripted fake);
    if it also has ``complete(request) -> Completion`` usage is reported, and ``stream(request)``
    yields text pieces for ``_stream``.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    model: str | None = None
    """Which model to load when no ``backend`` is given: a ModaVerse directory, or ``"default"`` for the
    built-in default model (``engine`` picks who runs it). The chat model serialises by this reference."""
    engine: str = "auto"
    """The engine that runs ``model``: "auto", "torch" or "llama.cpp"."""
    backend: Any = Field(default=None, exclude=True)
    """The LLM: a ModaVerseModel or any object with ``respond(LLMRequest) -> str`` (None: load ``model``)."""
    zoo: Zoo | None = Field(default=None, exclude=True)
    """The zoo whose tasks the model may invoke (None: the installed plugins' zoo)."""
    model_name: str | None = None
    """Reported in ``response_metadata`` (None: ``model``, else "modaverse")."""
    temperature: float | None = None
    """Sampling temperature; 0 or None decodes greedily."""
    top_p: float | None = None
    """Nucleus sampling mass."""
    max_tokens: int | None = None
    """Most new tokens per reply."""
    stop: list[str] | None = None
    """Strings that end generation."""
    seed: int | None = None
    """Sampling seed."""
    fetcher: Callable[[str], bytes] | None = Field(default=None, exclude=True)
    """Downloads http(s) media URLs; None refuses them."""
    resolver: Callable[[str], Any] | None = Field(default=None, exclude=True)
    """Maps a content block's ``file_id`` to a path or bytes."""
    bound_tools: list[TaskSpec] | None = Field(default=None, exclude=True)
    """Tools restricting the schema (set by ``bind_tools``)."""
    tool_choice: str | None = None
    """"any"/"required" forces a call; a tool name forces that tool; None lets the model decide."""
    route_with_zoo: bool | None = None
    """When the tools offered are fewer than the zoo's tasks (``bind_tools([])``, ``tool_choice="none"``, a
    subset of ``zoo_tools``) and none is forced: ask the model with the zoo's whole task list (and any other
    task it was trained on), then answer in text for a task not offered ("I can't make pictures here: ...";
    ``response_metadata["unoffered"]`` names them). A model trained on the whole list only writes "Here's
    the image." first and then picks another task or none when it sees fewer. None: on for a model that
    records the tasks it was trained on (``trained_tasks``: the built-in default model, ``modaverse train``)."""

    @model_validator(mode="after")
    def _needs_a_model(self) -> ChatModaVerse:
        if self.backend is None and not self.model:
            raise ValueError("give `model` (a ModaVerse directory, or 'default' for the built-in model) or `backend`")
        if self.model_name is None:
            self.model_name = self.model or "modaverse"
        return self

    @classmethod
    def is_lc_serializable(cls) -> bool:
        """Serialisable by reference (``model``, ``engine`` and the settings; never the loaded weights)."""
        return True

    @classmethod
    def get_lc_namespace(cls) -> list[str]:
        """``["modaverse_agent", "chat_model"]``: pass ``valid_namespaces=["modaverse_agent"]`` to ``loads``."""
        return ["modaverse_agent", "chat_model"]

    def _backend(self) -> Any:
        """The LLM, loaded from ``model`` on first use when no ``backend`` was given."""
        if self.backend is None:
            with _LOADING:
                if self.backend is None:
                    self.backend = _load_backend(str(self.model), self.engine)
        return self.backend

    @property
    def _llm_type(self) -> str:
        return "modaverse"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self.model_name, "temperature": self.temperature, "max_tokens": self.max_tokens}

    def get_num_tokens(self, text: str) -> int:
        """Tokens of ``text`` in the model's own tokenizer (LangChain's GPT-2 estimate for a backend without one)."""
        backend = self._backend()
        if isinstance(backend, TokenCounter):
            return backend.count_tokens(text)
        return super().get_num_tokens(text)

    def _zoo(self) -> Zoo:
        if self.zoo is None:
            self.zoo = Zoo.from_plugins()
        return self.zoo

    def _specs(self) -> list[TaskSpec]:
        return list(self.bound_tools) if self.bound_tools is not None else self._zoo().task_specs()

    # -- messages -> request -----------------------------------------------------------------------
    def _whole_list(self) -> list[TaskSpec]:
        """The list to ask the model with when fewer tasks are offered: the zoo's tasks and any other it was
        trained on ([] when ``route_with_zoo`` is off)."""
        trained = trained_tasks(self._backend())
        if not (self.route_with_zoo if self.route_with_zoo is not None else bool(trained)):
            return []
        whole = self._zoo().task_specs()
        return whole + unserved(trained, whole)

    def _request(self, messages: Sequence[BaseMessage], stop: list[str] | None, **kwargs: Any) -> _Asked:
        system, history, media = [], [], []
        instruction = ""
        last_human = max((i for i, m in enumerate(messages) if isinstance(m, HumanMessage)), default=-1)
        for i, m in enumerate(messages):
            if isinstance(m, SystemMessage):
                system.append(m.text)
                continue
            if isinstance(m, HumanMessage):
                text, items = content_to_parts(m.content, fetcher=self.fetcher, resolver=self.resolver)
                media.extend(items)
                if i == last_human:
                    instruction = text
                    continue
                history.append(ChatTurn("user", text))
            elif isinstance(m, AIMessage):
                history.append(ChatTurn("assistant", _assistant_text(m)))
            elif isinstance(m, ToolMessage):
                history.append(ChatTurn("tool", f"[{m.name or m.tool_call_id}] {m.text}"))
            else:
                history.append(ChatTurn(m.type, m.text))
        answered = last_human >= 0 and any(isinstance(m, ToolMessage) for m in messages[last_human:])
        named = assign_media_ids(media)
        specs = self._specs()
        choice = kwargs.get("tool_choice", self.tool_choice)
        _check_tool_choice(choice, specs)
        if answered:  # tool results are in: answer in text, call nothing more
            specs, minimum = [], 0
        elif choice in ("any", "required"):
            minimum = 1
        elif isinstance(choice, str) and choice not in ("auto", "none"):
            specs, minimum = [s for s in specs if s.task == choice], 1
        else:
            minimum = 0
        if choice == "none":
            specs = []
        offered = None
        whole = self._whole_list() if not answered and not minimum else []
        if {s.task for s in specs} < {s.task for s in whole}:
            offered, specs = [s.task for s in specs], whole
        schema = build_schema(specs, media_ids=[i for i, _ in named], min_invocations=minimum, text=not minimum)
        params = GenerationParams(
            max_new_tokens=kwargs.get("max_tokens", self.max_tokens),
            temperature=kwargs.get("temperature", self.temperature),
            top_p=kwargs.get("top_p", self.top_p),
            seed=kwargs.get("seed", self.seed),
        )  # stop strings apply to the answer text, not the raw JSON: see _message
        request = LLMRequest(instruction, named, schema, specs, history, "\n".join(system) or None, params)
        return _Asked(request, offered, forced=bool(minimum))

    def _stops(self, stop: list[str] | None) -> list[str]:
        return [s for s in (stop or self.stop or ()) if s]

    def _complete(self, request: LLMRequest) -> Completion:
        return complete(self._backend(), request, self.model_name or "")

    # -- raw text -> AIMessage -----------------------------------------------------------------------
    def _message(self, asked: _Asked, completion: Completion, stop: Sequence[str] = ()) -> AIMessage:
        request = asked.request
        schema = request.schema
        if asked.forced:  # asked for the calls alone; text a backend wrote anyway is dropped, not an error
            schema = {**schema, "properties": {**schema["properties"], "text": {"type": "string"}}}
        meta, errors = parse_output(completion.text, schema, output_format(self._backend()))
        if asked.forced:
            meta = replace(meta, text="")
        unoffered: list[str] = []
        if asked.offered is not None:  # asked with the whole list: answer in text for what was not offered
            meta, unoffered = narrow_meta(meta, asked.offered)
        text, cut = cut_at_stop(meta.text, stop)
        specs = {s.task: s for s in request.tasks}
        calls, seen = [], set()
        for inv in meta.invocations:
            args = _invocation_args(specs.get(inv.task), inv)
            key = json.dumps([inv.task, args], sort_keys=True)
            if key in seen:  # the same call twice does the same work twice: keep one
                continue
            seen.add(key)
            calls.append(tool_call(name=inv.task, args=args, id=f"call_{uuid.uuid4().hex[:24]}"))
        invalid = [
            invalid_tool_call(name=None, args=completion.text, id=f"call_{uuid.uuid4().hex[:24]}", error=e.message)
            for e in errors
        ]
        usage = {
            "input_tokens": completion.input_tokens,
            "output_tokens": completion.output_tokens,
            "total_tokens": completion.input_tokens + completion.output_tokens,
        }
        metadata = {
            "model_name": self.model_name,
            "engine_model": completion.model_name,
            "finish_reason": "stop" if cut else completion.finish_reason,
            "meta_response": meta.to_dict(),
            "raw": completion.text,
            "media": [{"id": i, "name": m.name, "mime_type": m.mime_type} for i, m in request.media],
            **({"unoffered": unoffered} if unoffered else {}),
        }
        return AIMessage(
            content=text,
            tool_calls=calls,
            invalid_tool_calls=invalid,
            usage_metadata=usage,
            response_metadata=metadata,
        )

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        asked = self._request(messages, stop, **kwargs)
        message = self._message(asked, self._complete(asked.request), self._stops(stop))
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        """Stream the answer text as it is decoded, then one chunk with the rest, the tool calls and usage.

        Each token chunk's ``content`` holds the new characters of the meta-response's ``text`` (read
        incrementally from the JSON; raw pieces are in ``additional_kwargs["raw_delta"]``); the final
        chunk carries whatever text was not streamed yet, the tool calls and usage, so the aggregated
        message equals what ``invoke`` returns.
        """
        asked = self._request(messages, stop, **kwargs)
        request = asked.request
        stops = self._stops(stop)
        pieces: list[str] = []
        reader, shown = AnswerTextReader(), StopHoldBack(stops)
        backend = self._backend()
        if isinstance(backend, StreamingResponder):
            stream = as_text_stream(backend.stream(request), self.model_name or "")
            for piece in stream:
                pieces.append(piece)
                # asked with the zoo's whole list, the text may still be rewritten: it comes in the last chunk
                held = asked.offered is not None or asked.forced
                delta = "" if held else shown.feed(reader.feed(piece))
                chunk = ChatGenerationChunk(
                    message=AIMessageChunk(content=delta, additional_kwargs={"raw_delta": piece})
                )
                if run_manager:
                    run_manager.on_llm_new_token(delta, chunk=chunk)
                yield chunk
            completion = stream.completion or Completion(text="".join(pieces), model_name=self.model_name or "")
        else:
            completion = self._complete(request)
        final = self._message(asked, completion, stops)
        text = str(final.content)
        rest = text[len(shown.text) :] if text.startswith(shown.text) else text
        yield ChatGenerationChunk(
            message=AIMessageChunk(
                content=rest,
                tool_call_chunks=[
                    {
                        "type": "tool_call_chunk",
                        "name": c["name"],
                        "args": json.dumps(c["args"]),
                        "id": c["id"],
                        "index": n,
                    }
                    for n, c in enumerate(final.tool_calls)
                ],
                usage_metadata=final.usage_metadata,
                response_metadata=final.response_metadata,
                chunk_position="last",
            )
        )

    # -- tools ---------------------------------------------------------------------------------------
    def bind_tools(
        self, tools: Sequence[Any], *, tool_choice: str | bool | dict | None = None, **kwargs: Any
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Restrict the meta-response (and so constrained decoding) to ``tools``.

        Zoo tools (named after a task) keep their generator's prompt/inputs/args shape; plain LangChain
        tools, functions and JSON schemas become function calls whose arguments are the tool's schema.
        """
        specs = [_tool_spec(t, self.zoo) for t in tools]
        if isinstance(tool_choice, dict):
            tool_choice = tool_choice.get("function", {}).get("name") or tool_choice.get("name")
        elif tool_choice is True:
            tool_choice = "any"
        elif tool_choice is False:
            tool_choice = None
        _check_tool_choice(tool_choice, specs)
        return self.model_copy(update={"bound_tools": specs, "tool_choice": tool_choice}).bind(**kwargs)


_LOADING = threading.Lock()
_CHOICES = (None, "auto", "none", "any", "required")


def _check_tool_choice(choice: Any, specs: Sequence[TaskSpec]) -> None:
    """Refuse a ``tool_choice`` that names no bound tool (LangChain's partner models raise too)."""
    if choice in _CHOICES or (isinstance(choice, str) and choice in {s.task for s in specs}):
        return
    names = sorted(s.task for s in specs)
    raise ValueError(f"tool_choice {choice!r} is neither a bound tool {names} nor one of auto, none, any, required")


def _load_backend(model: str, engine: str) -> Any:
    """The engine for ``model``: "default" is the built-in model, anything else a ModaVerse directory."""
    if model == "default":
        from .default_model import load_default_model

        return load_default_model(engine=engine)
    from .model.llamacpp import load_engine

    return load_engine(model, engine, merge=True)


__all__ = ["ChatModaVerse", "MediaItem", "MetaResponse"]
