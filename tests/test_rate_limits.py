"""Rate limits (simq.ratelimit and the worker's holds): parsing, bucket maths, and what a worker does with them.

Every simulated test runs on the virtual clock: "100 tasks at 10/m" takes
virtual minutes and no wall time, and the start times are exact.
"""

from __future__ import annotations

import itertools
import math
import time

import pytest

from simq import App, VirtualClock
from simq.exceptions import ConfigurationError, NotRegistered
from simq.ratelimit import TokenBucket, parse_rate


class TestParseRate:
    @pytest.mark.parametrize(
        ("value", "per_second"),
        [
            ("10/s", 10.0),
            ("100/m", 100 / 60),
            ("1000/h", 1000 / 3600),
            ("0.5/s", 0.5),
            ("2", 2.0),
            (" 6 / m ", 0.1),
            (5, 5.0),
            (0.25, 0.25),
        ],
    )
    def test_celery_rate_strings_and_numbers_are_tasks_per_second(self, value, per_second):
        assert parse_rate(value) == pytest.approx(per_second)

    @pytest.mark.parametrize("value", [None, 0, 0.0, "0", "0/m"])
    def test_none_and_zero_mean_no_limit(self, value):
        assert parse_rate(value) is None

    @pytest.mark.parametrize(
        "value", ["10/x", "10/min", "ten/s", "-1/s", "", "10/", "/s", -1, True, math.nan, math.inf, [10], "1e999"]
    )
    def test_a_malformed_rate_is_refused_naming_the_value(self, value):
        with pytest.raises(ConfigurationError) as info:
            parse_rate(value, "my_setting")
        assert "my_setting" in str(info.value)
        assert repr(value) in str(info.value)

    def test_the_task_option_is_checked_at_decoration(self):
        app = App("parse-task")
        with pytest.raises(ConfigurationError, match=r"task 'slow': rate_limit: '10/minute' is not a rate"):

            @app.task(name="slow", rate_limit="10/minute")
            def slow():
                return None

        assert "slow" not in app.tasks

    def test_the_default_setting_is_checked_when_set(self):
        with pytest.raises(ConfigurationError, match=r"task_default_rate_limit: 'fast'"):
            App("parse-conf", task_default_rate_limit="fast")
        app = App("parse-conf-2")
        with pytest.raises(ConfigurationError, match=r"task_default_rate_limit: -3"):
            app.conf.task_default_rate_limit = -3
        app.conf.task_default_rate_limit = "5/m"
        assert app.conf.task_default_rate_limit == "5/m"


class TestTokenBucket:
    def test_a_full_bucket_gives_one_token_now_then_one_per_interval(self):
        clock = VirtualClock()
        bucket = TokenBucket(parse_rate("6/m"))
        t0 = clock.now
        assert [bucket.reserve(clock.now) for _ in range(4)] == [t0, t0 + 10, t0 + 20, t0 + 30]

    def test_reserved_tokens_are_a_debt_that_the_clock_pays_off(self):
        clock = VirtualClock()
        bucket = TokenBucket(0.5)  # one token every 2 s
        assert bucket.tokens(clock.now) == 1
        bucket.reserve(clock.now)
        bucket.reserve(clock.now)
        bucket.reserve(clock.now)
        assert bucket.tokens(clock.now) == -2
        assert bucket.expected_time(clock.now) == 6  # the 4th token: three refills away
        clock.advance(3)
        assert bucket.tokens(clock.now) == pytest.approx(-0.5)
        assert bucket.expected_time(clock.now) == pytest.approx(3)
        assert bucket.reserve(clock.now) == pytest.approx(clock.now + 3)

    def test_an_idle_bucket_refills_only_up_to_its_capacity(self):
        clock = VirtualClock()
        bucket = TokenBucket(1.0)
        bucket.reserve(clock.now)
        clock.advance(100)
        assert bucket.tokens(clock.now) == 1
        now = clock.now
        assert [bucket.reserve(now), bucket.reserve(now)] == [now, now + 1]

    def test_a_larger_capacity_allows_a_burst(self):
        clock = VirtualClock()
        bucket = TokenBucket(0.1, capacity=3)
        now = clock.now
        assert [bucket.reserve(now) for _ in range(5)] == [now, now, now, now + 10, now + 20]

    def test_a_bucket_needs_a_positive_rate(self):
        with pytest.raises(ConfigurationError):
            TokenBucket(0)


