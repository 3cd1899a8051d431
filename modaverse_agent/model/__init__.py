"""The ModaVerse model: projectors, LoRA LLM, constrained decoding, checkpoints, the two engines.

Names resolve lazily, so ``import modaverse_agent.model`` does not import torch.
"""

from __future__ import annotations

from functools import reduce
from importlib import import_module
from typing import Any

from .config import ModaVerseConfig

#: Public name -> (module, attribute path in it).
_LAZY = {
    "ModaVerseModel": (".modeling", "ModaVerseModel"),
    "EngineOptions": (".responder", "EngineOptions"),
    "MediaProjector": (".projector", "MediaProjector"),
    "EncodedMedia": (".splice", "EncodedMedia"),
    "splice_media": (".splice", "splice_media"),
    "import_official": (".checkpoint", "import_official"),
    "load_pretrained": (".modeling", "ModaVerseModel.from_pretrained"),
    "save_pretrained": (".checkpoint", "save_pretrained"),
    "read_model_dir": (".model_dir", "read_model_dir"),
    "load_engine": (".engines", "load_engine"),
    "Prompter": (".prompting", "Prompter"),
    "render_system_prompt": (".prompting", "render_system_prompt"),
}

__all__ = ["ModaVerseConfig", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, path = _LAZY[name]
        return reduce(getattr, path.split("."), import_module(module, __name__))
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
