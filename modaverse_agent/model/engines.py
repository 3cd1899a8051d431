"""Engine choice: which engine runs a ModaVerse directory ("torch", "llama.cpp", or "auto"), and loading it there.

``auto`` picks llama.cpp when llama-cpp-python is installed and the model can run on it (a GGUF base to be
had, plain LoRA on the linear layers, media rows only), else torch.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from .llamacpp_files import has_base_gguf, llama_cpp_available, not_plain_lora
from .model_dir import read_model_dir

ENGINES = ("auto", "torch", "llama.cpp")

#: LoRA targets a llama.cpp adapter carries on every architecture (the output layer of a tied model has no
#: tensor of its own in the GGUF, so ``lm_head`` is left to an explicit ``--engine llama.cpp``).
LINEAR_TARGETS = frozenset({"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"})


def load_engine(
    directory: str | Path,
    engine: str = "auto",
    *,
    gguf: str | Path | None = None,
    n_threads: int | None = None,
    log: Callable[[str], None] | None = None,
    **torch_kwargs: Any,
) -> Any:
    """Load a ModaVerse directory on ``engine``: "torch", "llama.cpp", or "auto" (llama.cpp when
    llama-cpp-python is installed and the model can run on it, else torch). ``torch_kwargs`` go to
    :meth:`ModaVerseModel.from_pretrained` (``merge``, ``dtype``, ...)."""
    if resolve_engine(directory, engine, gguf) == "llama.cpp":
        from .llamacpp_engine import LlamaCppModel

        model = LlamaCppModel.from_pretrained(
            directory, gguf=gguf, encoder=torch_kwargs.get("encoder"), n_threads=n_threads
        )
        if log:
            log(f"engine: llama.cpp on {model.gguf_path}")
        return model
    from .modeling import ModaVerseModel

    if log:
        log("engine: torch")
    return ModaVerseModel.from_pretrained(directory, **torch_kwargs)


def resolve_engine(directory: str | Path, engine: str = "auto", gguf: str | Path | None = None) -> str:
    """The engine ``engine`` means for the ModaVerse directory ``directory``: "torch" or "llama.cpp"."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be auto, torch or llama.cpp, got {engine!r}")
    if engine == "auto":
        return "llama.cpp" if llama_cpp_available() and suits_llama_cpp(directory, gguf) else "torch"
    return engine


def suits_llama_cpp(directory: str | Path, gguf: str | Path | None = None) -> bool:
    """Whether ``auto`` should pick llama.cpp: a GGUF base to be had, plain LoRA on the linear layers, media
    rows only (no whole trained tables). A directory that is not a complete ModaVerse directory raises the
    same errors as loading it."""
    model_dir = read_model_dir(directory)
    config = model_dir.config
    plain = not_plain_lora(model_dir.adapter_config()) is None
    linear = set(config.lora_targets) <= LINEAR_TARGETS
    return has_base_gguf(config, gguf) and plain and linear and not config.train_embeddings
