"""The built-in default model: Gemma 3 270M (the built-in base LLM) + the trained adapter shipped in the package.

The base LLM is prepared on first use by :mod:`modaverse_agent.model.builtin` (assembled from PyPI, converted
once into the cache dir); its names are re-exported here for existing importers.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ModelError
from .model.builtin import (
    BASE_LLM_PACKAGE,
    BUILTIN_LLMS,
    ensure_base_llm,
    ensure_base_tokenizer,
    ensure_builtin_llm,
    ensure_gguf,
    tokenizer_folder,
)

if TYPE_CHECKING:
    from .model.placement import Placement

__all__ = [
    "BASE_LLM_PACKAGE",
    "BUILTIN_LLMS",
    "DEFAULT_MODEL_RESOURCE",
    "default_model_dir",
    "ensure_base_llm",
    "ensure_base_tokenizer",
    "ensure_builtin_llm",
    "ensure_gguf",
    "load_default_model",
    "tokenizer_folder",
]

#: The built-in trained adapter (LoRA + projectors + media rows), shipped inside the package.
DEFAULT_MODEL_RESOURCE = ("weights", "default")


def default_model_dir() -> Path:
    """The built-in ModaVerse directory shipped with the package (its base LLM is resolved on load)."""
    from importlib.resources import files

    path = Path(str(files("modaverse_agent").joinpath(*DEFAULT_MODEL_RESOURCE)))
    if not (path / "modaverse_config.json").is_file():
        raise ModelError(
            f"the built-in default model is missing from {path}; reinstall modaverse-agent, "
            "or pass --model DIR (train one with `modaverse train`)"
        )
    return path


def load_default_model(
    log: Callable[[str], None] | None = None,
    *,
    merge: bool = True,
    engine: str = "auto",
    placement: Placement | None = None,
) -> Any:
    """The built-in default model: Gemma 3 270M (prepared on first use) + the shipped adapter, on
    ``engine`` (torch, llama.cpp or auto; see :func:`~.model.engines.load_engine`) and ``placement``
    (a :class:`~.model.placement.Placement`: device, dtype; None: the engine's defaults)."""
    from .model.engines import load_engine, resolve_engine

    directory = default_model_dir()
    engine = resolve_engine(directory, engine, placement=placement)
    if placement is not None:
        from .model.placement import check_placement

        check_placement(placement, engine)  # a missing device fails before the base LLM is prepared
    if engine == "llama.cpp":
        ensure_base_tokenizer(log)  # the GGUF runs as it is: no conversion to a safetensors folder
    else:
        ensure_base_llm(log)
    return load_engine(directory, engine, log=log, merge=merge, placement=placement)
