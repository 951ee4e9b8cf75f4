"""Fault injection for the simulator: worker crashes, lost connections, broker restarts, and more.

A ``FaultPlan`` is data: how often faults happen and which kinds. The
simulation draws every fault from its own seed, so ``(seed, plan, workload)``
replays exactly. ``sim.inject(kind, ...)`` places one fault at a chosen point
instead. Every fault lands in the trace (kind ``fault``) and in
``sim.fault_log``.

The kinds, and where they strike:

- ``crash-before-execution``: the worker dies after taking a message (and,
  with early acks, after acknowledging it) but before the task body runs.
- ``crash-mid-execution``: the body ran (its side effects happened) but the
  worker died before storing the result or acknowledging.
- ``crash-after-execution``: the result is stored, the late ack not yet sent.
- ``duplicate-delivery``: the broker delivers the message a second time
  (an acknowledgement lost on the wire), flagged redelivered.
- ``slow-task``: the task body takes ``seconds`` of virtual time. The
  simulation is single-threaded, so the whole simulated world waits with it.
- ``clock-jump``: the clock jumps forward between two steps.
- ``connection-drop``: a worker's connection closes between two steps; its
  unacknowledged deliveries go back to their queues (redelivered) and it
  reconnects at once (a fresh consumer, as a reconnecting worker has).
- ``broker-restart``: every connection closes; unacknowledged deliveries go
  back to their queues, as RabbitMQ does; non-durable queues lose every
  message they held (recorded in the fault); workers reconnect after
  ``plan.restart_delay`` virtual seconds.

A crashed worker is replaced by a new one with the same configuration after
``plan.restart_delay`` virtual seconds (as a supervisor would restart it).
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import TYPE_CHECKING

import attrs

from simq.exceptions import ConfigurationError
from simq.hooks import WorkerHook

if TYPE_CHECKING:
    from simq.executor import Executor
    from simq.memory.simulation import Simulation
    from simq.worker import Request, Worker

__all__ = ["KINDS", "Fault", "FaultHook", "FaultInjector", "FaultPlan", "WorkerCrashed"]

# Where each kind can strike: a point inside Worker.execute, or "step" (between two simulation steps).
_POINT_OF = {
    "crash-before-execution": "run",
    "duplicate-delivery": "run",
    "slow-task": "run",
    "crash-mid-execution": "ran",
    "crash-after-execution": "done",
    "clock-jump": "step",
    "connection-drop": "step",
    "broker-restart": "step",
}
KINDS: tuple[str, ...] = tuple(_POINT_OF)
CRASHES = ("crash-before-execution", "crash-mid-execution", "crash-after-execution")


def _as_kinds(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


def _check_kinds(_inst: object, _attr: object, kinds: tuple[str, ...]) -> None:
    for kind in kinds:
        if kind not in _POINT_OF:
            raise ConfigurationError(f"unknown fault kind {kind!r}; the kinds are {list(KINDS)}")


def _check_rate(_inst: object, _attr: object, rate: float) -> None:
    if not 0.0 <= rate <= 1.0:
        raise ConfigurationError(f"FaultPlan rate must be a probability from 0 to 1, got {rate!r}")


@attrs.frozen
class FaultPlan:
    """Random faults as data: at each opportunity a fault of one of ``kinds`` strikes with probability ``rate``.

    An opportunity is each injection point a task passes (three per
    execution) and each simulation step. ``max_faults`` bounds a run, so a
    high rate cannot keep a task from ever finishing.
    """

    rate: float = attrs.field(default=0.05, validator=_check_rate)
    kinds: tuple[str, ...] = attrs.field(default=KINDS, converter=_as_kinds, validator=_check_kinds)
    max_faults: int = 50
    restart_delay: float = 1.0
    slow_seconds: float = 30.0
    jump_seconds: float = 300.0

    def __repr__(self) -> str:
        """Valid Python that rebuilds the plan: fields left at their defaults are omitted (rate is always shown)."""
        parts = [f"rate={self.rate!r}"]
        for field in attrs.fields(FaultPlan)[1:]:
            value = getattr(self, field.name)
            if value != field.default:
                parts.append(f"{field.name}={value!r}")
        return f"FaultPlan({', '.join(parts)})"

    @classmethod
    def random(cls, rng: random.Random) -> FaultPlan:
        """A plan drawn from ``rng``: a rate from 1% to 15% and a random non-empty set of kinds."""
        rate = round(rng.uniform(0.01, 0.15), 3)
        kinds = tuple(k for k in KINDS if rng.random() < 0.6) or (KINDS[rng.randrange(len(KINDS))],)
        return cls(rate=rate, kinds=kinds)


@attrs.frozen
class Fault:
    """One fault that happened: what, when (virtual seconds since the start), to whom."""

    seq: int
    at: float
    kind: str
    worker: str
    task: str = ""
    task_id: str = ""
    point: str = "step"
    acked: bool = False
    lost: tuple[str, ...] = ()
    detail: str = ""

    def line(self) -> str:
        what = f" {self.task}[{self.task_id}]" if self.task_id else ""
        extra = f" acked={self.acked}" if self.task_id else ""
        lost = f" lost={list(self.lost)}" if self.lost else ""
        return f"+{self.at:.6f}s {self.kind} at {self.point} on {self.worker}{what}{extra}{lost} {self.detail}".rstrip()


class WorkerCrashed(BaseException):
    """Raised through a worker's stack when the simulation kills it; the simulation catches it."""


