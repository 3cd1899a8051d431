"""Shared by the examples: a tiny random-weight ModaVerse and a zoo of the echo plugin, built offline in seconds.

A real run loads a trained model instead: ``ModaVerseModel.from_pretrained("path/to/modaverse")``.
"""

from __future__ import annotations

from pathlib import Path

from modaverse_agent.model.modeling import ModaVerseModel
from modaverse_agent.model.tiny import HashEncoder, save_tiny_base, tiny_config
from modaverse_agent.zoo import Zoo, ZooConfig


def tiny_model(workdir: Path) -> ModaVerseModel:
    """A tiny ModaVerse (random weights, a hash encoder) whose base LLM is written under ``workdir``."""
    import torch

    torch.manual_seed(0)
    base = save_tiny_base(workdir / "tiny-base")
    # a long closing reserve lets a forced tool call finish even after long free text
    config = tiny_config(base, max_new_tokens=160)
    return ModaVerseModel.from_config(config, encoder=HashEncoder(16)).eval()


def echo_zoo() -> Zoo:
    """The installed plugins' zoo with no saved choices (the echo plugin serves every task)."""
    return Zoo.from_plugins(config=ZooConfig())
