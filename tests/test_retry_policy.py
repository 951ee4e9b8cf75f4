"""Retry policy, as Celery names it: autoretry_for, retry_kwargs, retry_backoff, jitter, retry(**options).

All in the simulator, on the virtual clock: an hour of backoff takes no real time.
"""

from __future__ import annotations

import itertools
import time

import pytest

from simq import App
from simq.exceptions import ConfigurationError


class Permanent(ConnectionError):
    """Not worth retrying."""


def make(**config):
    return App("retries", **config)


def attempts_of(app, name, **options):
    """A task failing with ConnectionError until its attempt ``succeed_at``; it records when each attempt ran."""
    seen: list[float] = []

    @app.task(name=name, bind=True, **options)
    def flaky(self, succeed_at=None):
        seen.append(time.time())
        if succeed_at is not None and self.request.retries >= succeed_at:
            return self.request.retries
        raise ConnectionError(f"attempt {self.request.retries}")

    return flaky, seen


class TestAutoretry:
    def test_autoretry_for_retries_then_fails_with_the_exception(self):
        app = make()
        flaky, seen = attempts_of(
            app, "t.auto", autoretry_for=(ConnectionError,), retry_kwargs={"max_retries": 3, "countdown": 5}
        )
        with app.simulate():
            r = flaky.delay()
            with pytest.raises(ConnectionError, match="attempt 3"):
                r.get()
        assert [round(b - a) for a, b in itertools.pairwise(seen)] == [5, 5, 5]

    def test_autoretry_succeeds_when_a_later_attempt_does(self):
        app = make()
        flaky, _ = attempts_of(app, "t.auto2", autoretry_for=(ConnectionError,), retry_kwargs={"countdown": 1})
        with app.simulate():
            assert flaky.delay(succeed_at=2).get() == 2

    def test_other_exceptions_are_not_retried(self):
        app = make()
        calls = []

        @app.task(bind=True, autoretry_for=(ConnectionError,))
        def picky(self):
            calls.append(1)
            raise KeyError("not retried")

        with app.simulate():
            with pytest.raises(KeyError):
                picky.delay().get()
        assert calls == [1]

    def test_dont_autoretry_for_wins(self):
        app = make()
        calls = []

        @app.task(bind=True, autoretry_for=(ConnectionError,), dont_autoretry_for=(Permanent,))
        def careful(self):
            calls.append(1)
            raise Permanent("never again")

        with app.simulate():
            with pytest.raises(Permanent):
                careful.delay().get()
        assert calls == [1]

    def test_max_retries_none_retries_until_it_works(self):
        app = make()
        flaky, seen = attempts_of(
            app, "t.forever", autoretry_for=(ConnectionError,), max_retries=None, retry_kwargs={"countdown": 60}
        )
        with app.simulate() as sim:
            assert flaky.delay(succeed_at=25).get() == 25
        assert len(seen) == 26 and sim.elapsed >= 25 * 60


class TestBackoff:
    def test_exponential_backoff_without_jitter(self):
        app = make()
        flaky, seen = attempts_of(
            app, "t.backoff", autoretry_for=(ConnectionError,), retry_backoff=True, retry_jitter=False, max_retries=5
        )
        with app.simulate():
            with pytest.raises(ConnectionError):
                flaky.delay().get()
        assert [round(b - a) for a, b in itertools.pairwise(seen)] == [1, 2, 4, 8, 16]

    def test_backoff_factor_and_maximum(self):
        app = make()
        flaky, seen = attempts_of(
            app,
            "t.capped",
            autoretry_for=(ConnectionError,),
            retry_backoff=10,
            retry_backoff_max=60,
            retry_jitter=False,
            max_retries=5,
        )
        with app.simulate():
            with pytest.raises(ConnectionError):
                flaky.delay().get()
        assert [round(b - a) for a, b in itertools.pairwise(seen)] == [10, 20, 40, 60, 60]

    def test_jitter_stays_under_the_backoff_and_replays_with_the_seed(self):
        def run(seed):
            app = make()
            flaky, seen = attempts_of(
                app, "t.jitter", autoretry_for=(ConnectionError,), retry_backoff=True, max_retries=6
            )
            with app.simulate(seed=seed):
                with pytest.raises(ConnectionError):
                    flaky.delay().get()
            return [b - a for a, b in itertools.pairwise(seen)]

        first = run(3)
        assert all(0 <= gap <= 2**i + 1e-6 for i, gap in enumerate(first))
        assert run(3) == first
        assert run(4) != first


class TestRetryOptions:
    def test_retry_to_another_queue_with_a_priority(self):
        app = make(task_queues=None)
        seen = []

        @app.task(bind=True, name="t.moved")
        def moved(self):
            seen.append((self.request.delivery_info["queue"], self.request.delivery_info["priority"]))
            if self.request.retries == 0:
                raise self.retry(countdown=1, queue="slow", priority=2)
            return "moved"

        with app.simulate(workers=1, queues=["celery", "slow"]):
            assert moved.delay().get() == "moved"
        assert seen == [("celery", None), ("slow", 2)]

    def test_unknown_retry_option_fails_the_task_naming_it(self):
        app = make()

        @app.task(bind=True, name="t.typo")
        def typo(self):
            raise self.retry(countdwn=1)

        with app.simulate():
            with pytest.raises(ConfigurationError, match="countdwn"):
                typo.delay().get()


class TestPolicyChecks:
    def test_autoretry_for_must_hold_exception_classes(self):
        app = make()
        with pytest.raises(ConfigurationError, match="autoretry_for"):

            @app.task(autoretry_for=("ConnectionError",))
            def bad():
                pass

    def test_retry_kwargs_keys_are_checked(self):
        app = make()
        with pytest.raises(ConfigurationError, match="retry_kwargs"):

            @app.task(autoretry_for=(ValueError,), retry_kwargs={"max_retry": 3})
            def bad():
                pass
