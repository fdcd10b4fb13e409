"""The import graph: floors that only point down, and no cycle anywhere (standard library ``ast``).

Floors: ``tocsin.core`` and ``tocsin.schemas`` (shared) < components (``tocsin.producers``,
``tocsin.processors``, ``tocsin.sinks``) < ``tocsin.app``. Every import counts, also inside functions;
only ``if TYPE_CHECKING:`` blocks are left out, since they never run.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = {"tocsin": ROOT / "tocsin", "tocsin.producers": ROOT / "producers",
           "tocsin.processors": ROOT / "processors", "tocsin.sinks": ROOT / "sinks", "tocsin.schemas": ROOT / "schemas"}
SHARED = ("tocsin.core", "tocsin.schemas")
COMPONENTS = ("tocsin.producers", "tocsin.processors", "tocsin.sinks")


def _modules() -> dict[str, Path]:
    out = {}
    for prefix, folder in FOLDERS.items():
        for path in folder.rglob("*.py"):
            rel = path.relative_to(folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            name = ".".join([prefix, *parts])
            if prefix == "tocsin" and parts and f"tocsin.{parts[0]}" in FOLDERS:
                continue
            out[name] = path
    return out


MODULES = _modules()


def _lazy_exports() -> dict[str, dict[str, str]]:
    """Packages whose ``__init__`` resolves names on first use (PEP 562): ``{package: {name: module}}``."""
    out = {}
    for name, path in MODULES.items():
        if path.name != "__init__.py":
            continue
        for node in ast.parse(path.read_text()).body:
            targets = [t.id for t in getattr(node, "targets", []) if isinstance(t, ast.Name)]
            if isinstance(node, ast.Assign) and "_EXPORTS" in targets and isinstance(node.value, ast.Dict):
                pairs = zip(node.value.keys, node.value.values, strict=True)
                out[name] = {k.value: f"{name}.{v.value}" for k, v in pairs
                             if isinstance(k, ast.Constant) and isinstance(v, ast.Constant)}
    return out


LAZY = _lazy_exports()


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(path: Path, name: str) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            subs = {f"{base}.{a.name}" for a in node.names} & MODULES.keys()
            found.update(subs)
            found.update(LAZY[base][a.name] for a in node.names if a.name in LAZY.get(base, {}))
            if len(subs) < len(node.names):  # names defined in ``base`` itself
                found.add(base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    # keep only Tocsin modules, each resolved to the module that defines it
    # An import of one of its own packages is the interpreter's doing for every submodule: not an arrow.
    return {m for m in found if m in MODULES and m != name and not name.startswith(m + ".")}


GRAPH = {name: _imports(path, name) for name, path in MODULES.items()}


def _under(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def test_the_shared_layer_imports_no_component_and_no_application():
    bad = [(m, i) for m, deps in GRAPH.items() if _under(m, SHARED) for i in deps if not _under(i, SHARED)]
    assert not bad, bad


def test_components_never_import_the_application():
    bad = [(m, i) for m, deps in GRAPH.items() if _under(m, COMPONENTS) for i in deps if _under(i, ("tocsin.app",))]
    assert not bad, bad


def test_no_import_cycle():
    # Tarjan's strongly connected components; any with more than one module is a cycle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in GRAPH:
        if v not in index:
            strong(v)
    assert not cycles, cycles


def test_the_graph_sees_the_modules():
    assert "tocsin.producers.agent" in MODULES and "tocsin.sinks.notify.sink" in MODULES
    assert "tocsin.core.kafka" in GRAPH["tocsin.processors.service.loop"]


def test_package_exports_resolve_and_are_listed():
    import importlib

    assert LAZY, "no package facade found"
    for package, names in LAZY.items():
        mod = importlib.import_module(package)
        assert sorted(mod.__all__) == sorted(names), package
        for name, module in names.items():
            assert getattr(mod, name) is getattr(importlib.import_module(module), name), (package, name)
