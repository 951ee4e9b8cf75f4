"""Time limits and virtual sleeping: each way simq.limits enforces them, and what it must not disturb."""

from __future__ import annotations

import signal
import threading
import time

import pytest

import simq
from simq import limits, states
from simq.batches import Batches
from simq.clock import WallClock
from simq.exceptions import ConfigurationError, SoftTimeLimitExceeded, TimeLimitExceeded
from simq.limits import HardTimeLimit, TimeLimits, Watchdog


def test_a_simulated_tasks_sleep_spends_exactly_that_much_virtual_time():
    app = simq.App("sleepy")
    seen = []

    @app.task
    def nap(seconds):
        before = time.time()
        time.sleep(seconds)
        seen.append(time.time() - before)

    with app.simulate() as sim:
        start = sim.clock.now
        nap.delay(3600)
        nap.delay(0.25)
        sim.run_until_idle()
        assert seen == [3600, 0.25]
        assert sim.clock.now - start == pytest.approx(3600.25)


def test_timers_due_during_a_sleep_fire_after_it_in_order():
    app = simq.App("order")
    order = []

    @app.task
    def nap():
        time.sleep(10)
        order.append(("nap done", time.time()))

    @app.task
    def tick():
        order.append(("tick", time.time()))

    with app.simulate() as sim:
        start = sim.clock.now
        nap.delay()
        tick.apply_async(countdown=5)
        sim.run_until_idle()
    assert [name for name, _ in order] == ["nap done", "tick"]
    assert order[0][1] - start == pytest.approx(10)
    assert order[1][1] >= order[0][1]  # it was due at +5 but the one worker was busy sleeping


def test_a_tests_own_sleep_drives_the_simulation_other_threads_sleep_for_real(monkeypatch):
    real = []
    monkeypatch.setattr(limits, "_REAL_SLEEP", real.append)
    original = time.sleep
    app = simq.App("outside")

    @app.task
    def ping():
        return "pong"

    with app.simulate() as sim:
        assert time.sleep is limits.virtual_sleep
        start = sim.clock.now
        r = ping.apply_async(countdown=30)
        deadline = time.monotonic() + 60  # a test's polling loop, as Celery's suite writes them
        while not r.ready() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert r.result == "pong"
        assert sim.clock.now - start == pytest.approx(30, abs=0.5)
        other = threading.Thread(target=time.sleep, args=(0.25,))
        other.start()
        other.join()
        with app.simulate():  # nested simulations nest the patch
            pass
        assert time.sleep is limits.virtual_sleep
    assert time.sleep is original
    assert real == [0.25]  # only the other thread slept for real


def test_soft_then_hard_in_virtual_time():
    app = simq.App("limits")
    log = []

    @app.task(soft_time_limit=5, time_limit=8)
    def slow():
        try:
            time.sleep(100)
        except SoftTimeLimitExceeded:
            log.append(("soft", time.time()))
            try:
                time.sleep(100)
            except Exception:
                log.append("swallowed")

    with app.simulate() as sim:
        start = sim.clock.now
        r = slow.delay()
        sim.run_until_idle()
        with pytest.raises(TimeLimitExceeded) as info:
            r.get()
        assert r.state == states.FAILURE
        assert sim.clock.now - start == pytest.approx(8)
    assert log == [("soft", pytest.approx(start + 5))]
    assert info.value.args == (8.0,)


def test_the_call_wins_over_the_task_which_wins_over_the_app():
    app = simq.App("which", task_time_limit=100)

    @app.task(time_limit=50)
    def own():
        time.sleep(1000)

    @app.task
    def plain():
        time.sleep(1000)

    with app.simulate() as sim:
        for task, options, expected in ((own, {}, 50), (own, {"time_limit": 7}, 7), (plain, {}, 100)):
            start = sim.clock.now
            r = task.apply_async(**options)
            sim.run_until_idle()
            with pytest.raises(TimeLimitExceeded):
                r.get()
            assert sim.clock.now - start == pytest.approx(expected)


def test_a_retry_keeps_the_calls_limits():
    app = simq.App("retry")
    attempts = []

    @app.task(bind=True, max_retries=1)
    def flaky(self):
        attempts.append(self.request.retries)
        if self.request.retries == 0:
            raise self.retry(countdown=1)
        time.sleep(1000)

    with app.simulate() as sim:
        r = flaky.apply_async(time_limit=3)
        sim.run_until_idle()
        with pytest.raises(TimeLimitExceeded):
            r.get()
    assert attempts == [0, 1]


