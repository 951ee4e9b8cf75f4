"""The production worker (``simq worker``): argument checks, graceful and immediate stops,
redelivery after SIGKILL for acks_late tasks, and reconnecting after the broker drops it.

Broker tests run against the local RabbitMQ and Redis; they skip when a broker
is down, and fail instead when SIMQ_REQUIRE_BROKERS=1.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest

from conformance.harness import broker_url, delete_app_data, require, result_url, with_namespace
from simq.exceptions import ConfigurationError
from simq.production import WorkerProcess, load_app, parse_args

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(params=["amqp", "redis"])
def urls(request):
    require(request.param)
    namespace = f"p{uuid.uuid4().hex[:12]}"
    broker = with_namespace(broker_url(request.param), namespace)
    if request.param == "redis":
        broker += "&consumer_ttl=1"
    return request.param, broker, with_namespace(result_url(request.param), namespace)


MODULE = """
import os, time
from simq import App

app = App("prodtest", broker=os.environ["SIMQ_TEST_BROKER"], backend=os.environ["SIMQ_TEST_RESULTS"],
          task_acks_late=True)


@app.task(bind=True, name="slow")
def slow(self, marker, seconds):
    if self.request.delivery_info["redelivered"]:
        return "redelivered"
    with open(marker, "w") as f:
        f.write(str(os.getpid()))
    time.sleep(seconds)
    return "finished"


@app.task(name="add")
def add(x, y):
    return x + y


@app.task(bind=True, name="twice", default_retry_delay=0.1)
def twice(self):
    if self.request.retries == 0:
        raise self.retry()
    return self.request.retries
