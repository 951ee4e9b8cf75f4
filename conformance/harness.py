"""The one fixture a conformance test needs: a ``Harness`` bound to one backend.

A harness makes apps wired to its backend (``h.app(**config)``), knows how to
let time pass (``h.advance(seconds)``: jumps the virtual clock, or waits on a
real broker), and tears everything down afterwards.

Backends: ``simulated`` and ``eager`` run in memory on a virtual clock;
``amqp`` and ``redis`` run on the local RabbitMQ and Redis (URLs from
``SIMQ_AMQP_URL`` / ``SIMQ_REDIS_URL``); any other name containing ``://`` is
a broker URL of a third-party transport (``pytest --simq-transport URL``).
On a real broker every app gets a fresh namespace (``?namespace=...`` on the
broker and result URLs), so tests never see each other's queues or results,
and its workers run in background threads on the wall clock, started by the
app's first send (so every task is defined by then).

Deployed-worker backends (``worker-threads:amqp``, ``worker-processes:redis``,
``workers-2:redis``, ``worker-threads:<URL>``...) run the workers as real
``simq worker`` processes instead (:mod:`conformance.deployed`). What a task
records for the test to read goes in ``backend.record()``, a list both
processes see.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable
from functools import cache
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import attrs

from conformance.deployed import DeployedRun, SharedList, record_key
from conformance.deployed import split as split_deployed
from simq import App
from simq.connection import ProducerPool
from simq.memory.simulation import Simulation
from simq.transport import Transport, redact_url
from simq.worker import Worker

BUILTIN_BACKENDS = ("simulated", "eager")
REAL_BACKENDS = ("amqp", "redis")
DEFAULT_BACKENDS = (*BUILTIN_BACKENDS, *REAL_BACKENDS)
EXTRAS = {"amqp": "amqp", "redis": "redis"}


def broker_url(name: str) -> str:
    """The broker URL a backend name stands for."""
    deployed = split_deployed(name)
    if deployed is not None:
        return broker_url(deployed[1])
    if "://" in name:
        return name
    if name == "amqp":
        return os.environ.get("SIMQ_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
    if name == "redis":
        return os.environ.get("SIMQ_REDIS_URL", "redis://127.0.0.1:6379/0")
    raise ValueError(f"backend {name!r} is not known to this harness")


def result_url(name: str) -> str:
    """Where results go for a real-broker backend: Redis for amqp/redis, else ``SIMQ_RESULT_URL`` or memory.

    A deployed-worker backend on a third-party broker keeps its results in Redis
    unless ``SIMQ_RESULT_URL`` says otherwise: memory does not cross processes.
    """
    deployed = split_deployed(name)
    if deployed is not None:
        name = deployed[1] if deployed[1] in REAL_BACKENDS else "redis"
    if name in REAL_BACKENDS:
        return os.environ.get("SIMQ_RESULT_URL", os.environ.get("SIMQ_REDIS_URL", "redis://127.0.0.1:6379/0"))
    return os.environ.get("SIMQ_RESULT_URL", "memory://")


def app_urls(name: str, base: str, index: int) -> tuple[str, str, str]:
    """Broker URL, result URL and namespace of the ``index``-th app of a test on backend ``name``."""
    namespace = f"{base}x{index}"
    return with_namespace(broker_url(name), namespace), with_namespace(result_url(name), namespace), namespace


def with_namespace(url: str, namespace: str) -> str:
    if urlsplit(url).scheme in ("", "memory"):
        return url
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "namespace"] + [("namespace", namespace)]
    return urlunsplit(parts._replace(query=urlencode(query)))


@cache
def unavailable(name: str) -> str | None:
    """Why backend ``name`` cannot run here (missing extra, broker down), or None if it can."""
    if name in BUILTIN_BACKENDS:
        return None
    deployed = split_deployed(name)
    if deployed is not None and deployed[1] != "redis":
        return unavailable(deployed[1]) or unavailable("redis")  # records and counters live in Redis
    from simq.exceptions import SimqError
    from simq.transport import load_transport

    urls = [broker_url(name)]
    results = result_url(name)
    if urlsplit(results).scheme not in ("", "memory"):
        urls.append(results)
    for url in urls:
        try:
            factory = load_transport(url)
        except SimqError as exc:
            return str(exc)
        try:
            factory(url, connect_timeout=2.0).close()
        except SimqError as exc:
            return f"{exc} (start it, or run without SIMQ_REQUIRE_BROKERS to skip)"
        except OSError as exc:
            return f"cannot reach {redact_url(url)}: {exc}"
    return None


def require(name: str) -> None:
    """Skip the calling test when backend ``name`` cannot run here; fail instead when SIMQ_REQUIRE_BROKERS=1."""
    why = unavailable(name)
    if why is None:
        return
    import pytest

    if os.environ.get("SIMQ_REQUIRE_BROKERS") == "1":
        pytest.fail(f"SIMQ_REQUIRE_BROKERS=1 but backend {name!r} is unavailable: {why}")
    pytest.skip(f"backend {name!r} unavailable: {why}")


def delete_app_data(app: App) -> None:
    """Remove ``app``'s queues and result keys from the broker (best effort; namespaced queues also expire)."""
    app.pool.close()
    try:
        conn = app.connection()
    except Exception:
        return
    try:
        if hasattr(conn, "delete_namespace"):
            conn.delete_namespace()
        elif hasattr(conn, "delete_queue"):
            for name in list(app.router.queues):
                conn.delete_queue(name)
    finally:
        conn.close()
    backend = app.backend
    if hasattr(backend, "delete_namespace"):
        backend.delete_namespace()
        getattr(backend, "close", lambda: None)()


