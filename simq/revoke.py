"""Revoking tasks: a revoked task that has not started never runs, on any worker.

``AsyncResult.revoke()`` and ``app.control.revoke(ids)`` write one entry to
the *revocation log* in the result backend: a counter (``simq:revokes``) and
one record per entry (``simq:revokes:<n>``), kept as long as results are
(``result_expires``). Every worker reads the whole log when it starts, so a
worker started after the revoke honours it too, and then:

- workers in the same process hear each entry at once (the simulation's
  workers, and in-process ones);
- every other worker reads what is new every ``worker_revoke_poll_interval``
  seconds (1 s by default; one counter read when nothing is new).

A worker that knows a task is revoked discards it instead of running it,
whether it was just delivered, held for its eta or waiting for a pool slot:
it stores ``REVOKED`` (so ``get()`` raises ``TaskRevokedError``), acknowledges
the message and sends ``task_revoked``. A task that is already running is not
stopped, unless the revoke says ``terminate=True``: then a ``processes``
pool kills the child running it with ``signal`` (``SIGTERM`` by default), a
``threads`` pool raises :class:`Terminated` in its thread at the next Python
instruction, and a ``solo`` worker cannot (it is busy running the task: it
hears the revoke only when the task has ended). A revoke issued while the
message is on its way can lose the race by up to one poll interval on a
worker in another process.
"""

from __future__ import annotations

import json
import logging
import signal as signal_module
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from simq.exceptions import BrokerUnavailable, ConfigurationError

if TYPE_CHECKING:
    from simq.app import App
    from simq.backends.base import Backend
    from simq.clock import Clock

__all__ = ["Revocation", "Revocations", "Terminated", "revoke"]

log = logging.getLogger("simq.worker")

COUNTER = "simq:revokes"
#: How many revoked ids a worker remembers (Celery keeps 50,000 too); the oldest go first.
MAX_REMEMBERED = 50_000


def entry_key(number: int) -> str:
    return f"{COUNTER}:{number}"


class Terminated(BaseException):
    """Raised in a threads-pool task revoked with ``terminate=True``; a ``BaseException`` so it ends the task."""


@attrs.frozen
class Revocation:
    """One entry of the log: these ids are revoked (and, with ``terminate``, ended if running)."""

    ids: tuple[str, ...]
    terminate: bool = False
    signal: str = "SIGTERM"

    def encode(self) -> bytes:
        return json.dumps({"ids": list(self.ids), "terminate": self.terminate, "signal": self.signal}).encode()

    @classmethod
    def decode(cls, raw: bytes) -> Revocation:
        data = json.loads(raw)
        return cls(tuple(str(i) for i in data["ids"]), bool(data.get("terminate")), str(data.get("signal", "SIGTERM")))


def signal_number(name: str | int) -> int:
    """``"SIGKILL"``, ``"KILL"`` or 9 as a signal number; refuses what is not one, naming it."""
    if isinstance(name, int) and not isinstance(name, bool):
        try:
            return int(signal_module.Signals(name))
        except ValueError:
            pass
    elif isinstance(name, str):
        text = name.upper()
        text = text if text.startswith("SIG") else f"SIG{text}"
        found = getattr(signal_module.Signals, text, None)
        if found is not None:
            return int(found)
    raise ConfigurationError(f"revoke(signal=...) must name a signal such as 'SIGTERM' or 'SIGKILL', got {name!r}")


def make_revocation(
    task_ids: str | Iterable[str], terminate: bool = False, signal: str | int = "SIGTERM"
) -> Revocation:
    """The log entry for a revoke, checked: ids are non-empty strings, ``signal`` names a signal."""
    ids = (task_ids,) if isinstance(task_ids, str) else tuple(task_ids)
    if not ids or not all(isinstance(i, str) and i for i in ids):
        raise ConfigurationError(f"revoke() takes a task id or a list of them, got {task_ids!r}")
    return Revocation(ids, bool(terminate), signal_module.Signals(signal_number(signal)).name)


def revoke(app: App, task_ids: str | Iterable[str], terminate: bool = False, signal: str | int = "SIGTERM") -> None:
    """Revoke ``task_ids`` on every worker: written to the log, heard at once in this process."""
    write(app, make_revocation(task_ids, terminate, signal))


def write(app: App, entry: Revocation) -> None:
    backend = app.backend
    n = backend.incr(COUNTER)
    backend.put_record(entry_key(n), entry.encode())
    backend.sync()
    for listener in list(backend.listeners):
        listener(n, entry)


