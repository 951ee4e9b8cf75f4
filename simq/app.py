"""The App: configuration, the task registry, and the one publish path every send takes."""

from __future__ import annotations

import contextlib
import contextvars
import difflib
import threading
import uuid
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar, overload
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from simq import protocol, states
from simq import result as _result
from simq.backends.base import Backend, ResultMeta
from simq.backends.memory import MemoryBackend
from simq.clock import Clock, WallClock
from simq.connection import ProducerPool
from simq.exceptions import (
    ConfigurationError,
    SimqError,
    SimulationIdle,
)
from simq.message import TaskMessage, validate_priority
from simq.result import AsyncResult
from simq.routing import Route, Router
from simq.serialization import Serializer, SerializerRegistry
from simq.task import CALL_OPTIONS, Task, check_retry_policy, make_task_class
from simq.transport import Transport, load_transport
from simq.worker import Request, Worker, to_timestamp

if TYPE_CHECKING:
    from simq.hooks import WorkerHook
    from simq.memory.faults import FaultPlan
    from simq.memory.simulation import Simulation
    from simq.message import Delivery
    from simq.pools import Pool
    from simq.signing import Signer

__all__ = ["DEFAULTS", "App", "Config", "SharedTask", "current_app", "shared_task"]

F = TypeVar("F", bound=Callable[..., Any])

DEFAULTS: dict[str, Any] = {
    "broker_url": "memory://",
    "result_backend": "memory://",
    "broker_connection_timeout": 4.0,
    "broker_pool_limit": 10,
    "task_serializer": "json",
    "result_serializer": "json",
    "result_expires": 86_400,  # seconds or a timedelta; None or 0: never (simq.backends.base.expires_seconds)
    "accept_content": ["json"],
    "task_routes": None,
    "task_queues": None,
    "task_default_queue": "celery",
    "task_default_exchange": None,
    "task_default_exchange_type": "direct",
    "task_default_routing_key": None,
    "task_default_priority": None,
    "task_create_missing_queues": True,
    "task_always_eager": False,
    "task_eager_seed": 0,
    "task_acks_late": False,
    "task_ignore_result": False,
    "task_track_started": False,
    "task_publish_retry": False,
    "task_eta_limit": 10 * 365 * 86400,
    "task_reject_on_worker_lost": False,
    "worker_prefetch_multiplier": 4,
    "worker_concurrency": 1,
    "worker_max_message_size": 16 * 1024 * 1024,
    "security_key": None,
    "security_digest": "sha256",
    "timezone": "UTC",
}

_UNSET = object()

_PREFIXES = ("task_", "worker_", "broker_", "result_", "accept_", "timezone", "simq_", "security_")


