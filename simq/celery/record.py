"""A pytest plugin the upstream runner loads: every test's outcome, as JSON in ``$SIMQ_CELERY_OUTCOMES``."""

from __future__ import annotations

import json
import os
from typing import Any

__all__ = ["Recorder", "pytest_configure"]


class Recorder:
    """Collects the node ids and each test's outcome (with the first line of its failure)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.collected: list[str] = []
        self.outcomes: dict[str, dict[str, str]] = {}

    def pytest_collection_modifyitems(self, items: list[Any]) -> None:
        """Cap upstream's ``timeout(300)`` marks at ``$SIMQ_CELERY_TIMEOUT_CAP``: a test here takes milliseconds."""
        cap = os.environ.get("SIMQ_CELERY_TIMEOUT_CAP")
        if not cap:
            return
        import pytest

        for item in items:
            mark = item.get_closest_marker("timeout")
            if mark is not None and float(mark.kwargs.get("timeout", mark.args[0] if mark.args else 0)) > float(cap):
                item.add_marker(pytest.mark.timeout(timeout=float(cap)), append=False)

    def pytest_collection_finish(self, session: Any) -> None:
        self.collected = [item.nodeid for item in session.items]

    def pytest_runtest_logreport(self, report: Any) -> None:
        if getattr(report, "context", None) is not None:  # a subtest's report: its test reports too
            return
        entry = self.outcomes.setdefault(report.nodeid, {"outcome": "passed", "detail": ""})
        if hasattr(report, "wasxfail"):
            entry["outcome"] = "xpassed" if report.passed else "xfailed"
            return
        if report.skipped and entry["outcome"] == "passed":
            reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
            entry.update(outcome="skipped", detail=str(reason))
        elif report.failed:
            crash = getattr(report.longrepr, "reprcrash", None)
            detail = crash.message if crash is not None else str(report.longrepr)
            first = detail.splitlines()[0][:300] if detail else ""
            entry.update(outcome="failed" if report.when == "call" else "error", detail=first)

    def pytest_sessionfinish(self, session: Any, exitstatus: int) -> None:
        with open(self.path, "w", encoding="utf-8") as out:
            json.dump({"collected": self.collected, "outcomes": self.outcomes}, out, indent=1, sort_keys=True)


def pytest_configure(config: Any) -> None:
    path = os.environ.get("SIMQ_CELERY_OUTCOMES")
    if path:
        config.pluginmanager.register(Recorder(path), "simq.celery.record.recorder")
