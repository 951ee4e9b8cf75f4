"""``app.control``: acting on the workers of an app, and asking them (Celery's names).

Commands and revocations reach every worker through the result backend the
app and its workers share (:mod:`simq.revoke`, :mod:`simq.remote`): in a
simulation every worker hears one at once, in production within
``worker_control_poll_interval`` (commands) or ``worker_revoke_poll_interval``
(revocations). With ``result_backend = "memory://"`` outside a simulation no
other process could hear anything: that is refused with the reason, never
silently dropped.
"""

from __future__ import annotations

import itertools
import json
import uuid
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from simq import remote
from simq import revoke as revoke_module
from simq.exceptions import ConfigurationError

if TYPE_CHECKING:
    from simq.app import App

__all__ = ["Control", "Inspect", "check_reachable"]

_tickets = itertools.count(1)


def check_reachable(app: App, what: str) -> None:
    """Refuse ``what`` when no worker could hear it: results in this process's memory, no worker in it."""
    from simq.backends.memory import MemoryBackend

    backend = app.backend
    if isinstance(backend, MemoryBackend) and app.simulation is None and not backend.listeners:
        raise ConfigurationError(
            f"{what} cannot reach any worker: this app's result backend is memory://, which only this process "
            "sees, and no worker runs in this process; set result_backend to one the workers share (redis://...)"
        )


def _count(n: Any) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigurationError(f"n must be a whole number >= 1, got {n!r}")
    return n


def _destination(destination: Any) -> tuple[str, ...] | None:
    if destination is None:
        return None
    names = (destination,) if isinstance(destination, str) else tuple(destination)
    if not names or not all(isinstance(n, str) and n for n in names):
        raise ConfigurationError(f"destination must be a worker name or a list of them, got {destination!r}")
    return names


