"""Deployed-worker backends: the conformance suite against real ``simq worker`` processes.

A backend named ``worker-threads:<broker>`` (``simq worker -c 4``),
``worker-processes:<broker>`` (``simq worker -P processes -c 4``) or
``workers-2:<broker>`` (two ``simq worker -c 1`` processes) runs each test's
tasks in worker processes started the way a user starts them, with ``-A
conformance.deployed_app:app``; ``<broker>`` is ``amqp``, ``redis`` or a URL.
The test sends and waits from the pytest process.

The worker process gets its app by calling the same test function with a
worker-side harness (:mod:`conformance.deployed_app`): the test defines its
tasks on ``backend.app(...)`` as usual, and its first send ends the call
there, so both processes hold the same tasks under the same names, on the same
per-app namespace. What the tasks record for the test to read goes through
``backend.record()``: a plain list in-process, a Redis list here, so a task
body that appends in a worker process is seen by the test.

When the workers are idle is read off the broker (queue depths) and off
counters a worker hook (:class:`simq.hooks.WorkerHook`) keeps in Redis for
the app; a worker process that
exits on its own, or does not stop on SIGTERM, fails the test with its log.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs

from simq import App
from simq.transport import Transport

KINDS = {
    "worker-threads": ("1", ["-P", "threads", "-c", "4"]),
    "worker-processes": ("1", ["-P", "processes", "-c", "4"]),
    "workers-2": ("2", ["-c", "1"]),
}
ROOT = Path(__file__).resolve().parent.parent
SPEC_ENV = "SIMQ_CONFORMANCE_SPEC"


def split(name: str) -> tuple[str, str] | None:
    """``worker-threads:amqp`` -> ``("worker-threads", "amqp")``; None for a backend that is not deployed."""
    kind, sep, broker = name.partition(":")
    if sep and kind in KINDS:
        return kind, broker
    return None


def side_url() -> str:
    """The Redis that carries records and counters between the test and its worker processes."""
    return os.environ.get("SIMQ_REDIS_URL", "redis://127.0.0.1:6379/0").split("?")[0]


def _redis() -> Any:
    import redis

    return redis.Redis.from_url(side_url())


class SharedList:
    """A list both processes see: ``append`` in a worker process, read in the test (items pickled, in order)."""

    def __init__(self, key: str, muted: Callable[[], bool] = lambda: False) -> None:
        self.key = key
        self._client = _redis()
        self._muted = muted

    def append(self, item: Any) -> None:
        if self._muted():  # a worker process still defining its tasks: not part of the test's run
            return
        self._client.rpush(self.key, pickle.dumps(item))

    def extend(self, items: Any) -> None:
        for item in items:
            self.append(item)

    def _items(self) -> list[Any]:
        return [pickle.loads(raw) for raw in self._client.lrange(self.key, 0, -1)]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._items())

    def __len__(self) -> int:
        return int(self._client.llen(self.key))

    def __contains__(self, item: Any) -> bool:
        return item in self._items()

    def __getitem__(self, index: Any) -> Any:
        return self._items()[index]

    def __eq__(self, other: object) -> bool:
        return self._items() == (list(other) if isinstance(other, list | tuple | SharedList) else other)

    def __ne__(self, other: object) -> bool:
        return not self == other

    __hash__ = None  # type: ignore[assignment]

    def count(self, item: Any) -> int:
        return self._items().count(item)

    def __repr__(self) -> str:
        return repr(self._items())

    def delete(self) -> None:
        self._client.delete(self.key)
        self._client.close()


def record_key(base: str, index: int) -> str:
    """The Redis list of a test's ``index``-th ``backend.record()``: the same in the test and its workers."""
    return f"simq-conformance:{base}:record:{index}"


def counter_keys(namespace: str) -> tuple[str, str, str]:
    """Redis keys of one app's counters: tasks started, tasks finished, ids held for their eta."""
    prefix = f"simq-conformance:{namespace}"
    return f"{prefix}:started", f"{prefix}:finished", f"{prefix}:held"


