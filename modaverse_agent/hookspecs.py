"""The plugin hooks. Every hook here is documented in docs and covered by a ``test_hook_<name>``."""

from __future__ import annotations

from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("modaverse_agent")
hookimpl = pluggy.HookimplMarker("modaverse_agent")


@hookspec
def register_generators(register: Any) -> None:
    """Call ``register(generator)`` once for each Generator instance this plugin offers."""


@hookspec
def register_commands(cli: Any) -> None:
    """Add subcommands to the ``modaverse`` click group ``cli``."""
