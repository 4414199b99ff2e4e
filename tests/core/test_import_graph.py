"""The package's import graph: no cycles, no upward imports, no task importing another task.

Every ``import`` / ``from ... import`` of a ``medtasks`` module counts, at module level or inside
a function (an in-function import is still a dependency; it only hides a cycle from Python), except
under ``if TYPE_CHECKING:``. The layers follow design §2, lowest first; a module may import its own
layer or a lower one. Inside ``medtasks.tasks``, the kind bases (``tasks.kinds``) and dataset
sources (``tasks.sources``) never import a task, and a task package never imports another task.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "medtasks"

# lowest first; the first prefix that matches a module names its layer
LAYERS: list[tuple[str, ...]] = [
    ("medtasks.registry", "medtasks.config", "medtasks.config_rules", "medtasks.schema", "medtasks.paths",
     "medtasks.io"),
    ("medtasks.data", "medtasks.synth", "medtasks.transforms", "medtasks.models",
     "medtasks.losses", "medtasks.metrics"),
    ("medtasks.engine", "medtasks.rundir", "medtasks.viz"),   # rundir records the engine's device facts
    ("medtasks.tasks",),
    ("medtasks.report",),
    ("medtasks.compare", "medtasks.compare_metrics", "medtasks.subgroups", "medtasks.bench", "medtasks.reproduce",
     "medtasks.evaluate", "medtasks.predict", "medtasks.api"),
    ("medtasks.cli", "medtasks.__main__", "medtasks"),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer(module: str) -> int:
    for i, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return i
    raise AssertionError(f"{module} is in no layer of {__file__}: add it to LAYERS")


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The medtasks modules that ``path`` imports (resolved to a module of the package)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found: set[str] = set()

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    def visit(node: ast.AST) -> None:
        if _is_type_checking(node):
            return
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("medtasks"):
                    found.add(resolve(a.name))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            if base.startswith("medtasks"):
                for a in node.names:  # `from medtasks.x import y` may import the module medtasks.x.y
                    full = f"{base}.{a.name}"
                    found.add(full if full in modules else resolve(base))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    found.discard(None)
    found.discard(me)
    return found  # type: ignore[return-value]


def graph() -> dict[str, set[str]]:
    files = sorted(PKG.rglob("*.py"))
    modules = {module_name(p) for p in files}
    return {module_name(p): imports_of(p, modules) for p in files}


def _cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
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
        for w in sorted(g.get(v, ())):
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

    for v in sorted(g):
        if v not in index:
            strong(v)
    return out


def _package_inits(g: dict[str, set[str]]) -> dict[str, set[str]]:
    """Drop the edge from a package's module to its own ``__init__`` (Python runs it first anyway)
    and from an ``__init__`` to its own submodules (registration imports): neither is a dependency
    of one concept on another."""
    out = {}
    for m, deps in g.items():
        out[m] = {d for d in deps if not m.startswith(d + ".") and not d.startswith(m + ".")}
    return out


def test_no_import_cycles() -> None:
    cycles = _cycles(_package_inits(graph()))
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_no_upward_imports() -> None:
    bad = [f"{m} (layer {layer(m)}) imports {d} (layer {layer(d)})"
           for m, deps in _package_inits(graph()).items() for d in sorted(deps) if layer(d) > layer(m)]
    assert not bad, "upward imports:\n" + "\n".join(bad)


def _task_of(module: str) -> str | None:
    parts = module.split(".")
    if len(parts) >= 3 and parts[:2] == ["medtasks", "tasks"] and parts[2] not in ("kinds", "sources", "contract"):
        return parts[2]
    return None


def test_tasks_do_not_import_each_other() -> None:
    bad = []
    for m, deps in graph().items():
        if not m.startswith("medtasks.tasks.") or m == "medtasks.tasks":
            continue
        for d in deps:
            mine, theirs = _task_of(m), _task_of(d)
            if theirs is not None and mine != theirs:
                bad.append(f"{m} imports {d}" + ("" if mine else " (a kind base or source must not know a task)"))
    assert not bad, "\n".join(sorted(bad))


@pytest.mark.parametrize("module", ["medtasks.tasks.kinds", "medtasks.tasks.sources"])
def test_shared_task_layers_exist(module: str) -> None:
    assert module in graph()