class Control:
    """What ``app.control`` is."""

    def __init__(self, app: App) -> None:
        self.app = app

    # -- revoking ------------------------------------------------------------------------
    def revoke(
        self,
        task_id: str | Iterable[str],
        destination: Any = None,
        terminate: bool = False,
        signal: str | int = "SIGTERM",
        **kwargs: Any,
    ) -> None:
        """Revoke one task id or several on every worker (see :mod:`simq.revoke`)."""
        if destination is not None:
            raise ConfigurationError(
                "revoke(destination=...) is not supported: a revocation reaches every worker of the app "
                "(they read one log), so it cannot be aimed at some of them"
            )
        if kwargs:
            raise ConfigurationError(f"revoke() got unknown option {sorted(kwargs)[0]!r}")
        entry = revoke_module.make_revocation(task_id, terminate, signal)
        check_reachable(self.app, "revoke()")
        revoke_module.write(self.app, entry)

    # -- commands ------------------------------------------------------------------------
    def broadcast(
        self,
        command: str,
        arguments: dict[str, Any] | None = None,
        destination: Any = None,
        reply: bool = False,
        timeout: float = 1.0,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Send ``command`` to the workers (all, or ``destination``); with ``reply``, gather their answers.

        Answers are ``[{hostname: reply}, ...]`` in the order they came,
        gathered for ``timeout`` seconds (or until ``limit`` answered, or
        every ``destination`` did). In a simulation every worker answers at
        once and no time passes.
        """
        if command not in remote.COMMANDS:
            raise ConfigurationError(
                f"unknown control command {command!r}; workers answer {', '.join(remote.COMMANDS)}"
            )
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout < 0:
            raise ConfigurationError(f"timeout must be seconds >= 0, got {timeout!r}")
        names = _destination(destination)
        check_reachable(self.app, f"app.control {command}")
        app = self.app
        ticket = f"{uuid.UUID(app.new_id()).hex}-{next(_tickets)}" if reply else None
        entry = remote.Command(command, dict(arguments or {}), names, ticket)
        backend = app.backend
        number = backend.incr(remote.COUNTER)
        backend.put_record(remote.entry_key(number), entry.encode())
        backend.sync()
        for listener in list(backend.listeners):
            listener(number, entry)
        if ticket is None:
            return []
        wanted = limit if limit is not None else (len(names) if names is not None else None)
        return self._gather(ticket, timeout, wanted)

    def _gather(self, ticket: str, timeout: float, wanted: int | None) -> list[dict[str, Any]]:
        app = self.app
        backend = app.backend
        replies: list[dict[str, Any]] = []
        read = 0
        simulated = app.simulation is not None
        clock: Any = app.runtime.clock  # a WallClock in production: it can sleep
        deadline = clock.now + timeout
        while True:
            count = backend.incr(remote.reply_counter(ticket), 0)
            if count > read:
                keys = [remote.reply_key(ticket, n) for n in range(read + 1, count + 1)]
                for raw in backend.get_records(keys):
                    if raw is not None:
                        data = json.loads(raw)
                        replies.append({data["hostname"]: data["reply"]})
                read = count
            if simulated or (wanted is not None and len(replies) >= wanted) or clock.now >= deadline:
                return replies[:wanted] if wanted is not None else replies
            clock.sleep(min(0.05, max(0.0, deadline - clock.now)))

    def ping(self, destination: Any = None, timeout: float = 1.0) -> list[dict[str, Any]]:
        return self.broadcast("ping", destination=destination, reply=True, timeout=timeout)

    def rate_limit(
        self, task_name: str, rate_limit: Any, destination: Any = None, reply: bool = False, timeout: float = 1.0
    ) -> list[dict[str, Any]]:
        """Change ``task_name``'s rate limit on the workers (``Worker.set_rate_limit``)."""
        from simq.ratelimit import parse_rate

        parse_rate(rate_limit)  # refused here, naming the value, rather than by every worker
        return self.broadcast(
            "rate_limit", {"task_name": task_name, "rate_limit": rate_limit}, destination, reply, timeout
        )

    def time_limit(
        self,
        task_name: str,
        soft: float | None = None,
        hard: float | None = None,
        destination: Any = None,
        reply: bool = False,
        timeout: float = 1.0,
    ) -> list[dict[str, Any]]:
        """Change ``task_name``'s ``soft_time_limit`` and ``time_limit`` on the workers (None: no limit)."""
        from simq.limits import check_limit

        check_limit(soft, "soft")
        check_limit(hard, "hard")
        return self.broadcast(
            "time_limit", {"task_name": task_name, "soft": soft, "hard": hard}, destination, reply, timeout
        )

    def pool_grow(
        self, n: int = 1, destination: Any = None, reply: bool = False, timeout: float = 1.0
    ) -> list[dict[str, Any]]:
        """Add ``n`` slots (threads or child processes) to the workers' pools."""
        return self.broadcast("pool_grow", {"n": _count(n)}, destination, reply, timeout)

    def pool_shrink(
        self, n: int = 1, destination: Any = None, reply: bool = False, timeout: float = 1.0
    ) -> list[dict[str, Any]]:
        """Take ``n`` slots away from the workers' pools as they become idle (one always stays)."""
        return self.broadcast("pool_shrink", {"n": _count(n)}, destination, reply, timeout)

    def add_consumer(
        self, queue: str, destination: Any = None, reply: bool = False, timeout: float = 1.0
    ) -> list[dict[str, Any]]:
        return self.broadcast("add_consumer", {"queue": queue}, destination, reply, timeout)

    def cancel_consumer(
        self, queue: str, destination: Any = None, reply: bool = False, timeout: float = 1.0
    ) -> list[dict[str, Any]]:
        return self.broadcast("cancel_consumer", {"queue": queue}, destination, reply, timeout)

    def shutdown(self, destination: Any = None, reply: bool = False, timeout: float = 1.0) -> list[dict[str, Any]]:
        """Warm shutdown of the workers: they finish what runs, give back what they hold, exit."""
        return self.broadcast("shutdown", destination=destination, reply=reply, timeout=timeout)

    def inspect(self, destination: Any = None, timeout: float = 1.0, limit: int | None = None) -> Inspect:
        return Inspect(self, destination, timeout, limit)


class Inspect:
    """``app.control.inspect()``: each method asks the workers and returns ``{hostname: answer}``, or None."""

    def __init__(self, control: Control, destination: Any, timeout: float, limit: int | None) -> None:
        self.control = control
        self.destination = destination
        self.timeout = timeout
        self.limit = limit

    def _ask(self, command: str) -> dict[str, Any] | None:
        replies = self.control.broadcast(
            command, destination=self.destination, reply=True, timeout=self.timeout, limit=self.limit
        )
        merged: dict[str, Any] = {}
        for reply in replies:
            merged.update(reply)
        return merged or None

    def ping(self) -> dict[str, Any] | None:
        return self._ask("ping")

    def active(self) -> dict[str, Any] | None:
        return self._ask("active")

    def reserved(self) -> dict[str, Any] | None:
        return self._ask("reserved")

    def scheduled(self) -> dict[str, Any] | None:
        return self._ask("scheduled")

    def revoked(self) -> dict[str, Any] | None:
        return self._ask("revoked")

    def registered(self) -> dict[str, Any] | None:
        return self._ask("registered")

    def stats(self) -> dict[str, Any] | None:
        return self._ask("stats")

    def active_queues(self) -> dict[str, Any] | None:
        return self._ask("active_queues")

    def conf(self) -> dict[str, Any] | None:
        return self._ask("conf")

    @property
    def commands(self) -> Sequence[str]:
        return ("ping", "active", "reserved", "scheduled", "revoked", "registered", "stats", "active_queues", "conf")
