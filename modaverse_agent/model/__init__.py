"""The ModaVerse model: projectors, LoRA LLM, constrained decoding, checkpoints.

Names resolve lazily, so ``import modaverse_agent.model`` does not import torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from .config import ModaVerseConfig

_LAZY = {
    "ModaVerseModel": ".modeling",
    "GenerationOptions": ".responder",
    "MediaProjector": ".projector",
    "splice_media": ".splice",
    "import_official": ".checkpoint",
    "load_pretrained": ".checkpoint",
    "save_pretrained": ".checkpoint",
    "Prompter": ".prompting",
    "render_system_prompt": ".prompting",
}

__all__ = ["ModaVerseConfig", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
