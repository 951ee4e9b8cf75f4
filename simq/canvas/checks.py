"""Checking a canvas before anything is sent: task names, serialisable arguments, cycles; errors name the path."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from simq.canvas.signatures import MAP_TASK, STARMAP_TASK, Signature, _listify, from_dict
from simq.exceptions import InvalidSignature, NotRegistered

if TYPE_CHECKING:
    from simq.app import App
    from simq.task import Task

__all__ = ["validate"]


def validate(app: App, sig: Signature, path: str = "") -> None:
    """Refuse, before sending, unknown task names, unserialisable arguments and cycles; errors name the path."""
    _validate(app, sig, path, [])


def _validate(app: App, node: Any, path: str, stack: list[int]) -> None:
    if id(node) in stack:
        raise InvalidSignature(f"refusing a cycle at {path or 'the top'}: {node!r} contains itself, so it would never end")
    if not isinstance(node, Mapping):
        raise InvalidSignature(f"{path or 'canvas'}: expected a signature, got {node!r}")
    stack.append(id(node))
    try:
        sig = from_dict(node, app)
        kind = sig.get("subtask_type")
        options = node.get("options") or {}
        if "link" in options or "link_error" in options:
            for key in ("link", "link_error"):
                for i, cb in enumerate(_listify(options.get(key))):
                    _validate(app, cb, f"{path}{key}[{i}].", stack)
        kw = node.get("kwargs") or {}
        if kind in ("chain", "group"):
            tasks = kw.get("tasks") or []
            if kind == "chain" and not tasks:
                raise InvalidSignature(f"{path or 'canvas'}: an empty chain has nothing to run")
            for i, t in enumerate(tasks):
                _validate(app, t, f"{path}{kind}[{i}].", stack)
        elif kind == "chord":
            _validate(app, kw.get("header"), f"{path}chord.header.", stack)
            if kw.get("body") is None:
                raise InvalidSignature(f"{path or 'canvas'}: a chord needs a body: chord(header, body) or chord(header)(body)")
            _validate(app, kw.get("body"), f"{path}chord.body.", stack)
        elif kind == "chunks":
            _validate(app, Signature(kw.get("task"), app=app), path, stack)
            _check_encodable(app, sig, kw.get("it"), f"{path}<{kw.get('task')}.chunks>.items", None)
        else:
            name = sig.task
            task = app.tasks.get(name)
            if task is None:
                raise NotRegistered(
                    f"{path}signature names task {name!r}, which is not registered on app {app.main!r}; "
                    "import the module that defines it (or check the spelling)"
                )
            if name in (MAP_TASK, STARMAP_TASK):
                inner = kw.get("task")
                if inner not in app.tasks:
                    raise NotRegistered(
                        f"{path}map/starmap names task {inner!r}, which is not registered on app {app.main!r}"
                    )
            serializer = sig["options"].get("serializer") or task.serializer or app.conf.task_serializer
            try:
                app.serializers.get(serializer).encode([sig["args"], sig["kwargs"]])
            except Exception:
                _check_encodable(app, sig, list(sig["args"]), f"{path}<{name}>.args", task)
                _check_encodable(app, sig, dict(sig["kwargs"]), f"{path}<{name}>.kwargs", task)
                raise
    finally:
        stack.pop()


def _check_encodable(app: App, sig: Signature, value: Any, what: str, task: Task | None) -> None:
    serializer = sig["options"].get("serializer") or (task.serializer if task is not None else None) or app.conf.task_serializer
    app.serializers.dumps(value, serializer, what=what)
