"""The canvas's built-in tasks (map, starmap, accumulate) and the ``link=`` / ``link_error=`` values of a send."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from simq.canvas.checks import validate
from simq.canvas.signatures import ACCUMULATE_TASK, MAP_TASK, STARMAP_TASK, Signature, _as_signature

if TYPE_CHECKING:
    from simq.app import App

__all__ = ["register_builtins", "to_signature_dicts"]


# -- map / starmap: the built-in tasks -------------------------------------------------------------


def register_builtins(app: App) -> None:
    """``simq.map`` and ``simq.starmap``: the tasks behind ``task.map`` / ``task.starmap`` / ``task.chunks``."""
    if MAP_TASK in app.tasks:
        return

    def simq_map(*args: Any, task: str, it: Any = None) -> list[Any]:
        fun = app.tasks[task]
        items = args[0] if args else it
        return [fun(item) for item in items]

    def simq_starmap(*args: Any, task: str, it: Any = None) -> list[Any]:
        fun = app.tasks[task]
        items = args[0] if args else it
        return [fun(*item) for item in items]

    def simq_accumulate(values: Any) -> Any:
        return values

    app.task(name=MAP_TASK)(simq_map)
    app.task(name=ACCUMULATE_TASK)(simq_accumulate)
    app.task(name=STARMAP_TASK)(simq_starmap)


# -- link= / link_error= on apply_async --------------------------------------------------------------


def to_signature_dicts(app: App, value: Any) -> list[dict[str, Any]]:
    """``link=`` / ``link_error=`` values (one or a list) as plain dicts for the message."""
    items: Iterable[Any] = value if isinstance(value, list | tuple) and not isinstance(value, Signature) else [value]
    out = []
    for i, item in enumerate(items):
        sig = _as_signature(app, item)
        validate(
            app, sig, f"link[{i}]." if not isinstance(value, Signature) and isinstance(value, list | tuple) else ""
        )
        out.append(dict(sig))
    return out
