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
from .placement import Placement, llama_gpu_offload, spread, torch_placement

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
    placement: Placement | None = None,
    **torch_kwargs: Any,
) -> Any:
    """Load a ModaVerse directory on ``engine``: "torch", "llama.cpp", or "auto" (llama.cpp when
    llama-cpp-python is installed and the model can run on it, else torch). ``placement`` is where it runs
    (``--device``/``--dtype``/``--device-map``; see :mod:`.placement`). ``torch_kwargs`` go to
    :meth:`ModaVerseModel.from_pretrained` (``merge``, ``dtype``, ...)."""
    if resolve_engine(directory, engine, gguf, placement) == "llama.cpp":
        from .llamacpp_engine import LlamaCppModel

        model = LlamaCppModel.from_pretrained(
            directory, gguf=gguf, encoder=torch_kwargs.get("encoder"), n_threads=n_threads, placement=placement
        )
        if log:
            log(f"engine: llama.cpp on {model.gguf_path} ({model.placement_note})")
        return model
    from .modeling import ModaVerseModel

    if placement is not None:
        where = torch_placement(placement, read_model_dir(directory).config.dtype)
        torch_kwargs.update(device=where.device, dtype=where.dtype, device_map=where.device_map)
        if log:
            log(f"engine: torch on {where.describe()}")
    elif log:
        log("engine: torch")
    model = ModaVerseModel.from_pretrained(directory, **torch_kwargs)
    if log and torch_kwargs.get("device_map"):
        log(f"LLM weights: {spread(model.llm)}; encoder and projectors on {model.device}")
    return model


def resolve_engine(
    directory: str | Path, engine: str = "auto", gguf: str | Path | None = None, placement: Placement | None = None
) -> str:
    """The engine ``engine`` means for the ModaVerse directory ``directory``: "torch" or "llama.cpp".

    ``auto`` picks torch when ``placement`` needs it: a ``--dtype``, ``--device-map``, or a GPU that the installed
    llama.cpp cannot offload to."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be auto, torch or llama.cpp, got {engine!r}")
    if engine == "auto":
        if not (llama_cpp_available() and suits_llama_cpp(directory, gguf)):
            return "torch"
        if placement is not None and (placement.torch_only() or not _llama_reaches(placement)):
            return "torch"
        return "llama.cpp"
    return engine


def _llama_reaches(placement: Placement) -> bool:
    """Whether llama.cpp can run where ``placement`` asks: the CPU always; a GPU only with a GPU build (``auto``
    prefers torch on a GPU that llama.cpp cannot reach)."""
    device = placement.device.strip().lower()
    if device == "cpu" or llama_gpu_offload():
        return True
    if device == "auto":
        from ..devices import resolve_device

        return resolve_device("auto") == "cpu"
    return False


def suits_llama_cpp(directory: str | Path, gguf: str | Path | None = None) -> bool:
    """Whether ``auto`` should pick llama.cpp: a GGUF base to be had, plain LoRA on the linear layers, media
    rows only (no whole trained tables). A directory that is not a complete ModaVerse directory raises the
    same errors as loading it."""
    model_dir = read_model_dir(directory)
    config = model_dir.config
    plain = not_plain_lora(model_dir.adapter_config()) is None
    linear = set(config.lora_targets) <= LINEAR_TARGETS
    return has_base_gguf(config, gguf) and plain and linear and not config.train_embeddings
