"""What the llama.cpp engine loads from disk: a ModaVerse directory (through :func:`~.model_dir.read_model_dir`)
on a base GGUF, with the LoRA converted once to a llama.cpp adapter GGUF.

:func:`load_llama_parts` gathers everything :class:`~.llamacpp_engine.LlamaCppModel` is built from: the base
GGUF (given, named by the config, or the built-in model's), the tokenizer (ids are the GGUF's), the media
tokens' embedding rows (scaled as the architecture scales its embeddings), the projector, the adapter GGUF
(cached by content hash), the stop ids, and a ``llama_cpp.Llama`` with the adapter applied.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import ModelError
from .builtin import BUILTIN_LLM_PREFIX, builtin_gguf
from .config import ModaVerseConfig
from .gguf_export import adapter_fingerprint, write_lora_gguf
from .gguf_file import gguf_metadata
from .llm import add_tokens, prepare_tokenizer
from .model_dir import ADAPTER_CONFIG, ADAPTER_WEIGHTS, ROWS_FILE, ModelDir, read_model_dir
from .projector import MediaProjector
from .prompting import stop_token_ids

logger = logging.getLogger(__name__)

#: Architectures whose token embeddings are scaled by sqrt(width) inside the model (HF and llama.cpp
#: alike); rows given to llama.cpp as embeddings must already carry that scale.
_SCALED_EMBEDDINGS = {"gemma", "gemma2", "gemma3", "gemma3n"}


def llama_cpp_available() -> bool:
    """Whether ``llama_cpp`` (llama-cpp-python) can be imported."""
    import importlib.util

    return importlib.util.find_spec("llama_cpp") is not None


def require_llama_cpp() -> Any:
    """The ``llama_cpp`` module, or a ModelError saying how to install it."""
    try:
        import llama_cpp
    except ImportError as e:
        raise ModelError(
            "the llama.cpp engine needs llama-cpp-python: `pip install modaverse-agent[llamacpp]` "
            "(it compiles llama.cpp, several minutes), or use the torch engine"
        ) from e
    return llama_cpp


def has_base_gguf(config: ModaVerseConfig, gguf: str | Path | None = None) -> bool:
    """Whether :func:`base_gguf` has a GGUF to find for ``config`` (without preparing anything)."""
    return gguf is not None or bool(config.gguf_file) or config.llm.startswith(BUILTIN_LLM_PREFIX)


def base_gguf(model_dir: ModelDir, gguf: str | Path | None = None) -> Path:
    """The base LLM as a GGUF file: ``gguf`` if given, the config's GGUF, or the built-in model's."""
    config = model_dir.config
    if gguf is not None:
        path = Path(gguf).expanduser()
    elif config.gguf_file:
        path = Path(model_dir.llm_path()) / config.gguf_file
    else:
        builtin = builtin_gguf(config.llm)
        if builtin is None:
            raise ModelError(
                f"the llama.cpp engine needs the base LLM as a GGUF file, and {config.llm} is not one; "
                "pass the GGUF of the same model (`gguf=` / `--gguf`), or use the torch engine"
            )
        path = builtin
    if not path.is_file():
        raise ModelError(f"base GGUF {path} does not exist")
    return path


def not_plain_lora(peft_config: dict[str, Any]) -> str | None:
    """Why a peft LoRA config cannot become a llama.cpp adapter (None: it can)."""
    if peft_config.get("use_dora") or peft_config.get("use_rslora"):
        return "llama.cpp applies plain LoRA only and this adapter uses DoRA/rsLoRA"
    if peft_config.get("rank_pattern") or peft_config.get("alpha_pattern"):
        return "llama.cpp takes one LoRA rank and alpha per adapter"
    return None


def adapter_gguf(root: Path, meta: dict[str, Any], cache: Path | None = None) -> Path:
    """The LoRA of the ModaVerse directory ``root`` as a llama.cpp adapter GGUF for a base described by
    ``meta`` (:func:`~.gguf_file.gguf_metadata`), converted once into ``cache``."""
    import json

    from safetensors.torch import load_file

    files = [root / ADAPTER_CONFIG, root / ADAPTER_WEIGHTS]
    peft_config = json.loads(files[0].read_text(encoding="utf-8"))
    why = not_plain_lora(peft_config)
    if why:
        raise ModelError(f"{why}; use the torch engine")
    if cache is None:
        from ..cache import cache_dir

        cache = cache_dir() / "llamacpp"
    arch, heads = meta["arch"], (int(meta["n_head"]), int(meta["n_head_kv"]))
    out = cache / f"adapter-{adapter_fingerprint(files, {'arch': arch, 'heads': heads, 'v': 1})}.gguf"
    if not out.is_file():
        logger.info("converting the LoRA adapter to GGUF: %s", out)
        write_lora_gguf(
            load_file(str(files[1])),
            out,
            arch=arch,
            n_blocks=int(meta["n_blocks"]),
            alpha=float(peft_config["lora_alpha"]),
            heads=heads,
        )
    return out


@contextlib.contextmanager
def captured_stderr() -> Iterator[Callable[[], str]]:
    """Hold llama.cpp's load-time chatter (written to fd 2 from C) back; yields a reader of what it wrote."""
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)

        def said() -> str:
            sink.seek(0)
            return sink.read()[-4000:].decode("utf-8", "replace")

        try:
            yield said
        finally:
            os.dup2(saved, 2)
            os.close(saved)


@dataclass
class LlamaParts:
    """Everything a :class:`~.llamacpp_engine.LlamaCppModel` is built from (see :func:`load_llama_parts`)."""

    config: ModaVerseConfig
    tokenizer: Any
    projector: MediaProjector
    rows: dict[int, torch.Tensor]
    llama: Any
    encoder: Any | None
    stop_ids: list[int]
    gguf_path: Path


