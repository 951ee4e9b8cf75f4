"""``pytest -p simq.celery``: the layer is on before conftest.py imports celery; the fixtures in each mode."""

from __future__ import annotations

pytest_plugins = ["pytester"]

CONFTEST = """
from celery.contrib.pytest import celery_app, celery_session_worker  # as Celery's own suite does

import pytest


@pytest.fixture(scope="session")
def celery_includes():
    return ["tasks_mod"]
"""

TASKS = """
from time import sleep

from celery import shared_task
from redis_free_side import seen


@shared_task
def add(x, y):
    return x + y


@shared_task
def slow_note(value):
    sleep(30)  # bound at import time: must still sleep virtually in a simulation
    seen.append(value)
"""


def _project(pytester):  # type: ignore[no-untyped-def]
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(tasks_mod=TASKS, redis_free_side="seen = []\n")
    pytester.syspathinsert()


def test_sim_mode_runs_the_session_worker_suite_in_a_simulation(pytester):  # type: ignore[no-untyped-def]
    _project(pytester)
    pytester.makepyfile(
        test_it="""
        from time import monotonic, sleep

        from celery import group
        from tasks_mod import add, slow_note
        from redis_free_side import seen


        def test_group(celery_app, celery_session_worker):
            assert group(add.s(i, i) for i in range(3))().get(timeout=10) == [0, 2, 4]


        def test_polling_with_from_time_import_sleep_advances_the_simulation(celery_app, celery_session_worker):
            slow_note.delay("done")
            start = monotonic()
            while not seen and monotonic() - start < 600:
                sleep(1)  # the test's own sleep, bound at import time
            assert seen == ["done"]
        """
    )
    result = pytester.runpytest_subprocess("-p", "simq.celery", "-p", "no:cacheprovider", "--timeout", "20")
    result.assert_outcomes(passed=2)


def test_eager_mode_sets_task_always_eager(pytester):  # type: ignore[no-untyped-def]
    _project(pytester)
    pytester.makepyfile(
        test_it="""
        from tasks_mod import add


        def test_eager(celery_app, celery_session_worker):
            assert celery_app.conf.task_always_eager is True
            assert add.delay(2, 2).get() == 4
        """
    )
    result = pytester.runpytest_subprocess("-p", "simq.celery", "-p", "no:cacheprovider", "--simq-celery-mode", "eager")
    result.assert_outcomes(passed=1)


def test_deployed_mode_needs_a_broker(pytester):  # type: ignore[no-untyped-def]
    _project(pytester)
    pytester.makepyfile(test_it="def test_x(celery_app):\n    pass\n")
    result = pytester.runpytest_subprocess(
        "-p", "simq.celery", "-p", "no:cacheprovider", "--simq-celery-mode", "deployed"
    )
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*needs --simq-celery-broker*"])
