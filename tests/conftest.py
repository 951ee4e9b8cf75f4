"""Shared by the tests: a report section for numbers measured on the real brokers.

A test that measures something worth keeping (tasks lost after SIGKILLs,
publishes during a broker restart) adds a line through the ``reliability_report``
fixture; pytest prints them at the end of the run, so CI's log carries them.
"""

from __future__ import annotations

import pytest

REPORT = pytest.StashKey[list[str]]()


def pytest_configure(config: pytest.Config) -> None:
    config.stash[REPORT] = []


@pytest.fixture
def reliability_report(request: pytest.FixtureRequest) -> list[str]:
    return request.config.stash[REPORT]


def pytest_terminal_summary(terminalreporter, exitstatus, config: pytest.Config) -> None:
    lines = config.stash.get(REPORT, [])
    if lines:
        terminalreporter.section("simq reliability on the real brokers")
        for line in lines:
            terminalreporter.write_line(line)
