"""The worker: consume, hold eta, execute, store the result, acknowledge.

One class for simulation and production. It is handed a transport (a broker
connection) and a clock; it never knows whether the clock is virtual. The
simulation steps it (``step``); production loops it (``run``).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import traceback as tb_module
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import attrs

from simq import protocol, states
from simq.exceptions import ConfigurationError, MessageRejected, Retry
from simq.message import Delivery, TaskMessage
from simq.task import Context, Task

if TYPE_CHECKING:
    from simq.app import App
    from simq.backends.base import Backend
    from simq.clock import Clock, Timer
    from simq.transport import Transport

__all__ = ["Request", "Worker", "WorkerStats"]

log = logging.getLogger("simq.worker")

Emit = Callable[..., None]


@attrs.define(eq=False, slots=True)
class Request:
    """One delivered task call, from decode to acknowledgement."""

    message: TaskMessage
    delivery: Delivery
    task: Task
    hostname: str
    acked: bool = False

    @property
    def id(self) -> str:
        return self.message.id

    @property
    def name(self) -> str:
        return self.message.task

    @property
    def args(self) -> tuple[Any, ...]:
        return self.message.args

    @property
    def kwargs(self) -> Any:
        return self.message.kwargs

    @property
    def delivery_info(self) -> dict[str, Any]:
        d = self.delivery
        return {
            "exchange": d.exchange,
            "routing_key": d.routing_key,
            "queue": d.queue,
            "priority": d.envelope.priority,
            "redelivered": d.redelivered,
        }

    def context(self) -> Context:
        m = self.message
        embed = m.embed
        return Context(
            id=m.id,
            task=m.task,
            args=m.args,
            kwargs=m.kwargs,
            retries=m.retries,
            eta=m.eta,
            expires=m.expires,
            hostname=self.hostname,
            delivery_info=self.delivery_info,
            root_id=m.root_id,
            parent_id=m.parent_id,
            group=m.group,
            group_index=m.group_index,
            callbacks=embed.get("callbacks"),
            errbacks=embed.get("errbacks"),
            chain=embed.get("chain"),
            chord=embed.get("chord"),
            headers=m.headers,
            called_directly=False,
        )


@attrs.define
class WorkerStats:
    """What one worker did; a test can read every counter."""

    received: int = 0
    succeeded: int = 0
    failed: int = 0
    retried: int = 0
    revoked: int = 0
    deferred: int = 0
    acked: int = 0
    rejected: dict[str, int] = attrs.field(factory=dict)

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())


def to_timestamp(value: datetime | float | int, tz: Any = None) -> float:
    """A datetime (naive ones are in ``tz``, UTC by default) or epoch seconds, as epoch seconds."""
    if isinstance(value, datetime):
        if value.tzinfo is None:

            value = value.replace(tzinfo=tz or UTC)
        return value.timestamp()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigurationError(f"eta must be a datetime or epoch seconds, got {value!r}")
    return float(value)


@attrs.define(eq=False)
class Worker:
    """Consumes queues through ``transport`` and runs tasks of ``app``.

    ``prefetch`` (unacknowledged deliveries held, including eta-held ones) is
    ``concurrency * prefetch_multiplier``; a multiplier of 0 means unlimited.
    """

    app: App
    transport: Transport
    clock: Clock
    hostname: str = "worker@localhost"
    queues: Sequence[str] | None = None
    concurrency: int = 1
    prefetch_multiplier: int | None = None
    backend: Backend | None = None
    emit: Emit | None = None
    fault: Callable[[Worker, str, Request], None] | None = None
    stats: WorkerStats = attrs.field(factory=WorkerStats, init=False)
    _ready: deque[Request] = attrs.field(factory=deque, init=False)
    # Held eta messages by hold sequence number: the delivery and its decoded message
    # in two dicts, with no Request object until it is due (one object fewer for the
    # garbage collector to walk per held message).
    _held: dict[int, Delivery] = attrs.field(factory=dict, init=False)
    _held_messages: dict[int, TaskMessage] = attrs.field(factory=dict, init=False)
    _consuming: list[str] = attrs.field(factory=list, init=False)
    _accept: frozenset[str] = attrs.field(default=frozenset(), init=False)
    _max_size: int | None = attrs.field(default=None, init=False)
    _started: bool = attrs.field(default=False, init=False)
    _stopping: bool = attrs.field(default=False, init=False)
    _acks_late_default: bool = attrs.field(default=False, init=False)
    _ignore_result_default: bool = attrs.field(default=False, init=False)
    _track_started: bool = attrs.field(default=False, init=False)
    # A heap of (eta, seq) orders the held messages, with one clock timer armed for the earliest. The
    # heap entries hold only numbers, so the garbage collector stops tracking them:
    # a million held messages cost a million small tuples, not a million timers.
    _eta_heap: list[tuple[float, int]] = attrs.field(factory=list, init=False)
    _eta_seq: Iterator[int] = attrs.field(factory=itertools.count, init=False)
    _eta_timer: Timer | None = attrs.field(default=None, init=False)
    _in_poll: bool = attrs.field(default=False, init=False)

    def __attrs_post_init__(self) -> None:
        if self.backend is None:
            self.backend = self.app.backend
        if self.prefetch_multiplier is None:
            self.prefetch_multiplier = int(self.app.conf.worker_prefetch_multiplier)
        if self.concurrency < 1:
            raise ConfigurationError(f"concurrency must be at least 1, got {self.concurrency}")

    @property
    def prefetch(self) -> int:
        return self.concurrency * (self.prefetch_multiplier or 0)

    # -- life cycle ----------------------------------------------------------------
    def start(self) -> Worker:
        """Declare and consume the queues; refuse configurations that can never work."""
        if self._started:
            return self
        conf = self.app.conf
        self._accept = self.app.serializers.content_types(conf.accept_content)
        self._max_size = conf.get("worker_max_message_size")
        self._acks_late_default = bool(conf.task_acks_late)
        self._ignore_result_default = bool(conf.task_ignore_result)
        self._track_started = bool(conf.task_track_started)
        for task in self.app.tasks.values():
            task.check_worker(self)
        router = self.app.router
        names = list(self.queues) if self.queues is not None else list(router.queues)
        for name in names:
            self.add_queue(name)
        self._started = True
        self._emit("worker-start", detail=",".join(names))
        return self

    def add_queue(self, name: str) -> None:
        """Start consuming one more queue (declaring it first)."""
        if name in self._consuming:
            return
        queue = self.app.router.queue(name)
        self.transport.declare_queue(queue)
        self.transport.consume(queue.name, prefetch=self.prefetch, tag=f"{self.hostname}:{queue.name}")
        self._consuming.append(queue.name)

    def stop(self) -> None:
        """Graceful stop: flush what tasks hold, give held eta messages back, close."""
        if self._stopping:
            return
        self._stopping = True
        for tag in [f"{self.hostname}:{q}" for q in self._consuming]:
            self.transport.cancel(tag)
        while self._ready:
            self.step()
        for task in self.app.tasks.values():
            task.on_worker_shutdown(self)
        for delivery in self._drop_held():
            self.transport.reject(delivery, requeue=True, reason="worker shutdown")
        self.transport.close()
        self._emit("worker-stop")

    def crash(self) -> None:
        """Die without cleaning up: the broker takes back every unacknowledged delivery."""
        self._stopping = True
        self._drop_held()
        self._ready.clear()
        self.transport.close()
        self._emit("worker-crash")

    # -- receiving -------------------------------------------------------------------
    def poll(self, timeout: float | None = 0) -> int:
        """Take what the broker delivered (waiting at most ``timeout``); return how many."""
        deliveries = self.transport.drain_events(timeout)
        # Arm the eta timer once per batch, not once per held message: a batch whose
        # etas arrive in falling order would otherwise re-arm (and leave a cancelled
        # timer behind) for every message.
        self._in_poll = True
        try:
            for delivery in deliveries:
                self.on_delivery(delivery)
        finally:
            self._in_poll = False
        self._arm_eta_timer()
        return len(deliveries)

    def on_delivery(self, delivery: Delivery) -> None:
        try:
            message = protocol.decode(delivery, self.app.serializers, self._accept, self._max_size, self.app.signer)
        except MessageRejected as exc:
            self.reject(delivery, exc.reason, exc.detail)
            return
        except Exception as exc:  # noqa: BLE001 - bad input never stops the worker
            self.reject(delivery, "malformed", f"cannot decode: {type(exc).__name__}: {exc}")
            return
        task = self.app.tasks.get(message.task)
        if task is None:
            self.reject(
                delivery,
                "unknown-task",
                f"task {message.task!r}[{message.id}] is not registered on {self.hostname}; "
                "import the module that defines it in the worker",
            )
            return
        unknown = (
            [name for name in protocol.embedded_task_names(message.embed) if name not in self.app.tasks]
            if message.embed
            else None
        )
        if unknown:
            self.reject(
                delivery,
                "unknown-signature",
                f"task {message.task!r}[{message.id}] carries a signature naming {unknown[0]!r}, which is not "
                f"registered on {self.hostname}; import the module that defines it in the worker",
            )
            return
        self.stats.received += 1
        eta = message.eta
        if eta is not None and eta > self.clock.now:
            max_hold = self.transport.max_hold
            if max_hold is not None and eta - self.clock.now > max_hold:
                # Due after the broker would take the delivery back from us (RabbitMQ's
                # consumer_timeout): the broker keeps it until nearer its time.
                self.transport.defer(delivery, eta)
                self.stats.deferred += 1
                log.info("deferred %s[%s]: due in %.0f s, longer than this broker lets a consumer hold it (%.0f s)",
                         message.task, message.id, eta - self.clock.now, max_hold)
                return
            seq = next(self._eta_seq)
            self._held[seq] = delivery
            self._held_messages[seq] = message
            heapq.heappush(self._eta_heap, (eta, seq))
            if not self._in_poll:
                self._arm_eta_timer()
            if self.emit is not None:
                self._emit("held", Request(message, delivery, task, self.hostname))
            return
        self._ready.append(Request(message, delivery, task, self.hostname))

    def _release_due(self) -> None:
        """The eta timer fired: make every held request that is due ready, in (eta, arrival) order."""
        self._eta_timer = None
        heap = self._eta_heap
        held = self._held
        messages = self._held_messages
        tasks = self.app.tasks
        now = self.clock.now
        while heap and heap[0][0] <= now:
            seq = heapq.heappop(heap)[1]
            delivery = held.pop(seq, None)
            if delivery is not None:
                message = messages.pop(seq)
                self._ready.append(Request(message, delivery, tasks[message.task], self.hostname))
        self._arm_eta_timer()

    def _arm_eta_timer(self) -> None:
        """Make sure the clock wakes the worker when its earliest held request is due."""
        heap = self._eta_heap
        if not heap:
            return
        timer = self._eta_timer
        due = heap[0][0]
        if timer is None or due < timer.when:
            if timer is not None:
                timer.cancel()
            self._eta_timer = self.clock.call_at(due, self._release_due)

    def _drop_held(self) -> list[Delivery]:
        """Forget every held eta message and its timer; return their deliveries, in arrival order."""
        if self._eta_timer is not None:
            self._eta_timer.cancel()
            self._eta_timer = None
        self._eta_heap.clear()
        deliveries = list(self._held.values())
        self._held.clear()
        self._held_messages.clear()
        return deliveries

    def reject(self, delivery: Delivery, reason: str, detail: str) -> None:
        """Refuse a delivery for good: dead-letter it, count it, log it once."""
        self.transport.reject(delivery, requeue=False, reason=f"{reason}: {detail}")
        self.stats.rejected[reason] = self.stats.rejected.get(reason, 0) + 1
        headers = delivery.envelope.headers
        message_id = headers.get("id") if isinstance(headers, Mapping) else None
        log.warning(
            "rejected message %r (delivery %s) from queue %r (%s): %s",
            message_id or delivery.envelope.message_id, delivery.tag, delivery.queue, reason, detail,
        )
        self._emit("rejected", None, delivery.queue, f"{reason}: {detail}")

    # -- stepping (simulation) and looping (production) ------------------------------
    def has_work(self) -> bool:
        return bool(self._ready) or self.transport.has_events()  # type: ignore[attr-defined]

    @property
    def held(self) -> int:
        return len(self._held)

    @property
    def held_deliveries(self) -> list[Delivery]:
        """The deliveries held until their eta, in the order they arrived."""
        return list(self._held.values())

    @property
    def ready(self) -> int:
        return len(self._ready)

    def step(self) -> bool:
        """Take new deliveries, then run at most one due request."""
        if not self._ready:
            self.poll(0)
        if not self._ready:
            return False
        request = self._ready.popleft()
        request.task.handle(self, request)
        return True

    def run(self, *, poll_interval: float = 1.0, until: Callable[[], bool] | None = None) -> None:
        """The production loop: receive, fire due timers, execute, until stopped."""
        self.start()
        clock = self.clock
        while not self._stopping and not (until is not None and until()):
            clock.run_due()
            while self._ready and not self._stopping:
                request = self._ready.popleft()
                request.task.handle(self, request)
                clock.run_due()
            deadline = clock.next_deadline()
            timeout = poll_interval if deadline is None else max(0.0, min(poll_interval, deadline - clock.now))
            self.poll(timeout)
        self.stop()

    # -- executing ---------------------------------------------------------------------
    def ack(self, request: Request) -> None:
        if not request.acked:
            request.acked = True
            self.transport.ack(request.delivery)
            self.stats.acked += 1

    def execute(self, request: Request) -> None:
        """Run one request now: expiry check, early ack, body, result, late ack."""
        message = request.message
        task = request.task
        backend = self.backend
        assert backend is not None
        now = self.clock.now
        if message.expires is not None and now >= message.expires:
            meta = backend.mark_as_revoked(message.id, "expired before it could run")
            self.ack(request)
            self.stats.revoked += 1
            self._emit("revoked", request, detail="expired")
            if message.embed:
                from simq import canvas

                canvas.on_revoked(self, request, meta.result)
            return
        acks_late = task.acks_late if task.acks_late is not None else self._acks_late_default
        if not acks_late:
            self.ack(request)
        fault = self.fault  # the simulator's fault injection points: "run", "ran", "done"
        if fault is not None:
            fault(self, "run", request)
        if self._track_started or task.track_started:
            backend.mark_as_started(message.id)
        requests = task._stack()  # what self.request reads, in this thread
        requests.append(request)  # its Context is built only if the task reads self.request
        app = self.app
        previous = app._enter_task(request)
        try:
            retval = task.run(*message.args, **message.kwargs)
        except Retry as retry:
            if fault is not None:
                fault(self, "ran", request)
            self._on_retry(request, retry)
        except Exception as exc:  # noqa: BLE001 - a task's failure is data, not a crash
            if fault is not None:
                fault(self, "ran", request)
            self._on_failure(request, exc, tb_module.format_exc())
        else:
            if fault is not None:
                fault(self, "ran", request)
            self._on_success(request, retval)
        finally:
            app._leave_task(previous)
            requests.pop()
        # Not in ``finally``: a worker that dies (BaseException) must not acknowledge.
        if fault is not None:
            fault(self, "done", request)
        if acks_late:
            self.ack(request)

    def _on_success(self, request: Request, retval: Any) -> None:
        task = request.task
        message = request.message
        ignore = task.ignore_result if task.ignore_result is not None else self._ignore_result_default
        if message.embed:
            # A canvas task: its result and what follows it (a chord part's count,
            # the next link) may share round trips; all is written before the ack.
            with self.backend.deferred_writes():  # type: ignore[union-attr]
                self._succeeded(request, retval, store=True)
        else:
            self._succeeded(request, retval, store=not ignore)

    def _succeeded(self, request: Request, retval: Any, *, store: bool) -> None:
        task = request.task
        message = request.message
        if store:
            try:
                self.backend.store_result(message.id, retval, states.SUCCESS, name=message.task)  # type: ignore[union-attr]
            except Exception as exc:  # noqa: BLE001 - e.g. a result the serializer refuses
                self._on_failure(request, exc, tb_module.format_exc())
                return
        self.stats.succeeded += 1
        self._emit("succeeded", request, detail=retval)
        task.on_success(retval, message.id, message.args, message.kwargs)
        if message.embed:
            from simq import canvas

            canvas.on_success(self, request, retval)

    def _on_failure(self, request: Request, exc: BaseException, traceback: str) -> None:
        message = request.message
        self.backend.mark_as_failure(message.id, exc, traceback, request=message)  # type: ignore[union-attr]
        self.stats.failed += 1
        self._emit("failed", request, detail=f"{type(exc).__name__}: {exc}")
        try:
            request.task.on_failure(exc, message.id, message.args, message.kwargs, traceback)
        except Exception:
            log.exception("on_failure hook of %s raised", message.task)
        if message.embed:
            from simq import canvas

            canvas.on_failure(self, request, exc, traceback)

    def _on_retry(self, request: Request, retry: Retry) -> None:
        message = request.message
        task = request.task
        args_override = getattr(retry, "args_override", None)
        kwargs_override = getattr(retry, "kwargs_override", None)
        countdown = getattr(retry, "countdown", None)
        eta = getattr(retry, "eta", None)
        when = to_timestamp(eta) if eta is not None else self.clock.now + float(countdown or 0)
        again = attrs.evolve(
            message,
            retries=message.retries + 1,
            eta=when,
            args=args_override if args_override is not None else message.args,
            kwargs=kwargs_override if kwargs_override is not None else message.kwargs,
        )
        serializer = self.app.serializers.name_for(request.delivery.envelope.content_type)
        try:
            self.app._republish(again, request.delivery, serializer)
        except Exception as exc:  # noqa: BLE001 - could not send the retry: the task fails
            self._on_failure(request, exc, tb_module.format_exc())
            return
        self.backend.mark_as_retry(message.id, retry.exc, None, retries=again.retries)  # type: ignore[union-attr]
        self.stats.retried += 1
        self._emit("retry", request, detail=f"retry {again.retries} at +{when - self.clock.now:g}s")
        task.on_retry(retry.exc, message.id, message.args, message.kwargs, None)

    def _emit(self, kind: str, request: Request | None = None, queue: str | None = None, detail: Any = None) -> None:
        if self.emit is not None:
            self.emit(kind, self.hostname, request, queue, detail)