class Config(dict[str, Any]):
    """Settings with attribute access; unknown simq-looking keys are refused with a suggestion."""

    def __init__(self, on_change: Callable[[], None]) -> None:
        super().__init__(DEFAULTS)
        self._on_change = on_change

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None

    def __setattr__(self, key: str, value: Any) -> None:
        if key.startswith("_"):
            super().__setattr__(key, value)
        else:
            self.update({key: value})

    def update(self, *args: Any, **kwargs: Any) -> None:
        values = dict(*args, **kwargs)
        for key in values:
            if key not in DEFAULTS and key.startswith(_PREFIXES):
                close = difflib.get_close_matches(key, list(DEFAULTS), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ConfigurationError(f"unknown setting {key!r}{hint}")
        super().update(values)
        self._on_change()


class App:
    """A simq application: where tasks are registered and sent from.

    ``App("proj")`` uses the in-memory broker; ``app.simulate()`` runs it
    deterministically on a virtual clock. ``broker="amqp://..."`` or
    ``"redis://..."`` sends to a real broker through the installed transport.
    """

    def __init__(self, main: str = "simq", broker: str | None = None, backend: str | None = None, **config: Any) -> None:
        self.main = main
        self.tasks: dict[str, Task] = {}
        self.serializers = SerializerRegistry()
        self._router: Router | None = None
        self._drivers: list[Simulation] = []
        self._eager: Simulation | None = None
        self._backend: Backend | None = None
        self._pool: ProducerPool | None = None
        self._local = threading.local()
        self._lock = threading.Lock()
        self._wall = WallClock()
        self._route_cache: dict[tuple[Any, ...], Route] = {}
        self._signer: object = _UNSET
        self.conf = Config(self._conf_changed)
        if broker is not None:
            config["broker_url"] = broker
        if backend is not None:
            config["result_backend"] = backend
        if config:
            self.conf.update(config)
        from simq.canvas import register_builtins
        from simq.canvas.hook import CanvasHook

        #: Hooks every worker of this app runs (simq.hooks), after a worker's own; the canvas is one.
        self.worker_hooks: list[WorkerHook] = [CanvasHook()]
        register_builtins(self)
        _register_shared(self)

    def set_current(self) -> None:
        """Make this the app ``shared_task`` tasks and ``simq.current_app()`` resolve to."""
        _current_app.set(self)
        _make_default(self)

    def _conf_changed(self) -> None:
        self._router = None
        self._signer = _UNSET
        self._route_cache = {}
        if getattr(self, "_eager", None) is not None and not self.conf.get("task_always_eager"):
            self._eager = None

    def __repr__(self) -> str:
        return f"<simq.App {self.main!r} broker={self.conf.broker_url!r}>"

    @property
    def signer(self) -> Signer | None:
        """Signs what this app sends and verifies what its workers take, when ``security_key`` is set."""
        if self._signer is _UNSET:
            from simq.signing import signer_from_conf

            self._signer = signer_from_conf(self.conf)
        return self._signer  # type: ignore[return-value]

    # -- registry -------------------------------------------------------------------
    @overload
    def task(self, fun: F) -> Task: ...

    @overload
    def task(self, fun: None = None, **options: Any) -> Callable[[F], Task]: ...

    def task(self, fun: Callable[..., Any] | None = None, **options: Any) -> Any:
        """Register a function as a task: ``@app.task`` or ``@app.task(name=..., bind=True, ...)``."""
        if fun is not None and callable(fun) and not options:
            return self._register(fun, {})

        def decorator(f: Callable[..., Any]) -> Task:
            return self._register(f, options)

        return decorator

    def _register(self, fun: Callable[..., Any], options: Mapping[str, Any]) -> Task:
        options = dict(options)
        base = options.pop("base", None) or Task
        name = options.pop("name", None) or f"{fun.__module__}.{fun.__qualname__}"
        if not isinstance(name, str) or not name:
            raise ConfigurationError(f"a task name must be a non-empty string, got {name!r}")
        known = {a for a in dir(base) if not a.startswith("_")}
        for key in options:
            if key not in known:
                close = difflib.get_close_matches(key, sorted(known), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ConfigurationError(f"@app.task got unknown option {key!r} for {name!r}{hint}")
        if "priority" in options:
            validate_priority(options["priority"])
        if options.get("serializer") is not None:
            self.serializers.get(options["serializer"])
        cls = make_task_class(self, fun, base, name, options)
        check_retry_policy(cls)
        cls_validate = getattr(cls, "validate_options", None)
        if cls_validate is not None:
            cls_validate()
        task = cls()
        self.tasks[name] = task
        self._route_cache = {}
        return task

    def register_task(self, task: Task) -> Task:
        self.tasks[task.name] = task
        return task

    def register_serializer(
        self,
        name: str,
        encode: Callable[[Any], bytes | str],
        decode: Callable[[bytes], Any],
        content_type: str,
        content_encoding: str = "utf-8",
    ) -> Serializer:
        """Add a serializer this app can send with (and accept, if listed in accept_content)."""
        return self.serializers.register(name, encode, decode, content_type, content_encoding)

    # -- routing ----------------------------------------------------------------------
    @property
    def router(self) -> Router:
        if self._router is None:
            self._router = Router.from_conf(self.conf)
            self._router.on_new_queue = self._on_new_queue
        return self._router

    def _on_new_queue(self, queue: Any) -> None:
        """Routing created a queue: declare it where messages are about to go."""
        self._route_cache = {}
        driver = self._drivers[-1] if self._drivers else self._eager
        if driver is not None:
            driver._on_new_queue(queue)
        elif self._pool is not None:
            # Pooled connections declared the queues known when they opened;
            # new connections declare every queue, the new one included.
            self._pool.close()

    # -- drivers: simulation and eager ----------------------------------------------------
    @property
    def _driver(self) -> Simulation | None:
        if self._drivers:
            return self._drivers[-1]
        if self.conf.task_always_eager:
            if self._eager is None:
                from simq.memory.simulation import Simulation

                self._eager = Simulation(
                    self, seed=int(self.conf.task_eager_seed), workers=1, eager=True, start=self._wall.now
                )
                self._eager._open()
            return self._eager
        return None

    def simulate(
        self,
        seed: int = 0,
        workers: int = 1,
        *,
        concurrency: int = 1,
        prefetch_multiplier: int | None = None,
        queues: Sequence[str] | None = None,
        start: float | datetime | None = None,
        patch_time: bool = True,
        faults: FaultPlan | None = None,
    ) -> Simulation:
        """A deterministic run of this app: memory broker, virtual clock, ``workers`` workers.

        Use it as a context manager; inside it every send goes to the
        simulated broker, ``result.get()`` drives the simulation, and task
        bodies see the virtual time. ``faults=FaultPlan(rate=...)`` injects
        random faults drawn from ``seed`` (see simq.memory.faults).
        """
        from simq.clock import DEFAULT_START
        from simq.memory.simulation import Simulation

        begin = DEFAULT_START if start is None else to_timestamp(start, self._tz)
        return Simulation(
            self,
            seed=seed,
            workers=workers,
            concurrency=concurrency,
            prefetch_multiplier=prefetch_multiplier,
            queues=list(queues) if queues is not None else None,
            start=begin,
            patch_time=patch_time,
            faults=faults,
        )

    def _push_driver(self, driver: Simulation) -> None:
        self._drivers.append(driver)

    def _pop_driver(self, driver: Simulation) -> None:
        if self._drivers and self._drivers[-1] is driver:
            self._drivers.pop()

    @property
    def clock(self) -> Clock:
        driver = self._driver
        return driver.clock if driver is not None else self._wall

    @property
    def _tz(self) -> Any:
        tz = self.conf.timezone
        return None if tz in (None, "UTC") else ZoneInfo(tz)

    # -- results ---------------------------------------------------------------------------
    @property
    def backend(self) -> Backend:
        driver = self._driver
        if driver is not None:
            return driver.backend
        backend = self._backend
        if backend is None:
            with self._lock:  # pool threads asking at once must not each make one
                if self._backend is None:
                    self._backend = self._make_backend(self.conf.result_backend)
                backend = self._backend
        return backend

    def _make_backend(self, url: str | None) -> Backend:
        scheme = urlsplit(url or "memory://").scheme
        # result_expires is checked by the backend (a clear ConfigurationError); records are signed with the app's key
        options = {"expires": self.conf.result_expires, "signer": self.signer}
        if scheme in ("", "memory", "cache+memory"):
            return MemoryBackend(self.serializers, self._wall, self.conf.result_serializer, **options)
        from importlib.metadata import entry_points

        for ep in entry_points(group="simq.backends"):
            if ep.name == scheme:
                factory = ep.load()
                backend: Backend = factory(
                    url, serializers=self.serializers, clock=self._wall, serializer=self.conf.result_serializer, **options
                )
                return backend
        raise ConfigurationError(
            f"no result backend for URL scheme {scheme!r}; install one (pip install 'simq[redis]' gives redis://)"
        )

    def AsyncResult(self, task_id: str) -> _result.AsyncResult:  # noqa: N802 - Celery's name
        return AsyncResult(task_id, self)

    def _wait_for(self, task_id: str, timeout: float | None) -> ResultMeta:
        driver = self._driver
        if driver is not None:
            if self.current_request() is not None:
                raise SimqError(
                    f"never call result.get() inside a task (waiting for {task_id}): it would block the worker; "
                    "use a chain or a chord"
                )
            backend = driver.backend
            driver.run_until(lambda: backend.is_ready(task_id), timeout, waiting_for=task_id)
            return backend.get_meta(task_id)
        if urlsplit(self.conf.broker_url).scheme == "memory":
            raise SimulationIdle(
                f"task {task_id} is waiting on the memory:// broker but nothing runs it outside a simulation: "
                "wrap the code in `with app.simulate():`, set task_always_eager=True, or use a real broker"
            )
        return self.backend.wait_for(task_id, timeout)

    # -- connections ---------------------------------------------------------------------
    def connection(self, url: str | None = None, connect_timeout: float | None = None) -> Transport:
        """A broker connection of your own, to pass as ``apply_async(connection=...)``; close it when done."""
        driver = self._driver
        if driver is not None and url is None:
            return driver.connection()
        return self._connect(url or self.conf.broker_url, connect_timeout)

    establish_connection = connection

    def _connect(self, url: str, connect_timeout: float | None) -> Transport:
        if urlsplit(url).scheme == "memory":
            raise ConfigurationError(
                "the memory:// broker lives inside a simulation: use `with app.simulate():` "
                "or task_always_eager=True"
            )
        factory = load_transport(url)
        timeout = self.conf.broker_connection_timeout if connect_timeout is None else connect_timeout
        transport = factory(url, connect_timeout=timeout, app=self)
        transport.declare(self.router.queues.values())
        return transport

    @property
    def pool(self) -> ProducerPool:
        pool = self._pool
        if pool is None:
            with self._lock:
                if self._pool is None:
                    url = self.conf.broker_url
                    self._pool = ProducerPool(lambda timeout: self._connect(url, timeout), int(self.conf.broker_pool_limit))
                pool = self._pool
        return pool

    # -- the publish path --------------------------------------------------------------------
    def _new_id(self) -> str:
        driver = self._driver
        return driver.new_id() if driver is not None else str(uuid.uuid4())

    def current_request(self) -> Request | None:
        return getattr(self._local, "request", None)

    def _enter_task(self, request: Request) -> Request | None:
        previous = getattr(self._local, "request", None)
        self._local.request = request
        return previous

    def _leave_task(self, previous: Request | None) -> None:
        self._local.request = previous

    def send_task(
        self,
        name: str,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        *,
        _task: Task | None = None,
        countdown: float | None = None,
        eta: datetime | float | None = None,
        expires: datetime | float | None = None,
        task_id: str | None = None,
        serializer: str | None = None,
        routing_key: str | None = None,
        exchange: Any = None,
        queue: Any = None,
        priority: int | None = None,
        mandatory: bool = False,
        immediate: bool = False,
        link: Any = None,
        link_error: Any = None,
        connection: Transport | None = None,
        connect_timeout: float | None = None,
        headers: Mapping[str, Any] | None = None,
        **extra: Any,
    ) -> _result.AsyncResult:
        """Send task ``name`` (registered here or only on the workers); return its result handle."""
        embed: dict[str, Any] = {}
        if extra:
            group_id = extra.pop("group_id", None)
            group_index = extra.pop("group_index", None)
            root_id = extra.pop("root_id", None)
            parent_id = extra.pop("parent_id", None)
            for key in ("chain", "chord"):
                if extra.get(key) is not None:
                    embed[key] = extra.pop(key)
                else:
                    extra.pop(key, None)
            if extra:
                key = next(iter(extra))
                close = difflib.get_close_matches(key, CALL_OPTIONS, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ConfigurationError(f"apply_async got unknown option {key!r}{hint}")
        else:
            group_id = group_index = root_id = parent_id = None
        task = _task if _task is not None else self.tasks.get(name)
        if countdown is not None and eta is not None:
            raise ConfigurationError(
                f"give either countdown= or eta= when sending {name!r}, not both (countdown={countdown!r}, eta={eta!r})"
            )
        drivers = self._drivers
        driver = drivers[-1] if drivers else self._driver
        clock = driver.clock if driver is not None else self._wall
        now = clock.now
        eta_ts: float | None = None
        if countdown is not None:
            if isinstance(countdown, bool) or not isinstance(countdown, (int, float)):
                raise ConfigurationError(f"countdown must be a number of seconds, got {countdown!r}")
            eta_ts = now + countdown
        elif eta is not None:
            eta_ts = to_timestamp(eta, self._tz)
        if eta_ts is not None:
            limit = self.conf["task_eta_limit"]
            if eta_ts != eta_ts or (limit is not None and eta_ts - now > limit):
                raise ConfigurationError(
                    f"the eta of {name!r} is {eta_ts - now:.0f} s ahead, beyond task_eta_limit={limit} s: "
                    "a worker would hold it for ever; raise task_eta_limit (None disables it) if you mean it"
                )
        expires_ts: float | None = None
        if expires is None and task is not None and task.expires is not None:
            expires = task.expires
        if expires is not None:
            expires_ts = to_timestamp(expires, self._tz) if isinstance(expires, datetime) else now + float(expires)
        conf = self.conf
        if priority is None and task is not None:
            priority = task.priority
        if priority is None:
            priority = conf["task_default_priority"]
        if priority is not None:
            validate_priority(priority)
        if serializer is None:
            serializer = (task.serializer if task is not None else None) or conf["task_serializer"]
        if link is not None:
            embed["callbacks"] = _signature_list(self, link)
        if link_error is not None:
            embed["errbacks"] = _signature_list(self, link_error)
        current = getattr(self._local, "request", None)
        if current is not None:
            parent_id = parent_id or current.message.id
            root_id = root_id or current.message.root_id or current.message.id
        task_id = task_id or self._new_id()
        message = TaskMessage(
            id=task_id,
            task=name,
            args=tuple(args) if args is not None else (),
            kwargs=dict(kwargs) if kwargs else {},
            eta=eta_ts,
            expires=expires_ts,
            priority=priority,
            root_id=root_id or task_id,
            parent_id=parent_id,
            group=group_id,
            group_index=group_index,
            embed=embed,
            headers=dict(headers) if headers else {},
        )
        route = self._route(name, task, queue, exchange, routing_key, args, kwargs)
        envelope = protocol.encode_signed(message, self.serializers, serializer, self.signer)
        if driver is not None:
            driver.on_send(message, route)
            transport = connection or driver.producer
            transport.publish(
                envelope, route.exchange.name, route.routing_key, mandatory=mandatory, immediate=immediate
            )
            driver.after_send()
        elif connection is not None:
            connection.publish(envelope, route.exchange.name, route.routing_key, mandatory=mandatory, immediate=immediate)
        elif (batch := getattr(self._local, "batch", None)) is not None and not (mandatory or immediate):
            batch.append((envelope, route.exchange.name, route.routing_key))  # published by batched_publishing()
        else:
            exchange_name, routing_key = route.exchange.name, route.routing_key
            self.pool.run(
                lambda t: t.publish(envelope, exchange_name, routing_key, mandatory=mandatory, immediate=immediate),
                connect_timeout,
            )
        return AsyncResult(task_id, self)

    @contextlib.contextmanager
    def batched_publishing(self) -> Iterator[None]:
        """Collect the sends made inside (in this thread) and publish them together on exit.

        On a real broker this is one ``publish_many`` (on Redis, one pipelined
        round trip) instead of one publish per message; canvas primitives use
        it for their members. Order is kept. Sends with ``mandatory=``,
        ``immediate=`` or their own ``connection=`` go out at once, as do all
        sends inside a simulation or in eager mode (where a send runs at once).
        """
        if self._driver is not None or getattr(self._local, "batch", None) is not None:
            yield
            return
        batch: list[tuple[Any, str, str]] = []
        self._local.batch = batch
        try:
            yield
        finally:
            self._local.batch = None
            if batch:
                self.pool.run(lambda t: t.publish_many(batch))

    def _route(self, name: str, task: Task | None, queue: Any, exchange: Any, routing_key: Any, args: Any, kwargs: Any) -> Route:
        router = self._router if self._router is not None else self.router
        key = (name, queue, exchange, routing_key)
        routes = router.routes
        cacheable = not routes or not any(callable(r) and not isinstance(r, Mapping) for r in routes)
        if cacheable:
            try:
                cached = self._route_cache.get(key)
            except TypeError:
                cached = None
                cacheable = False
            if cached is not None:
                return cached
        task_options = {}
        if task is not None:
            task_options = {"queue": task.queue, "exchange": task.exchange, "routing_key": task.routing_key}
        call = {"queue": queue, "exchange": exchange, "routing_key": routing_key}
        route = router.route(name, task_options, call, args, kwargs)
        if cacheable:
            self._route_cache[key] = route
        return route

    def _republish(self, message: TaskMessage, delivery: Delivery, serializer: str, options: Mapping[str, Any] | None = None) -> None:
        """Send ``message`` again the way ``delivery`` came (retries), or as ``options`` route it."""
        exchange, routing_key = delivery.exchange, delivery.routing_key
        if options:
            if options.get("serializer"):
                serializer = options["serializer"]
            if any(options.get(k) is not None for k in ("queue", "exchange", "routing_key")):
                route = self._route(message.task, self.tasks.get(message.task), options.get("queue"),
                                    options.get("exchange"), options.get("routing_key"), message.args, message.kwargs)
                exchange, routing_key = route.exchange.name, route.routing_key
        envelope = protocol.encode_signed(message, self.serializers, serializer, self.signer)
        driver = self._driver
        if driver is not None:
            driver.producer.publish(envelope, exchange, routing_key)
            return
        # a connection that failed is dropped, never reused; a pooled one the broker closed is replaced
        self.pool.run(lambda t: t.publish(envelope, exchange, routing_key))

    def _apply_locally(self, task: Task, args: tuple[Any, ...], kwargs: dict[str, Any], options: Mapping[str, Any]) -> _result.AsyncResult:
        """``Task.apply``: run here, now, without a broker; the result lands in this app's backend."""
        from simq.task import Context

        task_id = options.get("task_id") or self._new_id()
        task.push_request(Context(id=task_id, task=task.name, args=args, kwargs=kwargs, called_directly=False, is_eager=True))
        backend = self.backend
        try:
            value = task.run(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - stored, as a worker would
            import traceback

            backend.mark_as_failure(task_id, exc, traceback.format_exc())
        else:
            backend.store_result(task_id, value, states.SUCCESS, name=task.name)
        finally:
            task.pop_request()
        return AsyncResult(task_id, self)

    # -- workers -------------------------------------------------------------------------------
    def Worker(  # noqa: N802 - Celery's name
        self,
        queues: Sequence[str] | None = None,
        *,
        concurrency: int | None = None,
        prefetch_multiplier: int | None = None,
        hostname: str | None = None,
        transport: Transport | None = None,
        clock: Clock | None = None,
        pool: Pool | None = None,
    ) -> Worker:
        """A production worker on the wall clock, connected to the configured broker.

        ``pool`` runs its due requests (``simq.pools``: threads or child
        processes); without one they run inline, in the thread that loops it.
        """
        import socket

        return Worker(
            app=self,
            transport=transport or self._connect(self.conf.broker_url, None),
            clock=clock or WallClock(),
            hostname=hostname or f"simq@{socket.gethostname()}",
            queues=list(queues) if queues is not None else None,
            concurrency=concurrency or int(self.conf.worker_concurrency),
            prefetch_multiplier=prefetch_multiplier,
            pool=pool,
        )


def _signature_list(app: App, value: Any) -> list[dict[str, Any]]:
    from simq.canvas import to_signature_dicts

    return to_signature_dicts(app, value)


# shared_task is app-agnostic by definition, so it needs the one piece of
# process-wide state simq keeps: the definitions, and which app is current.
_shared_definitions: list[tuple[Callable[..., Any], dict[str, Any]]] = []
_apps: list[weakref.ref[App]] = []
_current_app: contextvars.ContextVar[App | None] = contextvars.ContextVar("simq_current_app", default=None)
# The app most recently made current in any thread: where a fresh thread's current_app() goes.
_default: list[weakref.ref[App]] = []


def _make_default(app: App) -> None:
    _default[:] = [weakref.ref(app)]


def _register_shared(app: App) -> None:
    _apps.append(weakref.ref(app))
    _current_app.set(app)
    _make_default(app)
    for fun, options in _shared_definitions:
        app._register(fun, options)


def current_app() -> App:
    """The app made current in this context (``app.set_current()``), else the process's newest one.

    A thread started by user code, or by a library, does not inherit the
    context of the thread that started it; it falls back to the app most
    recently made current anywhere in the process, as Celery's default app does.
    """
    app = _current_app.get()
    if app is None:
        app = _process_default()
    if app is None:
        raise ConfigurationError("no simq App exists yet: create one with simq.App('name')")
    return app


def _process_default() -> App | None:
    for ref in reversed(_default):
        app = ref()
        if app is not None:
            return app
    return None


class SharedTask:
    """A task defined without an app: it is registered on every app and resolves to the current one."""

    def __init__(self, fun: Callable[..., Any], options: dict[str, Any]) -> None:
        self._fun = fun
        self._options = options
        self.name = options.get("name") or f"{fun.__module__}.{fun.__qualname__}"
        self.__wrapped__ = fun
        self.__doc__ = fun.__doc__

    def _task(self) -> Task:
        return current_app().tasks[self.name]

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._task(), attr)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._task()(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<@shared_task: {self.name}>"


def shared_task(*args: Any, **options: Any) -> Any:
    """``@shared_task``: a task registered on every App, used through the current one."""

    def decorator(fun: Callable[..., Any]) -> SharedTask:
        _shared_definitions.append((fun, dict(options)))
        for ref in _apps:
            app = ref()
            if app is not None:
                app._register(fun, options)
        return SharedTask(fun, dict(options))

    if len(args) == 1 and callable(args[0]) and not options:
        return decorator(args[0])
    return decorator