def _ticking(app, name="tick", **options):
    starts = []

    @app.task(name=name, **options)
    def tick(i):
        starts.append((i, time.time()))
        return i

    return tick, starts


class TestWorkerRateLimits:
    def test_a_hundred_tasks_at_10_per_minute_start_exactly_6_s_apart(self):
        app = App("hundred")
        tick, starts = _ticking(app, rate_limit="10/m")
        with app.simulate() as sim:
            results = [tick.delay(i) for i in range(100)]
            assert [r.get() for r in results] == list(range(100))
            assert [i for i, _ in starts] == list(range(100))
            gaps = {b - a for (_, a), (_, b) in itertools.pairwise(starts)}
            assert gaps == {6.0}
            assert sim.elapsed == pytest.approx(99 * 6)
            assert sim.worker_list[0].stats.rate_limited == 99

    def test_the_same_seed_gives_the_same_run(self):
        digests = []
        for _ in range(2):
            app = App("again")
            tick, _ = _ticking(app, rate_limit="3/s")
            with app.simulate(seed=4) as sim:
                for r in [tick.delay(i) for i in range(20)]:
                    r.get()
                digests.append(sim.digest)
        assert digests[0] == digests[1]

    def test_other_task_types_are_not_held_back(self):
        app = App("mixed")
        slow, slow_starts = _ticking(app, "slow", rate_limit="1/m")
        fast, fast_starts = _ticking(app, "fast")
        with app.simulate() as sim:
            t0 = sim.clock.now
            sent = []
            for i in range(4):
                sent += [slow.delay(i), fast.delay(i)]
            for r in sent:
                r.get()
        assert [t - t0 for _, t in slow_starts] == [0, 60, 120, 180]
        assert [i for i, _ in fast_starts] == [0, 1, 2, 3]
        assert all(t == t0 for _, t in fast_starts)

    def test_each_task_type_has_its_own_bucket_and_keeps_its_arrival_order(self):
        app = App("two-buckets")
        a, a_starts = _ticking(app, "a", rate_limit="1/s")
        b, b_starts = _ticking(app, "b", rate_limit="2/s")
        with app.simulate(prefetch_multiplier=0) as sim:
            t0 = sim.clock.now
            sent = []
            for i in range(6):
                sent += [a.delay(i), b.delay(i)]
            for r in sent:
                r.get()
        assert [(i, t - t0) for i, t in a_starts] == [(i, float(i)) for i in range(6)]
        assert [(i, t - t0) for i, t in b_starts] == [(i, i / 2) for i in range(6)]

    def test_an_eta_message_takes_its_token_when_its_eta_comes(self):
        app = App("eta-then-limit")
        tick, starts = _ticking(app, rate_limit="6/m")
        with app.simulate() as sim:
            t0 = sim.clock.now
            for r in [tick.apply_async((i,), countdown=5) for i in range(3)]:
                r.get()
        assert [t - t0 for _, t in starts] == [5, 15, 25]

    def test_held_requests_count_against_the_prefetch_window(self):
        app = App("prefetch", worker_prefetch_multiplier=1)
        tick, starts = _ticking(app, rate_limit="1/m")
        with app.simulate() as sim:
            for i in range(3):
                tick.delay(i)
            sim.advance(1)
            worker = sim.worker_list[0]
            assert len(starts) == 1
            assert worker.rate_limited == 1
            assert worker.held == 0
            assert sim.depth("celery") == 1  # the window (1) is full of the held request
            sim.run_until_idle()
            assert [i for i, _ in starts] == [0, 1, 2]

    def test_a_graceful_stop_gives_held_requests_back_to_the_broker(self):
        app = App("requeue")
        tick, starts = _ticking(app, rate_limit="1/m")
        with app.simulate() as sim:
            results = [tick.delay(i) for i in range(5)]
            sim.advance(1)
            worker = sim.worker_list[0]
            assert (len(starts), worker.rate_limited, sim.depth("celery")) == (1, 4, 0)
            worker.stop()
            assert worker.rate_limited == 0
            assert sim.depth("celery") == 4
            assert len(starts) == 1
            sim.add_worker()
            assert [r.get() for r in results] == list(range(5))
        assert sorted(i for i, _ in starts) == list(range(5))

    def test_a_crash_leaves_held_requests_to_the_broker(self):
        app = App("crash", task_acks_late=True)
        tick, starts = _ticking(app, rate_limit="1/m")
        with app.simulate() as sim:
            results = [tick.delay(i) for i in range(3)]
            sim.advance(1)
            worker = sim.worker_list[0]
            worker.crash()
            assert worker.rate_limited == 0
            sim.add_worker()
            assert [r.get() for r in results] == [0, 1, 2]

    def test_the_default_rate_limit_applies_to_tasks_without_their_own(self):
        app = App("default", task_default_rate_limit="2/s")
        limited, limited_starts = _ticking(app, "limited")
        exempt, exempt_starts = _ticking(app, "exempt", rate_limit=0)
        with app.simulate() as sim:
            t0 = sim.clock.now
            for r in [limited.delay(i) for i in range(3)] + [exempt.delay(i) for i in range(3)]:
                r.get()
        assert [t - t0 for _, t in limited_starts] == [0, 0.5, 1.0]
        assert {t - t0 for _, t in exempt_starts} == {0}

    def test_worker_disable_rate_limits_turns_them_off(self):
        app = App("disabled", worker_disable_rate_limits=True, task_default_rate_limit="1/h")
        tick, starts = _ticking(app, rate_limit="1/m")
        with app.simulate() as sim:
            t0 = sim.clock.now
            for r in [tick.delay(i) for i in range(5)]:
                r.get()
            assert sim.worker_list[0].stats.rate_limited == 0
        assert [(i, t) for i, t in starts] == [(i, t0) for i in range(5)]


