"""Worker lifecycle settings (simq.lifecycle): validation, which pools accept them, and soft shutdown.

What real child processes do (replaced after N tasks or past a memory limit,
a running late-ack task given back at the soft shutdown deadline) is tested
with real ``simq worker -P processes`` processes on both brokers in
tests/test_deployed_worker.py::TestLifecycle.
"""

from __future__ import annotations

import logging
import threading

import pytest

from simq import App
from simq.clock import WallClock
from simq.exceptions import ConfigurationError
from simq.executor import Executor, Outcome
from simq.lifecycle import Lifecycle, resident_kib
from simq.memory.broker import MemoryTransport
from simq.pools import GIVEN_BACK, ThreadPool
from simq.production import WorkerProcess, parse_args
from simq.worker import Worker


class TestSettingsAreChecked:
    @pytest.mark.parametrize(
        ("name", "value"),
        [
            ("worker_max_tasks_per_child", -1),
            ("worker_max_tasks_per_child", 2.5),
            ("worker_max_tasks_per_child", "10"),
            ("worker_max_tasks_per_child", True),
            ("worker_max_memory_per_child", -5),
            ("worker_max_memory_per_child", "50MB"),
            ("worker_soft_shutdown_timeout", -1),
            ("worker_soft_shutdown_timeout", float("nan")),
            ("worker_soft_shutdown_timeout", "10s"),
        ],
    )
    def test_a_bad_value_is_refused_where_it_is_set_naming_it(self, name, value):
        with pytest.raises(ConfigurationError, match=name) as info:
            App("bad", **{name: value})
        assert repr(value) in str(info.value)
        app = App("bad-later")
        with pytest.raises(ConfigurationError, match=name):
            app.conf.update({name: value})

    @pytest.mark.parametrize(
        ("option", "value"),
        [("--max-tasks-per-child", "-1"), ("--max-memory-per-child", "-2"), ("--soft-shutdown-timeout", "-0.5")],
    )
    def test_a_bad_option_is_refused_naming_it(self, option, value, capsys):
        with pytest.raises(SystemExit):
            parse_args(["-A", "m:app", option, value])
        err = capsys.readouterr().err
        assert option in err and value in err

    def test_options_override_the_apps_settings_and_zero_turns_one_off(self):
        app = App("life", worker_max_tasks_per_child=100, worker_soft_shutdown_timeout=5)
        assert Lifecycle.from_conf(app.conf) == Lifecycle(max_tasks_per_child=100, soft_shutdown_timeout=5.0)
        given = Lifecycle.from_conf(app.conf, max_tasks_per_child=0, max_memory_per_child=2048)
        assert given == Lifecycle(max_tasks_per_child=None, max_memory_per_child=2048, soft_shutdown_timeout=5.0)


class TestPoolsThatCannotHonourThem:
    @pytest.mark.parametrize("pool", ["solo", "threads"])
    @pytest.mark.parametrize("setting", ["worker_max_tasks_per_child", "worker_max_memory_per_child"])
    def test_a_per_child_limit_is_refused_naming_the_pool(self, pool, setting):
        app = App("life", **{setting: 10})
        with pytest.raises(ConfigurationError, match=f"the {pool} pool has no child process") as info:
            WorkerProcess(app, pool=pool, concurrency=2)
        assert f"{setting}=10" in str(info.value)

    def test_the_option_turns_the_apps_setting_off_for_a_threads_worker(self):
        app = App("life", worker_max_tasks_per_child=10)
        process = WorkerProcess(app, pool="threads", concurrency=2, max_tasks_per_child=0)
        assert process.lifecycle.max_tasks_per_child is None

    def test_the_processes_pool_accepts_them(self):
        app = App("life", worker_max_tasks_per_child=10, worker_max_memory_per_child=1024)
        process = WorkerProcess(app, pool="processes", concurrency=2, app_spec="m:app")
        assert process.lifecycle == Lifecycle(max_tasks_per_child=10, max_memory_per_child=1024)

    def test_a_soft_shutdown_timeout_is_refused_by_the_solo_pool(self):
        app = App("life", worker_soft_shutdown_timeout=3)
        with pytest.raises(ConfigurationError, match="the solo pool runs a task in the worker's own thread"):
            WorkerProcess(app, pool="solo")
        assert WorkerProcess(app, pool="threads", concurrency=2).lifecycle.soft_shutdown_timeout == 3.0


