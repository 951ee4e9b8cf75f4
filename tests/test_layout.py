"""The shape of the code, pinned: the public surface, no import cycles, small modules.

These are properties a change can break without failing any behaviour test,
so they are asserted here (see docs/architecture.md for why each one matters).
"""

from __future__ import annotations

import ast
from pathlib import Path

import simq

ROOT = Path(__file__).resolve().parent.parent

PUBLIC = [
    "App",
    "AsyncResult",
    "Binding",
    "Capabilities",
    "ChordError",
    "Clock",
    "Exchange",
    "GroupResult",
    "NotDelivered",
    "Queue",
    "ResultSet",
    "Signature",
    "SimqError",
    "Simulation",
    "Task",
    "Transport",
    "Unroutable",
    "VirtualClock",
    "WallClock",
    "Worker",
    "WorkerHook",
    "chain",
    "chord",
    "chunks",
    "current_app",
    "group",
    "shared_task",
    "signature",
]


def test_the_public_api_is_exactly_this_list():
    assert simq.__all__ == PUBLIC
    assert all(hasattr(simq, name) for name in PUBLIC)


def _modules(package: str) -> dict[str, Path]:
    found = {}
    for path in (ROOT / package).rglob("*.py"):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        found[name.removesuffix(".__init__")] = path
    return found


def _imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The simq modules ``name`` imports at run time (anywhere in it; ``if TYPE_CHECKING:`` blocks excluded)."""
    tree = ast.parse(path.read_text())
    typing_only = {
        id(sub)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for sub in ast.walk(node)
    }

    def resolve(target: str) -> str | None:
        while target and target not in known:
            target = target.rpartition(".")[0]
        return target or None

    out = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = name if path.name == "__init__.py" else name.rpartition(".")[0]
                for _ in range(node.level - 1):
                    package = package.rpartition(".")[0]
                base = f"{package}.{base}" if node.module else package
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        for target in targets:
            module = resolve(target)
            if module is not None and module != name:
                out.add(module)
    return out


def test_no_import_cycles_among_simq_modules():
    known = _modules("simq")
    graph = {name: _imports(name, path, known) for name, path in known.items()}
    cycles = []
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def walk(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                walk(nxt, [*path, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            walk(node, [node])
    assert cycles == [], "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_no_module_is_over_600_lines():
    long = {
        str(path.relative_to(ROOT)): n
        for package in ("simq", "transports")
        for path in (ROOT / package).rglob("*.py")
        if (n := len(path.read_text().splitlines())) > 600
    }
    assert long == {}
