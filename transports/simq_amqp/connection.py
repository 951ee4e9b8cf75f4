"""py-amqp's connection on a TCP transport that reads ahead and can cork publishes."""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Iterator
from typing import Any

import amqp
import amqp.transport

__all__ = ["Connection"]

_READ_AHEAD = 65536


class _ReadAheadTCPTransport(amqp.transport.TCPTransport):
    """py-amqp's TCP transport, reading ahead instead of one ``recv`` per frame part.

    py-amqp asks the socket for exactly the bytes it needs next (a frame
    header, then its payload, then the frame end), so a delivered message,
    three frames, costs six to nine ``recv`` calls. This asks for up to 64 KiB
    and keeps the rest in the same buffer py-amqp already has; frames are only
    ever read through ``_read``, so a frame waiting in the buffer is read
    before the socket is asked again.
    """

    def _read(self, n: int, initial: bool = False, _errnos: tuple[int, ...] = (errno.EAGAIN, errno.EINTR)) -> bytes:
        rbuf = self._read_buffer
        recv = self._quick_recv
        try:
            while len(rbuf) < n:
                try:
                    s = recv(max(n - len(rbuf), _READ_AHEAD))
                except OSError as exc:
                    if exc.errno in _errnos:
                        if initial and self.raise_on_initial_eintr:
                            raise TimeoutError from exc
                        continue
                    raise
                if not s:
                    raise OSError("Server unexpectedly closed connection")
                rbuf += s
        except BaseException:
            self._read_buffer = rbuf
            raise
        result, self._read_buffer = rbuf[:n], rbuf[n:]
        return result

    _cork: list[bytes] | None = None

    def write(self, s: Any) -> None:
        if self._cork is not None:
            self._cork.append(bytes(s))  # py-amqp hands over a view of a buffer it reuses
            return
        super().write(s)

    @contextlib.contextmanager
    def corked(self) -> Iterator[None]:
        """Frames written inside go out together, in one ``sendall``, on exit (publishes only: no replies)."""
        self._cork = []
        try:
            yield
        finally:
            data, self._cork = b"".join(self._cork), None
            if data:
                super().write(data)


class Connection(amqp.Connection):  # type: ignore[misc]
    """An ``amqp.Connection`` on the read-ahead transport (plain TCP; TLS keeps py-amqp's own)."""

    def Transport(  # noqa: N802 - py-amqp's name
        self,
        host: str,
        connect_timeout: float | None,
        ssl: Any = False,
        read_timeout: float | None = None,
        write_timeout: float | None = None,
        **kwargs: Any,
    ) -> Any:
        if ssl:
            return super().Transport(host, connect_timeout, ssl, read_timeout, write_timeout, **kwargs)
        return _ReadAheadTCPTransport(
            host, connect_timeout=connect_timeout, read_timeout=read_timeout, write_timeout=write_timeout, **kwargs
        )