class TestSetRateLimit:
    def test_it_returns_the_old_limit_and_applies_the_new_one_from_now(self):
        app = App("set")
        tick, starts = _ticking(app)
        with app.simulate() as sim:
            worker = sim.worker_list[0]
            assert worker.set_rate_limit("tick", "6/m") is None
            t0 = sim.clock.now
            for r in [tick.delay(i) for i in range(3)]:
                r.get()
            assert worker.set_rate_limit("tick", "2/s") == "6/m"
            t1 = sim.clock.now
            for r in [tick.delay(i) for i in range(3, 6)]:
                r.get()
            assert worker.set_rate_limit("tick", None) == "2/s"
        assert [t - t0 for _, t in starts[:3]] == [0, 10, 20]
        assert [t - t1 for _, t in starts[3:]] == [0, 0.5, 1.0]

    def test_lifting_a_limit_releases_what_it_held_in_arrival_order(self):
        app = App("lift")
        tick, starts = _ticking(app, rate_limit="1/h")
        with app.simulate() as sim:
            results = [tick.delay(i) for i in range(4)]
            sim.advance(1)
            worker = sim.worker_list[0]
            assert worker.rate_limited == 3
            t1 = sim.clock.now
            assert worker.set_rate_limit("tick", 0) == "1/h"
            assert worker.rate_limited == 0
            assert [r.get() for r in results] == [0, 1, 2, 3]
        assert [i for i, _ in starts] == [0, 1, 2, 3]
        assert all(t == t1 for _, t in starts[1:])

    def test_a_tighter_limit_reschedules_what_is_held(self):
        app = App("tighten")
        tick, starts = _ticking(app, rate_limit="1/s")
        with app.simulate(prefetch_multiplier=0) as sim:
            results = [tick.delay(i) for i in range(4)]
            sim.advance(0.5)
            t1 = sim.clock.now
            sim.worker_list[0].set_rate_limit("tick", "1/m")
            for r in results:
                r.get()
        assert [t - t1 for _, t in starts[1:]] == [0, 60, 120]

    def test_it_only_changes_this_worker(self):
        app = App("one-worker")
        _ticking(app, rate_limit="1/m")
        with app.simulate(workers=2) as sim:
            first, second = sim.worker_list
            first.set_rate_limit("tick", "5/s")
            assert second.set_rate_limit("tick", "7/s") == "1/m"
            assert first.set_rate_limit("tick", None) == "5/s"
        assert app.tasks["tick"].rate_limit == "1/m"

    def test_an_unknown_task_or_a_malformed_limit_is_refused_and_changes_nothing(self):
        app = App("refuse")
        _ticking(app, rate_limit="1/m")
        with app.simulate() as sim:
            worker = sim.worker_list[0]
            with pytest.raises(NotRegistered, match="'nope'"):
                worker.set_rate_limit("nope", "1/s")
            with pytest.raises(ConfigurationError, match=r"'1/fortnight'"):
                worker.set_rate_limit("tick", "1/fortnight")
            assert worker.set_rate_limit("tick", "1/s") == "1/m"
