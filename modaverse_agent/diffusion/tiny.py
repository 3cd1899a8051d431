"""Tiny random-weight pipelines behind ``model = "tiny-random"``: plugins register a builder per kind;
the core seeds each build, marks it untrained and caches it under the project's cache dir.

The core knows no kind of its own: a plugin registers its kind (with
:func:`register_tiny_pipeline`) when it is imported, and assembles the pipeline from its own config,
usually with the generic parts of :mod:`modaverse_agent.diffusion.tiny_parts`.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..cache import CACHE_ENV, cache_dir
from ..errors import GeneratorError

#: Value of the ``model`` option that builds a tiny random-weight pipeline from configs (no download).
TINY_RANDOM = "tiny-random"
#: Key written into a tiny pipeline's ``model_index.json``: artifacts it makes are labelled untrained.
UNTRAINED_KEY = "_modaverse_untrained"
#: A function of no arguments that returns a freshly built diffusers pipeline.
TinyBuilder = Callable[[], Any]

_KIND = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_registry: dict[str, tuple[TinyBuilder, int]] = {}


def _qualname(builder: TinyBuilder) -> str:
    return f"{getattr(builder, '__module__', '?')}.{getattr(builder, '__qualname__', repr(builder))}"


def register_tiny_pipeline(kind: str, builder: TinyBuilder, *, version: int = 1) -> None:
    """Make ``model = "tiny-random"`` of generators whose ``tiny_kind`` is ``kind`` build with ``builder``.

    ``kind`` also names the cache folder (``<kind>-v<version>``): bump ``version`` when the builder, or a
    part it uses, changes, so stale cached builds are not reused. Registering the same builder again (a
    reloaded module) replaces it; another builder for a taken kind is refused.
    """
    if not _KIND.fullmatch(kind):
        raise GeneratorError(
            f"tiny pipeline kind {kind!r} must be letters, digits, '.', '_' or '-' (it names a cache folder)"
        )
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise GeneratorError(f"tiny pipeline kind {kind!r}: version must be a positive integer, not {version!r}")
    taken = _registry.get(kind)
    if taken is not None and _qualname(taken[0]) != _qualname(builder):
        raise GeneratorError(
            f"tiny pipeline kind {kind!r} is already registered by {_qualname(taken[0])}; "
            f"{_qualname(builder)} must choose another kind"
        )
    _registry[kind] = (builder, version)


def tiny_kinds() -> tuple[str, ...]:
    """The registered tiny pipeline kinds, sorted."""
    return tuple(sorted(_registry))


def _entry(kind: str) -> tuple[TinyBuilder, int]:
    try:
        return _registry[kind]
    except KeyError:
        raise GeneratorError(
            f"unknown tiny pipeline kind {kind!r}; known kinds: {list(tiny_kinds())}. A plugin registers its kind "
            "with modaverse_agent.diffusion.register_tiny_pipeline when imported: import the plugin first"
        ) from None


def build_tiny_pipeline(kind: str, *, seed: int = 0) -> Any:
    """A tiny random-weight diffusers pipeline of ``kind`` built from configs (no download, deterministic).

    Its config is marked untrained (``model_index.json`` keeps the mark through ``save_pretrained``), so
    artifacts it makes are labelled ``untrained``. The global torch RNG is left as it was.
    """
    builder, _ = _entry(kind)
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        pipe = builder()
    pipe.register_to_config(**{UNTRAINED_KEY: True})
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_cache_root() -> Path:
    """Where tiny pipelines are cached: ``<project cache dir>/tiny-pipelines`` (``$MODAVERSE_CACHE``, else
    the user cache dir's ``modaverse`` folder)."""
    return cache_dir() / "tiny-pipelines"


def tiny_pipeline_dir(kind: str) -> Path:
    """The directory of the cached tiny pipeline of ``kind``, built and saved on first use."""
    _, version = _entry(kind)
    target = tiny_cache_root() / f"{kind}-v{version}"
    if (target / "model_index.json").is_file():
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{kind}-", dir=target.parent))
        try:
            build_tiny_pipeline(kind).save_pretrained(tmp)
            if target.exists() and not (target / "model_index.json").is_file():
                shutil.rmtree(target)  # an incomplete leftover: replace it
            try:
                os.replace(tmp, target)
            except OSError:
                if not (target / "model_index.json").is_file():  # not a concurrent build that won the race
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    except OSError as e:
        raise GeneratorError(
            f"cannot write the tiny {kind} pipeline under {target.parent} ({e.strerror or e}); free some space, "
            f"or point {CACHE_ENV} at a writable folder (default: the user cache dir, which XDG_CACHE_HOME "
            "chooses on Linux)"
        ) from e
    return target