@attrs.define(eq=False)
class _RealRun:
    """Workers of one app on a real broker, each in its own thread."""

    app: App
    workers: int
    queues: list[str] | None
    prefetch_multiplier: int | None
    namespace: str
    started: list[Worker] = attrs.field(factory=list)
    threads: list[threading.Thread] = attrs.field(factory=list)
    errors: list[BaseException] = attrs.field(factory=list)
    stop: threading.Event = attrs.field(factory=threading.Event)
    probe: Transport | None = None
    crashing: set[int] = attrs.field(factory=set)

    def ensure_started(self) -> None:
        if self.started:
            return
        for _ in range(self.workers):
            self.add_worker()

    def add_worker(self, prefetch_multiplier: int | None = None) -> Worker:
        """Start one more worker thread on this app's broker."""
        worker = self.app.Worker(
            queues=self.queues,
            concurrency=1,
            prefetch_multiplier=self.prefetch_multiplier if prefetch_multiplier is None else prefetch_multiplier,
            hostname=f"conformance-{self.namespace}-{len(self.started) + 1}",
        )
        worker.start()
        self.started.append(worker)
        thread = threading.Thread(target=self._run, args=(worker,), name=worker.hostname, daemon=True)
        self.threads.append(thread)
        thread.start()
        return worker

    def crash(self, worker: Worker, timeout: float = 30.0) -> None:
        """Make ``worker`` die without cleaning up, in its own thread (the loop owns the worker)."""
        index = self.started.index(worker)
        self.crashing.add(id(worker))
        self.threads[index].join(timeout)
        if self.threads[index].is_alive():
            raise AssertionError(f"worker {worker.hostname} did not crash within {timeout} s")

    def _run(self, worker: Worker) -> None:
        app = self.app

        def until() -> bool:
            if id(worker) in self.crashing:
                worker.crash()
                return True
            # queues created after start (task_create_missing_queues): consume them too
            if self.queues is None:
                for name in list(app.router.queues):
                    if name not in worker._consuming:
                        worker.add_queue(name)
            return self.stop.is_set()

        try:
            worker.run(poll_interval=0.05, until=until)
        except BaseException as exc:  # reported by close()
            self.errors.append(exc)

    def idle(self) -> bool:
        for worker in self.started:
            if id(worker) in self.crashing:
                continue
            stats = worker.stats
            # eta-held messages count as idle: on the wall clock their time has not come
            finished = stats.succeeded + stats.failed + stats.retried + stats.ignored + stats.revoked + worker.held
            if worker.ready or getattr(worker.transport, "unacked", 0) > worker.held or stats.received > finished:
                return False
        if not self.started:
            return True
        if self.probe is None:
            self.probe = self.app.connection()
        return all(self.probe.queue_depth(name) == 0 for name in list(self.app.router.queues))

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)
        if self.probe is not None:
            self.probe.close()
        delete_app_data(self.app)
        if self.errors:
            raise self.errors[0]