def load_llama_parts(
    directory: str | Path,
    *,
    gguf: str | Path | None,
    encoder: Any | None,
    n_ctx: int,
    n_threads: int | None,
    cache: Path | None,
    offload: dict[str, Any] | None = None,
) -> LlamaParts:
    """Read the ModaVerse directory ``directory`` for llama.cpp and load the base GGUF with its adapter
    (``offload``: ``n_gpu_layers`` and the like, from :func:`~.placement.llama_offload`)."""
    lc = require_llama_cpp()
    model_dir = read_model_dir(directory)
    config = model_dir.config
    if config.train_embeddings:
        raise ModelError(
            "this model trained its whole embedding table, which a llama.cpp adapter cannot carry; use the torch engine"
        )
    path = base_gguf(model_dir, gguf)
    meta = gguf_metadata(path)
    if meta["type"] != "model":
        raise ModelError(f"{path} is a GGUF {meta['type']}, not a model")
    tokenizer = _tokenizer(model_dir, path, meta["n_vocab"])
    if len(tokenizer) - len(config.added_tokens) > meta["n_vocab"]:
        raise ModelError(
            f"{path} has {meta['n_vocab']} tokens but the model's tokenizer has "
            f"{len(tokenizer) - len(config.added_tokens)} before its media tokens; it is not this model's base"
        )
    rows = _media_token_rows(model_dir, tokenizer, meta, path)
    projector = MediaProjector.for_config(config, int(meta["n_embd"]))
    model_dir.load_projector(projector)
    lora = adapter_gguf(model_dir.root, meta, cache)
    with captured_stderr() as said:
        try:
            llama = lc.Llama(
                model_path=str(path),
                lora_path=str(lora),
                n_ctx=n_ctx,
                n_batch=512,
                n_threads=n_threads or torch.get_num_threads(),
                logits_all=False,
                verbose=False,
                **(offload or {}),
            )
        except (ValueError, RuntimeError) as e:
            raise ModelError(f"llama.cpp could not load {path} with adapter {lora}: {e}\n{said()}") from e
    return LlamaParts(
        config,
        tokenizer,
        projector,
        rows,
        llama,
        encoder if encoder is not None else model_dir.load_encoder(),
        _stop_ids(model_dir, tokenizer),
        path,
    )


def _media_token_rows(model_dir: ModelDir, tokenizer: Any, meta: dict[str, Any], path: Path) -> dict[int, torch.Tensor]:
    """The trained rows of the media tokens by id, scaled as the architecture scales its embeddings."""
    tensors = model_dir.read(ROWS_FILE)
    if set(tensors) != {"embed.indices", "embed.weight"}:
        raise ModelError(f"{ROWS_FILE}: only the media tokens' rows can go to llama.cpp; use the torch engine")
    scale = math.sqrt(meta["n_embd"]) if meta["arch"] in _SCALED_EMBEDDINGS else 1.0
    indices, weight = tensors["embed.indices"].tolist(), tensors["embed.weight"].float()
    added = {tokenizer.convert_tokens_to_ids(t) for t in model_dir.config.added_tokens}
    if set(indices) - added:
        raise ModelError(f"{ROWS_FILE} changes rows of the base vocabulary; use the torch engine")
    if weight.shape[1] != meta["n_embd"]:
        raise ModelError(f"{ROWS_FILE}: rows are {weight.shape[1]} wide, {path} is {meta['n_embd']} wide")
    return {int(i): weight[k] * scale for k, i in enumerate(indices)}


def _tokenizer(model_dir: ModelDir, gguf: Path, n_tokens: int | None) -> Any:
    """The model's tokenizer: the saved one, else the base LLM's (its folder, or read from ``gguf``, whose
    vocabulary holds ``n_tokens``)."""
    from transformers import AutoTokenizer

    saved = model_dir.saved_tokenizer
    if saved is not None:
        return AutoTokenizer.from_pretrained(str(saved))
    source = Path(model_dir.llm_path(tokenizer_only=True))
    if source.is_dir() and (source / "tokenizer_config.json").is_file():
        tokenizer = AutoTokenizer.from_pretrained(str(source))
    else:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        _check_gguf_tokenizer(tokenizer, gguf, n_tokens)
    prepare_tokenizer(tokenizer)
    add_tokens(tokenizer, model_dir.config)
    return tokenizer


def _check_gguf_tokenizer(tokenizer: Any, gguf: Path, count: int | None) -> None:
    """Refuse a tokenizer transformers read from ``gguf`` (``count`` tokens) with tokens the file does not have:
    the media tokens would then get other ids than in training (its GPT-2-style reader adds ``<|endoftext|>``
    when missing)."""
    if isinstance(count, int) and len(tokenizer) > count:
        extra = sorted(t for t, i in tokenizer.get_vocab().items() if i >= count)
        raise ModelError(
            f"transformers read {len(tokenizer)} tokens from {gguf.name}, which has {count} (it added {extra}), so "
            "the media tokens would not get their trained ids; keep the tokenizer beside the model (train without "
            "--no-tokenizer) or point the config's `llm` at the base model's folder"
        )


def _stop_ids(model_dir: ModelDir, tokenizer: Any) -> list[int]:
    """The same stop ids the torch engine uses: the base LLM's generation config and the tokenizer's EOS."""
    from transformers import GenerationConfig

    source = Path(model_dir.llm_path(tokenizer_only=True))
    generation = None
    if (source / "generation_config.json").is_file():
        generation = GenerationConfig.from_pretrained(str(source))
    return stop_token_ids(tokenizer, generation)
