"""The pytest plugin's fixtures, exercised in a child pytest run."""

from __future__ import annotations

pytest_plugins = ["pytester"]


def test_simq_sim_fixture_simulates_the_overridden_app(pytester):
    pytester.makeconftest(
        """
import pytest
from simq import App

app = App("proj")

@app.task(name="proj.add")
def add(x, y):
    return x + y

@pytest.fixture
def simq_app():
    return app
"""
    )
    pytester.makepyfile(
        """
def test_add(simq_sim, simq_app):
    r = simq_app.tasks["proj.add"].apply_async((2, 2), countdown=3600)
    assert r.get() == 4
    assert simq_sim.elapsed == 3600

def test_seed(simq_sim):
    assert simq_sim.seed == 42
"""
    )
    result = pytester.runpytest("--simq-seed", "42", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


def test_failing_simulated_test_prints_how_to_replay(pytester):
    pytester.makepyfile(
        """
def test_fails(simq_sim):
    assert False
"""
    )
    result = pytester.runpytest("--simq-seed", "9", "-s", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*replay with --simq-seed=9*"])
