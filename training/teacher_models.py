"""Choosing the teacher: a hosted model (``PROVIDER:MODEL``), a local GGUF file, or any LangChain chat model.

* ``--teacher-model openai:gpt-4o-mini`` goes through langchain's ``init_chat_model``;
* ``--teacher-gguf PATH`` loads a GGUF chat model with langchain-community's ``ChatLlamaCpp``;
* ``--teacher-factory MODULE:ATTR`` takes a chat model (or a function making one) from your code.

``--teacher-option KEY=VALUE`` passes keyword arguments to the first two (``temperature=0.7``,
``base_url=http://localhost:8000/v1``, ``n_gpu_layers=-1``); values are read as JSON when they parse.
"""

from __future__ import annotations

import importlib
import json
import threading
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .dataset import DatasetError

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel

#: ``ChatLlamaCpp`` settings for a teacher, unless ``--teacher-option`` says otherwise: the model's own
#: context length (ChatLlamaCpp's default of 512 is shorter than the teacher prompt), the prompt read 512
#: tokens a step (not 8), room for a batch of samples, every layer on the GPU when llama.cpp was built
#: with one, and no llama.cpp log on stderr.
GGUF_DEFAULTS: Mapping[str, Any] = {
    "n_ctx": 0,
    "n_batch": 512,
    "max_tokens": 4096,
    "temperature": 0.7,
    "n_gpu_layers": -1,
    "verbose": False,
    "streaming": False,
}


def parse_options(items: Sequence[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings as keyword arguments; a value that parses as JSON is used parsed (``0.7``, ``true``)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise DatasetError(f"--teacher-option takes KEY=VALUE (e.g. temperature=0.7), got {item!r}")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


@cache
def _locked_llamacpp() -> type:
    """``ChatLlamaCpp`` with a lock around each call: one llama.cpp context is not safe to use from several
    threads, so requests to one local model take turns (the rest of the run still overlaps)."""
    from langchain_community.chat_models import ChatLlamaCpp
    from pydantic import PrivateAttr

    class LockedChatLlamaCpp(ChatLlamaCpp):
        _lock: Any = PrivateAttr(default_factory=threading.RLock)

        def _generate(self, *args: Any, **kwargs: Any) -> Any:
            with self._lock:
                return super()._generate(*args, **kwargs)

        def _stream(self, *args: Any, **kwargs: Any) -> Any:
            with self._lock:
                yield from super()._stream(*args, **kwargs)

    return LockedChatLlamaCpp


def gguf_teacher(path: str | Path, options: Mapping[str, Any] | None = None) -> BaseChatModel:
    """A local GGUF chat model as a teacher (``ChatLlamaCpp``; :data:`GGUF_DEFAULTS` unless ``options`` say)."""
    p = Path(path)
    if not p.is_file():
        raise DatasetError(f"--teacher-gguf {path}: no such file; give the path of a GGUF chat model")
    try:
        cls = _locked_llamacpp()
    except ImportError as e:
        raise DatasetError(
            f"--teacher-gguf needs langchain-community and llama-cpp-python ({e}): "
            "pip install 'modaverse-agent[teacher,llamacpp]'"
        ) from None
    try:
        return cls(model_path=str(p), **{**GGUF_DEFAULTS, **(options or {})})
    except Exception as e:  # llama.cpp's and pydantic's errors for a bad file or a bad option
        raise DatasetError(f"--teacher-gguf {path}: {type(e).__name__}: {e}") from None


def hosted_teacher(model: str, options: Mapping[str, Any] | None = None) -> BaseChatModel:
    """A chat model from ``PROVIDER:MODEL`` through langchain's ``init_chat_model``."""
    try:
        from langchain.chat_models import init_chat_model
    except ImportError:
        raise DatasetError(
            "--teacher-model needs `langchain` and the provider's package: pip install langchain langchain-openai"
        ) from None
    try:
        return init_chat_model(model, **dict(options or {}))
    except Exception as e:
        raise DatasetError(f"--teacher-model {model!r}: {type(e).__name__}: {e}") from None


def factory_teacher(factory: str) -> BaseChatModel:
    """A chat model from ``MODULE:ATTR``: an instance, or a zero-argument callable returning one."""
    from langchain_core.language_models import BaseChatModel

    module_name, _, attr = factory.partition(":")
    try:
        obj: Any = getattr(importlib.import_module(module_name), attr or "teacher")
    except (ImportError, AttributeError) as e:
        raise DatasetError(
            f"--teacher-factory {factory!r}: {e}; give MODULE:ATTRIBUTE of a chat model or a function making one"
        ) from None
    if not isinstance(obj, BaseChatModel) and callable(obj):
        obj = obj()
    if not isinstance(obj, BaseChatModel):
        raise DatasetError(f"--teacher-factory {factory!r} gave {type(obj).__name__}, not a LangChain chat model")
    return obj


def load_teacher(
    *, factory: str | None = None, model: str | None = None, gguf: str | None = None, options: Sequence[str] = ()
) -> tuple[BaseChatModel, str | None]:
    """The chosen teacher (exactly one of ``factory``, ``model``, ``gguf``) and the name its samples record
    (None: the engine reads it off the model)."""
    flags = (("--teacher-model", model), ("--teacher-gguf", gguf), ("--teacher-factory", factory))
    chosen = [name for name, value in flags if value]
    if not chosen:
        raise DatasetError(
            "the teacher engine needs --teacher-model PROVIDER:MODEL, --teacher-gguf PATH "
            "or --teacher-factory MODULE:ATTR"
        )
    if len(chosen) > 1:
        raise DatasetError(f"choose one teacher, got {' and '.join(chosen)}")
    kwargs = parse_options(options)
    if factory:
        if kwargs:
            raise DatasetError("--teacher-option is for --teacher-model and --teacher-gguf; a factory sets its own")
        return factory_teacher(factory), None
    if gguf:
        return gguf_teacher(gguf, kwargs), f"gguf:{Path(gguf).name}"
    assert model is not None
    return hosted_teacher(model, kwargs), None
