"""Encoders that turn media into embeddings (ImageBind).

``MediaEncoder`` is the interface; ``modaverse_agent.encoders.imagebind`` holds the ImageBind
implementation (it needs the ``model`` extra: torch, safetensors, ftfy, regex).
"""

from __future__ import annotations

from .base import MediaEncoder

__all__ = ["MediaEncoder"]
