"""VirtualClock and TimePatch: timers fire in order, time never runs backwards, wall time follows the clock."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from simq import App
from simq.clock import DEFAULT_START, TimePatch, VirtualClock


class TestVirtualClockTimers:
    def test_starts_at_the_given_time_and_stays_there(self):
        clock = VirtualClock(start=1000.0)
        assert clock.now == 1000.0
        clock.call_at(1001.0, lambda: None)
        assert clock.run_due() == 0
        assert clock.now == 1000.0

    def test_timers_fire_in_deadline_order_not_insertion_order(self):
        clock = VirtualClock(start=0.0)
        fired: list[str] = []
        for name, when in [("c", 3.0), ("a", 1.0), ("d", 4.0), ("b", 2.0)]:
            clock.call_at(when, lambda name=name: fired.append(name))
        clock.advance(10)
        assert fired == ["a", "b", "c", "d"]

    def test_ties_fire_in_insertion_order(self):
        clock = VirtualClock(start=0.0)
        fired: list[int] = []
        for i in range(20):
            clock.call_at(5.0, lambda i=i: fired.append(i))
        clock.advance(5)
        assert fired == list(range(20))

    def test_each_timer_sees_the_clock_at_its_own_deadline(self):
        clock = VirtualClock(start=0.0)
        seen: list[float] = []
        for when in (2.5, 0.5, 1.5):
            clock.call_at(when, lambda: seen.append(clock.now))
        clock.advance(3)
        assert seen == [0.5, 1.5, 2.5]
        assert clock.now == 3.0

    def test_advance_fires_everything_due_and_nothing_later(self):
        clock = VirtualClock(start=0.0)
        fired: list[float] = []
        for when in (1.0, 2.0, 2.0, 3.0, 3.0001):
            clock.call_at(when, lambda when=when: fired.append(when))
        assert clock.advance(3.0) == 4
        assert fired == [1.0, 2.0, 2.0, 3.0]
        assert clock.next_deadline() == 3.0001

    def test_a_timer_set_by_a_timer_fires_in_the_same_advance_if_due(self):
        clock = VirtualClock(start=0.0)
        fired: list[str] = []
        clock.call_at(1.0, lambda: (fired.append("first"), clock.call_later(1.0, lambda: fired.append("second"))))
        clock.advance(5)
        assert fired == ["first", "second"]

    def test_past_deadlines_fire_at_once_without_moving_time_back(self):
        clock = VirtualClock(start=100.0)
        fired: list[float] = []
        clock.call_at(50.0, lambda: fired.append(clock.now))
        assert clock.run_due() == 1
        assert fired == [100.0]

    def test_never_goes_backwards(self):
        clock = VirtualClock(start=100.0)
        with pytest.raises(ValueError, match="never goes backwards"):
            clock.jump_to(99.0)
        with pytest.raises(ValueError, match="seconds >= 0"):
            clock.advance(-1)
        assert clock.now == 100.0

    def test_time_is_monotonic_across_many_jumps(self):
        clock = VirtualClock(start=0.0)
        seen: list[float] = []
        for i in range(200):
            clock.call_at((i * 7919) % 101 / 10, lambda: seen.append(clock.now))
        while clock.jump_to_next():
            pass
        assert len(seen) == 200
        assert seen == sorted(seen)

    def test_cancelled_timers_never_fire_and_are_not_counted(self):
        clock = VirtualClock(start=0.0)
        fired: list[str] = []
        keep = clock.call_at(1.0, lambda: fired.append("keep"))
        drop = clock.call_at(0.5, lambda: fired.append("drop"))
        drop.cancel()
        assert drop.cancelled and not keep.cancelled
        assert clock.pending_timers() == 1
        assert clock.next_deadline() == 1.0
        clock.advance(2)
        assert fired == ["keep"]

    def test_jump_to_next_goes_to_the_earliest_live_timer(self):
        clock = VirtualClock(start=0.0)
        fired: list[float] = []
        clock.call_at(7.0, lambda: fired.append(clock.now)).cancel()
        clock.call_at(9.0, lambda: fired.append(clock.now))
        assert clock.jump_to_next() is True
        assert fired == [9.0]
        assert clock.jump_to_next() is False
        assert clock.now == 9.0

    def test_on_move_listeners_hear_every_move(self):
        clock = VirtualClock(start=0.0)
        moves: list[float] = []
        clock.on_move.append(moves.append)
        clock.call_at(1.0, lambda: None)
        clock.advance(2.0)
        clock.jump_to(2.0)  # not a move
        assert moves == [1.0, 2.0]


class TestTimePatch:
    def test_wall_time_follows_the_clock_and_is_restored(self):
        real_before = time.time()
        clock = VirtualClock(start=DEFAULT_START)
        with TimePatch(clock):
            assert time.time() == pytest.approx(DEFAULT_START, abs=1e-6)
            assert datetime.now(UTC) == datetime(2026, 1, 1, tzinfo=UTC)
            clock.advance(3600)
            assert time.time() == pytest.approx(DEFAULT_START + 3600, abs=1e-6)
            assert datetime.now(UTC) == datetime(2026, 1, 1, 1, tzinfo=UTC)
        real_after = time.time()
        assert real_after >= real_before
        assert abs(real_after - DEFAULT_START) > 3600 * 24  # back on the real calendar

    def test_task_bodies_see_virtual_time_inside_a_simulation_only(self):
        app = App("clock_test")

        @app.task
        def now():
            return time.time()

        with app.simulate(seed=1) as sim:
            assert time.time() == pytest.approx(sim.clock.now, abs=1e-6)
            ran_at = now.apply_async(countdown=86400).get()
            assert ran_at >= DEFAULT_START + 86400
            assert ran_at == pytest.approx(DEFAULT_START + 86400, abs=1e-3)
            assert sim.elapsed >= 86400
        assert abs(time.time() - DEFAULT_START) > 86400 * 2

    def test_patch_time_false_leaves_the_real_time_alone(self):
        app = App("clock_test_nopatch")
        with app.simulate(seed=1, patch_time=False) as sim:
            sim.advance(86400 * 30)
            assert abs(time.time() - sim.clock.now) > 86400
