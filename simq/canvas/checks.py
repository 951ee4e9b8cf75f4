"""Checking a canvas before anything is sent: task names, serialisable arguments, cycles; errors name the path.

Each kind checks its own parts (``Signature._check``); the :class:`Checker`
walks the nodes, refuses cycles and holds the checks every task gets.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs

from simq.canvas.signatures import MAP_TASK, STARMAP_TASK, Signature, _listify, from_dict
from simq.exceptions import InvalidSignature, NotRegistered

if TYPE_CHECKING:
    from simq.app import App
    from simq.task import Task

__all__ = ["Checker", "validate"]


def validate(app: App, sig: Signature, path: str = "") -> None:
    """Refuse, before sending, unknown task names, unserialisable arguments and cycles; errors name the path."""
    Checker(app).visit(sig, path)


@attrs.define(eq=False)
class Checker:
    """One walk over a canvas: the nodes on the current path, to refuse cycles."""

    app: App
    _stack: list[int] = attrs.field(factory=list)

    def visit(self, node: Any, path: str) -> None:
        if id(node) in self._stack:
            raise InvalidSignature(
                f"refusing a cycle at {path or 'the top'}: {node!r} contains itself, so it would never end"
            )
        if not isinstance(node, Mapping):
            raise InvalidSignature(f"{path or 'canvas'}: expected a signature, got {node!r}")
        self._stack.append(id(node))
        try:
            options = node.get("options") or {}
            if "link" in options or "link_error" in options:
                for key in ("link", "link_error"):
                    for i, cb in enumerate(_listify(options.get(key))):
                        self.visit(cb, f"{path}{key}[{i}].")
            from_dict(node, self.app)._check(self, path)
        finally:
            self._stack.pop()

    def task(self, sig: Signature, path: str) -> None:
        """A plain task: registered, and its arguments encodable with its serializer."""
        app = self.app
        name = sig.task
        task = app.tasks.get(name)
        if task is None:
            raise NotRegistered(
                f"{path}signature names task {name!r}, which is not registered on app {app.main!r}; "
                "import the module that defines it (or check the spelling)"
            )
        kw = sig["kwargs"]
        if name in (MAP_TASK, STARMAP_TASK):
            inner = kw.get("task")
            if inner not in app.tasks:
                raise NotRegistered(
                    f"{path}map/starmap names task {inner!r}, which is not registered on app {app.main!r}"
                )
        serializer = sig["options"].get("serializer") or task.serializer or app.conf.task_serializer
        try:
            app.serializers.get(serializer).encode([sig["args"], kw])
        except Exception:
            self.encodable(sig, list(sig["args"]), f"{path}<{name}>.args", task)
            self.encodable(sig, dict(kw), f"{path}<{name}>.kwargs", task)
            raise

    def encodable(self, sig: Signature, value: Any, what: str, task: Task | None) -> None:
        app = self.app
        serializer = (
            sig["options"].get("serializer")
            or (task.serializer if task is not None else None)
            or app.conf.task_serializer
        )
        app.serializers.dumps(value, serializer, what=what)
