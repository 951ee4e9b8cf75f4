"""Retry policy, signals and result lifetime (docs/calling.md, docs/operations.md) on every backend.

Countdowns and backoff are seconds on real brokers and on the deployed
workers, and run in no real time in the simulation.
"""

from __future__ import annotations

import itertools
import time

import pytest

from simq import signals, states
from simq.exceptions import ConfigurationError


def test_autoretry_for_retries_with_backoff_then_succeeds(backend):
    app = backend.app()
    attempts = backend.record()

    @app.task(bind=True, autoretry_for=(ConnectionError,), retry_backoff=1, retry_jitter=False, max_retries=5)
    def flaky(self):
        attempts.append((self.request.retries, time.time()))
        if self.request.retries < 2:
            raise ConnectionError(f"attempt {self.request.retries}")
        return self.request.retries

    assert flaky.delay().get(timeout=60) == 2
    tries = list(attempts)
    assert [n for n, _ in tries] == [0, 1, 2]
    if backend.name != "eager":  # eager mode jumps its clock; the gaps below are the backoff (1 s, then 2 s)
        gaps = [round(b - a, 1) for (_, a), (_, b) in itertools.pairwise(tries)]
        assert gaps[0] >= 1.0 - 0.05 and gaps[1] >= 2.0 - 0.05


def test_autoretry_gives_up_after_max_retries_with_the_tasks_exception(backend):
    app = backend.app()

    @app.task(autoretry_for=(ConnectionError,), retry_kwargs={"max_retries": 2, "countdown": 0.2})
    def down():
        raise ConnectionError("still down")

    r = down.delay()
    with pytest.raises(ConnectionError, match="still down"):
        r.get(timeout=60)
    assert r.state == states.FAILURE


@pytest.mark.simq_in_process(
    "a receiver connected in the test is not connected in a deployed worker's process; "
    "tests/test_deployed_worker.py::TestSignalsOnPools checks the order there with the app module's receivers"
)
def test_task_signals_fire_around_a_task_in_order(backend):
    app = backend.app()
    heard = backend.record()
    names = ("task_received", "task_prerun", "task_success", "task_postrun")

    def receiver(signal=None, sender=None, **kwargs):
        heard.append(signal.name)

    for name in names:
        getattr(signals, name).connect(receiver)
    try:

        @app.task
        def add(x, y):
            return x + y

        assert add.delay(2, 2).get(timeout=30) == 4
        backend.wait_until(lambda: len(heard) >= 4)
        assert list(heard) == list(names)
    finally:
        for name in names:
            getattr(signals, name).disconnect(receiver)


def test_update_state_stores_a_custom_state_and_meta_a_caller_reads(backend):
    app = backend.app()
    seen = backend.record()

    @app.task(bind=True, name="t.progress")
    def progress(self, total):
        for done in range(1, total + 1):
            self.update_state(state="PROGRESS", meta={"done": done, "of": total})
            mine = app.AsyncResult(self.request.id)  # read back in the worker, from the result backend
            seen.append([mine.state, mine.info["done"]])
        self.update_state(task_id=f"{self.request.id}-report", state="REPORTED", meta={"total": total})
        return total

    result = progress.delay(2)
    assert result.get(timeout=30) == 2 and result.state == "SUCCESS"
    assert [list(item) for item in seen] == [["PROGRESS", 1], ["PROGRESS", 2]]
    report = app.AsyncResult(f"{result.id}-report")
    assert (report.state, report.info, report.ready()) == ("REPORTED", {"total": 2}, False)


def test_forget_removes_a_result_and_result_expires_ends_it(backend):
    app = backend.app(result_expires=60 if backend.virtual else 2)

    @app.task
    def add(x, y):
        return x + y

    kept = add.delay(1, 1)
    forgotten = add.delay(2, 2)
    assert kept.get(timeout=30) == 2 and forgotten.get(timeout=30) == 4
    forgotten.forget()
    assert app.AsyncResult(forgotten.id).state == states.PENDING
    assert app.AsyncResult(kept.id).state == states.SUCCESS
    if backend.name == "eager":
        return  # eager results live in this process; their expiry is tests/test_result_expires.py's
    backend.advance(61 if backend.virtual else 3)
    assert app.AsyncResult(kept.id).state == states.PENDING  # expired: as if it never ran


def test_bad_retry_policies_are_refused_where_they_are_given(backend):
    app = backend.app()
    with pytest.raises(ConfigurationError, match="retry_backoff"):

        @app.task(autoretry_for=(ValueError,), retry_backoff="fast")
        def never():
            pass
