"""Remote control, the worker's side: commands from ``app.control`` and their replies.

Commands travel like revocations (:mod:`simq.revoke`), through the result
backend every worker of an app shares: a counter (``simq:control``) and one
record per command. Unlike revocations they are not replayed: a worker reads
only the commands written after it started (an old ``shutdown`` must not stop
a new worker). In-process workers hear a command at once (the simulation's
run it at once, in the simulation's thread; threaded ones at their next loop
turn); the others read what is new every ``worker_control_poll_interval``
seconds. A reply is a record under the command's ticket (a counter hands each
replying worker its own slot), which the sender gathers until its timeout.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import attrs

from simq.exceptions import BrokerUnavailable, ConfigurationError, SimqError
from simq.request import Request
from simq.revoke import LogTail

if TYPE_CHECKING:
    from collections import deque

    from simq.app import App
    from simq.message import Delivery, TaskMessage
    from simq.pools import Pool
    from simq.ratelimit import RateLimits
    from simq.transport import Transport
    from simq.worker import Worker

__all__ = ["COMMANDS", "Command", "Inspected", "Remote"]

log = logging.getLogger("simq.worker")

COUNTER = "simq:control"


def entry_key(number: int) -> str:
    return f"{COUNTER}:{number}"


def reply_counter(ticket: str) -> str:
    return f"simq:reply:{ticket}"


def reply_key(ticket: str, slot: int) -> str:
    return f"simq:reply:{ticket}:{slot}"


@attrs.frozen
class Command:
    """One command of the control log."""

    name: str
    arguments: Mapping[str, Any] = attrs.field(factory=dict)
    destination: tuple[str, ...] | None = None
    ticket: str | None = None  # None: no reply wanted

    def encode(self) -> bytes:
        return json.dumps(
            {
                "name": self.name,
                "arguments": dict(self.arguments),
                "destination": list(self.destination) if self.destination is not None else None,
                "ticket": self.ticket,
            }
        ).encode()

    @classmethod
    def decode(cls, raw: bytes) -> Command:
        data = json.loads(raw)
        destination = data.get("destination")
        return cls(
            str(data["name"]),
            dict(data.get("arguments") or {}),
            tuple(destination) if destination is not None else None,
            data.get("ticket"),
        )


class Inspected:
    """What remote control reads of a worker and asks it to do (a base of :class:`~simq.worker.Worker`)."""

    if TYPE_CHECKING:
        app: App
        hostname: str
        transport: Transport
        remote: Remote
        _ready: deque[Request]
        _held: dict[int, Delivery]
        _held_messages: dict[int, TaskMessage]
        _eta_heap: list[tuple[float, int]]
        _rates: RateLimits
        _consuming: list[str]
        _shutdown_asked: bool
        pool: Pool | None
        concurrency: int

        def stop(self) -> None: ...

        def _apply_prefetch(self) -> None: ...

    def reserved_requests(self) -> list[Request]:
        """Received and due, not started: waiting for a pool slot or for their rate limit."""
        tasks = self.app.tasks
        rate_held = [
            Request(self._held_messages[seq], self._held[seq], tasks[name], self.hostname)
            for seq, name in self._rates.held.items()
            if seq in self._held
        ]
        return [*self._ready, *rate_held]

    def scheduled_requests(self) -> list[tuple[float, Request]]:
        """The requests held for their eta, soonest first."""
        tasks, rate_held = self.app.tasks, self._rates.held
        return [
            (
                eta,
                Request(self._held_messages[seq], self._held[seq], tasks[self._held_messages[seq].task], self.hostname),
            )
            for eta, seq in sorted(self._eta_heap)
            if seq in self._held and seq not in rate_held
        ]

    def cancel_queue(self, name: str) -> None:
        """Stop consuming ``name`` (what it already delivered is still run)."""
        if name not in self._consuming:
            raise KeyError(f"{self.hostname} does not consume {name!r}; it consumes {', '.join(self._consuming)}")
        self.transport.cancel(f"{self.hostname}:{name}")
        self._consuming.remove(name)

    def resize_pool(self, by: int) -> int:
        """``pool_grow`` / ``pool_shrink``: the pool's new size; the prefetch window follows it."""
        pool = self.pool
        if pool is None:
            raise ConfigurationError(f"{self.hostname} runs tasks inline (solo): it has no pool to resize")
        if by < 0:
            size = pool.shrink(-by)
        else:
            size = pool.grow(by)
        self.concurrency = size
        self._apply_prefetch()
        return size

    def request_shutdown(self) -> None:
        """Warm shutdown, asked from outside: the loop ends and stops the worker (a simulation stops it now)."""
        self._shutdown_asked = True
        if self.remote.immediate:
            self.stop()