@attrs.define(eq=False)
class Harness:
    """One backend under test: ``simulated``, ``eager``, or a real broker (``amqp``, ``redis``, a URL)."""

    name: str
    seed: int = 0
    test: dict[str, Any] | None = None  # module, qualname and parameters: what a deployed worker re-runs
    _base: str = attrs.field(factory=lambda: f"t{uuid.uuid4().hex[:12]}")
    _records: int = 0
    _cleanups: list[Callable[[], None]] = attrs.field(factory=list)
    _sims: list[Simulation] = attrs.field(factory=list)
    _apps: list[App] = attrs.field(factory=list)
    _runs: dict[int, _RealRun | DeployedRun] = attrs.field(factory=dict)

    @property
    def deployed(self) -> bool:
        """True where the workers are ``simq worker`` processes (only ``record()`` lists cross to them)."""
        return split_deployed(self.name) is not None

    def record(self) -> list[Any] | SharedList:
        """A list the test's tasks append to and the test reads: shared with the worker processes when deployed."""
        self._records += 1
        if not self.deployed:
            return []
        shared = SharedList(record_key(self._base, self._records))
        self._cleanups.append(shared.delete)
        return shared

    @property
    def virtual(self) -> bool:
        """True where time is virtual (``advance`` jumps instead of waiting)."""
        return self.name in BUILTIN_BACKENDS

    @property
    def transport_capabilities(self) -> Any:
        """The ``Capabilities`` of the transport under test."""
        if self.virtual:
            from simq.memory.broker import MemoryTransport

            return MemoryTransport.capabilities
        from simq.transport import load_transport

        transport = load_transport(broker_url(self.name))(broker_url(self.name), connect_timeout=2.0)
        try:
            return transport.capabilities
        finally:
            transport.close()

    def app(
        self,
        *,
        workers: int | None = None,
        queues: list[str] | None = None,
        prefetch_multiplier: int | None = None,
        **config: Any,
    ) -> App:
        """A fresh app on this backend; define tasks on it, then send.

        ``workers`` (default: the backend's own, one in-process, two for
        ``workers-2:``) and ``queues`` are the workers' to start with;
        ``worker_concurrency`` in ``config`` sets a deployed worker's ``-c``.
        """
        name = f"conformance-{len(self._apps)}"
        if self.name == "eager":
            app = App(name, task_always_eager=True, task_eager_seed=self.seed, **config)
        elif self.name == "simulated":
            app = App(name, **config)
            sim = app.simulate(
                seed=self.seed, workers=workers or 1, queues=queues, prefetch_multiplier=prefetch_multiplier
            )
            sim.__enter__()
            self._sims.append(sim)
            self._cleanups.append(lambda: sim.__exit__(None, None, None))
        else:
            app = self._real_app(name, workers, queues, prefetch_multiplier, config)
        self._apps.append(app)
        return app

    def _real_app(
        self,
        name: str,
        workers: int | None,
        queues: list[str] | None,
        prefetch_multiplier: int | None,
        config: dict[str, Any],
    ) -> App:
        require(self.name)
        index = len(self._apps)
        broker, results, namespace = app_urls(self.name, self._base, index)
        app = App(name, broker=broker, backend=results, **config)
        run: _RealRun | DeployedRun
        deployed = split_deployed(self.name)
        if deployed is not None:
            if self.test is None:
                raise ValueError("a deployed-worker backend needs the test to re-run in the worker (Harness(test=...))")
            spec = dict(self.test, backend=self.name, base=self._base, app=index)
            concurrency = config.get("worker_concurrency")
            run = DeployedRun(app, deployed[0], spec, namespace, queues, prefetch_multiplier, workers, concurrency)
        else:
            run = _RealRun(app, workers or 1, queues, prefetch_multiplier, namespace)
        limit = int(app.conf.broker_pool_limit)

        def connect(timeout: float | None) -> Transport:
            run.ensure_started()
            return app.connection(broker, timeout)

        app.pool = ProducerPool(connect, limit)
        self._runs[id(app)] = run
        self._cleanups.append(run.close)
        return app

    @property
    def sim(self) -> Simulation | None:
        """The simulation of the last app made (simulated backend only)."""
        return self._sims[-1] if self._sims else None

    def driver(self, app: App) -> Simulation | None:
        return app.simulation

    def workers(self, app: App | None = None) -> list[Worker]:
        """The workers serving ``app`` (on a real broker: started by its first send)."""
        app = app or self._apps[-1]
        driver = app.simulation
        if driver is not None:
            return list(driver.worker_list)
        run = self._in_process(app)
        return list(run.started) if run is not None else []

    def _in_process(self, app: App) -> _RealRun | None:
        run = self._runs.get(id(app))
        if isinstance(run, DeployedRun):
            raise TypeError(
                f"backend {self.name!r} runs its workers as processes: a test that needs Worker objects "
                "carries @pytest.mark.simq_in_process(reason)"
            )
        return run

    def add_worker(self, app: App | None = None, *, prefetch_multiplier: int | None = None) -> Worker:
        """Start one more worker for ``app`` (simulated: in the simulation; real broker: in a thread)."""
        app = app or self._apps[-1]
        driver = app.simulation
        if driver is not None:
            return driver.add_worker(prefetch_multiplier=prefetch_multiplier)
        run = self._in_process(app)
        assert run is not None
        run.ensure_started()
        return run.add_worker(prefetch_multiplier)

    def crash_worker(self, worker: Worker, app: App | None = None) -> None:
        """Kill ``worker`` without any cleanup: what it held unacknowledged goes back to the broker."""
        app = app or self._apps[-1]
        if app.simulation is not None:
            worker.crash()
            return
        run = self._in_process(app)
        assert run is not None
        run.crash(worker)

    def wait_until(self, predicate: Callable[[], bool], app: App | None = None, timeout: float = 30.0) -> None:
        """Run (simulated) or wait (real broker, wall-clock ``timeout``) until ``predicate()`` holds."""
        app = app or self._apps[-1]
        driver = app.simulation
        if driver is not None:
            driver.run_until(predicate)
            return
        run = self._runs.get(id(app))
        deadline = time.monotonic() + timeout
        while not predicate():
            if run is not None and run.errors:
                raise run.errors[0]
            if isinstance(run, DeployedRun):
                run.check()
            if time.monotonic() > deadline:
                raise AssertionError(f"backend {self.name!r}: condition not met within {timeout} s")
            time.sleep(0.02)

    def stop_workers(self, app: App | None = None) -> None:
        """Stop ``app``'s workers gracefully (they finish, flush, and give held messages back)."""
        app = app or self._apps[-1]
        driver = app.simulation
        if driver is not None:
            driver.shutdown()
            return
        run = self._runs.get(id(app))
        if isinstance(run, DeployedRun):
            run.stop()
            if run.errors:
                raise run.errors[0]
        elif run is not None:
            run.stop.set()
            for thread in run.threads:
                thread.join(timeout=30)
            if run.errors:
                raise run.errors[0]

    def advance(self, seconds: float, app: App | None = None) -> None:
        """Let ``seconds`` pass on the backend's clock, running what falls due (real brokers: wait)."""
        app = app or self._apps[-1]
        driver = app.simulation
        if driver is not None:
            if driver.eager:
                driver.settle_eagerly()
                driver.clock.jump_to(driver.clock.now + seconds)
                driver.settle_eagerly()
            else:
                driver.advance(seconds)
            return
        time.sleep(seconds)

    def settle(self, app: App | None = None, timeout: float = 30.0) -> None:
        """Run until nothing more can happen now (real brokers: until the workers stay idle for 0.3 s)."""
        app = app or self._apps[-1]
        driver = app.simulation
        if driver is not None:
            driver.run_until_idle()
            return
        run = self._runs.get(id(app))
        if run is None:
            return
        deadline = time.monotonic() + timeout
        quiet = 0
        while quiet < 6:
            if run.errors:
                raise run.errors[0]
            quiet = quiet + 1 if run.idle() else 0
            if time.monotonic() > deadline:
                raise AssertionError(f"backend {self.name!r} did not settle within {timeout} s")
            time.sleep(0.05)

    def close(self) -> None:
        errors = []
        for cleanup in reversed(self._cleanups):
            try:
                cleanup()
            except BaseException as exc:
                errors.append(exc)
        self._cleanups.clear()
        if errors:
            raise errors[0]


def selected_backends(config: Any) -> list[str]:
    raw = config.getoption("--simq-backends") or os.environ.get("SIMQ_BACKENDS") or ",".join(DEFAULT_BACKENDS)
    names = [name.strip() for name in raw.split(",") if name.strip()]
    for url in config.getoption("--simq-transport", None) or ():
        if url not in names:
            names.append(url)
    return names
