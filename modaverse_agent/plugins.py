"""The one plugin manager: built-ins and entry points of group ``modaverse_agent``, with an allow-list."""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass
from importlib import metadata
from types import ModuleType
from typing import Any

import pluggy

from . import hookspecs

ENTRY_POINT_GROUP = "modaverse_agent"
#: Comma-separated allow-list of installed plugins (entry points): unset = all, empty = none.
#: Built-ins always load, as simonw/llm's default plugins do.
ALLOW_ENV = "MODAVERSE_LOAD_PLUGINS"
#: Built-in plugins, registered exactly like external ones (module path, plugin name).
DEFAULT_PLUGINS: tuple[tuple[str, str], ...] = (("modaverse_agent.training.plugin", "training"),)


@dataclass(frozen=True)
class PluginFailure:
    """A plugin that could not be loaded, kept so ``modaverse plugins`` can report it."""

    name: str
    distribution: str | None
    error: str


pm = pluggy.PluginManager("modaverse_agent")
pm.add_hookspecs(hookspecs)
failures: list[PluginFailure] = []
_distributions: dict[str, str | None] = {}  # entry-point name -> distribution, for failures found after import
_loaded = False


def allowed_names() -> set[str] | None:
    """The allow-list from ``MODAVERSE_LOAD_PLUGINS``; None means every plugin is allowed."""
    raw = os.environ.get(ALLOW_ENV)
    if raw is None:
        return None
    return {n.strip() for n in raw.split(",") if n.strip()}


def _allowed(name: str, dist: str | None, allow: set[str] | None) -> bool:
    return allow is None or name in allow or (dist is not None and dist in allow)


def load_plugins(*, entry_points: bool | None = None) -> pluggy.PluginManager:
    """Register built-ins and (unless running under the test suite) installed entry points, once.

    A plugin whose import fails is recorded in :data:`failures`; the others still load (so is one whose
    registration fails: see :mod:`modaverse_agent.registration`). A plugin not on the allow-list is never imported.
    """
    global _loaded
    if _loaded:
        return pm
    _loaded = True
    if entry_points is None:
        entry_points = not getattr(sys, "_called_from_test", False)
    allow = allowed_names()
    for module_name, name in DEFAULT_PLUGINS:
        if pm.get_plugin(name) is None:
            _register_safely(name, None, lambda m=module_name: importlib.import_module(m))
    if entry_points:
        load_entry_points(allow)
    return pm


def load_entry_points(allow: set[str] | None = None) -> None:
    """Import and register every allowed entry point of group ``modaverse_agent``."""
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist.name if ep.dist is not None else None
        if not _allowed(ep.name, dist, allow) or pm.get_plugin(ep.name) is not None:
            continue
        _distributions[ep.name] = dist
        _register_safely(ep.name, dist, ep.load)


def _register_safely(name: str, dist: str | None, load: Any) -> None:
    try:
        plugin = load()
        pm.register(plugin, name=name)
    except Exception as e:  # a broken plugin must not take the others down
        failures.append(PluginFailure(name, dist, f"{type(e).__name__}: {e}"))


def skip(name: str, error: str) -> None:
    """Unregister plugin ``name`` and record ``error`` as its failure, as for a plugin whose import failed.

    Used when a plugin's ``register_generators`` hook fails (see :mod:`modaverse_agent.registration`).
    """
    plugin = pm.get_plugin(name)
    if plugin is not None:
        pm.unregister(plugin)
    failures.append(PluginFailure(name, _distributions.get(name), error))


def failure_warnings() -> list[str]:
    """One line per plugin that failed to load or register: its name, why, and what to do."""
    return [
        f"Warning: plugin {f.name!r}{f' ({f.distribution})' if f.distribution else ''} was skipped: {f.error}. "
        f"Fix, upgrade or uninstall it (or list only the plugins you want in {ALLOW_ENV}); see `modaverse plugins`"
        for f in failures
    ]


def reset() -> None:
    """Unregister everything and forget failures (tests use this)."""
    global _loaded
    for plugin in list(pm.get_plugins()):
        pm.unregister(plugin)
    failures.clear()
    _distributions.clear()
    _loaded = False


def plugin_info() -> list[dict[str, Any]]:
    """Loaded plugins with their distribution, version and implemented hooks, then failures."""
    load_plugins()
    dists = {p: d for p, d in pm.list_plugin_distinfo()}
    by_module: dict[str, tuple[str, str]] = {}
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.dist is not None:
            by_module[ep.name] = (ep.dist.name, ep.dist.version)
    out: list[dict[str, Any]] = []
    for plugin in pm.get_plugins():
        name = pm.get_name(plugin) or repr(plugin)
        hooks = sorted(h.name for h in pm.get_hookcallers(plugin) or [])
        dist, version = by_module.get(name, (None, None))
        if plugin in dists:
            dist, version = dists[plugin].project_name, dists[plugin].version
        builtin = isinstance(plugin, ModuleType) and plugin.__name__.startswith("modaverse_agent.")
        out.append({"name": name, "distribution": dist, "version": version, "hooks": hooks, "builtin": builtin})
    out.sort(key=lambda p: p["name"])
    for f in failures:
        out.append({"name": f.name, "distribution": f.distribution, "version": None, "hooks": [], "error": f.error})
    return out
