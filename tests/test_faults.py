"""Fault injection in the simulator: each kind, placed by hand with sim.inject, does what it says."""

from __future__ import annotations

import calendar
import time
from collections import Counter

import pytest

from simq import App, Queue, states
from simq.exceptions import ConfigurationError
from simq.memory.faults import KINDS, FaultPlan


def make_app(acks_late=True, **conf):
    app = App("faults", task_acks_late=acks_late, **conf)
    runs = []

    @app.task(bind=True, name="faults.add")
    def add(self, x, y):
        runs.append((self.request.id, self.request.delivery_info["redelivered"], self.request.hostname))
        return x + y

    return app, add, runs


def kinds_of(sim):
    return [f.kind for f in sim.fault_log]


class TestCrashes:
    def test_crash_before_execution_with_late_acks_redelivers(self):
        app, add, runs = make_app(acks_late=True)
        with app.simulate(seed=1) as sim:
            sim.inject("crash-before-execution", task="faults.add")
            r = add.delay(1, 2)
            assert r.get(timeout=60) == 3
            assert [(redelivered, host) for _, redelivered, host in runs] == [(True, "worker-1~1")]
            assert kinds_of(sim) == ["crash-before-execution"]
            assert sim.fault_log[0].acked is False
            assert [w.hostname for w in sim.worker_list] == ["worker-1", "worker-1~1"]
            kinds = [e.kind for e in sim.trace]
            assert kinds.index("fault") < kinds.index("worker-crash") < kinds.index("restart")

    def test_crash_before_execution_with_early_acks_loses_the_task(self):
        app, add, runs = make_app(acks_late=False)
        with app.simulate(seed=1) as sim:
            sim.inject("crash-before-execution")
            r = add.delay(1, 2)
            sim.run_until_idle()
            assert runs == []
            assert r.state == states.PENDING
            (fault,) = sim.fault_log
            assert fault.acked is True and fault.task_id == r.id and fault.point == "run"

    def test_crash_mid_execution_with_late_acks_runs_the_body_again(self):
        app, add, runs = make_app(acks_late=True)
        with app.simulate(seed=2) as sim:
            sim.inject("crash-mid-execution")
            r = add.delay(2, 2)
            assert r.get(timeout=60) == 4
            assert [redelivered for _, redelivered, _ in runs] == [False, True]

    def test_crash_mid_execution_with_early_acks_ran_once_and_stored_nothing(self):
        app, add, runs = make_app(acks_late=False)
        with app.simulate(seed=2) as sim:
            sim.inject("crash-mid-execution")
            r = add.delay(2, 2)
            sim.run_until_idle()
            assert len(runs) == 1
            assert r.state == states.PENDING

    def test_crash_after_execution_with_late_acks_duplicates(self):
        app, add, runs = make_app(acks_late=True)
        with app.simulate(seed=3) as sim:
            sim.inject("crash-after-execution")
            r = add.delay(5, 5)
            sim.run_until_idle()
            assert r.get() == 10
            assert len(runs) == 2

    def test_crash_after_execution_with_early_acks_is_harmless(self):
        app, add, runs = make_app(acks_late=False)
        with app.simulate(seed=3) as sim:
            sim.inject("crash-after-execution")
            r = add.delay(5, 5)
            sim.run_until_idle()
            assert r.get() == 10
            assert len(runs) == 1
            assert kinds_of(sim) == ["crash-after-execution"]

    def test_crash_targets_the_named_task_only(self):
        app, add, _runs = make_app()

        @app.task(name="faults.other")
        def other():
            return "other"

        with app.simulate(seed=4) as sim:
            sim.inject("crash-before-execution", task="faults.add")
            o = other.delay()
            r = add.delay(1, 1)
            assert o.get() == "other" and r.get() == 2
            assert [f.task for f in sim.fault_log] == ["faults.add"]

    def test_crashed_worker_restarts_after_the_plan_delay(self):
        app, add, _ = make_app()
        with app.simulate(seed=5, faults=FaultPlan(rate=0.0, restart_delay=30.0)) as sim:
            sim.inject("crash-before-execution")
            r = add.delay(1, 1)
            sim.run_until_idle()
            assert r.get() == 2
            assert sim.elapsed == pytest.approx(30.0)


