"""The layering of DESIGN.md, checked from the source: no import cycle between modules or between
packages (``vipa.data``, ``vipa.model``, ..., ``annotators``, ``app``), ``vipa`` never imports
``annotators`` or ``app``, gradio only inside ``app``, inference never imports training code.

Every ``import`` counts, top-level or inside a function (a lazy import hides a cycle, it does not
remove it); only imports under ``if TYPE_CHECKING:`` are left out.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("vipa", "annotators", "app")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    mods = {}
    for pkg in PACKAGES:
        for path in sorted((REPO / pkg).rglob("*.py")):
            mods[_module_name(path)] = path
    return mods


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _imports(path: Path, name: str, known: set[str]) -> set[str]:
    """Project modules imported by the module ``name`` (its file ``path``)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_pkg = path.name == "__init__.py"
    out: set[str] = set()

    def resolve(mod: str) -> str | None:
        while mod and mod not in known:
            mod = mod.rpartition(".")[0]
        return mod or None

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for sub in child.orelse:
                    visit(sub)
                continue
            if isinstance(child, ast.Import):
                for a in child.names:
                    if (m := resolve(a.name)):
                        out.add(m)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = name.split(".") if is_pkg else name.split(".")[:-1]
                    base = base[: len(base) - (child.level - 1)]
                    mod = ".".join(base + ([child.module] if child.module else []))
                else:
                    mod = child.module or ""
                for a in child.names:
                    full = f"{mod}.{a.name}"
                    if full in known:
                        out.add(full)
                    elif (m := resolve(mod)):
                        out.add(m)
            visit(child)

    visit(tree)
    out.discard(name)
    return out


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    known = set(mods)
    return {m: _imports(p, m, known) for m, p in mods.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                strong(w)
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

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return out


def _package(mod: str) -> str:
    """The package a module belongs to for the package-level check: ``vipa.data.qa`` -> ``vipa.data``;
    a top-level ``vipa`` module (``vipa.geometry``) stands for itself; ``annotators.*`` and ``app.*`` are one each."""
    parts = mod.split(".")
    if parts[0] != "vipa":
        return parts[0]
    if len(parts) >= 2 and (REPO / "vipa" / parts[1]).is_dir():
        return ".".join(parts[:2])
    return mod


def _edges_from_init(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """Drop a package ``__init__``'s own edges: it re-exports its submodules by design."""
    return {m: (set() if (REPO / Path(*m.split("."))).is_dir() else deps) for m, deps in graph.items()}


def test_no_module_import_cycle():
    cycles = _cycles(_edges_from_init(_graph()))
    assert not cycles, "import cycles between modules: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_no_package_import_cycle():
    pkg_graph: dict[str, set[str]] = defaultdict(set)
    for m, deps in _edges_from_init(_graph()).items():
        pm = _package(m)
        pkg_graph[pm] |= {_package(d) for d in deps if _package(d) != pm}
    cycles = _cycles(pkg_graph)
    assert not cycles, "import cycles between packages: " + "; ".join(" <-> ".join(c) for c in cycles)


@pytest.mark.parametrize("src, forbidden", [
    ("vipa", ("annotators", "app")),
    ("annotators", ("app",)),
    ("vipa.infer", ("vipa.train",)),
    ("vipa.model", ("vipa.train", "vipa.infer", "vipa.sim")),
    ("vipa.data", ("vipa.model", "vipa.train", "vipa.infer", "vipa.sim")),
])
def test_layering(src, forbidden):
    bad = [(m, d) for m, deps in _graph().items() if m == src or m.startswith(src + ".")
           for d in deps if any(d == f or d.startswith(f + ".") for f in forbidden)]
    assert not bad, f"{src} must not import {forbidden}: {bad}"


def test_gradio_only_in_app():
    bad = []
    for pkg in ("vipa", "annotators"):
        for path in (REPO / pkg).rglob("*.py"):
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                         else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                if any(n.split(".")[0] in ("gradio", "gradio_rerun") for n in names):
                    bad.append(str(path.relative_to(REPO)))
    assert not bad, f"gradio imported outside app/: {bad}"


def test_graph_is_not_empty():
    """Guards the checks above against a parser that silently finds nothing."""
    g = _graph()
    assert len(g) > 50 and sum(len(v) for v in g.values()) > 100
    assert "vipa.geometry" in g["vipa.data.corrections"] | set().union(*g.values())
