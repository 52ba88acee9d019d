"""The run context, the config and the registry travel typed through the core (issue 31), so
mypy checks every call that hands them on: a parameter named ``ctx``, ``config`` or
``registry`` in ``music_core`` is never annotated ``Any``. Use ``RunContext``, ``MusicConfig``
and ``Registry``, imported under ``if TYPE_CHECKING:`` where a runtime import would close an
import circle (tests/test_import_graph.py)."""

from __future__ import annotations

import ast
from pathlib import Path

CORE = Path(__file__).resolve().parents[1] / "music_core"
TYPED = {"ctx", "config", "registry"}


def _is_any(node: ast.expr | None) -> bool:
    if node is None:
        return False
    if isinstance(node, ast.Constant) and isinstance(node.value, str):  # a quoted annotation
        return node.value.strip() in ("Any", "typing.Any")
    return (isinstance(node, ast.Name) and node.id == "Any") or (isinstance(node, ast.Attribute) and node.attr == "Any")


def untyped(root: Path = CORE) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                a = node.args
                for arg in a.posonlyargs + a.args + a.kwonlyargs:
                    if arg.arg in TYPED and _is_any(arg.annotation):
                        found.append(f"{path.relative_to(root.parent)}:{arg.lineno} {node.name}({arg.arg}: Any)")
    return found


def test_the_check_sees_an_any_parameter(tmp_path):
    (tmp_path / "m.py").write_text("from typing import Any\n\ndef f(ctx: Any, cfg: Any, *, registry: 'Any') -> None: ...\n"
                                   "async def g(config: typing.Any): ...\ndef h(ctx: RunContext): ...\n")
    assert untyped(tmp_path) == [f"{tmp_path.name}/m.py:3 f(ctx: Any)", f"{tmp_path.name}/m.py:3 f(registry: Any)",
                                 f"{tmp_path.name}/m.py:4 g(config: Any)"]


def test_no_run_context_config_or_registry_is_any_in_the_core():
    found = untyped()
    assert not found, "annotate these with RunContext / MusicConfig / Registry:\n  " + "\n  ".join(found)
