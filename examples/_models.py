"""Shared by the examples: the LLM they run on and the zoo they dispatch to.

By default a tiny random-weight ModaVerse (built offline in seconds; its text is noise) and a zoo with no
saved choices. With ``--real`` the built-in default model (Gemma 3 270M + the adapter shipped in the
package, on llama.cpp when it is installed), loaded with :func:`~modaverse_agent.default_model.load_default_model`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from modaverse_agent.model.modeling import ModaVerseModel
from modaverse_agent.model.tiny import HashEncoder, save_tiny_base, tiny_config
from modaverse_agent.zoo import Zoo, ZooConfig


def add_real_flag(parser: argparse.ArgumentParser) -> None:
    """``--real``: run on the built-in default model instead of the tiny random-weight one."""
    parser.add_argument(
        "--real",
        action="store_true",
        help="run on the built-in default model (Gemma 3 270M + the shipped adapter) instead of a tiny random one",
    )


def tiny_model(workdir: Path) -> ModaVerseModel:
    """A tiny ModaVerse (random weights, a hash encoder) whose base LLM is written under ``workdir``."""
    import torch

    torch.manual_seed(0)
    base = save_tiny_base(workdir / "tiny-base")
    # a long closing reserve lets a forced tool call finish even after long free text
    config = tiny_config(base, max_new_tokens=160)
    return ModaVerseModel.from_config(config, encoder=HashEncoder(16)).eval()


def default_model() -> Any:
    """The built-in default model on the engine ``auto`` picks (llama.cpp when it is installed)."""
    from modaverse_agent.default_model import load_default_model

    return load_default_model()


def example_model(real: bool, workdir: Path) -> Any:
    """The built-in default model when ``real``, else :func:`tiny_model`."""
    return default_model() if real else tiny_model(workdir)


def plugin_zoo() -> Zoo:
    """The installed plugins' zoo with no saved choices (with ``MODAVERSE_LOAD_PLUGINS=echo``, the echo plugin
    serves every task)."""
    return Zoo.from_plugins(config=ZooConfig())
