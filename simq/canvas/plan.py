"""Freezing a canvas: normalise it, give every node its id, and say where its values will be.

Each step is a method of the node's own class (``simq.canvas.signatures``);
these functions are the names the rest of simq calls.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from simq.canvas.signatures import Signature

if TYPE_CHECKING:
    from simq.app import App
    from simq.result import AsyncResult, GroupResult

__all__ = ["count", "leaf_ids", "prepare", "result_from_spec", "result_of", "spec"]


def prepare(app: App, sig: Signature) -> None:
    """Normalise (flatten chains, group-then-X becomes a chord) and give every node its id, in place."""
    sig._freeze(app)


def spec(sig: Signature) -> Any:
    """Where a node's value will be: a task id, or ``{"g": group_id, "r": [member specs]}``."""
    return sig._spec()


def count(sig: Signature) -> int:
    """How many tasks report to an enclosing chord when this node is done."""
    return sig._count()


def leaf_ids(sig: Signature) -> Iterator[str]:
    """Every task id inside a node (to mark them failed when the node will never run)."""
    return sig._leaf_ids()


def result_of(app: App, sig: Signature, parent: Any = None) -> Any:
    """The result handle of a frozen node."""
    return sig._result(app, parent)


def result_from_spec(app: App, spec: Any) -> AsyncResult | GroupResult:
    from simq.result import AsyncResult, GroupResult

    if isinstance(spec, Mapping):
        return GroupResult(str(spec["g"]), [result_from_spec(app, s) for s in spec["r"]], app)
    return AsyncResult(str(spec), app)
