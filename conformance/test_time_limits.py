"""Time limits (Celery's ``soft_time_limit`` and ``time_limit``) on every backend.

In a simulation a task's ``time.sleep()`` spends virtual time, so these run
at once there; on real brokers they take about a second of wall time. The
tasks sleep in short steps: a threads pool raises a limit between two Python
instructions, so one long blocking sleep would hold it off (docs/operations.md).
"""

from __future__ import annotations

import time

import pytest

from simq import states
from simq.exceptions import ConfigurationError, SoftTimeLimitExceeded, TimeLimitExceeded


def _steps(seconds: float, step: float = 0.05) -> None:
    for _ in range(round(seconds / step)):
        time.sleep(step)


def test_soft_time_limit_raises_inside_the_task_which_may_clean_up(backend):
    app = backend.app()
    seen = backend.record()

    @app.task(soft_time_limit=0.5)
    def tidy():
        try:
            _steps(30)
        except SoftTimeLimitExceeded as exc:
            seen.append(type(exc).__name__)
            return "cleaned up"
        return "never cut off"

    started = time.time()
    assert tidy.delay().get(timeout=30) == "cleaned up"
    assert list(seen) == ["SoftTimeLimitExceeded"]
    if backend.virtual:
        assert time.time() - started == pytest.approx(0.5, abs=0.06)


def test_time_limit_ends_the_task_and_stores_time_limit_exceeded(backend):
    app = backend.app()
    after = backend.record()

    @app.task(time_limit=1)
    def stubborn():
        try:
            _steps(60)
        except Exception:  # a hard limit is not an Exception: this cannot swallow it
            after.append("swallowed")
        after.append("went on")

    @app.task
    def add(x, y):
        return x + y

    r = stubborn.delay()
    with pytest.raises(TimeLimitExceeded):
        r.get(timeout=30)
    assert r.state == states.FAILURE
    assert list(after) == []
    assert add.delay(2, 3).get(timeout=30) == 5  # the worker (and its pool slot) runs the next task


def test_a_call_limit_wins_over_the_task_and_the_soft_limit_comes_first(backend):
    app = backend.app()
    seen = backend.record()

    @app.task(time_limit=600)
    def patient():
        try:
            _steps(60)
        except SoftTimeLimitExceeded:
            seen.append("soft")
            _steps(60)
        return "finished"

    r = patient.apply_async(time_limit=1, soft_time_limit=0.3)
    with pytest.raises(TimeLimitExceeded):
        r.get(timeout=30)
    assert list(seen) == ["soft"]


def test_the_app_wide_limit_applies_to_tasks_without_their_own(backend):
    app = backend.app(task_soft_time_limit=0.3)

    @app.task
    def long():
        try:
            _steps(60)
        except SoftTimeLimitExceeded:
            return "cut at the app's limit"

    assert long.delay().get(timeout=30) == "cut at the app's limit"


def test_bad_time_limits_are_refused_where_they_are_given(backend):
    app = backend.app()
    with pytest.raises(ConfigurationError, match="time_limit"):

        @app.task(time_limit="soon")
        def never():
            pass

    @app.task
    def fine():
        return 1

    with pytest.raises(ConfigurationError, match="soft_time_limit"):
        fine.apply_async(soft_time_limit=-1)
