"""No import circle in ``music_core`` (issue 31).

The graph is read from the source with :mod:`ast`, not from ``sys.modules``, so it sees every
import a module can run, not only those one test happened to reach:

- imports inside functions count: they run on the first call and close a circle as surely as a
  top-level one does (the circle is only deferred, and any refactor can make it bite);
- imports under ``if TYPE_CHECKING:`` do not count: they never run, so they cannot close a
  circle. That is the sanctioned way for two modules to name each other's types;
- importing ``a.b.c`` runs the ``__init__`` of ``a`` and ``a.b`` too, so those are edges as
  well, except the importer's own enclosing packages, which are already being initialised
  when it runs (a package ``__init__`` that re-exports its submodules is not a circle);
- plugins loaded by dotted name through ``importlib`` (the plugin manager's bundled list) are
  not edges: that is plugin loading on first use, not an import of the core by the core.

A strongly connected component of more than one module is a circle; the failure names one
concrete cycle through it, with the file and line of each import.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "music_core"


def _modules(root: Path = ROOT, package: str = PACKAGE) -> dict[str, Path]:
    """Dotted name -> file, a package named by its ``__init__.py``."""
    out = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _runtime_imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement that can run: anywhere in the module, functions included, but not
    under ``if TYPE_CHECKING:`` (its ``else:`` branch does run)."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _with_ancestors(target: str, importer: str, modules: dict[str, Path]) -> set[str]:
    """``target`` and the packages whose ``__init__`` importing it runs, less the importer's own."""
    parts = target.split(".")
    own = {".".join(importer.split(".")[:i]) for i in range(1, importer.count(".") + 1)}
    if importer in modules and modules[importer].name == "__init__.py":
        own.add(importer)
    out = set()
    for i in range(1, len(parts) + 1):
        name = ".".join(parts[:i])
        if name in modules and (name == target or name not in own):
            out.add(name)
    return out


def import_graph(root: Path = ROOT, package: str = PACKAGE) -> dict[str, dict[str, int]]:
    """module -> {module it imports at run time: line of the first such import}."""
    modules = _modules(root, package)
    graph: dict[str, dict[str, int]] = {m: {} for m in modules}
    for mod, path in modules.items():
        is_pkg = path.name == "__init__.py"
        for node in _runtime_imports(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                if node.level:
                    base = mod.split(".")[: len(mod.split(".")) - node.level + (1 if is_pkg else 0)]
                    base_name = ".".join(base + ([node.module] if node.module else []))
                else:
                    base_name = node.module or ""
                for alias in node.names:  # `from pkg import sub` imports the submodule pkg.sub
                    sub = f"{base_name}.{alias.name}"
                    targets.append(sub if sub in modules else base_name)
            for target in targets:
                if not (target == package or target.startswith(package + ".")):
                    continue
                while target not in modules:  # `import a.b.name`-style spellings
                    target = target.rsplit(".", 1)[0]
                for dep in _with_ancestors(target, mod, modules):
                    if dep != mod:
                        graph[mod].setdefault(dep, node.lineno)
    return graph


def strongly_connected(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Tarjan's algorithm, iteratively; components of one module are left out."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    comp = []
                    while True:
                        m = stack.pop()
                        on_stack.discard(m)
                        comp.append(m)
                        if m == node:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))
    return out


def a_cycle(graph: dict[str, dict[str, int]], component: list[str]) -> list[str]:
    """One shortest cycle through the component's first module (breadth-first)."""
    members, start = set(component), component[0]
    parent: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for node in frontier:
            for child in sorted(graph[node]):
                if child not in members:
                    continue
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(parent[path[-1]])
                    return list(reversed(path)) + [start]
                if child not in parent:
                    parent[child] = node
                    nxt.append(child)
        frontier = nxt
    return component  # unreachable for a real component


def describe(graph: dict[str, dict[str, int]], cycle: list[str], modules: dict[str, Path]) -> str:
    steps = []
    for a, b in zip(cycle, cycle[1:], strict=False):
        steps.append(f"  {modules[a].relative_to(ROOT)}:{graph[a][b]} imports {b}")
    return " -> ".join(cycle) + "\n" + "\n".join(steps)


def test_the_graph_sees_function_level_imports_and_skips_type_checking(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from .b import g\n    return g\n")
    (pkg / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .c import C\n"
                              "else:\n    from . import d\n")
    (pkg / "c.py").write_text("from pkg.sub.e import x\n")
    (pkg / "d.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from .e import x\n")
    (pkg / "sub" / "e.py").write_text("from . import f\nfrom ..a import f as g\n")
    (pkg / "sub" / "f.py").write_text("")
    graph = import_graph(tmp_path, "pkg")
    assert graph["pkg.a"] == {"pkg.b": 2}                       # inside a function: counted
    assert graph["pkg.b"] == {"pkg.d": 5}                       # TYPE_CHECKING only: not counted
    assert graph["pkg.c"] == {"pkg.sub": 1, "pkg.sub.e": 1}     # the package __init__ runs too
    assert graph["pkg.sub"] == {"pkg.sub.e": 1}
    assert graph["pkg.sub.e"] == {"pkg.sub.f": 1, "pkg.a": 2}   # its own package is not an edge
    assert strongly_connected(graph) == []
    (pkg / "d.py").write_text("def h():\n    import pkg.a\n")
    graph = import_graph(tmp_path, "pkg")
    [component] = strongly_connected(graph)
    assert component == ["pkg.a", "pkg.b", "pkg.d"]
    assert a_cycle(graph, component) == ["pkg.a", "pkg.b", "pkg.d", "pkg.a"]


def test_no_import_circle_in_music_core():
    graph = import_graph()
    modules = _modules()
    circles = [describe(graph, a_cycle(graph, comp), modules) + f"\n  (component: {', '.join(comp)})"
               for comp in strongly_connected(graph)]
    assert not circles, "import circles in music_core:\n" + "\n".join(circles)
