"""The generators the plugins register, collected one plugin at a time so one broken plugin cannot take the zoo down.

Each plugin's ``register_generators`` hook is called on its own. A plugin whose hook raises, or that registers
anything but a well-defined Generator (see :mod:`~modaverse_agent.generator_checks`), a name already taken or a
task that another generator serves with another output modality, is skipped whole: none of its generators is
kept, it is unregistered, and :data:`~modaverse_agent.plugins.failures` records every problem, as for a
plugin whose import failed (``modaverse plugins`` shows it; ``modaverse zoo`` and ``run`` warn).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import plugins
from .generator_checks import clash_problems, definition_problems
from .generators import Generator
from .schema_utils import short

#: Longest reason recorded for a plugin's failure.
REASON_MAX_CHARS = 600


def registered_generators() -> list[Generator]:
    """Every generator the loaded plugins register, plugins in load order; failing plugins are skipped."""
    pm = plugins.load_plugins()
    kept: dict[str, Generator] = {}
    owners: dict[str, str] = {}
    for impl in pm.hook.register_generators.get_hookimpls():
        others = [p for p in pm.get_plugins() if p is not impl.plugin]
        found: list[Any] = []
        try:
            pm.subset_hook_caller("register_generators", remove_plugins=others)(register=found.append)
        except Exception as e:  # a plugin's bug: skip it, keep the others
            problems = [f"its register_generators hook raised {type(e).__name__}: {e}"]
        else:
            problems = registration_problems(found, kept, owners)
        if problems:
            plugins.skip(impl.plugin_name, _one_line("; ".join(problems)))
            continue
        kept.update((g.name, g) for g in found)
        owners.update((g.name, impl.plugin_name) for g in found)
    return list(kept.values())


def registration_problems(
    found: list[Any], registered: Mapping[str, Generator], owners: Mapping[str, str] | None = None
) -> list[str]:
    """Every problem with registering ``found`` (one plugin's registrations) beside ``registered``
    (name -> generator; ``owners`` names the plugin of each)."""
    problems: list[str] = []
    mine: dict[str, Generator] = {}
    for item in found:
        if not isinstance(item, Generator):
            problems.append(f"register() was given {short(item)}, not a Generator instance")
            continue
        defined = definition_problems(item)
        if defined:
            problems.append(f"generator {short(getattr(item, 'name', None))}: " + "; ".join(defined))
            continue
        clashes = clash_problems(item, {**registered, **mine}, owners)
        problems += clashes
        if not clashes:
            mine[item.name] = item
    return problems


def _one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= REASON_MAX_CHARS else line[:REASON_MAX_CHARS] + "..."
