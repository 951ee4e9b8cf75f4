"""The upstream canvas tests expected to fail on simq, each with its reason (``simq.celery.upstream``'s gate).

Keys are pytest node ids under ``t/integration/test_canvas.py``. Kinds:
``canvas``: needs a canvas feature simq lacks (being built on branch canvas-features);
``divergence``: simq behaves differently on purpose or not yet;
``internals``: the test pins a Celery internal or bug (docs/celery.md lists them).
"""

from __future__ import annotations

__all__ = ["SIM", "expected_failures"]

_P = "t/integration/test_canvas.py::"

#: sim mode's expected failures: node id -> reason.
SIM: dict[str, str] = {}


def expected_failures(mode: str) -> dict[str, str]:
    """The list for ``mode`` (sim; a deployed mode shares sim's list: the same worker code runs)."""
    del mode
    return {f"{_P}{k}": v for k, v in SIM.items()}
