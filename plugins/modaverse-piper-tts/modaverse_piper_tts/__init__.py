"""modaverse-piper-tts: the ModaVerse ``text-to-speech`` generator, piper neural voices on CPU.

Importing this package is light: piper and onnxruntime load when the generator is first used.
"""

from __future__ import annotations

from typing import Any

from modaverse_agent.hookspecs import hookimpl

from .generator import PiperTTS

__all__ = ["PiperTTS", "register_generators"]
__version__ = "0.1.0"


@hookimpl
def register_generators(register: Any) -> None:
    """Register the piper text-to-speech generator (nothing is loaded until it is used)."""
    register(PiperTTS())
