"""Where an App's sends go and how its results are waited for: the one seam between simulation and production.

An App holds a stack of runtimes and calls the top one; it never asks which
kind it is. :class:`WallRuntime` is the bottom of every stack: the wall
clock, the configured result backend, a producer pool on the configured
broker. A :class:`~simq.memory.simulation.Simulation` pushes itself while it
runs (``with app.simulate():``), and eager mode (``task_always_eager``) is a
simulation the App keeps for itself. Everything else (routing, encoding,
signing, the worker) is the same code in both.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import uuid
import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from simq.clock import WallClock
from simq.config import DEFAULTS
from simq.connection import ProducerPool
from simq.exceptions import AccessRefused, BrokerUnavailable, ConfigurationError, SimulationIdle

if TYPE_CHECKING:
    from simq.app import App
    from simq.backends.base import Backend, ResultMeta
    from simq.clock import Clock
    from simq.message import Envelope, TaskMessage
    from simq.routing import Queue
    from simq.transport import Transport

__all__ = ["Runtime", "WallRuntime"]


class Runtime(Protocol):
    """What an App needs from where it runs: ``WallRuntime`` and ``Simulation`` provide it."""

    #: Whether a send runs to completion before it returns (eager mode).
    eager: bool

    @property
    def clock(self) -> Clock: ...

    @property
    def backend(self) -> Backend: ...

    def new_id(self) -> str:
        """A fresh task id (from the seed in a simulation)."""
        ...

    def publish(
        self,
        message: TaskMessage,
        envelope: Envelope,
        exchange: str,
        routing_key: str,
        *,
        mandatory: bool = False,
        immediate: bool = False,
        connection: Transport | None = None,
        connect_timeout: float | None = None,
    ) -> None:
        """Send one encoded message (``connection``: the caller's own, else one of the runtime's)."""
        ...

    def batched(self) -> contextlib.AbstractContextManager[None]:
        """Inside, plain sends of this thread may be held and published together on exit."""
        ...

    def wait(self, task_id: str, timeout: float | None) -> ResultMeta:
        """Block until the task is ready (a simulation runs until it is); raise TimeoutError after ``timeout``."""
        ...

    def connection(self, url: str | None, connect_timeout: float | None) -> Transport:
        """A broker connection of the caller's own."""
        ...

    def queue_added(self, queue: Queue) -> None:
        """Routing created ``queue`` (``task_create_missing_queues``): make it exist where messages go."""
        ...


log = logging.getLogger("simq.worker")

#: Seconds a running task's own send (the next chain link, a chord body, a callback, a retry) keeps
#: trying across a broker outage: its own message may be acknowledged already (early acks), so
#: giving up at once would lose what follows it.
TASK_SEND_PATIENCE = 60.0


