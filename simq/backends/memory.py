"""The in-memory result backend: a dict owned by one app or simulation."""

from __future__ import annotations

import threading
from typing import Any

import attrs

from simq.backends.base import Backend

__all__ = ["MemoryBackend"]


@attrs.define(eq=False)
class MemoryBackend(Backend):
    """Results in a dict; waiting uses a condition variable (only useful with threads)."""

    _data: dict[str, bytes] = attrs.field(factory=dict, init=False)
    _counters: dict[str, int] = attrs.field(factory=dict, init=False)
    _cond: threading.Condition = attrs.field(factory=threading.Condition, init=False)

    _ready: dict[str, bool] = attrs.field(factory=dict, init=False)
    _waiters: int = attrs.field(default=0, init=False)

    def _get(self, key: str) -> bytes | None:
        return self._data.get(key)

    def _set(self, key: str, value: bytes) -> None:
        with self._cond:
            self._data[key] = value
            if self._waiters:  # counted under the same lock, so no wake-up is lost
                self._cond.notify_all()

    def is_ready(self, task_id: str) -> bool:
        """Cheap readiness check the simulation polls between steps."""
        return self._ready.get(task_id, False)

    def store_result(self, task_id: str, result: Any, state: str, *args: Any, **kwargs: Any) -> Any:
        meta = super().store_result(task_id, result, state, *args, **kwargs)
        self._ready[task_id] = meta.ready
        return meta

    def _delete(self, key: str) -> None:
        self._data.pop(key, None)
        self._ready.pop(key, None)

    def _incr(self, key: str, by: int = 1) -> int:
        with self._cond:
            value = self._counters.get(key, 0) + by
            self._counters[key] = value
            return value

    def _wait(self, key: str, timeout: float | None) -> bytes | None:
        clock: Any = self.clock
        deadline = None if timeout is None else clock.now + timeout
        with self._cond:
            while True:
                raw = self._data.get(key)
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
        return len(self._data)
