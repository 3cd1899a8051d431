"""The training package as a built-in plugin: adds ``data``, ``train`` and ``eval`` to ``modaverse``.

The commands live in :mod:`.data_commands` (``data generate/validate/stats/split/corpora``) and
:mod:`.train_commands` (``train``, ``eval``); the work they do, as functions, in :mod:`.workflows`.
"""

from __future__ import annotations

import click

from modaverse_agent.hookspecs import hookimpl

PLUGIN_NAME = "training"


@hookimpl
def register_commands(cli: click.Group) -> None:
    """Add ``data``, ``train`` and ``eval`` to the ``modaverse`` command."""
    from .data_commands import data
    from .train_commands import evaluate_command, train

    cli.add_command(data)
    cli.add_command(train)
    cli.add_command(evaluate_command)
