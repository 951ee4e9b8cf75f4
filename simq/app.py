"""The App: configuration, the task registry, and the one publish path every send takes.

Where a send goes and how a result is waited for is the business of the
App's runtime (``simq.runtime``): the wall clock and the configured broker,
or a simulation while one runs. The App calls the top of its runtime stack
and never asks which kind it is.
"""

from __future__ import annotations

import contextlib
import difflib
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar, overload
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from simq import protocol, signals
from simq import result as _result
from simq.backends.base import Backend, ResultMeta
from simq.backends.memory import MemoryBackend
from simq.calling import NO_LINEAGE, Lineage, build, check_options
from simq.clock import Clock, WallClock, to_timestamp
from simq.config import DEFAULTS, Config
from simq.control import Control
from simq.exceptions import ConfigurationError, SimqError
from simq.limits import check_limit
from simq.message import TaskMessage, validate_priority
from simq.ratelimit import parse_rate
from simq.result import AsyncResult
from simq.routing import Route, Router
from simq.runtime import Runtime, WallRuntime
from simq.serialization import Serializer, SerializerRegistry
from simq.shared import SharedTask, current_app, make_current, register_shared, shared_task
from simq.task import Task, check_retry_policy, make_task_class
from simq.transport import Transport
from simq.worker import Request, Worker

if TYPE_CHECKING:
    from simq.connection import ProducerPool
    from simq.hooks import WorkerHook
    from simq.memory.faults import FaultPlan
    from simq.memory.simulation import Simulation
    from simq.pools import Pool
    from simq.signing import Signer

__all__ = ["DEFAULTS", "App", "Config", "SharedTask", "current_app", "shared_task"]

# simq.config holds the settings; simq.shared what is process-wide (shared tasks, the current app).

F = TypeVar("F", bound=Callable[..., Any])

_UNSET = object()
#: The ``apply_async`` options ``send_call`` reads itself (``simq.calling.build`` reads the others).
_SEND_OPTIONS = frozenset(
    (
        "link",
        "link_error",
        "queue",
        "exchange",
        "routing_key",
        "mandatory",
        "immediate",
        "connection",
        "connect_timeout",
    )
)


