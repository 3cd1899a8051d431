"""Test-wide settings for the core and every plugin: offline, one torch thread, no entry-point autoload."""

from __future__ import annotations

import os
import sys

# Set before anything imports torch or huggingface_hub.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.pop(  # a developer's allow-list must not change what tests see
    "MODAVERSE_LOAD_PLUGINS", None
)
sys._called_from_test = True  # type: ignore[attr-defined]  # plugins.load_plugins: no entry-point autoload


def pytest_configure(config: object) -> None:
    """Pin torch to one thread if it is importable (tests measure behaviour, not threading)."""
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)