def _request_info(request: Request) -> dict[str, Any]:
    m = request.message
    return {
        "id": m.id,
        "name": m.task,
        "args": list(m.args),
        "kwargs": dict(m.kwargs),
        "hostname": request.hostname,
        "delivery_info": request.delivery_info,
        "acknowledged": request.acked,
    }


def _ping(worker: Worker) -> Any:
    return {"ok": "pong"}


def _active(worker: Worker) -> Any:
    # An inline worker answers between tasks: nothing of it runs then.
    return [_request_info(r) for r in (worker.pool.active() if worker.pool is not None else [])]


def _reserved(worker: Worker) -> Any:
    return [_request_info(r) for r in worker.reserved_requests()]


def _scheduled(worker: Worker) -> Any:
    return [
        {"eta": eta, "priority": request.message.priority, "request": _request_info(request)}
        for eta, request in worker.scheduled_requests()
    ]


def _revoked(worker: Worker) -> Any:
    return list(worker.revocations)


def _registered(worker: Worker) -> Any:
    return sorted(name for name in worker.app.tasks if not name.startswith("simq."))


def _stats(worker: Worker) -> Any:
    stats = attrs.asdict(worker.stats)
    pool = worker.pool
    return {
        "hostname": worker.hostname,
        "pid": os.getpid(),
        "pool": {
            "implementation": type(pool).__name__ if pool is not None else "solo",
            "max-concurrency": pool.size if pool is not None else 1,
        },
        "prefetch_count": worker.prefetch,
        "consuming": worker.consuming,
        "held": worker.held,
        "rate_limited": worker.rate_limited,
        "total": stats,
    }


def _active_queues(worker: Worker) -> Any:
    router = worker.app.router
    out = []
    for name in worker.consuming:
        queue = router.queue(name)
        out.append(
            {
                "name": queue.name,
                "bindings": [
                    {"exchange": b.exchange.name, "exchange_type": b.exchange.type, "routing_key": b.routing_key}
                    for b in queue.all_bindings
                ],
            }
        )
    return out


def _conf(worker: Worker) -> Any:
    from simq.transport import redact_url

    out: dict[str, Any] = {}
    for key, value in sorted(worker.app.conf.items()):
        if key == "security_key":
            value = None if value is None else "***"
        elif isinstance(value, str) and "://" in value:
            value = redact_url(value)
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            value = repr(value)
        out[key] = value
    return out


def _rate_limit(worker: Worker, task_name: str, rate_limit: Any) -> Any:
    worker.set_rate_limit(task_name, rate_limit)
    return {"ok": f"rate limit of {task_name} set to {rate_limit!r}"}


def _time_limit(worker: Worker, task_name: str, soft: Any = None, hard: Any = None) -> Any:
    from simq.limits import check_limit

    task = type(worker.app.tasks[task_name])  # this process's task: its next runs use the new limits
    task.soft_time_limit = check_limit(soft, "soft")
    task.time_limit = check_limit(hard, "hard")
    return {"ok": f"time limits of {task_name} set to soft={soft!r} hard={hard!r}"}


def _pool_grow(worker: Worker, n: int = 1) -> Any:
    return {"ok": f"pool will grow to {worker.resize_pool(int(n))}"}


