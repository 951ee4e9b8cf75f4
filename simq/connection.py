"""Broker connections for producers: a small pool per app, reused across sends."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

import attrs

from simq.exceptions import BrokerUnavailable
from simq.transport import Transport

__all__ = ["ProducerPool"]

T = TypeVar("T")


@attrs.define(eq=False)
class ProducerPool:
    """Keeps up to ``limit`` idle connections; makes a new one when none is free.

    A connection that failed is closed and dropped, never handed out again;
    one that died while idle in the pool (the broker closed it) is found out
    by the next send on it, which is then made once more on a fresh connection.
    """

    factory: Callable[[float | None], Transport]
    limit: int = 10
    _free: list[Transport] = attrs.field(factory=list, init=False)
    _lock: threading.Lock = attrs.field(factory=threading.Lock, init=False)

    def acquire(self, connect_timeout: float | None = None) -> Transport:
        return self._acquire(connect_timeout)[0]

    def _acquire(self, connect_timeout: float | None) -> tuple[Transport, bool]:
        """A connection, and whether it was reused from the pool (it may have died while idle)."""
        while True:
            with self._lock:
                if not self._free:
                    break
                transport = self._free.pop()
            if not getattr(transport, "closed", False):
                return transport, True
        return self.factory(connect_timeout), False

    def release(self, transport: Transport) -> None:
        with self._lock:
            if len(self._free) < self.limit and not getattr(transport, "closed", False):
                self._free.append(transport)
                return
        transport.close()

    @contextlib.contextmanager
    def connection(self, connect_timeout: float | None = None) -> Iterator[Transport]:
        """A pooled connection for the block: released after it, discarded if the block raised."""
        transport = self.acquire(connect_timeout)
        try:
            yield transport
        except BaseException:
            self.discard(transport)
            raise
        self.release(transport)

    def run(self, fn: Callable[[Transport], T], connect_timeout: float | None = None) -> T:
        """``fn(connection)`` on a pooled connection; once more on a fresh one if the pooled one was dead."""
        transport, reused = self._acquire(connect_timeout)
        try:
            result = fn(transport)
        except BrokerUnavailable:
            self.discard(transport)
            if not reused:
                raise
            # The broker closed it while it sat idle here: nothing went out on it.
            return self.run_fresh(fn, connect_timeout)
        except BaseException:
            self.discard(transport)
            raise
        self.release(transport)
        return result

    def run_fresh(self, fn: Callable[[Transport], T], connect_timeout: float | None = None) -> T:
        transport = self.factory(connect_timeout)
        try:
            result = fn(transport)
        except BaseException:
            self.discard(transport)
            raise
        self.release(transport)
        return result

    def discard(self, transport: Transport) -> None:
        """Drop a connection that failed; the next acquire makes a fresh one."""
        try:
            transport.close()
        except Exception:  # noqa: BLE001,S110 - it is broken already
            pass

    def close(self) -> None:
        with self._lock:
            free, self._free = self._free, []
        for transport in free:
            transport.close()
