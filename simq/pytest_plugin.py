"""simq's pytest plugin: fixtures for simulating an app, and the replay seed option.

Registered under the ``pytest11`` entry point; imports simq only when a
fixture is used.

- ``simq_app``: the App under test. Override it in your conftest.py to return
  your own app; the default is a fresh ``App("test")``.
- ``simq_sim``: ``simq_app.simulate(seed=...)`` entered for the test. The
  seed is 0, or what ``--simq-seed`` says, so a failing run can be replayed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from simq.app import App
    from simq.memory.simulation import Simulation


def pytest_addoption(parser: Any) -> None:
    group = parser.getgroup("simq")
    group.addoption("--simq-seed", type=int, default=None, help="seed for simq_sim simulations (replay a failure)")


@pytest.fixture
def simq_seed(request: Any) -> int:
    seed = request.config.getoption("--simq-seed")
    return 0 if seed is None else int(seed)


@pytest.fixture
def simq_app() -> App:
    from simq import App

    return App("test")


@pytest.fixture
def simq_sim(simq_app: App, simq_seed: int, request: Any) -> Iterator[Simulation]:
    with simq_app.simulate(seed=simq_seed) as sim:
        yield sim
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        print(f"\nsimq: replay with --simq-seed={simq_seed} (trace digest {sim.digest[:16]})")


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: Any, call: Any) -> Iterator[Any]:
    outcome: Any = yield
    report = outcome.get_result()
    if report.when == "call":
        item.rep_call = report