@attrs.define(eq=False)
class DeployedRun:
    """The worker processes of one app of one test; started by the app's first send."""

    app: App
    kind: str
    spec: dict[str, Any]
    namespace: str
    queues: list[str] | None
    prefetch_multiplier: int | None
    workers: int | None = None  # the test's own count (None: the backend's)
    concurrency: int | None = None  # the test's worker_concurrency (None: the backend's -c)
    procs: list[subprocess.Popen[bytes]] = attrs.field(factory=list)
    logs: list[Path] = attrs.field(factory=list)
    probe: Transport | None = None
    side: Any = None  # the Redis client the idle check reads the counters with
    errors: list[BaseException] = attrs.field(factory=list)
    _dir: tempfile.TemporaryDirectory[str] | None = None

    def ensure_started(self) -> None:
        if not self.procs:
            for _ in range(self.workers or int(KINDS[self.kind][0])):
                self.add_worker()

    def add_worker(self, prefetch_multiplier: int | None = None) -> subprocess.Popen[bytes]:
        """Start one more ``simq worker`` process for this app."""
        if self._dir is None:
            self._dir = tempfile.TemporaryDirectory(prefix="simq-deployed-")
        index = len(self.procs) + 1
        log = Path(self._dir.name) / f"worker-{index}.log"
        pool = list(KINDS[self.kind][1])
        if self.concurrency is not None:
            pool[pool.index("-c") + 1] = str(self.concurrency)
        cmd = [sys.executable, "-m", "simq.cli", "worker", "-A", "conformance.deployed_app:app", *pool]
        cmd += ["-l", "INFO", "-n", f"w{index}@{self.namespace}", "--poll-interval", "0.1"]
        prefetch = self.prefetch_multiplier if prefetch_multiplier is None else prefetch_multiplier
        if prefetch is not None:
            cmd += ["--prefetch-multiplier", str(prefetch)]
        if self.queues is not None:
            cmd += ["-Q", ",".join(self.queues)]
        env = dict(os.environ, **{SPEC_ENV: json.dumps(self.spec)})
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
        with open(log, "wb") as out:
            proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        self.logs.append(log)
        return proc

    def log_text(self) -> str:
        return "\n".join(f"--- {path.name}\n{path.read_text(errors='replace')}" for path in self.logs)

    def check(self) -> None:
        """Raise, with the logs, if a worker process exited on its own."""
        for proc in self.procs:
            code = proc.poll()
            if code is not None:
                raise AssertionError(f"worker process {proc.pid} exited with code {code}:\n{self.log_text()}")

    def idle(self) -> bool:
        self.check()
        if not self.procs:
            return True
        if self.side is None:
            self.side = _redis()
        received, finished = (int(v or 0) for v in self.side.mget(counter_keys(self.namespace)[:2]))
        if received > finished:
            return False
        if self.probe is None:
            self.probe = self.app.connection()
        return all(self.probe.queue_depth(name) == 0 for name in list(self.app.router.queues))

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM every worker process (a warm shutdown) and wait for them."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                self.errors.append(
                    AssertionError(f"worker process {proc.pid} did not stop within {timeout} s:\n{self.log_text()}")
                )
        for proc in self.procs:
            if proc.returncode not in (0, -signal.SIGTERM) and not self.errors:
                self.errors.append(
                    AssertionError(f"worker process {proc.pid} stopped with code {proc.returncode}:\n{self.log_text()}")
                )

    def close(self) -> None:
        from conformance.harness import delete_app_data

        self.stop()
        if self.probe is not None:
            self.probe.close()
        client = self.side or _redis()
        try:
            client.delete(*counter_keys(self.namespace))
            for key in client.scan_iter(match=f"simq-conformance:{self.spec['base']}:*"):
                client.delete(key)
        finally:
            client.close()
        delete_app_data(self.app)
        if self._dir is not None:
            self._dir.cleanup()
        if self.errors:
            raise self.errors[0]
