"""modaverse-agent: ModaVerse (CVPR 2024) as an extensible any-to-any multimodal agent framework."""

from __future__ import annotations

from importlib import import_module
from typing import Any

from .artifacts import Artifact, OutputDir
from .errors import (
    ArtifactError,
    GeneratorError,
    MediaError,
    MetaResponseError,
    ModaVerseError,
    ModelError,
    PluginError,
    ZooError,
)
from .generators import GenerationRequest, Generator
from .hookspecs import hookimpl

__version__ = "0.1.0"

# Heavier names load on first access so `import modaverse_agent` stays light (no torch, no langchain).
_LAZY = {
    "Zoo": ".zoo",
    "ZooConfig": ".zoo",
    "MetaResponse": ".meta_response",
    "Invocation": ".meta_response",
    "build_schema": ".meta_response",
    "parse_meta_response": ".meta_response",
    "ModaVerseAgent": ".agent",
    "FinalResponse": ".agent",
    "ScriptedLLM": ".testing",
    "load_media": ".media",
    "MediaItem": ".media",
    "zoo_tools": ".tools",
    "generator_tool": ".tools",
    "AgentRunnable": ".runnable",
    "ChatModaVerse": ".chat_model",
    "Conversation": ".conversation",
}

__all__ = [
    "Artifact",
    "ArtifactError",
    "GenerationRequest",
    "Generator",
    "GeneratorError",
    "MediaError",
    "MetaResponseError",
    "ModaVerseError",
    "ModelError",
    "OutputDir",
    "PluginError",
    "ZooError",
    "__version__",
    "hookimpl",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
