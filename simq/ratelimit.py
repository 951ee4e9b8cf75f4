"""Rate limits: Celery's ``rate_limit`` task option, kept per task type by each worker.

``@app.task(rate_limit="10/s")`` (or ``"100/m"``, ``"1000/h"``, or a number
meaning per second) lets one worker start at most that many of the task's
requests; ``task_default_rate_limit`` applies to tasks that set none, and
``worker_disable_rate_limits`` turns them all off. As in Celery, each worker
counts for itself (a worker with a ``processes`` pool counts in the parent, so
its children share the limit), and a request over the limit is not refused:
the worker holds it, in arrival order per task type, until a token is there.

This module holds the maths (:class:`TokenBucket`, on whatever clock reads
``now``) and one worker's table of buckets (:class:`RateLimits`); the worker
holds the waiting requests with its eta holds (``simq.worker``).
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any

from simq.exceptions import ConfigurationError, NotRegistered

if TYPE_CHECKING:
    from simq.app import App

__all__ = ["Rate", "RateLimits", "TokenBucket", "parse_rate"]

#: A rate limit as written: ``"10/s"``, ``"100/m"``, ``"1000/h"``, tasks per second, or None (no limit).
Rate = str | float | None

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}
_RATE = re.compile(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(?:/\s*([smh]))?\s*")


def parse_rate(value: Any, what: str = "rate_limit") -> float | None:
    """Celery's rate syntax to tasks per second: ``"10/s"``, ``"100/m"``, ``"1000/h"``, or a number per second.

    None and 0 (``"0"``, ``"0/m"``) mean no limit and give None. Anything else
    is refused with a ConfigurationError naming ``what`` and the value, so a
    typo fails where it is written, not in a worker later.
    """
    if value is None:
        return None
    if isinstance(value, str):
        match = _RATE.fullmatch(value)
        if match is not None:
            per_second = float(match.group(1)) / _UNITS[match.group(2) or "s"]
            if math.isfinite(per_second):
                return per_second or None
    elif isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value >= 0:
        return float(value) or None
    raise ConfigurationError(
        f"{what}: {value!r} is not a rate; write '10/s', '100/m', '1000/h' or a number of tasks per second "
        "(None or 0: no limit)"
    )


class TokenBucket:
    """A token bucket: ``rate`` tokens a second, up to ``capacity``; each request takes one.

    The bucket is kept as the time it will be full again (``full_at``), which is
    the same bucket as a token count refilled on every read, without adding up
    rounding errors: at 6/m, requests start exactly 10 s apart on a virtual clock.
    A request that finds the bucket empty reserves the next token (the count goes
    below zero), so requests waiting for the same bucket are served in the order
    they asked. ``now`` is always handed in: the bucket has no clock of its own.
    """

    __slots__ = ("capacity", "full_at", "interval", "rate")

    def __init__(self, rate: float, capacity: float = 1.0) -> None:
        if not rate > 0 or not capacity >= 1:
            raise ConfigurationError(f"a token bucket needs rate > 0 and capacity >= 1, got {rate!r}, {capacity!r}")
        self.rate = float(rate)
        self.capacity = float(capacity)
        self.interval = 1.0 / self.rate
        self.full_at = -math.inf

    def tokens(self, now: float) -> float:
        """Tokens in the bucket at ``now``; below zero when requests have reserved tokens still to come."""
        return self.capacity - max(0.0, self.full_at - now) / self.interval

    def reserve(self, now: float) -> float:
        """Take one token; return when it is there: ``now`` if the bucket had one, else when it refills."""
        full_at = self.full_at
        self.full_at = max(full_at, now) + self.interval
        return max(now, full_at - (self.capacity - 1.0) * self.interval)

    def expected_time(self, now: float) -> float:
        """Seconds from ``now`` until a token is there (0 if one is), without taking it."""
        return max(0.0, self.full_at - (self.capacity - 1.0) * self.interval - now)

    def __repr__(self) -> str:
        return f"<TokenBucket {self.rate:g}/s capacity={self.capacity:g}>"


class RateLimits(dict[str, TokenBucket | None]):
    """One worker's rate limits: task name -> its bucket, or None where the task has no limit.

    A name is looked up when its first request arrives (tasks may be defined
    after the worker started) and kept, so a task without a limit costs one
    dict lookup per request. ``held`` maps the worker's hold numbers of the
    requests a limit holds back to their task names.
    """

    def __init__(self, app: App) -> None:
        super().__init__()
        self._app = app
        self._set: dict[str, Rate] = {}  # limits changed at run time (set_rate_limit), by task name
        self.held: dict[int, str] = {}

    def __missing__(self, name: str) -> TokenBucket | None:
        conf = self._app.conf
        rate = None if conf.get("worker_disable_rate_limits") else parse_rate(self.limit(name))
        bucket = self[name] = TokenBucket(rate) if rate is not None else None
        return bucket

    def limit(self, name: str) -> Rate:
        """The limit this worker keeps for task ``name``, as written: set at run time, the task's, or the default."""
        if name in self._set:
            return self._set[name]
        task = self._app.tasks.get(name)
        own = getattr(task, "rate_limit", None)
        limit: Rate = own if own is not None else self._app.conf.get("task_default_rate_limit")
        return limit

    def change(self, name: str, value: Rate, hostname: str) -> tuple[Rate, list[int]]:
        """Make ``value`` task ``name``'s limit from now on (a fresh bucket).

        Returns the old limit, as written, and the hold numbers of the requests
        the old one held back (in arrival order), which are no longer in ``held``:
        the worker holds them again under the new limit.
        """
        if name not in self._app.tasks:
            raise NotRegistered(f"task {name!r} is not registered on {hostname}: it has no rate limit to change")
        parse_rate(value, f"rate limit of task {name!r}")
        old = self.limit(name)
        self._set[name] = value
        self.pop(name, None)
        seqs = [seq for seq, task in self.held.items() if task == name]
        for seq in seqs:
            del self.held[seq]
        return old, seqs

    def reserve(self, name: str, now: float) -> float | None:
        """Take a token for a request of ``name``: None if it may go now, else when it may."""
        bucket = self[name]
        if bucket is None:
            return None
        at = bucket.reserve(now)
        return at if at > now else None