class TestDeliveryFaults:
    @pytest.mark.parametrize("acks_late", [True, False])
    def test_duplicate_delivery_runs_twice(self, acks_late):
        app, add, runs = make_app(acks_late=acks_late)
        with app.simulate(seed=6) as sim:
            sim.inject("duplicate-delivery")
            r = add.delay(3, 4)
            sim.run_until_idle()
            assert r.get() == 7
            assert [redelivered for _, redelivered, _ in runs] == [False, True]
            assert sim.depth("celery") == 0

    def test_connection_drop_gives_held_messages_back(self):
        app, add, runs = make_app(acks_late=False)
        with app.simulate(seed=7) as sim:
            r = add.apply_async((1, 1), countdown=100)
            sim.advance(10)
            assert sim.worker_list[0].held == 1
            sim.inject("connection-drop")
            assert sim.worker_list[0]._stopping
            assert sim.worker_list[-1].hostname == "worker-1~1"
            sim.run_until_idle()
            assert r.get() == 2
            assert len(runs) == 1 and runs[0][1] is True  # redelivered
            assert sim.elapsed == pytest.approx(100.0)

    def test_broker_restart_keeps_durable_queues_and_empties_transient_ones(self):
        app, add, runs = make_app(task_queues=[Queue("celery"), Queue("scratch", durable=False)])
        with app.simulate(seed=8) as sim:
            kept = add.apply_async((1, 1), countdown=50)
            gone = add.apply_async((2, 2), queue="scratch", countdown=50)
            sim.advance(1)
            sim.inject("broker-restart")
            (fault,) = sim.fault_log
            assert fault.lost == (gone.id,)
            sim.run_until_idle()
            assert kept.get() == 2
            assert gone.state == states.PENDING
            assert len(runs) == 1
            assert [w.hostname for w in sim.worker_list] == ["worker-1", "worker-1~1"]

    def test_step_fault_at_a_chosen_time(self):
        app, add, _ = make_app()
        with app.simulate(seed=9) as sim:
            sim.inject("connection-drop", when=20)
            r = add.apply_async((1, 2), countdown=60)
            sim.run_until_idle()
            assert r.get() == 3
            (fault,) = sim.fault_log
            assert fault.at == pytest.approx(20.0)


class TestTime:
    def test_slow_task_takes_virtual_time(self):
        app = App("slow")

        @app.task(name="slow.stamp")
        def stamp():
            return calendar.timegm(time.gmtime())  # the body reads patched (virtual) time

        with app.simulate(seed=10) as sim:
            begin = sim.clock.now
            sim.inject("slow-task", seconds=90)
            assert stamp.delay().get() == pytest.approx(begin + 90, abs=1)
            assert sim.fault_log[0].detail == "90s"

    def test_clock_jump_makes_countdowns_due(self):
        app, add, _runs = make_app()
        with app.simulate(seed=11) as sim:
            r = add.apply_async((1, 1), countdown=600)
            sim.step()
            sim.inject("clock-jump", seconds=3600)
            assert sim.elapsed == pytest.approx(3600)
            sim.run_until_idle()
            assert r.get() == 2
            assert sim.elapsed == pytest.approx(3600)


class TestRetries:
    def test_retry_with_countdown_survives_crashes(self):
        app = App("retry", task_acks_late=True)
        attempts = Counter()

        @app.task(bind=True, name="retry.flaky", max_retries=5)
        def flaky(self):
            attempts[self.request.retries] += 1
            if self.request.retries < 2:
                raise self.retry(countdown=10)
            return "done"

        with app.simulate(seed=12) as sim:
            sim.inject("crash-mid-execution", times=1)
            sim.inject("connection-drop", when=5)
            sim.inject("crash-before-execution", when=15)
            r = flaky.delay()
            assert r.get(timeout=600) == "done"
            assert sorted(attempts) == [0, 1, 2]
            assert attempts[0] == 2  # the mid-execution crash made attempt 0 run again
            assert [f.kind for f in sim.fault_log] == [
                "crash-mid-execution",
                "connection-drop",
                "crash-before-execution",
            ]


class TestPlans:
    def test_rate_zero_changes_nothing(self):
        digests = []
        for faults in (None, FaultPlan(rate=0.0)):
            app, add, _ = make_app()
            with app.simulate(seed=13, workers=2, faults=faults) as sim:
                for i in range(10):
                    add.delay(i, i)
                sim.run_until_idle()
                digests.append(sim.digest)
        assert digests[0] == digests[1]

    def test_same_seed_and_plan_same_trace(self):
        digests = set()
        for _ in range(2):
            app, add, _ = make_app()
            with app.simulate(seed=14, workers=2, faults=FaultPlan(rate=0.2)) as sim:
                for i in range(10):
                    add.delay(i, i)
                sim.run_until_idle()
                assert sim.fault_log
                digests.add(sim.digest)
        assert len(digests) == 1

    def test_max_faults_bounds_a_run(self):
        app, add, _ = make_app()
        with app.simulate(seed=15, faults=FaultPlan(rate=1.0, kinds=("crash-after-execution",), max_faults=3)) as sim:
            r = add.delay(1, 1)
            sim.run_until_idle()
            assert r.get() == 2
            assert len(sim.fault_log) == 3

    def test_plan_validation(self):
        with pytest.raises(ConfigurationError, match="unknown fault kind 'crash'"):
            FaultPlan(kinds=("crash",))
        with pytest.raises(ConfigurationError, match="probability"):
            FaultPlan(rate=1.5)

    def test_plan_repr_rebuilds_it(self):
        plan = FaultPlan(rate=0.1, kinds=("slow-task", "clock-jump"), slow_seconds=3.0)
        assert eval(repr(plan)) == plan

    def test_inject_validation(self):
        app, _, _ = make_app()
        with app.simulate(seed=16) as sim:
            with pytest.raises(ConfigurationError, match="unknown fault kind"):
                sim.inject("meteor")
            with pytest.raises(ConfigurationError, match="between steps"):
                sim.inject("broker-restart", task="faults.add")
            with pytest.raises(ConfigurationError, match="at least 1"):
                sim.inject("slow-task", times=0)

    def test_every_kind_is_listed(self):
        assert set(KINDS) == {
            "crash-before-execution",
            "crash-mid-execution",
            "crash-after-execution",
            "duplicate-delivery",
            "slow-task",
            "clock-jump",
            "connection-drop",
            "broker-restart",
        }
