"""At-least-once on the real brokers: SIGKILLed worker processes, and a RabbitMQ restart.

Issue 6, real-broker half. The simulator proves the guarantees over many
seeds (tests/test_faults_property.py); these tests check that the same code
keeps them against RabbitMQ and Redis, with real processes and real sockets:

- 10,000 ``acks_late`` tasks, the worker process SIGKILLed several times while
  they run and started again: every task id ends SUCCESS in the result backend
  (none lost); redeliveries may run a task twice, and the test reports how many.
- ``rabbitmqctl stop_app`` / ``start_app`` while a worker and a producer run:
  each ``mandatory`` publish either returns (confirmed by the broker) or raises
  ``BrokerUnavailable``; every confirmed task runs once the broker is back.

They skip when a broker is down, and fail instead when SIMQ_REQUIRE_BROKERS=1.
"""

from __future__ import annotations

import os
import shutil
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
from simq.exceptions import BrokerUnavailable
from simq.production import load_app
from simq.transport import redact_url

ROOT = Path(__file__).resolve().parent.parent
TASKS = 10_000
KILLS = 4

MODULE = """
import os, time
import redis
from simq import App

app = App("brokerfaults", broker=os.environ["SIMQ_TEST_BROKER"], backend=os.environ["SIMQ_TEST_RESULTS"],
          task_acks_late=True)
runs = redis.Redis.from_url(os.environ["SIMQ_TEST_COUNTER_URL"])
RUNS_KEY = os.environ["SIMQ_TEST_COUNTER_KEY"]


@app.task(name="work")
def work(i):
    runs.incr(RUNS_KEY)  # one per execution: executions - tasks = duplicates
    time.sleep(0.0005)
    return i
"""


class _Project:
    """A task module on disk, its app loaded here, and worker processes started from it."""

    def __init__(self, tmp_path: Path, kind: str) -> None:
        require(kind)
        import redis  # the [redis] extra; require() has checked the broker is reachable

        namespace = f"f{uuid.uuid4().hex[:12]}"
        broker = with_namespace(broker_url(kind), namespace)
        if kind == "redis":
            broker += "&consumer_ttl=1"  # a killed worker's deliveries come back after 1 s
        results = with_namespace(result_url(kind), namespace)
        self.name = f"brokerfaults_{uuid.uuid4().hex[:8]}"
        self.path = tmp_path
        (tmp_path / f"{self.name}.py").write_text(textwrap.dedent(MODULE))
        self.counter_url = result_url("redis").split("?")[0]
        self.counter_key = f"simq-test-runs-{namespace}"
        self.counter = redis.Redis.from_url(self.counter_url)
        env = {
            "SIMQ_TEST_BROKER": broker,
            "SIMQ_TEST_RESULTS": results,
            "SIMQ_TEST_COUNTER_URL": self.counter_url,
            "SIMQ_TEST_COUNTER_KEY": self.counter_key,
        }
        self.env = dict(os.environ, **env)
        self.env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(ROOT), self.env.get("PYTHONPATH", "")])
        self._saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        sys.path.insert(0, str(tmp_path))
        self.app = load_app(f"{self.name}:app")
        self.procs: list[subprocess.Popen[bytes]] = []

    def worker(self, *extra: str) -> subprocess.Popen[bytes]:
        cmd = [
            sys.executable,
            "-m",
            "simq.production",
            "-A",
            f"{self.name}:app",
            "--poll-interval",
            "0.1",
            "--max-reconnect-delay",
            "1",
            "-l",
            "WARNING",
            *extra,
        ]
        proc = subprocess.Popen(cmd, cwd=self.path, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def runs(self) -> int:
        return int(self.counter.get(self.counter_key) or 0)

    def missing(self, ids: list[str]) -> list[str]:
        """The ids whose result is not SUCCESS yet, in the order given."""
        backend = self.app.backend
        return [task_id for task_id in ids if backend.get_meta(task_id).state != "SUCCESS"]

    def wait_all_done(self, ids: list[str], timeout: float) -> list[str]:
        deadline = time.monotonic() + timeout
        pending = list(ids)
        while pending and time.monotonic() < deadline:
            pending = self.missing(pending)
            if pending:
                time.sleep(0.2)
        return pending

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.communicate(timeout=20)
        for key, value in self._saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        sys.path.remove(str(self.path))
        delete_app_data(self.app)
        self.counter.delete(self.counter_key)
        self.counter.close()


@pytest.fixture
def project(request, tmp_path):
    proj = _Project(tmp_path, request.param)
    try:
        yield proj
    finally:
        proj.close()


@pytest.mark.parametrize("project", ["amqp", "redis"], indirect=True)
def test_sigkilled_worker_loses_no_acks_late_task(project, reliability_report):
    work = project.app.tasks["work"]
    ids = [work.delay(i).id for i in range(TASKS)]
    kills = []
    for _ in range(KILLS):
        worker = project.worker("--pool", "threads", "-c", "2")
        before = project.runs()
        # kill it once it is well into the work: some tasks done since it started, many left
        deadline = time.monotonic() + 30
        while project.runs() < before + 1500 and time.monotonic() < deadline:
            time.sleep(0.01)
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)
        kills.append(project.runs())
    # every kill landed mid-run: the worker had run tasks, and tasks were left
    assert all(0 < done < TASKS for done in kills), kills
    last = project.worker("--pool", "threads", "-c", "2")
    missing = project.wait_all_done(ids, timeout=180)
    assert missing == [], f"{len(missing)} of {TASKS} tasks lost after {KILLS} SIGKILLs (first: {missing[:3]})"
    runs = project.runs()
    assert runs >= TASKS
    last.send_signal(signal.SIGTERM)
    last.communicate(timeout=30)
    reliability_report.append(
        f"{redact_url(project.app.conf.broker_url.split('?')[0])}: {TASKS} acks_late tasks, {KILLS} SIGKILLs "
        f"(at {kills} executions), {TASKS - len(missing)} distinct ids SUCCESS, 0 lost, {runs - TASKS} ran twice"
    )


