"""Remote control in a simulation: what each command answers and does, and what is refused."""

from __future__ import annotations

import pytest

import simq
from simq.exceptions import ConfigurationError


@pytest.fixture
def app():
    app = simq.App("remote", broker="memory://", security_key=None)

    @app.task(rate_limit="1/m")
    def add(x, y):
        return x + y

    app.add = add
    return app


def test_ping_reaches_every_worker_or_the_destination(app):
    with app.simulate(workers=3):
        assert app.control.ping() == [
            {"worker-1": {"ok": "pong"}},
            {"worker-2": {"ok": "pong"}},
            {"worker-3": {"ok": "pong"}},
        ]
        assert app.control.ping(destination="worker-2") == [{"worker-2": {"ok": "pong"}}]
        assert app.control.inspect(destination=["worker-1", "worker-3"]).ping() == {
            "worker-1": {"ok": "pong"},
            "worker-3": {"ok": "pong"},
        }
        assert app.control.inspect(destination="nobody").ping() is None


def test_inspect_shows_scheduled_reserved_registered_and_stats(app):
    with app.simulate() as sim:
        later = app.add.apply_async((1, 2), countdown=100)
        first, second = app.add.delay(1, 1), app.add.delay(2, 2)
        sim.advance(1)  # the first ran; the second waits for its rate limit (1/m)
        inspect = app.control.inspect()
        (scheduled,) = inspect.scheduled()["worker-1"]
        assert scheduled["request"]["id"] == later.id
        assert scheduled["eta"] == pytest.approx(sim.clock.start + 100)
        assert [r["id"] for r in inspect.reserved()["worker-1"]] == [second.id]
        assert inspect.active() == {"worker-1": []}  # nothing runs while a simulated worker answers
        # every task the app has (shared tasks other tests defined too), not simq's own
        assert inspect.registered() == {"worker-1": sorted(n for n in app.tasks if not n.startswith("simq."))}
        assert app.add.name in inspect.registered()["worker-1"]
        stats = inspect.stats()["worker-1"]
        assert stats["total"]["received"] == 3 and stats["total"]["succeeded"] == 1
        assert inspect.active_queues()["worker-1"][0]["name"] == "celery"
        assert first.get() == 2


def test_conf_hides_passwords_and_the_signing_key():
    app = simq.App("secret", broker="redis://user:hunter2@localhost:6379/0", security_key="k" * 32)
    with app.simulate():
        conf = app.control.inspect().conf()["worker-1"]
    assert "hunter2" not in str(conf)
    assert conf["security_key"] == "***"


def test_rate_limit_changes_every_workers_limit_at_run_time(app):
    with app.simulate(workers=2) as sim:
        replies = app.control.rate_limit(app.add.name, "10/s", reply=True)
        assert len(replies) == 2 and all("ok" in next(iter(r.values())) for r in replies)
        start = sim.clock.now
        results = [app.add.delay(i, i) for i in range(10)]
        sim.run_until_idle()
        assert [r.get() for r in results] == [2 * i for i in range(10)]
        assert sim.clock.now - start < 2  # at 1/m this would take minutes
        with pytest.raises(ConfigurationError, match="rate"):
            app.control.rate_limit(app.add.name, "often")


def test_consumers_are_added_and_cancelled_and_shutdown_stops_a_worker(app):
    with app.simulate(workers=2, queues=["celery"]) as sim:  # not every queue, as -Q does
        app.control.add_consumer("extra", destination="worker-1")
        w1, w2 = sim.worker_list
        assert "extra" in w1.consuming and "extra" not in w2.consuming
        (reply,) = app.control.cancel_consumer("nope", destination="worker-2", reply=True)
        assert "error" in reply["worker-2"]
        app.control.cancel_consumer("extra", destination="worker-1")
        assert "extra" not in w1.consuming
        app.control.shutdown(destination="worker-2")
        assert w2.stopping and not w1.stopping


def test_a_command_is_not_replayed_to_a_worker_started_after_it(app):
    with app.simulate(workers=1) as sim:
        app.control.shutdown()
        late = sim.add_worker()
        assert not late.stopping
        assert app.control.ping() == [{late.hostname: {"ok": "pong"}}]


def test_what_cannot_work_is_refused(app):
    with app.simulate():
        with pytest.raises(ConfigurationError, match="unknown control command"):
            app.control.broadcast("reboot")
        with pytest.raises(ConfigurationError, match="timeout"):
            app.control.ping(timeout=-1)
        with pytest.raises(ConfigurationError, match="destination"):
            app.control.ping(destination=[""])
    with pytest.raises(ConfigurationError, match="cannot reach any worker"):
        app.control.ping()  # memory:// results and no worker in this process


def test_time_limit_changes_a_tasks_limits_on_the_workers(app):
    import time

    from simq.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded

    @app.task
    def crawl():
        try:
            time.sleep(100)
        except SoftTimeLimitExceeded:
            time.sleep(100)

    with app.simulate() as sim:
        (reply,) = app.control.time_limit(crawl.name, soft=2, hard=5, reply=True)
        assert "ok" in reply["worker-1"]
        start = sim.clock.now
        r = crawl.delay()
        with pytest.raises(TimeLimitExceeded):
            r.get()
        assert sim.clock.now - start == pytest.approx(5)
        (reply,) = app.control.time_limit("no.such.task", hard=1, reply=True)
        assert "error" in reply["worker-1"]
        with pytest.raises(ConfigurationError, match="hard"):
            app.control.time_limit(crawl.name, hard="later")


def test_pool_grow_and_shrink_need_a_pool(app):
    with app.simulate():
        (reply,) = app.control.pool_grow(2, reply=True)
        assert "no pool to resize" in reply["worker-1"]["error"]
        with pytest.raises(ConfigurationError, match="whole number"):
            app.control.pool_shrink(0)


def test_a_thread_pool_grows_and_shrinks_and_keeps_one_thread():
    from simq.clock import WallClock
    from simq.executor import Executor
    from simq.pools import ThreadPool

    app = simq.App("pool")
    pool = ThreadPool(Executor(app, app.backend, WallClock(), "test@host"), 2)
    try:
        assert pool.grow(3) == 5 and pool.free() == 5
        assert pool.shrink(10) == 1 and pool.free() == 1
    finally:
        pool.close()
