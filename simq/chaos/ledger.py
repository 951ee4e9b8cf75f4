"""The execution ledger: what the tasks themselves say they did, kept in a Redis of the campaign's own.

Every campaign task writes a ``start`` event when its body begins and an
``end`` event (outcome ``ok``, ``fail`` or ``retry``, and the value it
computed) when its body is done, with the process id and parent process id
that ran it, to the stream ``simq-chaos:<run>:events``; a finished body
(``ok`` or ``fail``) also counts in the hash ``simq-chaos:<run>:done``. None
of this goes through simq: the checker trusts the ledger, not simq's result
backend, for "did it run, how often, with what". The ledger's connections are
named ``simq-chaos:<run>:ledger`` so that the nemesis never kills them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import attrs

from simq.clock import WallClock

__all__ = ["LEDGER_CLIENT_PREFIX", "Event", "Ledger"]

log = logging.getLogger("simq.chaos.ledger")

LEDGER_CLIENT_PREFIX = "simq-chaos:"
# A write waits out a broker stall or a lost connection, up to this long, before the task gives up.
WRITE_PATIENCE = 120.0

T = TypeVar("T")


@attrs.frozen
class Event:
    """One ledger entry: a task body starting, or ending with an outcome and a value."""

    kind: str  # "start" | "end"
    task_id: str
    retries: int
    pid: int
    ppid: int
    at: float
    redelivered: bool = False
    outcome: str = ""  # end only: "ok" | "fail" | "retry"
    value: Any = None

    def fields(self) -> dict[str, str]:
        return {
            "e": self.kind,
            "id": self.task_id,
            "r": str(self.retries),
            "pid": str(self.pid),
            "ppid": str(self.ppid),
            "t": repr(self.at),
            "rd": "1" if self.redelivered else "0",
            "o": self.outcome,
            "v": json.dumps(self.value),
        }

    @classmethod
    def from_fields(cls, raw: dict[bytes, bytes]) -> Event:
        f = {k.decode(): v.decode() for k, v in raw.items()}
        return cls(
            kind=f["e"],
            task_id=f["id"],
            retries=int(f["r"]),
            pid=int(f["pid"]),
            ppid=int(f["ppid"]),
            at=float(f["t"]),
            redelivered=f.get("rd") == "1",
            outcome=f.get("o", ""),
            value=json.loads(f.get("v", "null")),
        )


def plain_redis_url(url: str) -> str:
    """``url`` without its query (simq's ``namespace=`` and the like mean nothing to redis-py)."""
    return urlunsplit(urlsplit(url)._replace(query="", fragment=""))


@attrs.define(eq=False)
class Ledger:
    """One run's ledger on a Redis: ``connect(url, run)``, then ``record`` from tasks and ``events`` from the checker."""

    client: Any  # redis.Redis
    run: str
    _clock: WallClock = attrs.field(factory=WallClock)

    @classmethod
    def connect(cls, url: str, run: str) -> Ledger:
        import redis

        client = redis.Redis.from_url(
            plain_redis_url(url), client_name=f"{LEDGER_CLIENT_PREFIX}{run}:ledger", socket_connect_timeout=5
        )
        return cls(client, run)

    def key(self, name: str) -> str:
        return f"{LEDGER_CLIENT_PREFIX}{self.run}:{name}"

    def _patiently(self, what: str, fn: Callable[[], T]) -> T:
        import redis

        deadline = self._clock.monotonic() + WRITE_PATIENCE
        while True:
            try:
                return fn()
            except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError, redis.ResponseError) as exc:
                # BUSY (a stalled server), a killed connection, a restart: wait it out; the ledger must be complete
                if self._clock.monotonic() > deadline:
                    raise
                log.debug("ledger %s failed (%s); trying again", what, exc)
                self._clock.sleep(0.1)

    def record(self, event: Event) -> None:
        """Append ``event``; a finished body (``ok`` / ``fail``) also counts in the ``done`` hash."""

        def write() -> None:
            pipe = self.client.pipeline(transaction=True)
            pipe.xadd(self.key("events"), event.fields())
            if event.kind == "end" and event.outcome in ("ok", "fail"):
                pipe.hincrby(self.key("done"), event.task_id, 1)
            pipe.execute()

        self._patiently("write", write)

    def now(self) -> float:
        return self._clock.now

    def finished(self) -> int:
        """How many distinct task ids have finished a body (for the progress line)."""
        return int(self._patiently("read", lambda: self.client.hlen(self.key("done"))))

    def events(self) -> list[Event]:
        """Every event, in the order Redis appended them."""
        out: list[Event] = []
        start = "-"

        def read_page() -> list[Any]:
            return list(self.client.xrange(self.key("events"), min=start, count=5000))

        while True:
            page = self._patiently("read", read_page)
            if not page:
                return out
            out.extend(Event.from_fields(fields) for _, fields in page)
            start = "(" + page[-1][0].decode()

    def delete(self) -> None:
        self.client.delete(self.key("events"), self.key("done"))

    def close(self) -> None:
        self.client.close()
