"""The simulation driver: one seed, one virtual clock, one memory broker, N workers.

Every choice (which worker steps next, which consumer gets a message, task
ids) comes from one ``random.Random(seed)``, so the same seed gives the same
trace, event for event. When no worker has anything to do, the clock jumps to
the next timer, so a countdown of a day takes no real time.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import random
import weakref
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from simq.backends.memory import MemoryBackend
from simq.clock import DEFAULT_START, EagerClock, TimePatch, VirtualClock, WallClock
from simq.exceptions import SimqError, SimulationIdle
from simq.exceptions import TimeoutError as SimqTimeout
from simq.hooks import Hooks, WorkerHook
from simq.limits import patch_sleep, unpatch_sleep
from simq.memory.broker import MemoryBroker, MemoryTransport
from simq.memory.faults import Fault, FaultHook, FaultInjector, FaultPlan, WorkerCrashed
from simq.worker import Worker

if TYPE_CHECKING:
    from simq.app import App
    from simq.backends.base import ResultMeta
    from simq.executor import Executor
    from simq.message import Delivery, Envelope, TaskMessage
    from simq.routing import Queue
    from simq.transport import Transport
    from simq.worker import Request

__all__ = ["Simulation", "TraceEvent", "TraceHook"]

# The RFC 4122 variant and version-4 bits, as uuid.UUID(int=..., version=4) sets them.
_UUID_CLEAR = ~((0xC000 << 48) | (0xF000 << 64))
_UUID_SET = (0x8000 << 48) | (4 << 76)


@attrs.frozen
class TraceEvent:
    """One thing that happened, at a virtual time (seconds since the simulation started)."""

    seq: int
    at: float
    kind: str
    worker: str
    task: str
    task_id: str
    queue: str
    detail: str

    def line(self) -> str:
        return f"{self.seq:06d} +{self.at:.6f}s {self.kind:<10} {self.worker:<12} {self.queue:<10} {self.task}[{self.task_id}] {self.detail}"


@attrs.define(eq=False)
class Simulation:
    """A deterministic run of an app; use as ``with app.simulate(seed=...) as sim:``."""

    app: App
    seed: int = 0
    workers: int = 1
    concurrency: int = 1
    prefetch_multiplier: int | None = None
    queues: Sequence[str] | None = None
    start: float = DEFAULT_START
    patch_time: bool = True
    eager: bool = False
    max_steps: int = 50_000_000
    faults: FaultPlan | None = None
    rng: random.Random = attrs.field(init=False)
    clock: VirtualClock = attrs.field(init=False)
    broker: MemoryBroker = attrs.field(init=False)
    backend: MemoryBackend = attrs.field(init=False)
    producer: MemoryTransport = attrs.field(init=False)
    worker_list: list[Worker] = attrs.field(factory=list, init=False)
    _raw_trace: list[tuple[Any, ...]] = attrs.field(factory=list, init=False)
    _time_patch: TimePatch = attrs.field(init=False)
    _running: int = attrs.field(default=0, init=False)
    _auto_queue_workers: list[Worker] = attrs.field(factory=list, init=False)
    _opened: bool = attrs.field(default=False, init=False)
    _injector: FaultInjector | None = attrs.field(default=None, init=False)
    _record_trace: bool = True
    _trace_hook: TraceHook = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.clock = EagerClock(start=self.start, wall=WallClock()) if self.eager else VirtualClock(start=self.start)
        self.broker = MemoryBroker(rng=self.rng)
        self.broker.on_event = self._broker_event
        self.backend = MemoryBackend(
            self.app.serializers,
            self.clock,  # records expire on virtual time
            self.app.conf.result_serializer,
            expires=self.app.conf.result_expires,
            signer=self.app.signer,
        )
        self.producer = MemoryTransport(self.broker)
        self._time_patch = TimePatch(self.clock, tick=self.eager)
        self._trace_hook = TraceHook(self._emit, active=self._record_trace)
        if self.faults is not None:
            self._injector = FaultInjector(self, self.faults)

    @property
    def record_trace(self) -> bool:
        """Whether the run is traced (``trace``); off, the workers leave the trace hook out of their moments."""
        return self._record_trace

    @record_trace.setter
    def record_trace(self, value: bool) -> None:
        self._record_trace = value
        self._trace_hook.set_active(value)

    # -- life cycle --------------------------------------------------------------------
    def open(self) -> None:
        """Declare the app's queues and start the workers (``__enter__`` does this; eager mode calls it)."""
        if self._opened:
            return
        self._opened = True
        for queue in self.app.router.queues.values():
            self.broker.declare_queue(queue)
        for index in range(self.workers):
            self.add_worker(
                queues=self.queues,
                concurrency=self.concurrency,
                prefetch_multiplier=self.prefetch_multiplier,
                name=f"worker-{index + 1}",
            )

    def __enter__(self) -> Simulation:
        self.app.push_runtime(self)
        try:
            self.open()
        except BaseException:
            self.app.pop_runtime(self)
            raise
        if self.patch_time:
            self._time_patch.start()
        if not self.eager:  # time.sleep() spends virtual time (simq.limits), patch_time or not
            patch_sleep(self.advance)
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.shutdown()
        finally:
            if not self.eager:
                unpatch_sleep(self.advance)
            self._time_patch.stop()
            self.app.pop_runtime(self)

    def shutdown(self) -> None:
        """Stop every worker gracefully (they flush what they hold), then settle what that caused."""
        self._running += 1
        if self._injector is not None:
            self._injector.active = False
        try:
            for worker in self.worker_list:
                worker.stop()
        finally:
            self._running -= 1

    def add_worker(
        self,
        queues: Sequence[str] | None = None,
        *,
        concurrency: int = 1,
        prefetch_multiplier: int | None = None,
        name: str | None = None,
    ) -> Worker:
        """Start one more worker; ``queues=None`` consumes every queue, including ones created later."""
        name = name or f"worker-{len(self.worker_list) + 1}"
        worker = Worker(
            app=self.app,
            transport=MemoryTransport(self.broker),
            clock=self.clock,
            hostname=name,
            queues=list(queues) if queues is not None else None,
            concurrency=concurrency,
            prefetch_multiplier=prefetch_multiplier,
            backend=self.backend,
            hooks=[self._trace_hook] if self._record_trace else [],
            rng=random.Random(f"simq-jitter:{self.seed}:{name}"),
        )
        if self._injector is not None:
            worker.add_hook(FaultHook(self._injector, worker))
        worker.start()
        self.worker_list.append(worker)
        if queues is None:
            self._auto_queue_workers.append(worker)
        return worker

    # -- the Runtime the app sends through while this simulation runs (simq.runtime) -------------
    def queue_added(self, queue: Queue) -> None:
        self.broker.declare_queue(queue)
        for worker in self._auto_queue_workers:
            if not worker._stopping:
                worker.add_queue(queue.name)

    def connection(self, url: str | None = None, connect_timeout: float | None = None) -> MemoryTransport:
        """A connection of its own to this simulation's broker."""
        return MemoryTransport(self.broker)

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
        if self._record_trace:
            self._raw_trace.append(
                (
                    len(self._raw_trace),
                    self.clock.now,
                    "sent",
                    "client",
                    message.task,
                    message.id,
                    routing_key,
                    f"exchange={exchange!r}" + (f" eta=+{message.eta - self.clock.now:g}s" if message.eta else ""),
                )
            )
        (connection or self.producer).publish(envelope, exchange, routing_key, mandatory=mandatory, immediate=immediate)
        if self.eager and not self._running:
            self.settle_eagerly()  # eager mode: the send runs to completion before it returns

    def batched(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()  # every send is delivered at once here

    def wait(self, task_id: str, timeout: float | None) -> ResultMeta:
        backend = self.backend
        # a partial, not a lambda: run_until asks it after every step, and a lambda is one more Python call each time
        self.run_until(functools.partial(backend.is_ready, task_id), timeout, waiting_for=task_id)
        return backend.get_meta(task_id)

    def new_id(self) -> str:
        """A version-4 UUID string from the seeded rng (what ``str(uuid.UUID(int=..., version=4))`` gives)."""
        n = (self.rng.getrandbits(128) & _UUID_CLEAR) | _UUID_SET
        h = n.to_bytes(16, "big").hex()
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"

    # -- stepping ------------------------------------------------------------------------
    def step(self) -> bool:
        """Do one unit of work (deliver, or run one task on one worker); False if none is possible now."""
        self.broker.dispatch()
        if self._injector is not None and self._injector.between_steps():
            self.broker.dispatch()
        workers = self.worker_list
        worker: Worker | None
        if len(workers) == 1:  # one worker: no list to build, no choice to make (and no rng draw)
            only = workers[0]
            worker = only if not only._stopping and only.has_work() else None
        else:
            busy = [w for w in workers if not w._stopping and w.has_work()]
            worker = None if not busy else busy[0] if len(busy) == 1 else busy[self.rng.randrange(len(busy))]
        if worker is not None:
            if self._injector is None:
                worker.step()
            else:
                try:
                    worker.step()
                except WorkerCrashed:
                    self._injector.crashed(worker)
            return True
        return self.clock.run_due() > 0

    # -- faults ----------------------------------------------------------------------------
    def inject(
        self,
        kind: str,
        *,
        task: str | None = None,
        worker: str | None = None,
        when: float | None = None,
        seconds: float | None = None,
        times: int = 1,
    ) -> None:
        """Inject one fault of ``kind`` at a chosen point; see ``simq.memory.faults.FaultInjector.inject``."""
        if self._injector is None:
            self._injector = FaultInjector(self, None)
            for w in self.worker_list:
                w.add_hook(FaultHook(self._injector, w))
        self._injector.inject(kind, task=task, worker=worker, when=when, seconds=seconds, times=times)

    @property
    def fault_log(self) -> list[Fault]:
        """Every fault injected so far, in order."""
        return list(self._injector.log) if self._injector is not None else []

    def run_until_idle(self) -> int:
        """Run until nothing is left to do, jumping the clock over every timer; return steps taken."""
        steps = 0
        self._running += 1
        try:
            step, jump, max_steps = self.step, self.clock.jump_to_next, self.max_steps
            while True:
                if step():
                    steps += 1
                    if steps > max_steps:
                        self._check_steps(steps)
                    continue
                if not jump():
                    return steps
        finally:
            self._running -= 1

    def run_until(
        self, predicate: Callable[[], bool], timeout: float | None = None, *, waiting_for: str | None = None
    ) -> None:
        """Run until ``predicate()`` holds; ``timeout`` is in virtual seconds.

        Raises ``SimulationIdle`` when nothing is left to do and the predicate
        still fails (nothing will ever make it true).
        """
        deadline = None if timeout is None else self.clock.now + timeout
        steps = 0
        self._running += 1
        try:
            while not predicate():
                if self.step():
                    steps += 1
                    if steps > self.max_steps:
                        self._check_steps(steps)
                    continue
                nxt = self.clock.next_deadline()
                if nxt is None:
                    raise SimulationIdle(self._idle_message(waiting_for))
                if deadline is not None and nxt > deadline:
                    self.clock.jump_to(max(deadline, self.clock.now))
                    raise SimqTimeout(f"{waiting_for or 'condition'} not ready after {timeout} virtual seconds")
                self._jump()
        finally:
            self._running -= 1

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` of virtual time pass, doing all work that falls due on the way."""
        target = self.clock.now + seconds
        self._running += 1
        try:
            while True:
                while self.step():
                    pass
                nxt = self.clock.next_deadline()
                if nxt is None or nxt > target:
                    break
                self._jump()
            self.clock.jump_to(max(target, self.clock.now))
            while self.step():
                pass
        finally:
            self._running -= 1

    def _jump(self) -> bool:
        return self.clock.jump_to_next()

    def _check_steps(self, steps: int) -> None:
        if steps > self.max_steps:
            raise SimqError(f"simulation ran {self.max_steps} steps without settling (seed={self.seed}): a task loop?")

    def _idle_message(self, waiting_for: str | None) -> str:
        depths = {name: self.broker.depth(name) for name in self.broker.queue_names() if self.broker.depth(name)}
        consumed = sorted({q for w in self.worker_list for q in w._consuming})
        what = f"task {waiting_for}" if waiting_for else "the condition"
        hint = f"; messages wait in queues nobody consumes: {depths}" if depths else ""
        dropped = [e for e in self._raw_trace if e[2] == "unroutable"]
        if dropped:
            hint += f"; {len(dropped)} message(s) matched no queue (routing key {dropped[-1][6]!r})"
        return f"simulation (seed={self.seed}) is idle but {what} is not ready; workers consume {consumed}{hint}"

    def settle_eagerly(self) -> None:
        """Eager mode: run everything this send caused, now; patch time only if the clock jumps."""
        started_patch = False

        def on_move(_: float) -> None:
            nonlocal started_patch
            if not started_patch and not self._time_patch.active:
                started_patch = True
                self.clock.on_move.remove(on_move)
                self._time_patch.start()

        self.clock.on_move.append(on_move)
        try:
            self.run_until_idle()
        finally:
            if on_move in self.clock.on_move:
                self.clock.on_move.remove(on_move)
            if started_patch:
                self._time_patch.stop()

    # -- trace ---------------------------------------------------------------------------
    def _emit(self, kind: str, worker: str, request: Request | None, queue: str | None, detail: Any) -> None:
        if not self._record_trace:
            return
        if request is not None:
            self._raw_trace.append(
                (
                    len(self._raw_trace),
                    self.clock.now,
                    kind,
                    worker,
                    request.message.task,
                    request.message.id,
                    request.delivery.queue,
                    detail,
                )
            )
        else:
            self._raw_trace.append((len(self._raw_trace), self.clock.now, kind, worker, "", "", queue or "", detail))

    def _broker_event(self, kind: str, routing_key: str, envelope: Any) -> None:
        if self._record_trace:
            headers = envelope.headers
            self._raw_trace.append(
                (
                    len(self._raw_trace),
                    self.clock.now,
                    kind,
                    "broker",
                    headers.get("task", ""),
                    headers.get("id", ""),
                    routing_key,
                    "",
                )
            )

    @property
    def trace(self) -> list[TraceEvent]:
        start = self.start
        return [
            TraceEvent(
                seq,
                at - start,
                kind,
                worker,
                task,
                task_id,
                queue,
                "" if detail is None else repr(detail) if not isinstance(detail, str) else detail,
            )
            for seq, at, kind, worker, task, task_id, queue, detail in self._raw_trace
        ]

    def trace_text(self) -> str:
        return "\n".join(event.line() for event in self.trace)

    @property
    def digest(self) -> str:
        """sha256 of the whole trace: equal digests mean identical runs."""
        return hashlib.sha256(self.trace_text().encode("utf-8")).hexdigest()

    # -- inspection -------------------------------------------------------------------------
    def depth(self, queue: str) -> int:
        return self.broker.depth(queue)

    @property
    def dead_letters(self) -> list[Any]:
        return self.broker.dead_letters

    @property
    def elapsed(self) -> float:
        """Virtual seconds since the simulation started."""
        return self.clock.now - self.start

    @property
    def virtual(self) -> bool:
        return not self.eager


class TraceHook(WorkerHook):
    """The simulation's trace, as a worker hook: one event per moment a run is judged by.

    While not ``active`` (the simulation's ``record_trace`` is off) it acts on no moment, so it costs nothing.
    """

    def __init__(self, emit: Callable[[str, str, Request | None, str | None, Any], None], active: bool = True) -> None:
        self.emit = emit
        self.active = active
        self._hooks: weakref.WeakKeyDictionary[Hooks, None] = weakref.WeakKeyDictionary()

    def acts_on(self, moment: str) -> bool:
        return self.active

    def attach(self, hooks: Hooks) -> None:
        self._hooks[hooks] = None

    def set_active(self, active: bool) -> None:
        """Turn tracing on or off in every worker holding this hook."""
        if active != self.active:
            self.active = active
            for hooks in list(self._hooks):
                hooks.refresh()

    def worker_start(self, worker: Worker) -> None:
        self.emit("worker-start", worker.hostname, None, None, ",".join(worker.consuming))

    def worker_stop(self, worker: Worker) -> None:
        self.emit("worker-stop", worker.hostname, None, None, None)

    def worker_crash(self, worker: Worker) -> None:
        self.emit("worker-crash", worker.hostname, None, None, None)

    def on_held(self, worker: Worker, request: Request) -> None:
        self.emit("held", worker.hostname, request, None, None)

    def on_rejected(self, worker: Worker, delivery: Delivery, reason: str, detail: str) -> None:
        self.emit("rejected", worker.hostname, None, delivery.queue, f"{reason}: {detail}")

    def on_revoked(self, executor: Executor, request: Request, exc: BaseException, reason: str) -> None:
        self.emit("revoked", executor.hostname, request, None, reason)

    def on_success(self, executor: Executor, request: Request, retval: Any) -> None:
        self.emit("succeeded", executor.hostname, request, None, retval)

    def on_failure(self, executor: Executor, request: Request, exc: BaseException, traceback: str) -> None:
        self.emit("failed", executor.hostname, request, None, f"{type(exc).__name__}: {exc}")

    def on_retry(self, executor: Executor, request: Request, retry: Any) -> None:
        when = retry.when if retry.when is not None else executor.clock.now
        self.emit(
            "retry",
            executor.hostname,
            request,
            None,
            f"retry {request.message.retries + 1} at +{when - executor.clock.now:g}s",
        )

    def on_batch(self, executor: Executor, task: Any, requests: Sequence[Request]) -> None:
        self.emit("batch", executor.hostname, requests[0], None, len(requests))
