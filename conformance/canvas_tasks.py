"""The plain tasks most canvas rows build on, defined once: ``add``, ``identity``, ``tsum``, ``fail``.

A row's ``make(backend)`` calls :func:`basic_tasks` on its app and adds the
tasks only it needs. The names are fixed (``t.add`` ...), so a deployed
worker that re-runs the row defines the same ones.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

__all__ = ["basic_tasks"]


def basic_tasks(app: Any) -> SimpleNamespace:
    """Define the four tasks on ``app``; returns them by name."""

    @app.task(name="t.add")
    def add(x, y):
        return x + y

    @app.task(name="t.identity")
    def identity(x):
        return x

    @app.task(name="t.tsum")
    def tsum(numbers):
        return sum(numbers)

    @app.task(name="t.fail")
    def fail(*args):
        raise ValueError(f"failed with {args!r}")

    return SimpleNamespace(add=add, identity=identity, tsum=tsum, fail=fail)
