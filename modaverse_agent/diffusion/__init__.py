"""Shared diffusers plumbing for generator plugins.

By concern: :mod:`.devices` (device, dtype, seeds, memory), :mod:`.progress` (step progress and
cancellation), :mod:`.loading` (loading and calling a pipeline, with errors that say what to do),
:mod:`.generator` (the :class:`DiffusersGenerator` base class, its zoo options and per-device caps),
:mod:`.tiny` (tiny random pipelines: a registry of plugin builders and their cache), :mod:`.tiny_parts`
and :mod:`.tokenizers` (generic tiny components and offline tokenizers plugins build from).

torch, diffusers and transformers are imported inside functions only, so importing this package (and a
plugin built on it) stays light: listing plugins never pulls in the model stack.
"""

from __future__ import annotations

from .devices import (
    DTYPES,
    SEED_MAX,
    free_memory,
    resolve_device,
    resolve_dtype,
    resolve_seed,
    seed_schema,
    torch_generator,
)
from .generator import Cap, DiffusersGenerator, options_schema
from .loading import LoadedPipeline, call_pipeline, load_pipeline, pipeline_source
from .progress import StepProgress
from .tiny import (
    TINY_RANDOM,
    UNTRAINED_KEY,
    TinyBuilder,
    build_tiny_pipeline,
    register_tiny_pipeline,
    tiny_cache_root,
    tiny_kinds,
    tiny_pipeline_dir,
)
from .tiny_parts import tiny_clip_text, tiny_ddim, tiny_unet2d, tiny_vae
from .tokenizers import bytes_to_unicode, tiny_clip_tokenizer, tiny_roberta_tokenizer

__all__ = [
    "DTYPES",
    "SEED_MAX",
    "TINY_RANDOM",
    "UNTRAINED_KEY",
    "Cap",
    "DiffusersGenerator",
    "LoadedPipeline",
    "StepProgress",
    "TinyBuilder",
    "build_tiny_pipeline",
    "bytes_to_unicode",
    "call_pipeline",
    "free_memory",
    "load_pipeline",
    "options_schema",
    "pipeline_source",
    "register_tiny_pipeline",
    "resolve_device",
    "resolve_dtype",
    "resolve_seed",
    "seed_schema",
    "tiny_cache_root",
    "tiny_clip_text",
    "tiny_clip_tokenizer",
    "tiny_ddim",
    "tiny_kinds",
    "tiny_pipeline_dir",
    "tiny_roberta_tokenizer",
    "tiny_unet2d",
    "tiny_vae",
    "torch_generator",
]