def _pool_shrink(worker: Worker, n: int = 1) -> Any:
    return {"ok": f"pool will shrink to {worker.resize_pool(-int(n))}"}


def _add_consumer(worker: Worker, queue: str) -> Any:
    worker.add_queue(queue)
    return {"ok": f"consuming from {queue}"}


def _cancel_consumer(worker: Worker, queue: str) -> Any:
    worker.cancel_queue(queue)
    return {"ok": f"no longer consuming from {queue}"}


def _shutdown(worker: Worker) -> Any:
    worker.request_shutdown()
    return {"ok": "shutting down"}


#: The commands a worker answers, by name.
COMMANDS: dict[str, Callable[..., Any]] = {
    "ping": _ping,
    "active": _active,
    "reserved": _reserved,
    "scheduled": _scheduled,
    "revoked": _revoked,
    "registered": _registered,
    "stats": _stats,
    "active_queues": _active_queues,
    "conf": _conf,
    "rate_limit": _rate_limit,
    "time_limit": _time_limit,
    "pool_grow": _pool_grow,
    "pool_shrink": _pool_shrink,
    "add_consumer": _add_consumer,
    "cancel_consumer": _cancel_consumer,
    "shutdown": _shutdown,
}


@attrs.define(eq=False)
class Remote:
    """One worker's end of the control log: reads new commands, runs those meant for it, replies."""

    worker: Worker
    interval: float = 1.0
    #: True in a simulation: a command heard in-process runs at once (one thread runs everything).
    immediate: bool = False
    _log: LogTail = attrs.field(init=False)
    _next_poll: float = attrs.field(default=0.0, init=False)
    _started: bool = attrs.field(default=False, init=False)

    def __attrs_post_init__(self) -> None:
        self._log = LogTail(self.backend, COUNTER, entry_key)

    @property
    def backend(self) -> Any:
        return self.worker.backend

    def start(self) -> None:
        """From now on: commands written before this are not this worker's."""
        self.backend.listeners.append(self._heard)
        try:
            self._log.start_at_end()
        except BrokerUnavailable as exc:
            log.warning("cannot read the control log yet: %s", exc)
        self._next_poll = self.worker.clock.now + self.interval
        self._started = True

    def stop(self) -> None:
        if self._heard in self.backend.listeners:
            self.backend.listeners.remove(self._heard)

    def _heard(self, number: int, entry: Any) -> None:
        if not isinstance(entry, Command):
            return  # a revocation: simq.revoke's
        if self.immediate:
            self.poll()
        else:
            self._next_poll = 0.0  # this worker's own thread reads it at its next turn

    def poll_if_due(self) -> None:
        if self.worker.clock.now >= self._next_poll:
            try:
                self.poll()
            except BrokerUnavailable as exc:
                log.warning("cannot read the control log (tried again in %g s): %s", self.interval, exc)

    def poll(self) -> None:
        """Run the commands written since the last read."""
        self._next_poll = self.worker.clock.now + self.interval
        for raw in self._log.read():
            self.run(Command.decode(raw))

    def run(self, command: Command) -> None:
        worker = self.worker
        if command.destination is not None and worker.hostname not in command.destination:
            return
        handler = COMMANDS.get(command.name)
        reply: Any
        if handler is None:
            reply = {"error": f"unknown command {command.name!r}; this worker answers {', '.join(COMMANDS)}"}
        else:
            try:
                reply = handler(worker, **command.arguments)
            except (SimqError, TypeError, KeyError, ValueError) as exc:
                reply = {"error": f"{type(exc).__name__}: {exc}"}
        log.info(
            "remote control: %s%s from the control log",
            command.name,
            f" {command.arguments}" if command.arguments else "",
        )
        if command.ticket is None:
            return
        backend = self.backend
        slot = backend.incr(reply_counter(command.ticket))
        backend.put_record(
            reply_key(command.ticket, slot),
            json.dumps({"hostname": worker.hostname, "reply": reply}, default=repr).encode(),
        )
        backend.sync()