class TestResidentMemory:
    def test_it_counts_memory_this_process_holds(self):
        before = resident_kib()
        held = bytearray(64 * 1024 * 1024)
        held[::4096] = b"x" * len(held[::4096])  # touch every page: resident, not just reserved
        assert resident_kib() - before >= 60 * 1024
        del held


class TestSoftShutdown:
    def _running_worker(self, app, sim, pool):
        worker = Worker(
            app=app,
            transport=MemoryTransport(sim.broker),
            clock=WallClock(),
            hostname="soft@test",
            concurrency=2,
            prefetch_multiplier=2,
            backend=sim.backend,
            pool=pool,
        )
        return worker

    def test_past_the_deadline_late_ack_tasks_go_back_and_early_acked_ones_are_named_lost(self, caplog):
        app = App("soft", task_acks_late=True)
        gate = threading.Event()

        @app.task(name="late")
        def late():
            gate.wait(30)
            return "late done"

        @app.task(name="early", acks_late=False)
        def early():
            gate.wait(30)
            return "early done"

        with app.simulate(workers=0, patch_time=False) as sim:
            running_late, running_early, waiting = late.delay(), early.delay(), late.delay()
            pool = ThreadPool(Executor(app, sim.backend, WallClock(), "soft@test"), 2)
            worker = self._running_worker(app, sim, pool)
            worker.stop_deadline = worker.clock.now + 0.2
            try:
                with caplog.at_level(logging.WARNING, logger="simq.worker"):
                    worker.run(poll_interval=0.01, until=lambda: len(pool.active()) == 2)
                # both running ones ended by the deadline, not by finishing: the gate never opened
                assert not gate.is_set() and worker.stats.succeeded == 0
                assert sim.depth("celery") == 2  # the running late-ack one and the one not started
                log = caplog.text
                assert f"late[{running_late.id}] was still running; given back to the broker" in log
                assert f"early[{running_early.id}] was still running and is LOST" in log
                assert waiting.id not in log  # not started: given back without a word
            finally:
                gate.set()
                pool.close(wait=True)

    def test_without_a_deadline_a_stop_waits_for_running_tasks(self):
        app = App("soft-off", task_acks_late=True)
        gate = threading.Event()

        @app.task(name="late")
        def late():
            gate.wait(30)
            return "late done"

        with app.simulate(workers=0, patch_time=False) as sim:
            late.delay()
            pool = ThreadPool(Executor(app, sim.backend, WallClock(), "soft@test"), 2)
            worker = self._running_worker(app, sim, pool)
            threading.Timer(0.3, gate.set).start()
            worker.run(poll_interval=0.01, until=lambda: len(pool.active()) == 1)
            assert gate.is_set() and worker.stats.succeeded == 1 and worker.stats.acked == 1
            assert sim.depth("celery") == 0
            pool.close()


class TestThreadPoolAbandon:
    def test_a_running_job_is_reported_given_back_once_and_its_own_report_is_dropped(self):
        app = App("abandon")
        gate = threading.Event()

        @app.task(name="held")
        def held():
            gate.wait(30)

        reports: list[Outcome] = []
        with app.simulate(workers=0, patch_time=False) as sim:
            pool = ThreadPool(Executor(app, sim.backend, WallClock(), "a@test"), 1)
            transport = MemoryTransport(sim.broker)
            held.delay()
            transport.declare_queue(app.router.queue("celery"))
            transport.consume("celery", prefetch=1, tag="t")
            (delivery,) = transport.drain_events(1)
            from simq import protocol
            from simq.worker import Request

            message = protocol.decode(delivery, app.serializers, frozenset({"application/json"}), None, None)
            second = threading.Event()

            def report(outcome: Outcome) -> None:
                reports.append(outcome)
                if len(reports) == 2:
                    second.set()

            pool.submit_task(Request(message, delivery, app.tasks["held"], "a@test"), report)
            while not pool.active():
                second.wait(0.01)
            pool.abandon()
            assert reports == [GIVEN_BACK]
            gate.set()
            pool.submit_task(Request(message, delivery, app.tasks["held"], "a@test"), report)
            assert second.wait(10)
            pool.close(wait=True)
            # the held job's own success was dropped; the job after the deadline was given back unrun
            assert reports == [GIVEN_BACK, GIVEN_BACK]
