"""The worker: consume, hold eta, hand due requests to the pool, acknowledge.

One class for simulation and production. It is handed a transport (a broker
connection) and a clock; it never knows whether the clock is virtual. The
simulation steps it (``step``); production loops it (``run``). What runs a
task body, stores its result and sends what follows lives in
``simq.executor``; where that runs (inline, a thread, a child process) is the
pool's business (``simq.pools``). A worker process has one Worker: one
connection, one prefetch window, one set of held eta messages and one batch
buffer per Batches task, whatever its pool.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import queue as queue_module
import random
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from simq import protocol
from simq.clock import VirtualClock, to_timestamp
from simq.exceptions import ConfigurationError, MessageRejected
from simq.executor import SUCCEEDED, Executor, Outcome
from simq.hooks import Hooks, WorkerHook
from simq.message import Delivery, TaskMessage
from simq.ratelimit import RateLimits
from simq.remote import Inspected, Remote
from simq.request import Request, WorkerStats
from simq.revoke import Revocations
from simq.settling import Settling

if TYPE_CHECKING:
    from simq.app import App
    from simq.backends.base import Backend
    from simq.clock import Clock, Timer
    from simq.pools import Pool
    from simq.transport import Transport

__all__ = ["Request", "Worker", "WorkerStats", "to_timestamp"]

log = logging.getLogger("simq.worker")


@attrs.define(eq=False)
class Worker(Settling, Inspected):
    """Consumes queues through ``transport`` and runs tasks of ``app``.

    ``prefetch`` (unacknowledged deliveries held, not counting eta messages
    waiting for their time) is ``concurrency * prefetch_multiplier``; a
    multiplier of 0 means unlimited. ``pool`` runs due requests (see
    ``simq.pools``); without one they run inline, in the calling thread.
    """

    app: App
    transport: Transport
    clock: Clock
    hostname: str = "worker@localhost"
    queues: Sequence[str] | None = None
    concurrency: int = 1
    prefetch_multiplier: int | None = None
    backend: Backend | None = None
    hooks: Sequence[WorkerHook] = ()
    pool: Pool | None = None
    rng: random.Random | None = None  # retry jitter; the simulation hands each worker a seeded one
    stats: WorkerStats = attrs.field(factory=WorkerStats, init=False)
    executor: Executor = attrs.field(init=False)
    #: The task ids this worker knows are revoked (simq.revoke).
    revocations: Revocations = attrs.field(init=False)
    #: This worker's end of remote control (simq.remote).
    remote: Remote = attrs.field(init=False)
    _shutdown_asked: bool = attrs.field(default=False, init=False)
    _ready: deque[Request] = attrs.field(factory=deque, init=False)
    # Held eta messages by hold sequence number: the delivery and its decoded message
    # in two dicts, with no Request object until it is due (one object fewer for the
    # garbage collector to walk per held message).
    _held: dict[int, Delivery] = attrs.field(factory=dict, init=False)
    _held_messages: dict[int, TaskMessage] = attrs.field(factory=dict, init=False)
    _consuming: list[str] = attrs.field(factory=list, init=False)
    _accept: frozenset[str] = attrs.field(default=frozenset(), init=False)
    _max_size: int | None = attrs.field(default=None, init=False)
    _eta_limit: float | None = attrs.field(default=None, init=False)
    _reject_on_lost: bool = attrs.field(default=False, init=False)
    _started: bool = attrs.field(default=False, init=False)
    _stopping: bool = attrs.field(default=False, init=False)
    _crashed: bool = attrs.field(default=False, init=False)
    #: Past this clock time a stop gives back what has not finished (worker_soft_shutdown_timeout).
    stop_deadline: float | None = attrs.field(default=None, init=False)
    # A heap of (eta, seq) orders the held messages, with one clock timer armed for the earliest. The
    # heap entries hold only numbers, so the garbage collector stops tracking them:
    # a million held messages cost a million small tuples, not a million timers.
    _eta_heap: list[tuple[float, int]] = attrs.field(factory=list, init=False)
    _eta_seq: Iterator[int] = attrs.field(factory=itertools.count, init=False)
    _eta_timer: Timer | None = attrs.field(default=None, init=False)
    _in_poll: bool = attrs.field(default=False, init=False)
    _prefetch_applied: int = attrs.field(default=0, init=False)
    _hooks: Hooks = attrs.field(init=False)
    # Per task type token buckets (simq.ratelimit); requests a limit holds back wait with the eta holds.
    _rates: RateLimits = attrs.field(init=False)
    # Jobs handed to the pool and not finished yet; the pool reports each on ``_completions``.
    _inflight: int = attrs.field(default=0, init=False)
    _completions: queue_module.SimpleQueue[tuple[tuple[Request, ...], Outcome, bool]] = attrs.field(
        factory=queue_module.SimpleQueue, init=False
    )

    def __attrs_post_init__(self) -> None:
        if self.backend is None:
            self.backend = self.app.backend
        if self.prefetch_multiplier is None:
            self.prefetch_multiplier = int(self.app.conf.worker_prefetch_multiplier)
        if self.concurrency < 1:
            raise ConfigurationError(f"concurrency must be at least 1, got {self.concurrency}")
        self._hooks = Hooks([*self.hooks, *self.app.worker_hooks])
        self._rates = RateLimits(self.app)
        self.executor = Executor(self.app, self.backend, self.clock, self.hostname, self._hooks)
        if self.rng is not None:
            self.executor.rng = self.rng
        interval = self.app.conf.worker_revoke_poll_interval
        if isinstance(interval, bool) or not isinstance(interval, int | float) or not interval > 0:
            raise ConfigurationError(f"worker_revoke_poll_interval must be seconds > 0, got {interval!r}")
        self.revocations = Revocations(self.backend, self.clock, float(interval), on_terminate=self._terminate)
        interval = self.app.conf.worker_control_poll_interval
        if isinstance(interval, bool) or not isinstance(interval, int | float) or not interval > 0:
            raise ConfigurationError(f"worker_control_poll_interval must be seconds > 0, got {interval!r}")
        # One thread runs a simulation (and eager mode): a command heard there runs at once.
        self.remote = Remote(self, float(interval), immediate=isinstance(self.clock, VirtualClock))

    def add_hook(self, hook: WorkerHook) -> None:
        """Add a hook after the ones given (the simulator adds fault injection this way)."""
        self.hooks = [*self.hooks, hook]
        self._hooks = Hooks([*self.hooks, *self.app.worker_hooks])
        self.executor.hooks = self._hooks

    @property
    def prefetch(self) -> int:
        return self.concurrency * (self.prefetch_multiplier or 0)

    @property
    def crashed(self) -> bool:
        """True once the worker died without cleaning up (its unacknowledged deliveries are the broker's again)."""
        return self._crashed

    @property
    def stopping(self) -> bool:
        return self._stopping

    @property
    def consuming(self) -> list[str]:
        """The queues this worker consumes, in the order it started on them."""
        return list(self._consuming)

    # -- life cycle ----------------------------------------------------------------
    def start(self) -> Worker:
        """Declare and consume the queues; refuse configurations that can never work."""
        if self._started:
            return self
        conf = self.app.conf
        self._accept = self.app.serializers.content_types(conf.accept_content)
        self._max_size = conf.get("worker_max_message_size")
        limit = conf.get("task_eta_limit")
        self._eta_limit = None if limit is None else float(limit)
        self._reject_on_lost = bool(conf.get("task_reject_on_worker_lost"))
        for task in self.app.tasks.values():
            task.check_worker(self)
        router = self.app.router
        names = list(self.queues) if self.queues is not None else list(router.queues)
        for name in names:
            self.add_queue(name)
        self._prefetch_applied = self.prefetch
        self.revocations.start()
        self.remote.start()
        self._started = True
        for hook in self._hooks.worker_start:
            hook(self)
        return self

    def add_queue(self, name: str) -> None:
        """Start consuming one more queue (declaring it first)."""
        queue = self.app.router.queue(name)  # a new queue may make a simulation add it here already
        if queue.name in self._consuming:
            return
        self.transport.declare_queue(queue)
        self.transport.consume(
            queue.name, prefetch=self._prefetch_applied or self.prefetch, tag=f"{self.hostname}:{queue.name}"
        )
        self._consuming.append(queue.name)

    def stop(self) -> None:
        """Graceful stop: finish what was received, flush what tasks hold, give held eta messages back, close."""
        if self._stopping:
            return
        self._stopping = True
        for tag in [f"{self.hostname}:{q}" for q in self._consuming]:
            self.transport.cancel(tag)
        self._finish_received()
        for task in self.app.tasks.values():
            task.on_worker_shutdown(self)
        self._finish_received()
        for delivery in self._drop_held():
            self.transport.reject(delivery, requeue=True, reason="worker shutdown")
        self.transport.close()
        self.revocations.stop()
        self.remote.stop()
        for hook in self._hooks.worker_stop:
            hook(self)

    def _finish_received(self) -> None:
        """Run every ready request and wait for every job the pool holds."""
        while self._ready or self._inflight:
            if self.stop_deadline is not None and self.clock.now >= self.stop_deadline:
                self.stop_deadline = None
                self.give_back_unfinished()
            self._drain_completions()
            if self._ready and self._has_slot():
                request = self._ready.popleft()
                request.task.handle(self, request)
            elif self._inflight:
                self._drain_completions(timeout=0.05)

    def crash(self) -> None:
        """Die without cleaning up: the broker takes back every unacknowledged delivery."""
        self._stopping = True
        self._crashed = True
        self.revocations.stop()
        self.remote.stop()
        self._drop_held()
        self._ready.clear()
        self.transport.close()
        for hook in self._hooks.worker_crash:
            hook(self)

    # -- receiving -------------------------------------------------------------------
    def poll(self, timeout: float | None = 0) -> int:
        """Take what the broker delivered (waiting at most ``timeout``); return how many."""
        deliveries = self.transport.drain_events(timeout)
        # Arm the eta timer once per batch, not once per held message: a batch whose etas
        # arrive in falling order would otherwise re-arm (leaving a cancelled timer) for each.
        self._in_poll = True
        try:
            for delivery in deliveries:
                self.on_delivery(delivery)
        finally:
            self._in_poll = False
        if self._eta_heap:
            self._arm_eta_timer()
        if self.prefetch_multiplier:  # else unlimited: nothing to widen
            self._apply_prefetch()
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
        eta = message.eta
        now = self.clock.now if eta is not None else 0.0  # only an eta needs the time
        if eta is not None and self._eta_limit is not None and eta - now > self._eta_limit:
            self.reject(
                delivery,
                "eta-out-of-range",
                f"task {message.task!r}[{message.id}] has an eta {eta - now:.0f} s ahead, beyond "
                f"task_eta_limit={self._eta_limit:.0f} s; it would be held for ever",
            )
            return
        self.stats.received += 1
        hooks = self._hooks
        if hooks.on_received:
            request = Request(message, delivery, task, self.hostname)
            for hook in hooks.on_received:
                hook(self, request)
        if log.isEnabledFor(logging.INFO):
            log.info(
                "Task %s[%s] received%s",
                message.task,
                message.id,
                f" (eta in {eta - now:.3f}s)" if eta and eta > now else "",
            )
        if eta is not None and eta > now:
            max_hold = self.transport.max_hold
            if max_hold is not None and eta - now > max_hold:
                # Due after the broker would take the delivery back from us (RabbitMQ's
                # consumer_timeout): the broker keeps it until nearer its time.
                self.transport.defer(delivery, eta)
                self.stats.deferred += 1
                log.info(
                    "Task %s[%s] deferred: due in %.0f s, longer than this broker lets a consumer hold it (%.0f s)",
                    message.task,
                    message.id,
                    eta - now,
                    max_hold,
                )
                return
            seq = next(self._eta_seq)
            self._held[seq] = delivery
            self._held_messages[seq] = message
            heapq.heappush(self._eta_heap, (eta, seq))
            if not self._in_poll:
                self._arm_eta_timer()
                self._apply_prefetch()
            if hooks.on_held:
                request = Request(message, delivery, task, self.hostname)
                for hook in hooks.on_held:
                    hook(self, request)
            return
        if self._rates[message.task] is None:  # no rate limit: one dict lookup
            self._ready.append(Request(message, delivery, task, self.hostname))
        else:
            self._admit(message, delivery, task)
            if not self._in_poll:
                self._arm_eta_timer()

    def _admit(self, message: TaskMessage, delivery: Delivery, task: Any) -> None:
        """Ready now if the task's bucket has a token, else held with the eta holds (but counted in prefetch) until then."""
        at = self._rates.reserve(message.task, self.clock.now)
        if at is None:
            self._ready.append(Request(message, delivery, task, self.hostname))
            return
        seq = next(self._eta_seq)
        self._held[seq] = delivery
        self._held_messages[seq] = message
        self._rates.held[seq] = message.task
        heapq.heappush(self._eta_heap, (at, seq))
        self.stats.rate_limited += 1
        log.info("Task %s[%s] rate limited: held %.3f s", message.task, message.id, at - self.clock.now)

    def set_rate_limit(self, name: str, value: str | float | None) -> str | float | None:
        """Change task ``name``'s limit on this worker from now on (what it holds back is held anew); return the old."""
        old, seqs = self._rates.change(name, value, self.hostname)
        for seq in seqs:  # their old heap entries go stale
            self._admit(self._held_messages.pop(seq), self._held.pop(seq), self.app.tasks[name])
        self._arm_eta_timer()
        return old

    def _apply_prefetch(self) -> None:
        """Held eta messages do not count against prefetch: widen the window by what is held.

        Otherwise a few far-off etas fill the window and the worker never takes another (Celery's QoS grows too)."""
        base = self.concurrency * (self.prefetch_multiplier or 0)  # self.prefetch
        if not base or self._stopping:
            return
        wanted = base + len(self._held) - len(self._rates.held)
        if wanted != self._prefetch_applied:
            self._prefetch_applied = wanted
            self.transport.set_prefetch(wanted)

    def _release_due(self) -> None:
        """The eta timer fired: make every held request that is due ready, in (eta, arrival) order."""
        self._eta_timer = None
        heap = self._eta_heap
        held = self._held
        messages = self._held_messages
        tasks = self.app.tasks
        rates = self._rates
        now = self.clock.now
        while heap and heap[0][0] <= now:
            seq = heapq.heappop(heap)[1]
            delivery = held.pop(seq, None)
            if delivery is not None:
                message = messages.pop(seq)
                if rates[message.task] is not None and rates.held.pop(seq, None) is None:
                    self._admit(message, delivery, tasks[message.task])  # its eta came: now its rate limit
                else:
                    self._ready.append(Request(message, delivery, tasks[message.task], self.hostname))
        self._arm_eta_timer()
        self._apply_prefetch()

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
        """Forget every held message (eta and rate limit) and its timer; return their deliveries, in arrival order."""
        if self._eta_timer is not None:
            self._eta_timer.cancel()
            self._eta_timer = None
        self._eta_heap.clear()
        deliveries = list(self._held.values())
        self._held.clear()
        self._held_messages.clear()
        self._rates.held.clear()
        return deliveries

    # -- stepping (simulation) and looping (production) ------------------------------
    def has_work(self) -> bool:
        return bool(self._ready) or self.transport.has_events() or not self._completions.empty()

    @property
    def held(self) -> int:
        """Messages held until their eta (not those a rate limit holds: ``rate_limited``)."""
        return len(self._held) - len(self._rates.held)

    @property
    def held_deliveries(self) -> list[Delivery]:
        """The deliveries held until their eta, in the order they arrived."""
        rate_held = self._rates.held
        return [d for seq, d in self._held.items() if seq not in rate_held]

    @property
    def rate_limited(self) -> int:
        """Requests held back by their task's rate limit now (they count against the prefetch window)."""
        return len(self._rates.held)

    @property
    def ready(self) -> int:
        return len(self._ready)

    @property
    def inflight(self) -> int:
        """Jobs handed to the pool that have not finished (always 0 without a pool)."""
        return self._inflight

    def step(self) -> bool:
        """Take new deliveries, then run at most one due request."""
        if self._inflight:
            self._drain_completions()
        if not self._ready:
            self.poll(0)
        if not self._ready:
            return False
        request = self._ready.popleft()
        request.task.handle(self, request)
        return True

    def run(self, *, poll_interval: float = 1.0, until: Callable[[], bool] | None = None) -> None:
        """The production loop: receive, fire due timers, hand due requests to the pool, acknowledge."""
        self.start()
        clock = self.clock
        revocations, remote = self.revocations, self.remote
        while not self._stopping and not self._shutdown_asked and not (until is not None and until()):
            clock.run_due()
            revocations.poll_if_due()
            remote.poll_if_due()
            self._drain_completions()
            while self._ready and not self._stopping and self._has_slot():
                request = self._ready.popleft()
                request.task.handle(self, request)
                clock.run_due()
            deadline = clock.next_deadline()
            timeout = poll_interval if deadline is None else max(0.0, min(poll_interval, deadline - clock.now))
            if self._inflight:
                timeout = min(timeout, 0.005)  # the pool's completions are read this often
            elif self.pool is None and not self._ready:
                self.executor.confirm_writes()  # solo, going idle: what the inline tasks wrote is stored now
            self.poll(timeout)
        self.stop()

    def _has_slot(self) -> bool:
        pool = self.pool
        return pool is None or pool.free() > 0

    # -- executing ---------------------------------------------------------------------
    def ack(self, request: Request) -> None:
        if not request.acked:
            request.acked = True
            self.transport.ack(request.delivery)
            self.stats.acked += 1

    def execute(self, request: Request) -> None:
        """Run one due request: expiry check, early ack, then the body in the pool; late ack when it is done."""
        message = request.message
        if message.id in self.revocations.ids:
            self.discard_revoked(request)
            return
        if message.expires is not None and self.clock.now >= message.expires:
            self._expired(request)
            return
        executor = self.executor
        late = request.task.acks_late  # executor.acks_late(request), without the call
        acks_late = executor.acks_late_default if late is None else bool(late)
        if not acks_late:
            self.ack(request)
        pool = self.pool
        if pool is None:
            outcome = executor.run_task(request, acks_late)
            if self._hooks.before_ack:  # an empty loop still builds an iterator
                for hook in self._hooks.before_ack:
                    hook(self, request)
            if outcome is SUCCEEDED and not self._crashed:  # _finish's common case, without the call
                self.stats.succeeded += 1
                if acks_late:
                    self.ack(request)
            else:
                self._finish((request,), outcome, acks_late)
            return
        self._inflight += 1
        pool.submit_task(request, self._reporter((request,), acks_late))

    def run_batch(self, task: Any, requests: list[Request]) -> None:
        """Run one batch of a Batches task in the pool; its messages are acknowledged after it ran."""
        pool = self.pool
        if pool is None:
            self._finish(tuple(requests), task.execute_batch(self.executor, requests), True)
            return
        self._inflight += 1
        pool.submit_batch(task, requests, self._reporter(tuple(requests), True))

    def _reporter(self, requests: tuple[Request, ...], acks_late: bool) -> Callable[[Outcome], None]:
        """What the pool calls with the job's outcome, in its own thread."""
        return lambda outcome: self._completions.put((requests, outcome, acks_late))

    def _drain_completions(self, timeout: float | None = None) -> None:
        """Settle the jobs the pool finished (waiting up to ``timeout`` for the first, if given)."""
        completions = self._completions
        while self._inflight:
            try:
                item = completions.get(timeout=timeout) if timeout else completions.get_nowait()
            except queue_module.Empty:
                return
            timeout = None
            self._inflight -= 1
            self._finish(*item)

    def _finish(self, requests: tuple[Request, ...], outcome: Outcome, acks_late: bool) -> None:
        """A job is done: count it, and acknowledge (or give back) what it ran."""
        stats = self.stats
        stats.succeeded += outcome.succeeded
        stats.failed += outcome.failed
        stats.retried += outcome.retried
        stats.ignored += outcome.ignored
        if self._crashed:
            return  # this worker's connection is gone: the broker redelivers its unacknowledged messages
        if outcome.lost:
            self._lost(requests, outcome, acks_late)
            return
        if not acks_late:
            return
        if outcome.transient:
            for request in requests:
                self.transport.reject(request.delivery, requeue=True, reason=outcome.error or "retry")
            return
        for request in requests:
            self.ack(request)
