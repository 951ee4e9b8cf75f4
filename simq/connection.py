"""Broker connections for producers: a small pool per app, reused across sends."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator

import attrs

from simq.transport import Transport

__all__ = ["ProducerPool"]


@attrs.define(eq=False)
class ProducerPool:
    """Keeps up to ``limit`` idle connections; makes a new one when none is free."""

    factory: Callable[[float | None], Transport]
    limit: int = 10
    _free: list[Transport] = attrs.field(factory=list, init=False)
    _lock: threading.Lock = attrs.field(factory=threading.Lock, init=False)

    def acquire(self, connect_timeout: float | None = None) -> Transport:
        with self._lock:
            if self._free:
                return self._free.pop()
        return self.factory(connect_timeout)

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
