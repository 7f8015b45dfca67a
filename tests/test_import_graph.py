"""The package's layers point one way: no import cycle inside ``src/modalign`` and no measure built on the aligner.

The graph is read from the source with ``ast`` (nothing is imported). Every import that runs counts,
including those inside functions, since a function-local import only hides a cycle; imports under
``if TYPE_CHECKING:`` never run and do not count, nor does the parent package's ``__init__`` (Python
runs it, but it is not the importer's dependency).
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "modalign"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted((SRC / PACKAGE).rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The modalign modules ``name`` imports (a ``from pkg import sub`` of a submodule names the submodule)."""
    is_pkg = path.name == "__init__.py"
    out: set[str] = set()
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    type_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If) and _is_type_checking(block.test)
                 for stmt in block.body for n in ast.walk(stmt)}
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in known else module for a in node.names]
        else:
            continue
        for target in targets:
            # "import a.b.c" binds the deepest module that exists in the package
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target.startswith(PACKAGE + ".") and target != name:
                out.add(target)
    return out


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(name, path, known) for name, path in modules.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of two or more modules (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
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
                components.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return components


def test_graph_is_read() -> None:
    graph = import_graph()
    assert "modalign.features.cache" in graph
    assert "modalign.errors" in graph["modalign.search.store"]


def test_cycle_finder_sees_a_cycle() -> None:
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles() -> None:
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles in src/modalign:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_metrics_do_not_import_align() -> None:
    bad = [f"{m} imports {t}" for m, targets in import_graph().items() if m.startswith("modalign.metrics")
           for t in sorted(targets) if t == "modalign.align" or t.startswith("modalign.align.")]
    assert not bad, "\n".join(bad)


#: data → encoders → features → metrics → align → evaluation/search → server → CLI (the package's layers);
#: the helpers at the root (_registry, errors, _io, cancel) sit below all of them
LAYERS = ["data", "encoders", "features", "metrics", "align", "evaluation", "search", "server", "cli"]


def _layer(module: str) -> int | None:
    parts = module.split(".")
    if len(parts) < 2 or parts[1] not in LAYERS:
        return None
    # evaluation and search are one layer (neither imports the other's internals upward)
    return min(LAYERS.index(parts[1]), LAYERS.index("evaluation")) if parts[1] == "search" else LAYERS.index(parts[1])


def test_no_module_imports_a_layer_above_its_own() -> None:
    bad = [f"{m} imports {t}" for m, targets in import_graph().items() for t in sorted(targets)
           if _layer(m) is not None and _layer(t) is not None and _layer(t) > _layer(m)]  # type: ignore[operator]
    assert not bad, "\n".join(bad)
