"""``result_expires``: how long results (and every other backend record) are kept.

Celery's setting and meaning: seconds or a ``timedelta``, one day by default,
``None`` or 0 for never. The memory backend expires on its own clock (virtual
time in a simulation); the Redis backend gives every key it writes that TTL.
"""

from __future__ import annotations

import datetime
import time
import uuid
from typing import Any

import pytest

from conformance.harness import require, result_url, with_namespace
from simq import App, chord, states
from simq.backends.base import DAY, expires_seconds
from simq.backends.memory import MemoryBackend
from simq.clock import VirtualClock
from simq.exceptions import ConfigurationError
from simq.serialization import SerializerRegistry


def _app(**conf: Any) -> App:
    app = App("expiry", **conf)

    @app.task(name="expiry.add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="expiry.total")
    def total(values: list[int]) -> int:
        return sum(values)

    return app


class TestSetting:
    def test_the_default_is_one_day(self):
        app = App("e")
        assert app.conf.result_expires == 86_400
        assert app.backend.expires == DAY == 86_400

    @pytest.mark.parametrize(
        ("value", "seconds"),
        [(60, 60.0), (1.5, 1.5), (datetime.timedelta(hours=2), 7200.0), (None, None), (0, None), (float("inf"), None)],
    )
    def test_seconds_or_a_timedelta_none_and_zero_mean_never(self, value, seconds):
        assert expires_seconds(value) == seconds
        assert App("e", result_expires=value).backend.expires == seconds

    @pytest.mark.parametrize("value", ["1 day", -1, float("nan"), True, [60]])
    def test_a_bad_value_is_refused_naming_the_setting(self, value):
        app = App("e", result_expires=value)  # accepted as a setting name (it was refused as unknown)
        with pytest.raises(ConfigurationError, match="result_expires"):
            app.simulate()
        with pytest.raises(ConfigurationError, match="result_expires"):
            app.backend


class TestInASimulation:
    def test_a_result_is_pending_again_once_virtual_time_passes_its_expiry(self):
        app = _app(result_expires=60)
        with app.simulate(seed=1) as sim:
            r = app.tasks["expiry.add"].delay(2, 2)
            assert r.get() == 4
            sim.advance(59)
            assert app.AsyncResult(r.id).state == states.SUCCESS
            sim.advance(2)
            fresh = app.AsyncResult(r.id)
            assert fresh.state == states.PENDING
            assert fresh.result is None
            assert r.get() == 4  # a handle that has seen the result keeps it, as Celery's does

    def test_a_timedelta_works_the_same(self):
        app = _app(result_expires=datetime.timedelta(minutes=5))
        with app.simulate(seed=1) as sim:
            r = app.tasks["expiry.add"].delay(1, 1)
            assert r.get() == 2
            sim.advance(299)
            assert app.AsyncResult(r.id).ready()
            sim.advance(2)
            assert not app.AsyncResult(r.id).ready()

    @pytest.mark.parametrize("never", [None, 0])
    def test_none_or_zero_keeps_results_for_ever(self, never):
        app = _app(result_expires=never)
        with app.simulate(seed=1) as sim:
            r = app.tasks["expiry.add"].delay(3, 3)
            assert r.get() == 6
            sim.advance(10 * 365 * DAY)
            assert app.AsyncResult(r.id).get() == 6

    def test_the_default_day_applies_in_a_simulation(self):
        app = _app()
        with app.simulate(seed=1) as sim:
            r = app.tasks["expiry.add"].delay(3, 3)
            assert r.get() == 6
            sim.advance(DAY - 1)
            assert app.AsyncResult(r.id).state == states.SUCCESS
            sim.advance(2)
            assert app.AsyncResult(r.id).state == states.PENDING

    def test_a_chord_within_the_expiry_still_completes(self):
        app = _app(result_expires=120)
        add, total = app.tasks["expiry.add"], app.tasks["expiry.total"]
        with app.simulate(seed=2):
            r = chord([add.s(i, i).set(countdown=100) for i in range(3)], total.s())()
            assert r.get() == 6


class TestMemoryBackend:
    def _backend(self, expires: float | None) -> tuple[MemoryBackend, VirtualClock]:
        clock = VirtualClock(start=1000.0)
        return MemoryBackend(SerializerRegistry(), clock, expires=expires), clock

    def test_writing_a_record_again_restarts_its_expiry(self):
        backend, clock = self._backend(60)
        backend.store_result("t", 1, states.STARTED)
        clock.jump_to(1050.0)
        backend.store_result("t", 2, states.SUCCESS)
        clock.jump_to(1100.0)
        assert backend.get_meta("t").result == 2  # 50 s after the last write
        assert backend.is_ready("t")
        clock.jump_to(1111.0)
        assert backend.get_meta("t").state == states.PENDING
        assert not backend.is_ready("t")
        assert len(backend) == 0  # gone, not just hidden

    def test_counters_and_canvas_records_expire_too(self):
        backend, clock = self._backend(10)
        assert backend.incr("c", 5) == 5
        backend.put_record("simq-chord-x", b"{}")
        clock.jump_to(1011.0)
        assert backend.incr("c", 0) == 0
        assert backend.get_record("simq-chord-x") is None

    def test_without_expiry_nothing_is_ever_dropped(self):
        backend, clock = self._backend(None)
        backend.store_result("t", 1, states.SUCCESS)
        clock.jump_to(1000.0 + 100 * 365 * DAY)
        assert backend.get_meta("t").result == 1


class TestRedisKeys:
    @pytest.fixture
    def redis_app(self, request):
        require("redis")
        apps: list[App] = []

        def make(**conf: Any) -> App:
            app = _app(backend=with_namespace(result_url("redis"), f"rx{uuid.uuid4().hex[:10]}"), **conf)
            apps.append(app)
            return app

        yield make
        for app in apps:
            app.backend.delete_namespace()
            app.backend.close()

    def _ttls(self, backend: Any) -> dict[str, int]:
        client = backend.client
        return {
            key.decode()[len(backend.prefix) :]: client.pttl(key)
            for key in client.scan_iter(match=f"{backend.prefix}*")
        }

    def test_every_key_the_backend_writes_carries_the_expiry(self, redis_app):
        backend = redis_app(result_expires=datetime.timedelta(seconds=30)).backend
        backend.store_result("r1", None, states.STARTED)
        backend.store_result("r2", 2, states.SUCCESS)  # record and its wake-up token
        backend.put_record("simq-chord-c1", b"{}")
        backend.incr("simq-chord-c1.sent")
        with backend.deferred_writes():
            backend.store_result("r3", 3, states.SUCCESS)
            backend.count_part("simq-chord-c1.done", "simq-chord-c1.part.r3")
        backend.sync()
        ttls = self._ttls(backend)
        assert sorted(ttls) == sorted(
            [
                "r1",
                "r2",
                "r2:ready",
                "r3",
                "r3:ready",
                "simq-chord-c1",
                "counter:simq-chord-c1.sent",
                "counter:simq-chord-c1.done",
                "counter:simq-chord-c1.part.r3",
            ]
        )
        assert all(25_000 < ttl <= 30_000 for ttl in ttls.values()), ttls

    @pytest.mark.parametrize("never", [None, 0])
    def test_none_or_zero_writes_keys_without_expiry(self, redis_app, never):
        backend = redis_app(result_expires=never).backend
        backend.store_result("r1", None, states.STARTED)
        backend.store_result("r2", 2, states.SUCCESS)
        backend.incr("k")
        backend.count_part("d", "d.part.1")
        backend.sync()
        ttls = self._ttls(backend)
        assert len(ttls) == 6
        assert set(ttls.values()) == {-1}

    def test_a_result_is_gone_from_redis_after_its_expiry(self, redis_app):
        backend = redis_app(result_expires=0.3).backend
        backend.store_result("short", 1, states.SUCCESS)
        assert backend.get_meta("short").result == 1
        deadline = time.monotonic() + 10
        while backend.get_meta("short").state != states.PENDING and time.monotonic() < deadline:
            time.sleep(0.05)
        assert backend.get_meta("short").state == states.PENDING
