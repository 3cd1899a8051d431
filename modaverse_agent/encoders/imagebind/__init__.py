"""The ImageBind encoder on torch alone, weight-compatible with the official ``imagebind_huge.pth``.

ImageBind's weights are licensed CC BY-NC-SA 4.0 by Meta; loading them logs that note once.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from .config import ImageBindConfig

_LAZY = {
    "ImageBindEncoder": ".encoder",
    "ImageBindModel": ".model",
    "ClipTokenizer": ".tokenizer",
    "tokenize": ".preprocess",
    "read_state_dict": ".weights",
}

__all__ = ["ImageBindConfig", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