"""


@pytest.fixture
def project(tmp_path, urls):
    name = f"prodtest_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(MODULE))
    kind, broker, results = urls
    env = dict(os.environ, SIMQ_TEST_BROKER=broker, SIMQ_TEST_RESULTS=results)
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(ROOT), env.get("PYTHONPATH", "")])
    sys.path.insert(0, str(tmp_path))
    old = {k: os.environ.get(k) for k in ("SIMQ_TEST_BROKER", "SIMQ_TEST_RESULTS")}
    os.environ.update(SIMQ_TEST_BROKER=broker, SIMQ_TEST_RESULTS=results)
    try:
        app = load_app(f"{name}:app")
        yield _Project(name, app, env, tmp_path)
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        sys.path.remove(str(tmp_path))
        delete_app_data(app)


class _Project:
    def __init__(self, name, app, env, path):
        self.name, self.app, self.env, self.path = name, app, env, path
        self.procs = []

    def worker(self, *extra):
        cmd = [
            sys.executable,
            "-m",
            "simq.production",
            "-A",
            f"{self.name}:app",
            "--poll-interval",
            "0.1",
            "-l",
            "WARNING",
            *extra,
        ]
        proc = subprocess.Popen(cmd, cwd=self.path, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc


def _wait_for_file(path: Path, limit: float = 20.0) -> None:
    for _ in range(int(limit / 0.05)):
        if path.exists() and path.read_text():
            return
        time.sleep(0.05)
    raise AssertionError(f"{path} never appeared")


def _finish(proc, limit=20):
    try:
        out, _ = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        raise AssertionError(f"worker did not exit:\n{out.decode()}") from None
    return proc.returncode, out.decode()


class TestArguments:
    def test_bad_loglevel_is_refused(self, capsys):
        with pytest.raises(SystemExit):
            parse_args(["-A", "x:app", "--loglevel", "LOUD"])
        assert "LOUD" in capsys.readouterr().err

    def test_zero_concurrency_is_refused(self, capsys):
        with pytest.raises(SystemExit):
            parse_args(["-A", "x:app", "-c", "0"])
        assert "at least 1" in capsys.readouterr().err

    def test_unknown_pool_is_refused(self, capsys):
        with pytest.raises(SystemExit):
            parse_args(["-A", "x:app", "--pool", "gevent"])
        assert "gevent" in capsys.readouterr().err

    def test_app_module_that_does_not_import_is_named(self):
        with pytest.raises(ConfigurationError, match="no_such_module_here"):
            load_app("no_such_module_here:app")

    def test_attribute_that_is_not_an_app_is_named(self):
        with pytest.raises(ConfigurationError, match="not a simq.App"):
            load_app("os:path")

    def test_worker_process_refuses_unknown_pool(self):
        from simq import App

        with pytest.raises(ConfigurationError, match="eventlet"):
            WorkerProcess(App("x"), pool="eventlet")


class TestSignals:
    def test_sigkill_mid_task_redelivers_an_acks_late_message(self, project):
        marker = project.path / "started"
        first = project.worker()
        result = project.app.tasks["slow"].delay(str(marker), 60)
        _wait_for_file(marker)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        second = project.worker()
        assert result.get(timeout=30) == "redelivered"
        second.send_signal(signal.SIGTERM)
        code, out = _finish(second)
        assert code == 0, out

    def test_sigterm_finishes_the_running_task_and_gives_eta_messages_back(self, project):
        marker = project.path / "started"
        worker = project.worker()
        later = project.app.tasks["add"].apply_async((1, 1), countdown=600)
        result = project.app.tasks["slow"].delay(str(marker), 1.0)
        _wait_for_file(marker)
        worker.send_signal(signal.SIGTERM)
        code, out = _finish(worker)
        assert code == 0, out
        assert result.get(timeout=5) == "finished"
        assert later.state == "PENDING"
        conn = project.app.connection()
        try:
            assert conn.queue_depth("celery") == 1  # the held eta message went back
        finally:
            conn.close()

    def test_second_signal_stops_at_once_and_the_message_comes_back(self, project):
        marker = project.path / "started"
        worker = project.worker()
        result = project.app.tasks["slow"].delay(str(marker), 60)
        _wait_for_file(marker)
        worker.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        worker.send_signal(signal.SIGTERM)
        code, out = _finish(worker)
        assert code != 0, out
        second = project.worker()
        assert result.get(timeout=30) == "redelivered"
        second.send_signal(signal.SIGTERM)
        assert _finish(second)[0] == 0

    def test_processes_pool_runs_tasks_and_stops_on_sigterm(self, project):
        worker = project.worker("--pool", "processes", "-c", "2")
        add = project.app.tasks["add"]
        results = [add.delay(i, i) for i in range(20)]
        assert [r.get(timeout=30) for r in results] == [2 * i for i in range(20)]
        worker.send_signal(signal.SIGTERM)
        code, out = _finish(worker)
        assert code == 0, out


class TestReconnect:
    def test_worker_reconnects_after_the_broker_drops_its_connections(self, project, urls):
        kind = urls[0]
        app = project.app
        process = WorkerProcess(app, pool="threads", concurrency=2, poll_interval=0.1, max_reconnect_delay=1)
        thread = threading.Thread(target=process.run, daemon=True)
        thread.start()
        try:
            add = app.tasks["add"]
            assert add.delay(1, 2).get(timeout=10) == 3
            _drop_broker_connections(kind)
            app.pool.close()
            if kind == "amqp":
                # RabbitMQ closed the worker's connection: its loop makes a new one
                for _ in range(200):
                    if process.reconnects >= 1:
                        break
                    time.sleep(0.05)
                assert process.reconnects >= 1
            # (redis-py reconnects a dropped socket by itself and simq's consumer
            # state lives in Redis keys, so the Redis worker may not notice at all)
            assert add.delay(2, 3).get(timeout=20) == 5
        finally:
            process.request_stop()
            thread.join(timeout=20)
        assert not thread.is_alive()


class TestRetriesAfterTheBrokerDroppedUs:
    def test_retry_works_after_the_broker_closed_every_connection(self, project, urls):
        # The dead producer connection used to go back into the pool: every later
        # self.retry() failed with BrokerUnavailable until the worker restarted.
        app = project.app
        process = WorkerProcess(app, pool="threads", concurrency=2, poll_interval=0.1, max_reconnect_delay=1)
        thread = threading.Thread(target=process.run, daemon=True)
        thread.start()
        try:
            twice = app.tasks["twice"]
            assert twice.delay().get(timeout=20) == 1
            _drop_broker_connections(urls[0])
            assert [twice.delay().get(timeout=30) for _ in range(3)] == [1, 1, 1]
        finally:
            process.request_stop()
            thread.join(timeout=20)


def _drop_broker_connections(kind: str) -> None:
    """Have the broker close this process's connections to it (only ours: the brokers are shared)."""
    from tests.connections import kill_rabbitmq_connections, kill_redis_connections

    if kind == "redis":
        assert kill_redis_connections(os.getpid()) > 0
    else:
        assert kill_rabbitmq_connections(os.getpid(), reason="simq test: broker restart") > 0


