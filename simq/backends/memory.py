"""The in-memory result backend: a dict owned by one app or simulation."""

from __future__ import annotations

import heapq
import itertools
import threading
from collections.abc import Iterator
from typing import Any

import attrs

from simq.backends.base import Backend

__all__ = ["MemoryBackend"]


@attrs.define(eq=False)
class MemoryBackend(Backend):
    """Results in a dict; waiting uses a condition variable (only useful with threads).

    Records and counters expire ``expires`` seconds after their last write, on
    the backend's own clock: in a simulation, on virtual time.
    """

    _data: dict[str, bytes] = attrs.field(factory=dict, init=False)
    _counters: dict[str, int] = attrs.field(factory=dict, init=False)
    _cond: threading.Condition = attrs.field(factory=threading.Condition, init=False)

    _ready: dict[str, bool] = attrs.field(factory=dict, init=False)
    _waiters: int = attrs.field(default=0, init=False)
    _deadlines: dict[tuple[str, str], float] = attrs.field(factory=dict, init=False)
    """(kind, key) -> when it expires; kind "r" for a record, "c" for a counter."""
    _heap: list[tuple[float, int, tuple[str, str]]] = attrs.field(factory=list, init=False)
    _seq: Iterator[int] = attrs.field(factory=itertools.count, init=False)

    # -- expiry: one heap entry per live key, re-pushed when it pops before its (extended) deadline --
    def _touch(self, kind: str, key: str) -> None:
        expires = self.expires
        if expires is None:
            return
        slot = (kind, key)
        now = self.clock.now
        if slot not in self._deadlines:
            heapq.heappush(self._heap, (now + expires, next(self._seq), slot))
        self._deadlines[slot] = now + expires
        if self._heap[0][0] <= now:
            self._expire_due(now)

    def _purge(self) -> None:
        heap = self._heap
        if not heap or heap[0][0] > self.clock.now:
            return
        with self._cond:  # reentrant: also called from _set and _incr, which hold it
            self._expire_due(self.clock.now)

    def _expire_due(self, now: float) -> None:
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, _, slot = heapq.heappop(heap)
            deadline = self._deadlines.get(slot)
            if deadline is None:
                continue
            if deadline > now:  # written again since: wait for the new deadline
                heapq.heappush(heap, (deadline, next(self._seq), slot))
                continue
            del self._deadlines[slot]
            kind, key = slot
            if kind == "r":
                self._data.pop(key, None)
                self._ready.pop(key, None)
            else:
                self._counters.pop(key, None)

    # -- storage hooks -----------------------------------------------------------------
    def _get(self, key: str) -> bytes | None:
        raw = self._data.get(key)
        if raw is None:  # nothing to expire first: purging would not change the answer
            return None
        heap = self._heap
        if heap and heap[0][0] <= self.clock.now:  # something is due: only then take the lock
            self._purge()
            return self._data.get(key)
        return raw

    def _set(self, key: str, value: bytes) -> None:
        with self._cond:
            self._data[key] = value
            self._touch("r", key)
            if self._waiters:  # counted under the same lock, so no wake-up is lost
                self._cond.notify_all()

    def is_ready(self, task_id: str) -> bool:
        """Cheap readiness check the simulation polls between steps."""
        if not self._ready.get(task_id, False):
            return False
        heap = self._heap
        if heap and heap[0][0] <= self.clock.now:
            self._purge()
            return self._ready.get(task_id, False)
        return True

    def store_result(self, task_id: str, result: Any, state: str, *args: Any, **kwargs: Any) -> Any:
        meta = super().store_result(task_id, result, state, *args, **kwargs)
        self._ready[task_id] = meta.ready
        return meta

    def _delete(self, key: str) -> None:
        self._data.pop(key, None)
        self._ready.pop(key, None)
        self._deadlines.pop(("r", key), None)

    def _incr(self, key: str, by: int = 1) -> int:
        with self._cond:
            if self._heap:
                self._purge()
            value = self._counters.get(key, 0) + by
            self._counters[key] = value
            self._touch("c", key)
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
        if self._heap:
            self._purge()
        return len(self._data)
