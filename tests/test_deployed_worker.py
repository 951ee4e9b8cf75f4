"""The worker users deploy: real ``simq worker`` processes with the threads and processes pools.

Each test starts ``simq worker -A module:app`` as a user would (threads with
``-c 4``, processes with ``-P processes -c 4``) on RabbitMQ and on Redis, with
results in Redis, and sends from this process. These are the configurations
that came back wrong before the worker had one consumer, one result backend
and one batch buffer per process (most chords of a ``-c 4`` worker got
``None`` among their header values; errbacks found no app; batches were
split per pool slot).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from conformance.harness import broker_url, delete_app_data, require, result_url, with_namespace
from simq import chain, chord, group
from simq.production import load_app

ROOT = Path(__file__).resolve().parent.parent

MODULE = """
import os
import redis
from simq import App, AsyncResult, current_app, shared_task
from simq.batches import Batches

app = App("deployed", broker=os.environ["SIMQ_TEST_BROKER"], backend=os.environ["SIMQ_TEST_RESULTS"],
          worker_prefetch_multiplier=int(os.environ.get("SIMQ_TEST_PREFETCH", "0")))
side = redis.Redis.from_url(os.environ["SIMQ_TEST_SIDE"].split("?")[0])
SIDE = os.environ["SIMQ_TEST_SIDE_KEY"]


@app.task(name="add")
def add(x, y):
    return x + y


@app.task(name="tsum")
def tsum(values):
    return sum(values)


@app.task(name="identity")
def identity(value):
    return value


@app.task(name="fail")
def fail(*args):
    raise ValueError("failed on purpose")


@app.task(name="error_handler")
def error_handler(uuid):
    # the seeds' errback: a plain AsyncResult(uuid), which finds the app through current_app()
    exc = AsyncResult(uuid).get(propagate=False)
    side.rpush(SIDE + ":errback", f"{uuid}:{type(exc).__name__}:{current_app().main}")


@shared_task(name="outer")
def outer(x):
    return inner.delay(x + 1).id


@shared_task(name="inner")
def inner(x):
    side.rpush(SIDE + ":inner", x)
    return x


@app.task(name="clicks", base=Batches, flush_every=100, flush_interval=4)
def clicks(requests):
    side.rpush(SIDE + ":flushes", len(requests))


from simq import signals


def _heard(signal=None, sender=None, request=None, **kwargs):
    # task_received comes from the worker (as Celery's comes from its consumer); the others from the task
    if getattr(sender, "name", None) == "add" or getattr(request, "task", None) == "add":
        side.rpush(SIDE + ":signals", signal.name)


for _signal in (signals.task_received, signals.task_prerun, signals.task_success, signals.task_postrun):
    _signal.connect(_heard)


@signals.worker_process_init.connect
def _child_built(**kwargs):
    side.rpush(SIDE + ":children", os.getpid())


import multiprocessing

if multiprocessing.parent_process() is not None and os.environ.get("SIMQ_TEST_CHILD_FAILS"):
    raise RuntimeError("this module refuses to load in a pool child")


@app.task(name="spin", time_limit=2)
def spin():
    side.rpush(SIDE + ":spinning", os.getpid())
    while True:
        pass


@app.task(name="whoami")
def whoami():
    return os.getpid()


@app.task(name="steps", bind=True)
def steps(self, seconds):
    side.rpush(SIDE + ":started", self.request.id)
    import time
    for _ in range(int(seconds * 20)):
        time.sleep(0.05)
    return "finished"


_hoard = []


@app.task(name="hoard")
def hoard(megabytes):
    # held after the task: a leak, what worker_max_memory_per_child is for
    _hoard.append(bytearray(megabytes * 1024 * 1024))
    return os.getpid()


@app.task(name="sleepy_late", bind=True, acks_late=True)
def sleepy_late(self, seconds):
    side.rpush(SIDE + ":started", f"{self.request.id}:{os.getpid()}")
    import time
    time.sleep(seconds)
    return "done"


@app.task(name="sleepy", bind=True)
def sleepy(self, seconds):
    side.rpush(SIDE + ":started", self.request.id)
    import time
    time.sleep(seconds)
    return "done"