class WallRuntime:
    """Production: the wall clock, the configured result backend and broker, a producer pool."""

    eager = False

    def __init__(self, app: App) -> None:
        self.app = app
        self._clock = WallClock()
        self._backend: Backend | None = None
        self._pool: ProducerPool | None = None
        self._lock = threading.Lock()
        self._local = threading.local()
        self._queues_version = 0
        self._declared: weakref.WeakKeyDictionary[Transport, int] = weakref.WeakKeyDictionary()

    @property
    def clock(self) -> Clock:
        return self._clock

    @property
    def backend(self) -> Backend:
        backend = self._backend
        if backend is None:
            with self._lock:  # pool threads asking at once must not each make one
                if self._backend is None:
                    self._backend = self.app.make_backend(self.app.conf.result_backend, self._clock)
                backend = self._backend
        return backend

    @property
    def pool(self) -> ProducerPool:
        pool = self._pool
        if pool is None:
            with self._lock:
                if self._pool is None:
                    url = self.app.conf.broker_url
                    self._pool = ProducerPool(
                        lambda timeout: self.connection(url, timeout), int(self.app.conf.broker_pool_limit)
                    )
                pool = self._pool
        return pool

    def set_pool(self, pool: ProducerPool) -> None:
        """Use ``pool`` for this app's sends (tests start their workers from the pool's factory)."""
        self._pool = pool

    def new_id(self) -> str:
        return str(uuid.uuid4())

    def publish(
        self,
        message: TaskMessage,
        envelope: Envelope,
        exchange: str,
        routing_key: str,
        *,
        mandatory: bool = False,
        immediate: bool = False,
        connection: Transport | None = None,
        connect_timeout: float | None = None,
    ) -> None:
        if connection is not None:
            if self._declared.get(connection) != self._queues_version:
                self.declare(connection)
            connection.publish(envelope, exchange, routing_key, mandatory=mandatory, immediate=immediate)
            return
        batch = getattr(self._local, "batch", None)
        if batch is not None and not (mandatory or immediate):
            batch.append((envelope, exchange, routing_key))  # published when batched() ends
            return
        # a connection that failed is dropped, never reused; a pooled one the broker closed is replaced
        self._send(
            lambda t: t.publish(envelope, exchange, routing_key, mandatory=mandatory, immediate=immediate),
            connect_timeout,
        )

    def _send(self, fn: Any, connect_timeout: float | None = None) -> None:
        """Run ``fn`` on a pooled connection; from a running task, again across a broker outage."""
        if self.app.current_request() is not None:
            self._retrying(fn, connect_timeout, self._task_delays(), "a task's send")
        elif self.app.conf.task_publish_retry:
            self._retrying(fn, connect_timeout, self._policy_delays(), "a send")
        else:
            self.pool.run(fn, connect_timeout)

    def _retrying(self, fn: Any, connect_timeout: float | None, delays: Iterator[float], what: str) -> None:
        """Run ``fn``, again after each delay ``delays`` gives while the broker is unavailable; then raise."""
        while True:
            try:
                self.pool.run(fn, connect_timeout)
                return
            except AccessRefused:  # refused credentials are not an outage
                raise
            except BrokerUnavailable as exc:
                delay = next(delays, None)
                if delay is None:
                    raise
                log.warning("%s could not reach the broker (%s); trying again in %.2f s", what, exc, delay)
                self._clock.sleep(delay)

    def _task_delays(self) -> Iterator[float]:
        """A running task's send: 0.1 s doubling to 2 s, for up to ``TASK_SEND_PATIENCE`` seconds."""
        clock = self._clock
        deadline = clock.now + TASK_SEND_PATIENCE
        delay = 0.1
        while clock.now + delay <= deadline:
            yield delay
            delay = min(delay * 2, 2.0)

    def _policy_delays(self) -> Iterator[float]:
        """A client's send with ``task_publish_retry``, as Celery's ``task_publish_retry_policy`` says.

        The first retry waits ``interval_start`` seconds, each next one
        ``interval_step`` more, at most ``interval_max``; ``max_retries``
        retries (None: for ever).
        """
        policy = {**DEFAULTS["task_publish_retry_policy"], **self.app.conf.task_publish_retry_policy}
        max_retries = policy["max_retries"]
        delay = float(policy["interval_start"])
        retries = 0
        while max_retries is None or retries < max_retries:
            retries += 1
            yield delay
            delay = min(delay + float(policy["interval_step"]), float(policy["interval_max"]))

    @contextlib.contextmanager
    def batched(self) -> Iterator[None]:
        if getattr(self._local, "batch", None) is not None:
            yield
            return
        batch: list[tuple[Any, str, str]] = []
        self._local.batch = batch
        try:
            yield
        finally:
            self._local.batch = None
            if batch:
                self._send(lambda t: t.publish_many(batch))

    def wait(self, task_id: str, timeout: float | None) -> ResultMeta:
        if urlsplit(self.app.conf.broker_url).scheme == "memory":
            raise SimulationIdle(
                f"task {task_id} is waiting on the memory:// broker but nothing runs it outside a simulation: "
                "wrap the code in `with app.simulate():`, set task_always_eager=True, or use a real broker"
            )
        return self.backend.wait_for(task_id, timeout)

    def connection(self, url: str | None, connect_timeout: float | None) -> Transport:
        from simq.transport import load_transport

        url = url or self.app.conf.broker_url
        if urlsplit(url).scheme == "memory":
            raise ConfigurationError(
                "the memory:// broker lives inside a simulation: use `with app.simulate():` or task_always_eager=True"
            )
        conf = self.app.conf
        timeout = conf.broker_connection_timeout if connect_timeout is None else connect_timeout
        transport = load_transport(url)(url, connect_timeout=timeout)
        self.declare(transport)
        return transport

    def declare(self, transport: Transport) -> None:
        """Declare every queue the app knows on ``transport`` (transports know nothing of the App)."""
        transport.declare(list(self.app.router.queues.values()))
        self._declared[transport] = self._queues_version

    def queue_added(self, queue: Queue) -> None:
        # Pooled connections declared the queues known when they opened; new
        # connections declare every queue, the new one included. A connection the
        # caller holds (``connection=``) declares it before its next publish.
        self._queues_version += 1
        if self._pool is not None:
            self._pool.close()

    def close(self) -> None:
        """Close the producer pool and the result backend's connections."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()
        backend, self._backend = self._backend, None
        close = getattr(backend, "close", None)
        if close is not None:
            close()