class FaultHook(WorkerHook):
    """One worker's fault injection points, as a worker hook: "run", "ran" and "done"."""

    def __init__(self, injector: FaultInjector, worker: Worker) -> None:
        self.injector = injector
        self.worker = worker

    def before_run(self, executor: Executor, request: Request) -> None:
        self.injector.on_point(self.worker, "run", request)

    def after_run(self, executor: Executor, request: Request) -> None:
        self.injector.on_point(self.worker, "ran", request)

    def before_ack(self, worker: Worker, request: Request) -> None:
        self.injector.on_point(worker, "done", request)


@attrs.define(eq=False)
class _Injection:
    kind: str
    task: str | None
    worker: str | None
    when: float | None
    seconds: float | None
    times: int


@attrs.define(eq=False)
class FaultInjector:
    """Decides and applies faults for one simulation."""

    sim: Simulation
    plan: FaultPlan | None
    rng: random.Random = attrs.field(init=False)
    log: list[Fault] = attrs.field(factory=list, init=False)
    active: bool = attrs.field(default=True, init=False)
    _injections: list[_Injection] = attrs.field(factory=list, init=False)
    _generation: int = attrs.field(default=0, init=False)

    def __attrs_post_init__(self) -> None:
        # Its own stream, derived from the seed: faults do not disturb the simulation's other choices.
        self.rng = random.Random(f"simq-faults:{self.sim.seed}")

    # -- choosing ------------------------------------------------------------------------
    def _budget_left(self) -> bool:
        return self.plan is not None and len(self.log) < self.plan.max_faults

    def _draw(self, point: str) -> str | None:
        plan = self.plan
        if plan is None or not plan.rate or not self._budget_left():
            return None
        if self.rng.random() >= plan.rate:
            return None
        kinds = [k for k in plan.kinds if _POINT_OF[k] == point]
        if not kinds:
            return None
        return kinds[0] if len(kinds) == 1 else kinds[self.rng.randrange(len(kinds))]

    def _take(self, point: str, worker: Worker | None, request: Request | None) -> _Injection | None:
        elapsed = self.sim.elapsed
        for injection in self._injections:
            if _POINT_OF[injection.kind] != point:
                continue
            if injection.when is not None and elapsed < injection.when:
                continue
            if (
                point != "step"
                and injection.worker is not None
                and (worker is None or not worker.hostname.startswith(injection.worker))
            ):
                continue
            if injection.task is not None and (request is None or injection.task not in (request.name, request.id)):
                continue
            injection.times -= 1
            if injection.times <= 0:
                self._injections.remove(injection)
            return injection
        return None

    # -- hooks the simulation and its workers call ----------------------------------------
    def on_point(self, worker: Worker, point: str, request: Request) -> None:
        """Worker.execute passes here at "run", "ran" and "done"; a crash raises ``WorkerCrashed``."""
        if not self.active or worker._stopping:
            return
        injection = self._take(point, worker, request) if self._injections else None
        kind = injection.kind if injection is not None else self._draw(point)
        if kind is None:
            return
        seconds = injection.seconds if injection is not None else None
        if kind == "duplicate-delivery":
            self._record(kind, worker, point, request)
            self.sim.broker.settle(request.delivery, ack=False, requeue=True)
        elif kind == "slow-task":
            if seconds is None:
                seconds = round(self.rng.uniform(0.0, self.plan.slow_seconds if self.plan else 30.0), 3)
            self._record(kind, worker, point, request, detail=f"{seconds:g}s")
            self.sim.clock.jump_to(self.sim.clock.now + seconds)
        else:
            self._record(kind, worker, point, request)
            worker.crash()
            raise WorkerCrashed(f"{kind} on {worker.hostname}")

    def between_steps(self) -> bool:
        """Maybe strike a step fault now; True if one did (the workers may have changed)."""
        if not self.active:
            return False
        injection = self._take("step", None, None) if self._injections else None
        if injection is None and not self._has_work():
            return False
        kind = injection.kind if injection is not None else self._draw("step")
        if kind is None:
            return False
        if injection is not None:
            self.strike(kind, worker=injection.worker, seconds=injection.seconds)
        else:
            self.strike(kind)
        return True

    def _has_work(self) -> bool:
        return any(not w._stopping and (w.has_work() or w.held or w.rate_limited) for w in self.sim.worker_list)

    def crashed(self, worker: Worker) -> None:
        """A worker died of an injected crash: restart a replacement after the plan's delay."""
        self._restart_later([worker])

    # -- applying --------------------------------------------------------------------------
    def strike(self, kind: str, *, worker: str | None = None, seconds: float | None = None) -> None:
        """Apply a step fault (clock-jump, connection-drop, broker-restart) now."""
        sim = self.sim
        if kind == "clock-jump":
            if seconds is None:
                seconds = round(self.rng.uniform(0.0, self.plan.jump_seconds if self.plan else 300.0), 3)
            self._record(kind, None, "step", None, detail=f"+{seconds:g}s")
            sim.clock.jump_to(sim.clock.now + seconds)
        elif kind == "connection-drop":
            live = [w for w in sim.worker_list if not w._stopping]
            if worker is not None:
                live = [w for w in live if w.hostname.startswith(worker)]
            if not live:
                return
            victim = live[0] if len(live) == 1 else live[self.rng.randrange(len(live))]
            self._record(kind, victim, "step", None)
            victim.crash()
            self._restart([victim])
        elif kind == "broker-restart":
            live = [w for w in sim.worker_list if not w._stopping]
            for w in live:
                w.crash()  # every connection closes; unacked deliveries go back to their queues
            lost = self._drop_transient_queues()
            self._record(kind, None, "step", None, lost=lost)
            self._restart_later(live)
        else:
            raise ConfigurationError(f"{kind!r} strikes inside a task's execution; inject it with task= or worker=")

    def _drop_transient_queues(self) -> tuple[str, ...]:
        broker = self.sim.broker
        lost: list[str] = []
        for name in broker.queue_names():
            mq = broker._queues[name]
            if mq.queue.durable:
                continue
            for envelope in mq.waiting():
                headers = envelope.headers
                lost.append(str(headers.get("id", "")) if hasattr(headers, "get") else "")
            broker.purge(name)
        return tuple(lost)

    def _restart_later(self, workers: list[Worker]) -> None:
        delay = self.plan.restart_delay if self.plan is not None else 1.0
        self.sim.clock.call_later(delay, lambda: self._restart(workers))

    def _restart(self, workers: list[Worker]) -> None:
        sim = self.sim
        for old in workers:
            self._generation += 1
            base = old.hostname.split("~")[0]
            new = sim.add_worker(
                queues=old.queues,
                concurrency=old.concurrency,
                prefetch_multiplier=old.prefetch_multiplier,
                name=f"{base}~{self._generation}",
            )
            sim._emit("restart", new.hostname, None, None, f"replaces {old.hostname}")

    def _record(
        self,
        kind: str,
        worker: Worker | None,
        point: str,
        request: Request | None,
        *,
        lost: tuple[str, ...] = (),
        detail: str = "",
    ) -> None:
        sim = self.sim
        fault = Fault(
            seq=len(self.log),
            at=sim.elapsed,
            kind=kind,
            worker=worker.hostname if worker is not None else "broker",
            task=request.name if request is not None else "",
            task_id=request.id if request is not None else "",
            point=point,
            acked=request.acked if request is not None else False,
            lost=lost,
            detail=detail,
        )
        self.log.append(fault)
        text = f"{kind} at={point}" + (f" acked={fault.acked}" if request is not None else "")
        if lost:
            text += f" lost={len(lost)}"
        if detail:
            text += f" {detail}"
        sim._emit("fault", fault.worker, request, None, text)

    # -- placing one fault by hand ----------------------------------------------------------
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
        """Place a fault of ``kind``.

        Kinds that strike inside an execution wait for the next execution of
        ``task`` (a name or an id; any task if None) on ``worker`` (a hostname
        prefix; any if None) at or after ``when`` virtual seconds since the
        start, ``times`` times. Step kinds strike now, or at ``when`` if given.
        ``seconds`` is the duration of a slow task or the size of a clock jump.
        """
        _check_kinds(None, None, (kind,))
        if times < 1:
            raise ConfigurationError(f"inject(times=...) must be at least 1, got {times}")
        if _POINT_OF[kind] == "step" and task is None:
            if when is None:
                for _ in range(times):
                    self.strike(kind, worker=worker, seconds=seconds)
                return
            self._injections.append(_Injection(kind, None, worker, when, seconds, times))
            # Make sure the simulation reaches that time even if it would otherwise be idle.
            self.sim.clock.call_at(self.sim.start + when, lambda: None)
            return
        if _POINT_OF[kind] == "step":
            raise ConfigurationError(f"{kind!r} strikes between steps, not in a task: drop task={task!r}")
        self._injections.append(_Injection(kind, task, worker, when, seconds, times))