#: A log entry missing from the newest ones may be still on its way (its writer counts first,
#: then writes): it is read again at the next reads, this many times, before it counts as expired.
IN_FLIGHT_READS = 10
#: How far back from the newest entry a missing one may still be on its way.
IN_FLIGHT_WINDOW = 64


@attrs.define(eq=False)
class LogTail:
    """Reads what is new in one log of the result backend (a counter, one record per entry).

    A writer counts first and writes second, so an entry can be missing for
    a moment: a missing one among the newest is read again at the next
    reads, not skipped for good.
    """

    backend: Backend
    counter: str
    key: Callable[[int], str]
    seen: int = 0
    _missing: dict[int, int] = attrs.field(factory=dict, init=False)  # entry number -> reads left

    def start_at_end(self) -> None:
        """From now on only entries written after this (commands are not replayed)."""
        self.seen = self.backend.incr(self.counter, 0)

    def read(self, limit: int = MAX_REMEMBERED) -> list[bytes]:
        """The records of the entries written since the last read (and of those that were missing), in order."""
        last = self.backend.incr(self.counter, 0)
        if last < self.seen:  # the counter expired and began again: the new log from its start
            self.seen = 0
            self._missing.clear()
        first = max(self.seen + 1, last - limit + 1)
        numbers = sorted(self._missing) + list(range(first, last + 1))
        if not numbers:
            return []
        out = []
        for number, raw in zip(numbers, self.backend.get_records([self.key(n) for n in numbers]), strict=True):
            if raw is not None:
                self._missing.pop(number, None)
                out.append(raw)
            elif number > self.seen:
                if number > last - IN_FLIGHT_WINDOW:
                    self._missing[number] = IN_FLIGHT_READS
            else:
                left = self._missing.get(number, 1) - 1
                if left > 0:
                    self._missing[number] = left
                else:
                    self._missing.pop(number, None)
        self.seen = max(self.seen, last)
        return out


@attrs.define(eq=False)
class Revocations:
    """What one worker knows is revoked, kept up to date from the log in ``backend``."""

    backend: Backend
    clock: Clock
    interval: float = 1.0
    #: Called with each revocation that says ``terminate`` (the worker ends what it runs of it).
    on_terminate: Callable[[Revocation], None] | None = None
    ids: OrderedDict[str, Revocation] = attrs.field(factory=OrderedDict, init=False)
    _log: LogTail = attrs.field(init=False)
    _next_poll: float = attrs.field(default=0.0, init=False)

    def __attrs_post_init__(self) -> None:
        self._log = LogTail(self.backend, COUNTER, entry_key)

    def start(self) -> None:
        """Read the whole log (what expired is gone) and listen for entries written in this process."""
        self.backend.listeners.append(self._heard)
        self.poll_if_due()

    def stop(self) -> None:
        if self._heard in self.backend.listeners:
            self.backend.listeners.remove(self._heard)

    def poll(self) -> None:
        """Read the entries written since the last read (one counter read when there are none)."""
        self._next_poll = self.clock.now + self.interval
        for raw in self._log.read():
            self._learn(Revocation.decode(raw))

    def poll_if_due(self) -> None:
        """``poll`` once the interval has passed; an unreachable backend is logged and tried again later."""
        if self.clock.now >= self._next_poll:
            try:
                self.poll()
            except BrokerUnavailable as exc:
                log.warning("cannot read the revocation log (tried again in %g s): %s", self.interval, exc)

    def _heard(self, number: int, entry: Any) -> None:
        if not isinstance(entry, Revocation):
            return  # a control command: simq.remote's
        self._learn(entry)  # the next poll may read it again: learning twice changes nothing

    def _learn(self, entry: Revocation) -> None:
        ids = self.ids
        for task_id in entry.ids:
            ids[task_id] = entry
            ids.move_to_end(task_id)
        while len(ids) > MAX_REMEMBERED:
            ids.popitem(last=False)
        if entry.terminate and self.on_terminate is not None:
            self.on_terminate(entry)

    def revoked(self, task_ids: Sequence[str]) -> list[str]:
        return [i for i in task_ids if i in self.ids]

    def __contains__(self, task_id: object) -> bool:
        return task_id in self.ids

    def __bool__(self) -> bool:
        return bool(self.ids)

    def __len__(self) -> int:
        return len(self.ids)

    def __iter__(self) -> Any:
        return iter(self.ids)
