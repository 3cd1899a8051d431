"""The llama.cpp engine: a trained ModaVerse directory decoded by llama.cpp on a GGUF base.

On a CPU, llama.cpp on a quantised GGUF decodes several times faster than transformers (it reads a
quarter of the bytes per token and has no Python in its forward pass). :class:`LlamaCppModel` keeps
everything else of the torch engine:

* the LoRA adapter is converted once to a llama.cpp LoRA GGUF (:mod:`.gguf_export`, cached by content
  hash) and applied to the base GGUF at run time;
* prompts are built by the same :class:`~.prompting.Prompter` and HF tokenizer (ids are the GGUF's);
* the media splice holds: runs of ordinary tokens go to llama.cpp as token ids, and the media markers
  and placeholders go as embedding rows, laid out by the same :mod:`.splice` both engines use;
* every step's logits pass through the same :class:`~.constrained.MetaResponseLogitsProcessor`, so
  meta-responses are schema-valid and close within the budget exactly as with torch;
* the KV cache of the previous prompt's longest shared token prefix (the system prompt) is reused.

Needs ``llama-cpp-python`` (``pip install modaverse-agent[llamacpp]``, built from source).

This module is the engine's public face: the model lives in :mod:`.llamacpp_engine`, what it loads from
disk in :mod:`.llamacpp_files`, and the choice between engines (:func:`load_engine`, :func:`resolve_engine`)
in :mod:`.engines`; all are importable from here.
"""

from __future__ import annotations

from .engines import load_engine, resolve_engine, suits_llama_cpp
from .llamacpp_engine import DEFAULT_CONTEXT, LlamaCppModel
from .llamacpp_files import adapter_gguf, base_gguf, captured_stderr, llama_cpp_available, not_plain_lora

__all__ = [
    "DEFAULT_CONTEXT",
    "LlamaCppModel",
    "adapter_gguf",
    "base_gguf",
    "captured_stderr",
    "llama_cpp_available",
    "load_engine",
    "not_plain_lora",
    "resolve_engine",
    "suits_llama_cpp",
]
