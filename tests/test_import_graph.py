"""The core's layers read top-down: no import cycle, no module importing another's private names, and the
model layer never imports the agent (both speak :mod:`modaverse_agent.llm_io`).

Imports are read from the source (module level and inside functions alike; only ``if TYPE_CHECKING:``
blocks are left out, since they never run), so a function-local import cannot hide a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "modaverse_agent"
TRAINING = ROOT / "training"


def _module_name(path: Path) -> str:
    if path.is_relative_to(TRAINING):
        parts = ("modaverse_agent", "training", *path.relative_to(TRAINING).with_suffix("").parts)
    else:
        parts = ("modaverse_agent", *path.relative_to(PACKAGE).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node except those under ``if TYPE_CHECKING:``."""
    out: list[ast.AST] = []
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            stack.extend(node.orelse)
            continue
        out.append(node)
        stack.extend(ast.iter_child_nodes(node))
    return out


def _imports(path: Path, modules: set[str]) -> list[tuple[str, str | None]]:
    """(imported module, imported name or None) for every runtime import of ``path`` inside the project."""
    me = _module_name(path)
    package = me if path.name == "__init__.py" else me.rsplit(".", 1)[0]
    found = []
    for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(a.name, None) for a in node.names if a.name.startswith("modaverse_agent")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            if not target.startswith("modaverse_agent"):
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.append((sub, None) if sub in modules else (target, alias.name))
    return found


def _graph() -> tuple[dict[str, set[str]], dict[str, list[tuple[str, str]]]]:
    files = [p for p in [*PACKAGE.rglob("*.py"), *TRAINING.rglob("*.py")] if "weights" not in p.parts]
    modules = {_module_name(p) for p in files}
    edges: dict[str, set[str]] = {}
    private: dict[str, list[tuple[str, str]]] = {}
    for p in files:
        me = _module_name(p)
        for target, name in _imports(p, modules):
            while target not in modules and "." in target:
                target = target.rsplit(".", 1)[0]
            if target != me:
                edges.setdefault(me, set()).add(target)
            if name and name.startswith("_") and not name.startswith("__") and target != me:
                private.setdefault(me, []).append((target, name))
    return edges, private


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def _ancestors_are_packages(edges: dict[str, set[str]]) -> dict[str, set[str]]:
    """Edges without the implicit parent-package imports (``a.b`` importing ``a`` runs ``a/__init__``)."""
    return {m: {t for t in ts if not m.startswith(t + ".")} for m, ts in edges.items()}


def test_the_core_has_no_import_cycle() -> None:
    edges, _ = _graph()
    assert _cycles(_ancestors_are_packages(edges)) == []


def test_no_module_imports_another_modules_private_names() -> None:
    _, private = _graph()
    assert private == {}


def test_the_model_layer_does_not_import_the_agent_or_the_app() -> None:
    edges, _ = _graph()
    above = {
        "modaverse_agent.agent",
        "modaverse_agent.default_model",
        "modaverse_agent.cli",
        "modaverse_agent.runnable",
    }
    bad = {m: sorted(ts & above) for m, ts in edges.items() if m.startswith("modaverse_agent.model") and ts & above}
    assert bad == {}


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("limit", [500])
def test_every_core_module_is_small(limit: int) -> None:
    sizes = {str(p.relative_to(ROOT)): len(p.read_text(encoding="utf-8").splitlines()) for p in PACKAGE.rglob("*.py")}
    assert {p: n for p, n in sizes.items() if n > limit} == {}