def _rabbitmqctl(*args: str, timeout: float = 120) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, timeout=timeout, capture_output=True)


@pytest.mark.parametrize("project", ["amqp"], indirect=True)
def test_rabbitmq_restart_while_producing_and_consuming(project, reliability_report):
    if shutil.which("rabbitmqctl") is None:
        if os.environ.get("SIMQ_REQUIRE_BROKERS") == "1":
            pytest.fail("SIMQ_REQUIRE_BROKERS=1 but rabbitmqctl is not on PATH")
        pytest.skip("rabbitmqctl is not on PATH; cannot restart RabbitMQ")
    work = project.app.tasks["work"]
    worker = project.worker("--pool", "threads", "-c", "2")
    confirmed: list[str] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def produce() -> None:
        i = 0
        while not stop.is_set():
            task_id = f"restart-{i}"
            try:
                work.apply_async((i,), task_id=task_id, mandatory=True)
            except BrokerUnavailable as exc:
                errors.append(exc)
                time.sleep(0.05)
            except BaseException as exc:  # anything else is a failure of the contract
                errors.append(exc)
                return
            else:
                confirmed.append(task_id)
            i += 1
            time.sleep(0.002)

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    try:
        _wait(lambda: len(confirmed) >= 200, 30, "the producer to publish 200 tasks")
        before_stop = len(confirmed)
        _rabbitmqctl("stop_app")
        try:
            _wait(lambda: len(errors) >= 1, 30, "a publish to fail while RabbitMQ is stopped")
            during = len(confirmed)
        finally:
            _rabbitmqctl("start_app")
            _rabbitmqctl("await_startup")
        _wait(lambda: len(confirmed) >= during + 200, 60, "the producer to publish again after the restart")
    finally:
        stop.set()
        producer.join(timeout=30)
    # the producer saw the outage as BrokerUnavailable, named and redacted, never as a silent drop
    assert errors and all(isinstance(e, BrokerUnavailable) for e in errors), [repr(e) for e in errors[:3]]
    assert ":guest@" not in str(errors[0]) and "127.0.0.1" in str(errors[0])
    assert before_stop >= 200
    # every publish that returned was confirmed by the broker: the worker reconnects and runs them all
    missing = project.wait_all_done(confirmed, timeout=120)
    assert missing == [], f"{len(missing)} of {len(confirmed)} confirmed tasks never ran (first: {missing[:3]})"
    assert worker.poll() is None, "the worker process died instead of reconnecting"
    worker.send_signal(signal.SIGTERM)
    out, _ = worker.communicate(timeout=30)
    assert worker.returncode == 0, out.decode()
    reliability_report.append(
        f"rabbitmqctl stop_app/start_app: {len(confirmed)} confirmed publishes ({before_stop} before the stop), "
        f"{len(errors)} raised BrokerUnavailable, 0 confirmed tasks lost, worker reconnected"
    )


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)
