"""Where the project caches what it prepares once (the built-in base LLM, tiny pipelines, GGUF adapters)."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "MODAVERSE_CACHE"


def cache_dir() -> Path:
    """``$MODAVERSE_CACHE`` or the user cache dir (``~/.cache/modaverse``)."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("modaverse"))