def test_a_running_tasks_send_keeps_trying_across_a_broker_outage(monkeypatch):
    from simq import App
    from simq import runtime as runtime_module
    from simq.exceptions import AccessRefused, BrokerUnavailable

    app = App("outage", broker="amqp://127.0.0.1:1//")
    runtime = runtime_module.WallRuntime(app)
    calls = []

    class Pool:
        def run(self, fn, connect_timeout=None):
            calls.append(1)
            if len(calls) < 3:
                raise BrokerUnavailable("stop_app")

    monkeypatch.setattr(runtime_module.WallRuntime, "pool", Pool())
    monkeypatch.setattr(runtime_module.WallClock, "sleep", lambda self, seconds: None)
    with pytest.raises(BrokerUnavailable):  # a client's send fails at once, as before
        runtime._send(lambda t: None)
    assert len(calls) == 1
    calls.clear()
    app.enter_task(object())  # now the send comes from a running task (the next chain link, a chord body)
    runtime._send(lambda t: None)
    assert len(calls) == 3

    class Refusing:
        def run(self, fn, connect_timeout=None):
            raise AccessRefused("bad password")

    monkeypatch.setattr(runtime_module.WallRuntime, "pool", Refusing())
    with pytest.raises(AccessRefused):  # refused credentials are not an outage
        runtime._send(lambda t: None)


def test_task_publish_retry_retries_a_clients_send_as_its_policy_says(monkeypatch):
    from simq import App
    from simq import runtime as runtime_module
    from simq.exceptions import BrokerUnavailable, ConfigurationError

    app = App("publish-retry", broker="amqp://127.0.0.1:1//")
    app.conf.update(
        task_publish_retry=True,
        task_publish_retry_policy={"max_retries": 3, "interval_start": 0.5, "interval_step": 0.25, "interval_max": 0.9},
    )
    runtime = runtime_module.WallRuntime(app)
    calls, slept = [], []

    class Pool:
        failures = 2

        def run(self, fn, connect_timeout=None):
            calls.append(1)
            if len(calls) <= self.failures:
                raise BrokerUnavailable("connection refused")

    pool = Pool()
    monkeypatch.setattr(runtime_module.WallRuntime, "pool", pool)
    monkeypatch.setattr(runtime_module.WallClock, "sleep", lambda self, seconds: slept.append(seconds))
    runtime._send(lambda t: None)
    assert (len(calls), slept) == (3, [0.5, 0.75])

    calls.clear(), slept.clear()
    pool.failures = 10  # more than max_retries: the fourth failure is raised
    with pytest.raises(BrokerUnavailable):
        runtime._send(lambda t: None)
    assert (len(calls), slept) == (4, [0.5, 0.75, 0.9])

    with pytest.raises(ConfigurationError, match="retry_errors"):  # a key simq would not follow is refused
        app.conf.update(task_publish_retry_policy={"retry_errors": (OSError,)})