def test_bad_limits_are_refused_with_their_names():
    app = simq.App("bad")
    with pytest.raises(ConfigurationError, match=r"time_limit must be a number of seconds.*'soon'"):
        app.task(time_limit="soon")(lambda: None)
    with pytest.raises(ConfigurationError, match="soft_time_limit"):
        app.task(soft_time_limit=-1)(lambda: None)

    @app.task
    def fine():
        return 1

    with pytest.raises(ConfigurationError, match="time_limit"):
        fine.apply_async(time_limit=True)
    app.conf.task_time_limit = "a while"
    with pytest.raises(ConfigurationError, match="task_time_limit"), app.simulate():
        pass


def test_a_batches_task_refuses_time_limits():
    app = simq.App("batches")
    with pytest.raises(ConfigurationError, match="not supported on Batches"):

        @app.task(base=Batches, flush_every=2, time_limit=5)
        def flush(requests):
            pass


def test_a_malformed_timelimit_header_fails_the_task_saying_so():
    app = simq.App("header")

    @app.task
    def fine():
        return 1

    with app.simulate() as sim:
        r = fine.apply_async(headers={"timelimit": "soon"})
        sim.run_until_idle()
        with pytest.raises(ConfigurationError, match="timelimit"):
            r.get()


# -- production ways -----------------------------------------------------------------------------


def _wall_executor(app):
    from simq.executor import Executor

    return Executor(app, app.backend, WallClock(), "test@host")


def _request(app, task, **options):
    from simq import protocol
    from simq.calling import build
    from simq.message import Delivery
    from simq.request import Request

    message, serializer = build(app, task.name, (), {}, task, options, time.time(), app.new_id, None)
    envelope = protocol.encode(message, app.serializers, serializer)
    return Request(message, Delivery(envelope, 1, "celery", "", "celery"), task, "test@host")


@pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="needs setitimer")
def test_on_the_main_thread_an_alarm_cuts_a_blocking_sleep_and_the_previous_alarm_is_kept():
    app = simq.App("alarm")

    @app.task(time_limit=0.2)
    def blocked():
        time.sleep(60)

    fired = []

    def theirs(*_):
        fired.append(1)

    previous = signal.signal(signal.SIGALRM, theirs)
    signal.setitimer(signal.ITIMER_REAL, 100)  # somebody else's alarm (pytest-timeout sets one)
    try:
        request = _request(app, blocked)
        started = time.monotonic()
        outcome = _wall_executor(app).run_task(request)
        assert time.monotonic() - started < 10
        assert outcome.failed == 1
        with pytest.raises(TimeLimitExceeded):
            app.AsyncResult(request.id).get(timeout=1)
        assert 90 < signal.getitimer(signal.ITIMER_REAL)[0] <= 100
        assert signal.getsignal(signal.SIGALRM) is theirs
        assert fired == []
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_in_a_thread_the_watchdog_ends_python_code_and_stores_time_limit_exceeded():
    app = simq.App("thread")

    @app.task(soft_time_limit=0.1, time_limit=0.3)
    def looping():
        try:
            while True:
                pass
        except SoftTimeLimitExceeded:
            while True:
                pass

    request = _request(app, looping)
    executor = _wall_executor(app)
    outcomes = []
    worker = threading.Thread(target=lambda: outcomes.append(executor.run_task(request)))
    worker.start()
    worker.join(timeout=20)
    assert not worker.is_alive()
    assert outcomes[0].failed == 1
    with pytest.raises(TimeLimitExceeded):
        app.AsyncResult(request.id).get(timeout=1)


def test_a_watch_that_ended_never_fires_into_what_the_thread_runs_next():
    watchdog = Watchdog(WallClock())
    caught = []

    def run():
        try:
            with watchdog.watching(TimeLimits(hard=0.05)):
                pass
            deadline = time.monotonic() + 0.3  # well past the hard deadline of the ended watch
            while time.monotonic() < deadline:
                pass
        except BaseException as exc:
            caught.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(timeout=10)
    assert caught == []


def test_a_hard_limit_is_not_an_exception_a_task_can_swallow():
    assert not issubclass(HardTimeLimit, Exception)
    assert str(TimeLimitExceeded(2.0)) == "the task ran past its time_limit of 2 s and was ended"
