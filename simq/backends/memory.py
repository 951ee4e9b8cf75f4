"""The in-memory result backend: a dict owned by one app or simulation."""

from __future__ import annotations

import math
import threading
from typing import Any

import attrs

from simq.backends.base import Backend
from simq.states import READY_STATES

__all__ = ["MemoryBackend"]


@attrs.define(eq=False)
class MemoryBackend(Backend):
    """Results in a dict; waiting uses a condition variable (only useful with threads).

    Records and counters expire ``expires`` seconds after their last write, on
    the backend's own clock: in a simulation, on virtual time.
    """

    _data: dict[str, bytes] = attrs.field(factory=dict, init=False)
    _counters: dict[str, int] = attrs.field(factory=dict, init=False)
    # Writers take the lock itself (a C context manager); entering the Condition instead costs
    # two Python calls per write. Waiters wait on the Condition, which shares the lock.
    _lock: threading.RLock = attrs.field(factory=threading.RLock, init=False)
    _cond: threading.Condition = attrs.field(
        default=attrs.Factory(lambda self: threading.Condition(self._lock), takes_self=True), init=False
    )

    _ready: dict[str, bool] = attrs.field(factory=dict, init=False)
    _waiters: int = attrs.field(default=0, init=False)
    # Expiry. A deadline is the last write's time plus ``expires``, one constant, so keys in the order of
    # their last write are in deadline order: each kind's dict keeps that order (a write moves its key to
    # the end), what is due is always at the front, and a write allocates nothing (no heap entry, no tuple).
    # A wall clock stepped back delays an expiry by at most the step.
    _record_deadlines: dict[str, float] = attrs.field(factory=dict, init=False)
    _counter_deadlines: dict[str, float] = attrs.field(factory=dict, init=False)
    _next_due: float = attrs.field(default=math.inf, init=False)
    """No later than the earliest deadline: before it a read checks nothing else."""

    def _touch(self, deadlines: dict[str, float], key: str, now: float | None = None) -> None:
        """``key`` was written at ``now`` (read from the clock if not given): it expires ``expires`` after that."""
        expires = self.expires
        if expires is None:
            return
        if now is None:
            now = self.clock.now
        deadline = now + expires
        deadlines.pop(key, None)  # to the end: the latest deadline
        deadlines[key] = deadline
        if deadline < self._next_due:
            self._next_due = deadline
        if self._next_due <= now:
            self._expire_due(now)

    def _purge(self) -> None:
        if self._next_due > self.clock.now:
            return
        with self._lock:  # reentrant: also called from _set and _incr, which hold it
            self._expire_due(self.clock.now)

    def _expire_due(self, now: float) -> None:
        next_due = math.inf
        for deadlines, stores in (
            (self._record_deadlines, (self._data, self._ready)),
            (self._counter_deadlines, (self._counters,)),
        ):
            while deadlines:
                key = next(iter(deadlines))
                deadline = deadlines[key]
                if deadline > now:
                    next_due = min(next_due, deadline)
                    break
                del deadlines[key]
                for store in stores:
                    store.pop(key, None)
        self._next_due = next_due

    # -- storage hooks -----------------------------------------------------------------
    def _get(self, key: str) -> bytes | None:
        raw = self._data.get(key)
        if raw is None:  # nothing to expire first: purging would not change the answer
            return None
        if self._next_due <= self.clock.now:  # something is due: only then take the lock
            self._purge()
            return self._data.get(key)
        return raw

    def _set(self, key: str, value: bytes, now: float | None = None) -> None:
        with self._lock:
            self._data[key] = value
            self._touch(self._record_deadlines, key, now)
            if self._waiters:  # counted under the same lock, so no wake-up is lost
                self._cond.notify_all()

    def _set_result(self, task_id: str, body: bytes, state: str, now: float) -> None:
        self._set(task_id, body, now)
        self._ready[task_id] = state in READY_STATES

    def is_ready(self, task_id: str) -> bool:
        """Cheap readiness check the simulation polls between steps."""
        if not self._ready.get(task_id, False):
            return False
        if self._next_due <= self.clock.now:
            self._purge()
            return self._ready.get(task_id, False)
        return True

    def _delete(self, key: str) -> None:
        self._data.pop(key, None)
        self._ready.pop(key, None)
        self._record_deadlines.pop(key, None)

    def _incr(self, key: str, by: int = 1) -> int:
        with self._lock:
            self._purge()
            value = self._counters.get(key, 0) + by
            self._counters[key] = value
            self._touch(self._counter_deadlines, key)
            return value

    def _wait(self, key: str, timeout: float | None) -> bytes | None:
        clock: Any = self.clock
        deadline = None if timeout is None else clock.now + timeout
        with self._cond:
            while True:
                raw = self._get(key)
                if raw is not None and self._decode(key, raw).ready:
                    return raw
                remaining = None if deadline is None else deadline - clock.now
                if remaining is not None and remaining <= 0:
                    return None
                self._waiters += 1
                try:
                    self._cond.wait(remaining)
                finally:
                    self._waiters -= 1

    def __len__(self) -> int:
        self._purge()
        return len(self._data)