"""


@pytest.fixture(params=["amqp", "redis"])
def broker(request):
    require(request.param)
    return request.param


@pytest.fixture(params=["threads", "processes"])
def pool(request):
    return request.param


class _Deployed:
    """A project directory with the app module, and the worker processes started from it."""

    def __init__(self, tmp_path: Path, kind: str, extra_env: dict[str, str] | None = None) -> None:
        self.name = f"deployed_{uuid.uuid4().hex[:8]}"
        self.namespace = f"d{uuid.uuid4().hex[:12]}"
        self.path = tmp_path
        (tmp_path / f"{self.name}.py").write_text(textwrap.dedent(MODULE))
        self.broker = with_namespace(broker_url(kind), self.namespace)
        if kind == "redis":
            self.broker += "&consumer_ttl=2"
        self.results = with_namespace(result_url(kind), self.namespace)
        side = result_url("redis")
        self.env = dict(
            os.environ,
            SIMQ_TEST_BROKER=self.broker,
            SIMQ_TEST_RESULTS=self.results,
            SIMQ_TEST_SIDE=side,
            SIMQ_TEST_SIDE_KEY=f"side:{self.namespace}",
            **(extra_env or {}),
        )
        self.env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(ROOT), self.env.get("PYTHONPATH", "")])
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []
        saved = {k: os.environ.get(k) for k in self.env if k.startswith("SIMQ_TEST_")}
        os.environ.update({k: v for k, v in self.env.items() if k.startswith("SIMQ_TEST_")})
        sys.path.insert(0, str(tmp_path))
        try:
            self.app = load_app(f"{self.name}:app")
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        import redis

        self.side = redis.Redis.from_url(side.split("?")[0])
        self.key = f"side:{self.namespace}"

    def worker(self, *args: str) -> subprocess.Popen[bytes]:
        log = self.path / f"worker-{len(self.procs) + 1}.log"
        self.logs.append(log)
        cmd = [
            sys.executable,
            "-m",
            "simq.cli",
            "worker",
            "-A",
            f"{self.name}:app",
            "-l",
            "INFO",
            "--poll-interval",
            "0.1",
            *args,
        ]
        with open(log, "wb") as out:
            proc = subprocess.Popen(cmd, cwd=self.path, env=self.env, stdout=out, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def log(self, index: int = -1) -> str:
        return self.logs[index].read_text(errors="replace")

    def wait_log(self, pattern: str, index: int = -1, limit: float = 30.0) -> str:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            text = self.log(index)
            if re.search(pattern, text):
                return text
            time.sleep(0.05)
        raise AssertionError(f"{pattern!r} not in the worker log within {limit} s:\n{self.log(index)}")

    def side_list(self, suffix: str) -> list[str]:
        return [v.decode() for v in self.side.lrange(f"{self.key}:{suffix}", 0, -1)]

    def wait_side(self, suffix: str, count: int, limit: float = 30.0) -> list[str]:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            values = self.side_list(suffix)
            if len(values) >= count:
                return values
            time.sleep(0.05)
        raise AssertionError(f"side list {suffix!r} has {self.side_list(suffix)} after {limit} s:\n{self.log()}")

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def close(self) -> None:
        self.stop()
        # The module was imported here too (load_app): its signal receivers must not outlive
        # the test, or every later test's task named "add" writes to this test's side list.
        from simq import signals

        module = sys.modules.pop(self.name, None)
        if module is not None:
            for signal in (signals.task_received, signals.task_prerun, signals.task_success, signals.task_postrun):
                signal.disconnect(module._heard)
            signals.worker_process_init.disconnect(module._child_built)
        for key in self.side.scan_iter(match=f"{self.key}*"):
            self.side.delete(key)
        self.side.close()
        delete_app_data(self.app)
        if str(self.path) in sys.path:
            sys.path.remove(str(self.path))


@pytest.fixture
def deployed(tmp_path, broker):
    project = _Deployed(tmp_path, broker)
    yield project
    project.close()


def _pool_args(pool: str) -> list[str]:
    return ["-c", "4"] if pool == "threads" else ["-P", "processes", "-c", "4"]


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True, check=False).stdout
    return [int(p) for p in out.split()]


class TestCanvasOnPools:
    def test_chords_get_every_header_value(self, deployed, pool):
        deployed.worker(*_pool_args(pool))
        add, tsum = deployed.app.tasks["add"], deployed.app.tasks["tsum"]
        results = [chord([add.s(i, j) for j in range(10)], tsum.s())() for i in range(20)]
        assert [r.get(timeout=60) for r in results] == [sum(i + j for j in range(10)) for i in range(20)]

    def test_a_chain_through_a_group(self, deployed, pool):
        deployed.worker(*_pool_args(pool))
        identity = deployed.app.tasks["identity"]
        canvas = chain(identity.s(42), group(identity.s(), identity.s()), identity.s())
        assert canvas.apply_async().get(timeout=60) == [42, 42]

    def test_the_seeds_errback_finds_the_app_from_a_pool_slot(self, deployed, pool):
        deployed.worker(*_pool_args(pool))
        fail, handler = deployed.app.tasks["fail"], deployed.app.tasks["error_handler"]
        r = fail.apply_async((1,), link_error=handler.s())
        assert deployed.wait_side("errback", 1) == [f"{r.id}:ValueError:deployed"]

    def test_a_shared_task_sends_another_from_a_pool_slot(self, deployed, pool):
        deployed.worker(*_pool_args(pool))
        inner_id = deployed.app.tasks["outer"].delay(1).get(timeout=60)
        assert deployed.app.AsyncResult(inner_id).get(timeout=60) == 2
        assert "ConfigurationError" not in deployed.log()


class TestResultsOnAKilledBackendConnection:
    def test_early_ack_results_sent_on_killed_connections_are_stored(self, deployed, pool):
        # A slot's result write travels unconfirmed; if Redis killed that connection, the
        # write is lost unless the slot confirms before it goes idle (it used to wait for
        # the slot's next task, which may never come).
        from tests.connections import kill_redis_connections

        proc = deployed.worker(*_pool_args(pool))
        add = deployed.app.tasks["add"]
        assert [r.get(timeout=30) for r in [add.delay(i, i) for i in range(8)]] == [2 * i for i in range(8)]
        killed = sum(kill_redis_connections(pid, result_url("redis")) for pid in [proc.pid, *_children(proc.pid)])
        assert killed > 0
        results = [add.delay(i, 1) for i in range(8)]
        assert [r.get(timeout=20) for r in results] == [i + 1 for i in range(8)]


class TestSignalsOnPools:
    def test_task_signals_fire_in_the_simulators_order(self, deployed, pool):
        deployed.worker(*_pool_args(pool))
        assert deployed.app.tasks["add"].delay(1, 2).get(timeout=60) == 3
        # task_received fires in the worker's own thread; the rest in the pool slot, in order
        heard = deployed.wait_side("signals", 4)
        assert heard == ["task_received", "task_prerun", "task_success", "task_postrun"]


class TestBatchesPerWorker:
    def test_flush_every_counts_what_the_whole_worker_holds(self, tmp_path, broker, pool):
        project = _Deployed(tmp_path, broker, {"SIMQ_TEST_PREFETCH": "0"})
        try:
            project.worker(*_pool_args(pool))
            project.wait_log("ready")
            clicks = project.app.tasks["clicks"]
            with project.app.batched_publishing():
                for i in range(250):
                    clicks.delay(i)
            # 100 and 100 at once, the last 50 by the interval: one buffer for the worker, not one per slot
            assert project.wait_side("flushes", 3, limit=40) == ["100", "100", "50"]
        finally:
            project.close()

    def test_the_prefetch_check_counts_the_whole_worker(self, tmp_path, broker, pool):
        # -c 4 with multiplier 4 prefetches 16: a flush_every of 100 can never fill; the worker says so at start
        project = _Deployed(tmp_path, broker, {"SIMQ_TEST_PREFETCH": "4"})
        try:
            proc = project.worker(*_pool_args(pool))
            assert proc.wait(timeout=30) == 2
            assert "prefetches at most 16 message(s) (concurrency=4 x prefetch_multiplier=4)" in project.log()
        finally:
            project.close()


class TestProcessesPool:
    def test_children_die_with_a_sigkilled_parent(self, deployed):
        proc = deployed.worker("-P", "processes", "-c", "3")
        deployed.wait_log("ready")
        children = _children(proc.pid)
        assert len(children) >= 3
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(Path(f"/proc/{c}").exists() for c in children):
            time.sleep(0.05)
        assert not [c for c in children if Path(f"/proc/{c}").exists()], "children outlived their parent"

    def test_the_worker_is_ready_only_when_every_child_built_the_app(self, deployed):
        # consuming before the children can run a job would hold messages another worker could run
        deployed.worker("-P", "processes", "-c", "4")
        deployed.wait_log("ready, consuming")
        assert len(deployed.side_list("children")) == 4

    def test_a_child_that_cannot_build_the_app_stops_the_worker_at_start(self, tmp_path, broker):
        project = _Deployed(tmp_path, broker, {"SIMQ_TEST_CHILD_FAILS": "1"})
        try:
            proc = project.worker("-P", "processes", "-c", "2")
            assert proc.wait(timeout=60) == 2
            log = project.log()
            assert "cannot build the app: RuntimeError: this module refuses to load in a pool child" in log
            assert "ready, consuming" not in log
        finally:
            project.close()

    def test_the_broker_url_is_on_no_childs_command_line(self, deployed):
        proc = deployed.worker("-P", "processes", "-c", "2", "--broker", deployed.broker)
        deployed.wait_log("ready")
        children = _children(proc.pid)
        assert len(children) >= 2  # the two pool children (and multiprocessing's resource tracker)
        for pid in children:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            assert deployed.namespace not in cmdline and "guest:guest" not in cmdline, cmdline


class TestTimeLimits:
    @pytest.mark.parametrize("pool_args", [["-P", "solo"], ["-c", "2"], ["-P", "processes", "-c", "1"]])
    def test_an_endless_loop_is_ended_at_its_time_limit_and_the_next_task_runs(self, deployed, pool_args):
        from simq.exceptions import TimeLimitExceeded

        deployed.worker(*pool_args)
        deployed.wait_log("ready")
        started = time.monotonic()
        looping = deployed.app.send_task("spin")
        with pytest.raises(TimeLimitExceeded):
            looping.get(timeout=30)
        assert time.monotonic() - started < 15
        assert deployed.app.send_task("add", (2, 3)).get(timeout=30) == 5
        if "processes" in pool_args:  # the child that looped was killed and another runs the next task
            (spun,) = deployed.side_list("spinning")
            assert not Path(f"/proc/{spun}").exists()
            assert deployed.app.send_task("whoami").get(timeout=30) != int(spun)
            assert "killed; starting another" in deployed.log()

    @pytest.mark.parametrize("pool_args", [["-P", "solo"], ["-P", "processes", "-c", "1"]])
    def test_a_blocking_sleep_is_cut_off_where_signals_reach_the_task(self, deployed, pool_args):
        from simq.exceptions import TimeLimitExceeded

        deployed.worker(*pool_args)
        deployed.wait_log("ready")
        started = time.monotonic()
        with pytest.raises(TimeLimitExceeded):
            deployed.app.send_task("sleepy", (60,), time_limit=1).get(timeout=30)
        assert time.monotonic() - started < 15


class TestRevoke:
    def test_a_revoke_sent_before_a_worker_starts_is_honoured_by_it(self, deployed):
        from simq.exceptions import TaskRevokedError

        doomed = deployed.app.send_task("add", (1, 1))
        doomed.revoke()
        deployed.worker("-c", "2")
        deployed.wait_log("ready")
        assert deployed.app.send_task("add", (2, 3)).get(timeout=30) == 5
        with pytest.raises(TaskRevokedError):
            doomed.get(timeout=30)
        assert "revoked: discarded without running" in deployed.log()

    def test_terminate_ends_a_running_task(self, deployed, pool):
        from simq.exceptions import TaskRevokedError

        deployed.worker(*_pool_args(pool))
        deployed.wait_log("ready")
        running = deployed.app.send_task("steps", (60,))
        deployed.wait_side("started", 1)
        started = time.monotonic()
        running.revoke(terminate=True)
        with pytest.raises(TaskRevokedError, match="terminated"):
            running.get(timeout=30)
        assert time.monotonic() - started < 15
        assert running.state == "REVOKED"
        assert deployed.app.send_task("add", (2, 3)).get(timeout=30) == 5
        assert "revoked: terminated while running" in deployed.log()


class TestRemoteControl:
    def test_inspect_and_control_reach_a_deployed_worker(self, deployed, pool):
        proc = deployed.worker(*_pool_args(pool), "-n", "ops@test")
        deployed.wait_log("ready")
        control = deployed.app.control
        here = ["ops@test"]  # naming the worker: each call returns once it answered, not after its timeout
        assert control.ping(destination=here, timeout=3) == [{"ops@test": {"ok": "pong"}}]
        running = deployed.app.send_task("steps", (30,))
        deployed.wait_side("started", 1)
        active = control.inspect(destination=here, timeout=3).active()
        assert [task["id"] for task in active["ops@test"]] == [running.id]
        stats = control.inspect(destination=here, timeout=3).stats()["ops@test"]
        assert stats["pool"]["max-concurrency"] == 4
        running.revoke(terminate=True)
        from simq.exceptions import TimeLimitExceeded

        assert "ok" in control.time_limit("steps", hard=1, destination=here, reply=True, timeout=3)[0]["ops@test"]
        started = time.monotonic()
        with pytest.raises(TimeLimitExceeded):
            deployed.app.send_task("steps", (30,)).get(timeout=30)
        assert time.monotonic() - started < 15
        control.pool_grow(2, destination=here, reply=True, timeout=3)
        assert control.inspect(destination=here, timeout=3).stats()["ops@test"]["pool"]["max-concurrency"] == 6
        if pool == "processes":
            deployed.wait_side("children", 6)  # two more children built the app
            grown = len(_children(proc.pid))  # the pool's children (and multiprocessing's resource tracker)
        control.pool_shrink(3, destination=here, reply=True, timeout=3)
        assert control.inspect(destination=here, timeout=3).stats()["ops@test"]["pool"]["max-concurrency"] == 3
        results = [deployed.app.send_task("add", (i, i)) for i in range(6)]
        assert [r.get(timeout=30) for r in results] == [2 * i for i in range(6)]
        if pool == "processes":
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and len(_children(proc.pid)) != grown - 3:
                time.sleep(0.1)
            assert len(_children(proc.pid)) == grown - 3
        assert control.shutdown(destination=here, reply=True, timeout=3) == [{"ops@test": {"ok": "shutting down"}}]
        assert proc.wait(timeout=30) == 0
        assert "remote control: shutdown" in deployed.log()

    def test_the_command_line_asks_and_acts(self, deployed):
        deployed.worker("-c", "2", "-n", "cli@test")
        deployed.wait_log("ready")

        def simq(*args):
            return subprocess.run(
                [sys.executable, "-m", "simq.cli", *args, "-A", f"{deployed.name}:app"],
                cwd=deployed.path,
                env=deployed.env,
                capture_output=True,
                text=True,
                timeout=60,
            )

        # -d names the worker, so each command returns once it answered rather than after -t
        status = simq("status", "-t", "3", "-d", "cli@test")
        assert status.returncode == 0 and "cli@test: OK" in status.stdout
        call = simq("call", "add", "--args", "[2, 3]")
        task_id = call.stdout.strip()
        assert deployed.app.AsyncResult(task_id).get(timeout=30) == 5
        assert '"result": 5' in simq("result", task_id).stdout
        registered = simq("inspect", "registered", "-t", "3", "-d", "cli@test")
        assert '"add"' in registered.stdout
        limited = simq("control", "time_limit", "steps", "0", "1", "-t", "3", "-d", "cli@test")
        assert limited.returncode == 0 and "time limits of steps" in limited.stdout
        grown = simq("control", "pool_grow", "1", "-t", "3", "-d", "cli@test")
        assert grown.returncode == 0 and "grow to 3" in grown.stdout
        assert simq("control", "shutdown", "-t", "3", "-d", "cli@test").returncode == 0
        gone = simq("inspect", "ping", "-t", "1")
        assert gone.returncode == 1 and "no worker replied" in gone.stderr


class TestSignalsTellTheTruth:
    def test_a_second_signal_names_the_early_acked_task_it_loses(self, deployed, pool):
        proc = deployed.worker(*_pool_args(pool))
        r = deployed.app.tasks["sleepy"].delay(30)
        deployed.wait_side("started", 1)
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) != 0
        text = deployed.log()
        assert f"sleepy[{r.id}]" in text and "LOST" in text
        assert "the broker redelivers unacknowledged messages" not in text


class TestLifecycle:
    def test_a_child_is_replaced_after_max_tasks_per_child_and_no_task_is_lost(self, deployed):
        deployed.worker("-P", "processes", "-c", "2", "--max-tasks-per-child", "2")
        deployed.wait_log("ready")
        whoami = deployed.app.tasks["whoami"]
        results = [whoami.delay() for _ in range(5)]
        pids = [r.get(timeout=60) for r in results]
        assert len(pids) == 5 and len(set(pids)) >= 3  # 2 tasks a child: 5 tasks need at least 3 children
        assert max(pids.count(p) for p in set(pids)) <= 2
        assert "replaced: it ran 2 jobs (worker_max_tasks_per_child=2)" in deployed.log()
        assert "died running a job" not in deployed.log()

    def test_a_child_over_max_memory_per_child_is_replaced_after_its_task(self, deployed):
        deployed.worker("-P", "processes", "-c", "1", "--max-memory-per-child", str(50 * 1024))
        deployed.wait_log("ready")
        first = deployed.app.tasks["whoami"].delay().get(timeout=60)
        assert deployed.app.tasks["whoami"].delay().get(timeout=60) == first  # small: the child stays
        assert deployed.app.tasks["hoard"].delay(100).get(timeout=60) == first  # the task itself finishes
        after = deployed.app.tasks["whoami"].delay().get(timeout=60)
        assert after != first
        assert re.search(
            r"replaced: it holds \d+ KiB after a job \(worker_max_memory_per_child=51200 KiB\)", deployed.log()
        )

    def test_a_running_late_ack_task_goes_back_at_the_soft_shutdown_deadline(self, deployed):
        proc = deployed.worker("-P", "processes", "-c", "1", "--soft-shutdown-timeout", "1")
        deployed.wait_log("ready")
        r = deployed.app.tasks["sleepy_late"].delay(10)  # 10 s: well past the 1 s deadline, and run twice here
        (first,) = deployed.wait_side("started", 1)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        assert time.monotonic() - started < 7  # the deadline, not the task's 10 s
        assert f"sleepy_late[{r.id}] was still running; given back to the broker" in deployed.log(0)
        assert r.state == "PENDING"
        deployed.worker("-P", "processes", "-c", "1")
        assert r.get(timeout=60) == "done"
        second = deployed.side_list("started")[1]
        assert second.split(":")[0] == r.id and second != first  # run again, by another child

    def test_an_early_acked_task_running_at_the_deadline_is_named_lost(self, deployed):
        proc = deployed.worker("-P", "processes", "-c", "1", "--soft-shutdown-timeout", "0.5")
        deployed.wait_log("ready")
        r = deployed.app.tasks["sleepy"].delay(30)
        deployed.wait_side("started", 1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        assert f"sleepy[{r.id}] was still running and is LOST" in deployed.log()

    def test_the_threads_pool_refuses_max_tasks_per_child_naming_itself(self, deployed):
        proc = deployed.worker("-c", "2", "--max-tasks-per-child", "5")
        assert proc.wait(timeout=30) == 2
        assert "the threads pool has no child process to replace" in deployed.log()


class TestCredentials:
    def test_refused_credentials_stop_the_worker_with_the_reason(self, tmp_path, broker):
        project = _Deployed(tmp_path, broker)
        try:
            if broker == "amqp":
                wrong = project.broker.replace("guest:guest@", "guest:wrong-password@")
            else:
                wrong = project.broker.replace("redis://", "redis://nobody:wrong-password@")
            proc = project.worker("--broker", wrong)
            assert proc.wait(timeout=30) == 3
            text = project.log()
            assert "refused the credentials" in text and "wrong-password" not in text
            assert "reconnecting" not in text
        finally:
            project.close()


class TestBackendLateToStart:
    def test_a_worker_waits_for_its_result_backend_instead_of_exiting(self, tmp_path, broker):
        import shutil
        import socket

        if shutil.which("redis-server") is None:
            pytest.skip("redis-server is not installed")
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        project = _Deployed(tmp_path, broker)
        project.env["SIMQ_TEST_RESULTS"] = f"redis://127.0.0.1:{port}/0?namespace={project.namespace}"
        server = None
        try:
            proc = project.worker("--max-reconnect-delay", "1")
            project.wait_log("result backend unreachable")
            assert proc.poll() is None  # still there, waiting, not exited
            server = subprocess.Popen(
                ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            project.wait_log("ready", limit=30)
            assert proc.poll() is None
        finally:
            project.close()
            if server is not None:
                server.terminate()
                server.wait(timeout=10)
