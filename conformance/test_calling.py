"""Calling tasks: delay, apply_async and its options, as seeds/executing-tasks.txt describes them."""

from __future__ import annotations

import time
from datetime import datetime, timedelta

import pytest

from simq import states
from simq.exceptions import ConfigurationError, TaskRevokedError


def test_delay_and_apply_async_give_the_same_result(backend):
    app = backend.app()

    @app.task
    def add(x, y):
        return x + y

    assert add.delay(2, 2).get() == 4
    assert add.apply_async(args=[10, 10]).get() == 20
    assert add.apply_async(args=[1], kwargs={"y": 5}).get() == 6


def test_kwargs_reach_the_task(backend):
    app = backend.app()

    @app.task
    def describe(arg1, arg2, kwarg1=None, kwarg2=None):
        return [arg1, arg2, kwarg1, kwarg2]

    r = describe.apply_async(args=["a", "b"], kwargs={"kwarg1": "x", "kwarg2": "y"})
    assert r.get() == ["a", "b", "x", "y"]
    assert describe.delay("a", "b", kwarg1="x", kwarg2="y").get() == ["a", "b", "x", "y"]


def test_countdown_runs_no_earlier_than_asked(backend):
    app = backend.app()

    @app.task
    def stamp():
        return time.time()

    countdown = 3 if backend.virtual else 1  # a real broker waits it out on the wall clock
    sent_at = time.time()
    r = stamp.apply_async(countdown=countdown)
    assert r.get(timeout=30) >= sent_at + countdown


@pytest.mark.simq_virtual_only("eta is a day ahead; conformance/test_brokers.py checks eta on real brokers in seconds")
def test_eta_datetime_runs_no_earlier_than_asked(backend):
    app = backend.app()

    @app.task
    def unban(username):
        return [username, time.time()]

    tomorrow = datetime.now() + timedelta(days=1)
    r = unban.apply_async(args=["mallory"], eta=tomorrow)
    name, ran_at = r.get()
    assert name == "mallory"
    assert ran_at >= tomorrow.timestamp() - 1e-6 or ran_at >= (tomorrow - datetime(1970, 1, 1)).total_seconds()


def test_expired_task_is_revoked_and_never_runs(backend):
    app = backend.app()
    ran = backend.record()

    @app.task
    def work():
        ran.append(1)
        return "ran"

    countdown, expires = (60, 10) if backend.virtual else (2, 1)
    r = work.apply_async(countdown=countdown, expires=expires)
    with pytest.raises(TaskRevokedError):
        r.get(timeout=None if backend.virtual else 30)
    assert r.state == states.REVOKED
    assert ran == []


def test_expires_in_the_future_lets_the_task_run(backend):
    app = backend.app()

    @app.task
    def work():
        return "ran"

    countdown = 5 if backend.virtual else 1
    assert work.apply_async(countdown=countdown, expires=60).get(timeout=30 if not backend.virtual else None) == "ran"


def test_task_id_is_used(backend):
    app = backend.app()

    @app.task
    def add(x, y):
        return x + y

    r = add.apply_async((1, 1), task_id="my-id")
    assert r.id == "my-id"
    assert r.get() == 2
    assert app.AsyncResult("my-id").result == 2


def test_countdown_and_eta_together_are_refused(backend):
    app = backend.app()

    @app.task
    def add(x, y):
        return x + y

    with pytest.raises(ConfigurationError, match="countdown= or eta="):
        add.apply_async((1, 1), countdown=3, eta=datetime.now())


@pytest.mark.parametrize("priority", [-1, 10, 1.5, "high"])
def test_priority_outside_0_to_9_is_refused(backend, priority):
    app = backend.app()

    @app.task
    def add(x, y):
        return x + y

    with pytest.raises(ConfigurationError, match="priority"):
        add.apply_async((1, 1), priority=priority)


def test_failure_is_stored_with_exception_and_traceback(backend):
    app = backend.app()

    @app.task
    def boom():
        raise ValueError("bad thing")

    r = boom.delay()
    with pytest.raises(ValueError, match="bad thing"):
        r.get()
    assert r.state == states.FAILURE
    assert r.failed() and not r.successful()
    assert isinstance(r.result, ValueError)
    assert "bad thing" in r.traceback
    assert r.get(propagate=False).args == ("bad thing",)


@pytest.mark.simq_virtual_only(
    "two 10 s retry countdowns; conformance/test_brokers.py retries on real brokers in seconds"
)
def test_retry_with_countdown_runs_again_later(backend):
    app = backend.app()
    attempts = backend.record()

    @app.task(bind=True, max_retries=3)
    def flaky(self):
        attempts.append((self.request.retries, time.time()))
        if self.request.retries < 2:
            raise self.retry(countdown=10, exc=RuntimeError("try again"))
        return "done"

    assert flaky.delay().get() == "done"
    assert [n for n, _ in attempts] == [0, 1, 2]
    assert attempts[1][1] - attempts[0][1] >= 10
    assert attempts[2][1] - attempts[1][1] >= 10


def test_retry_past_max_retries_fails_with_the_original_error(backend):
    app = backend.app()

    @app.task(bind=True, max_retries=2, default_retry_delay=1)
    def always(self):
        raise self.retry(exc=KeyError("nope"))

    r = always.delay()
    with pytest.raises(KeyError):
        r.get()
    assert r.state == states.FAILURE


def test_apply_runs_locally_without_a_broker(backend):
    app = backend.app()

    @app.task
    def add(x, y):
        return x + y

    r = add.apply((3, 4))
    assert r.get() == 7
    assert add(3, 4) == 7


def test_headers_reach_the_request(backend):
    app = backend.app()

    @app.task(bind=True)
    def show(self):
        return self.request.headers.get("tenant")

    assert show.apply_async(headers={"tenant": "acme"}).get() == "acme"


def test_ignore_result_stores_nothing(backend):
    app = backend.app()
    ran = backend.record()

    @app.task(ignore_result=True)
    def fire():
        ran.append(1)
        return 1

    r = fire.delay()
    backend.settle(app)
    assert ran == [1]
    assert r.state == states.PENDING