class App:
    """A simq application: where tasks are registered and sent from.

    ``App("proj")`` uses the in-memory broker; ``app.simulate()`` runs it
    deterministically on a virtual clock. ``broker="amqp://..."`` or
    ``"redis://..."`` sends to a real broker through the installed transport.
    """

    def __init__(
        self, main: str = "simq", broker: str | None = None, backend: str | None = None, **config: Any
    ) -> None:
        self.main = main
        self.tasks: dict[str, Task] = {}
        self.serializers = SerializerRegistry()
        self._router: Router | None = None
        self._wall_runtime = WallRuntime(self)
        self._runtimes: list[Runtime] = [self._wall_runtime]
        self._eager: Simulation | None = None
        self._always_eager = False
        #: Per thread: ``task_local.request`` is the request of the task running in it (unset outside one).
        self.task_local = threading.local()
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

        #: Hooks every worker of this app runs (simq.hooks), after a worker's own: the canvas, then the signals.
        self.worker_hooks: list[WorkerHook] = [CanvasHook(), signals.SignalHook()]
        register_builtins(self)
        register_shared(self)

    def set_current(self) -> None:
        """Make this the app ``shared_task`` tasks and ``simq.current_app()`` resolve to."""
        make_current(self)

    def _conf_changed(self) -> None:
        self._router = None
        self._signer = _UNSET
        self._route_cache = {}
        self._always_eager = bool(self.conf.get("task_always_eager"))
        if getattr(self, "_eager", None) is not None and not self._always_eager:
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
        for key in ("time_limit", "soft_time_limit"):
            if key in options:
                options[key] = check_limit(options[key], f"task {name!r}: {key}")
        if options.get("serializer") is not None:
            self.serializers.get(options["serializer"])
        cls = make_task_class(self, fun, base, name, options)
        check_retry_policy(cls)
        parse_rate(cls.rate_limit, f"task {name!r}: rate_limit")
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
        self.runtime.queue_added(queue)

    # -- runtimes: production, simulation, eager --------------------------------------------
    @property
    def runtime(self) -> Runtime:
        """Where sends go now: the running simulation, the eager one, or the wall clock and the broker."""
        runtimes = self._runtimes
        if len(runtimes) > 1:
            return runtimes[-1]
        if self._always_eager:
            return self._eager_simulation()
        return runtimes[0]

    def _eager_simulation(self) -> Simulation:
        if self._eager is None:
            from simq.memory.simulation import Simulation

            self._eager = Simulation(
                self, seed=int(self.conf.task_eager_seed), workers=1, eager=True, start=self._wall_runtime.clock.now
            )
            self._eager.open()
        return self._eager

    @property
    def simulation(self) -> Simulation | None:
        """The simulation sends go to now (``app.simulate()``, or eager mode's), or None in production."""
        from simq.memory.simulation import Simulation

        runtime = self.runtime
        return runtime if isinstance(runtime, Simulation) else None

    def push_runtime(self, runtime: Runtime) -> None:
        """Send through ``runtime`` until it is popped (a simulation does this when entered)."""
        self._runtimes.append(runtime)

    def pop_runtime(self, runtime: Runtime) -> None:
        if len(self._runtimes) > 1 and self._runtimes[-1] is runtime:
            self._runtimes.pop()

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

        begin = DEFAULT_START if start is None else to_timestamp(start, self.tz)
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

    @property
    def clock(self) -> Clock:
        return self.runtime.clock

    @property
    def tz(self) -> Any:
        """The ``timezone`` setting: naive datetimes given as eta or expires are read in it."""
        tz = self.conf.timezone
        return None if tz in (None, "UTC") else ZoneInfo(tz)

    # -- results ---------------------------------------------------------------------------
    @property
    def backend(self) -> Backend:
        return self.runtime.backend

    def make_backend(self, url: str | None, clock: Clock) -> Backend:
        """A result backend for ``url`` (memory, or a ``simq.backends`` entry point) with this app's settings."""
        scheme = urlsplit(url or "memory://").scheme
        # result_expires is checked by the backend (a clear ConfigurationError); records are signed with the app's key
        options = {"expires": self.conf.result_expires, "signer": self.signer}
        if scheme in ("", "memory", "cache+memory"):
            return MemoryBackend(self.serializers, clock, self.conf.result_serializer, **options)
        from importlib.metadata import entry_points

        for ep in entry_points(group="simq.backends"):
            if ep.name == scheme:
                factory = ep.load()
                backend: Backend = factory(
                    url, serializers=self.serializers, clock=clock, serializer=self.conf.result_serializer, **options
                )
                return backend
        raise ConfigurationError(
            f"no result backend for URL scheme {scheme!r}; install one (pip install 'simq[redis]' gives redis://)"
        )

    def AsyncResult(self, task_id: str) -> _result.AsyncResult:  # noqa: N802 - Celery's name
        return AsyncResult(task_id, self)

    @property
    def control(self) -> Control:
        """Acting on this app's workers: ``app.control.revoke(task_id)`` (simq.control)."""
        return Control(self)

    def wait_for(self, task_id: str, timeout: float | None) -> ResultMeta:
        """Block until ``task_id`` is ready (a simulation runs until it is); what ``result.get()`` does."""
        if getattr(self.task_local, "request", None) is not None and self.simulation is not None:  # current_request()
            raise SimqError(
                f"never call result.get() inside a task (waiting for {task_id}): it would block the worker; "
                "use a chain or a chord"
            )
        return self.runtime.wait(task_id, timeout)

    # -- connections ---------------------------------------------------------------------
    def connection(self, url: str | None = None, connect_timeout: float | None = None) -> Transport:
        """A broker connection of your own, to pass as ``apply_async(connection=...)``; close it when done."""
        if url is not None:
            return self._wall_runtime.connection(url, connect_timeout)
        return self.runtime.connection(None, connect_timeout)

    establish_connection = connection

    @property
    def pool(self) -> ProducerPool:
        """The producer connections this app sends with on a real broker."""
        return self._wall_runtime.pool

    @pool.setter
    def pool(self, pool: ProducerPool) -> None:
        self._wall_runtime.set_pool(pool)

    def close(self) -> None:
        """Close this app's producer connections and result backend connections (production)."""
        self._wall_runtime.close()

    # -- the publish path --------------------------------------------------------------------
    def new_id(self) -> str:
        """A fresh task id (from the seed in a simulation)."""
        return self.runtime.new_id()

    def current_request(self) -> Request | None:
        """The request of the task running in this thread, if any."""
        return getattr(self.task_local, "request", None)

    def enter_task(self, request: Request) -> Request | None:
        """A task starts running in this thread (sends from it take their lineage from it); returns the previous one."""
        previous = getattr(self.task_local, "request", None)
        self.task_local.request = request
        return previous

    def leave_task(self, previous: Request | None) -> None:
        self.task_local.request = previous

    def send_task(
        self,
        name: str,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        *,
        _task: Task | None = None,
        **options: Any,
    ) -> _result.AsyncResult:
        """Send task ``name`` (registered here or only on the workers) with ``apply_async``'s options."""
        if options:
            check_options(options)
        return self.send_call(name, args, kwargs, options, task=_task)

    def send_call(
        self,
        name: str,
        args: Sequence[Any] | None,
        kwargs: Mapping[str, Any] | None,
        options: Mapping[str, Any],
        *,
        task: Task | None = None,
        lineage: Lineage = NO_LINEAGE,
        embed: Mapping[str, Any] | None = None,
    ) -> _result.AsyncResult:
        """The one publish path: build the message (``simq.calling``), route, encode, sign, publish."""
        if task is None:
            task = self.tasks.get(name)
        runtime = self.runtime
        queue = exchange = routing_key = connection = connect_timeout = None
        mandatory = immediate = False
        if options and not _SEND_OPTIONS.isdisjoint(options):  # most calls give none of these: no lookups
            get = options.get
            link, link_error = get("link"), get("link_error")
            if link is not None or link_error is not None:
                from simq.canvas import to_signature_dicts

                embed = dict(embed) if embed else {}
                if link is not None:
                    embed["callbacks"] = to_signature_dicts(self, link)
                if link_error is not None:
                    embed["errbacks"] = to_signature_dicts(self, link_error)
            queue, exchange, routing_key = get("queue"), get("exchange"), get("routing_key")
            mandatory, immediate = bool(get("mandatory")), bool(get("immediate"))
            connection, connect_timeout = get("connection"), get("connect_timeout")
        current = getattr(self.task_local, "request", None)  # self.current_request(), without the call
        message, serializer = build(
            self, name, args, kwargs, task, options, runtime.clock, runtime.new_id, current, lineage, embed
        )
        route = self.route(name, task, queue, exchange, routing_key, args, kwargs)
        signer = self._signer if self._signer is not _UNSET else self.signer  # the property only until it is known
        envelope = protocol.encode_signed(message, self.serializers, serializer, signer)  # type: ignore[arg-type]
        announce = signals.before_task_publish.receivers or signals.after_task_publish.receivers
        if announce:
            signals.before_task_publish.send(
                sender=name,
                body=(message.args, dict(message.kwargs), dict(message.embed)),
                exchange=route.exchange.name,
                routing_key=route.routing_key,
                headers=dict(envelope.headers),
                properties={"priority": message.priority},
            )
        runtime.publish(
            message,
            envelope,
            route.exchange.name,
            route.routing_key,
            mandatory=mandatory,
            immediate=immediate,
            connection=connection,
            connect_timeout=connect_timeout,
        )
        if announce:
            signals.after_task_publish.send(
                sender=name,
                body=(message.args, dict(message.kwargs), dict(message.embed)),
                exchange=route.exchange.name,
                routing_key=route.routing_key,
                headers=dict(envelope.headers),
            )
        return AsyncResult(message.id, self)

    def send_signature(
        self, sig: Any, args: Sequence[Any] | None = None, kwargs: Mapping[str, Any] | None = None, **options: Any
    ) -> Any:
        """Send a signature or a whole canvas (what ``sig.apply_async()`` does); returns its result handle."""
        from simq.canvas.run import send

        return send(self, sig, args, kwargs, options)

    def apply_signature(
        self, sig: Any, args: Sequence[Any] | None = None, kwargs: Mapping[str, Any] | None = None, **options: Any
    ) -> Any:
        """Run a signature or a whole canvas here and now (what ``sig.apply()`` does); returns its result handle."""
        from simq.canvas.eager import apply

        return apply(self, sig, args, kwargs, options)

    def batched_publishing(self) -> contextlib.AbstractContextManager[None]:
        """Collect the sends made inside (in this thread) and publish them together on exit.

        On a real broker this is one ``publish_many`` (on Redis, one pipelined
        round trip) instead of one publish per message; canvas primitives use
        it for their members. Order is kept. Sends with ``mandatory=``,
        ``immediate=`` or their own ``connection=`` go out at once, as do all
        sends inside a simulation or in eager mode (where a send runs at once).
        """
        return self.runtime.batched()

    def route(
        self, name: str, task: Task | None, queue: Any, exchange: Any, routing_key: Any, args: Any, kwargs: Any
    ) -> Route:
        """The route of a call: the call's queue/exchange/key, else the task's, else ``task_routes``, else the default."""
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

    def republish(
        self,
        message: TaskMessage,
        serializer: str,
        exchange: str,
        routing_key: str,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        """Send ``message`` again (retries): to ``exchange``/``routing_key``, or where ``options`` route it."""
        if options:
            if options.get("serializer"):
                serializer = options["serializer"]
            if any(options.get(k) is not None for k in ("queue", "exchange", "routing_key")):
                route = self.route(
                    message.task,
                    self.tasks.get(message.task),
                    options.get("queue"),
                    options.get("exchange"),
                    options.get("routing_key"),
                    message.args,
                    message.kwargs,
                )
                exchange, routing_key = route.exchange.name, route.routing_key
        envelope = protocol.encode_signed(message, self.serializers, serializer, self.signer)
        self.runtime.publish(message, envelope, exchange, routing_key)

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
            transport=transport or self._wall_runtime.connection(None, None),
            clock=clock or WallClock(),
            hostname=hostname or f"simq@{socket.gethostname()}",
            queues=list(queues) if queues is not None else None,
            concurrency=concurrency or int(self.conf.worker_concurrency),
            prefetch_multiplier=prefetch_multiplier,
            pool=pool,
        )
