"""Time as an object you are handed.

Everything in simq that reads time or waits does it through a ``Clock``.
``WallClock`` is the real one; ``VirtualClock`` holds ``now`` and a heap of
timers and only moves when told to (the simulation jumps it to the next timer
when nothing else can happen). ``TimePatch`` makes the process-wide time
(``time.time``, ``datetime.now``) follow a virtual clock while a simulation
runs, so task bodies see the virtual time too. This is the only module of
simq allowed to read the real time.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import attrs

from simq.exceptions import ConfigurationError

__all__ = ["Clock", "EagerClock", "TimePatch", "Timer", "VirtualClock", "WallClock", "to_timestamp"]


@attrs.define(eq=False, slots=True)
class Timer:
    """A callback due at ``when``; ``cancel()`` stops it from firing."""

    when: float
    seq: int
    callback: Callable[[], Any] | None

    def cancel(self) -> None:
        self.callback = None

    @property
    def cancelled(self) -> bool:
        return self.callback is None

    def __lt__(self, other: Timer) -> bool:
        return (self.when, self.seq) < (other.when, other.seq)


class Clock(Protocol):
    """What simq needs of time: read it, and call something later."""

    @property
    def now(self) -> float:
        """Seconds since the epoch, as this clock sees them."""

    def call_at(self, when: float, callback: Callable[[], Any]) -> Timer:
        """Run ``callback`` once the clock reaches ``when``."""

    def run_due(self) -> int:
        """Fire every timer that is due; return how many fired."""

    def next_deadline(self) -> float | None:
        """When the earliest live timer is due, or None."""


@attrs.define(eq=False)
class _TimerHeap:
    """Timers ordered by (when, sequence): ties fire in the order they were set.

    The heap holds ``(when, seq, timer)`` tuples so that ordering is compared
    in C; ``seq`` is unique, so two entries never fall through to the timer.
    """

    _heap: list[tuple[float, int, Timer]] = attrs.field(factory=list)
    _seq: itertools.count[int] = attrs.field(factory=itertools.count)

    def push(self, when: float, callback: Callable[[], Any]) -> Timer:
        seq = next(self._seq)
        timer = Timer(when, seq, callback)
        heapq.heappush(self._heap, (when, seq, timer))
        return timer

    def peek(self) -> float | None:
        heap = self._heap
        while heap and heap[0][2].callback is None:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def pop_due(self, now: float) -> Callable[[], Any] | None:
        heap = self._heap
        while heap and heap[0][0] <= now:
            callback = heapq.heappop(heap)[2].callback
            if callback is not None:
                return callback
        return None

    def __len__(self) -> int:
        return sum(1 for entry in self._heap if entry[2].callback is not None)


@attrs.define(eq=False)
class WallClock:
    """The real time, for production workers."""

    _timers: _TimerHeap = attrs.field(factory=_TimerHeap, init=False)

    @property
    def now(self) -> float:
        return time.time()

    def call_at(self, when: float, callback: Callable[[], Any]) -> Timer:
        return self._timers.push(when, callback)

    def call_later(self, delay: float, callback: Callable[[], Any]) -> Timer:
        return self._timers.push(self.now + delay, callback)

    def next_deadline(self) -> float | None:
        return self._timers.peek()

    def run_due(self) -> int:
        fired = 0
        now = self.now
        while (callback := self._timers.pop_due(now)) is not None:
            callback()
            fired += 1
        return fired

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)

    def monotonic(self) -> float:
        return time.monotonic()


# 2026-01-01T00:00:00Z: a fixed start, so that traces do not depend on the day.
DEFAULT_START = 1767225600.0


@attrs.define(eq=False)
class VirtualClock:
    """A clock that moves only when told to: by ``advance`` or by jumping to a timer.

    It never goes backwards. ``on_move`` callbacks hear every move (the
    ``TimePatch`` uses this to move the process-wide time along).
    """

    start: float = DEFAULT_START
    _now: float = attrs.field(init=False)
    _timers: _TimerHeap = attrs.field(factory=_TimerHeap, init=False)
    on_move: list[Callable[[float], Any]] = attrs.field(factory=list, init=False)

    def __attrs_post_init__(self) -> None:
        self._now = self.start

    @property
    def now(self) -> float:
        return self._now

    def call_at(self, when: float, callback: Callable[[], Any]) -> Timer:
        return self._timers.push(when, callback)

    def call_later(self, delay: float, callback: Callable[[], Any]) -> Timer:
        return self._timers.push(self._now + delay, callback)

    def next_deadline(self) -> float | None:
        return self._timers.peek()

    def pending_timers(self) -> int:
        return len(self._timers)

    def run_due(self) -> int:
        fired = 0
        while (callback := self._timers.pop_due(self._now)) is not None:
            callback()
            fired += 1
        return fired

    def jump_to(self, when: float) -> None:
        """Move to ``when`` (never backwards) without firing timers."""
        if when < self._now:
            raise ValueError(f"a virtual clock never goes backwards: now={self._now}, asked {when}")
        if when != self._now:
            self._now = when
            for listener in self.on_move:
                listener(when)

    def advance(self, seconds: float) -> int:
        """Move ``seconds`` forward, firing every timer due on the way, in order."""
        if seconds < 0:
            raise ValueError(f"advance() takes seconds >= 0, got {seconds}")
        target = self._now + seconds
        fired = 0
        while (deadline := self._timers.peek()) is not None and deadline <= target:
            self.jump_to(max(deadline, self._now))
            fired += self.run_due()
        self.jump_to(target)
        return fired + self.run_due()

    def jump_to_next(self) -> bool:
        """Jump to the next timer and fire what is due there; False if none is left."""
        deadline = self._timers.peek()
        if deadline is None:
            return False
        self.jump_to(max(deadline, self._now))
        self.run_due()
        return True

    def sleep(self, seconds: float) -> None:
        self.advance(seconds)

    def monotonic(self) -> float:
        return self._now


@attrs.define(eq=False)
class EagerClock(VirtualClock):
    """The wall clock plus an offset that only grows: eager mode's clock.

    While nothing has been jumped over it reads the real time; each jump over
    a timer (a countdown, a retry) adds to the offset, so eager sends finish
    at once and still see time pass as production would.
    """

    wall: WallClock = attrs.field(factory=WallClock)
    offset: float = 0.0

    def __attrs_post_init__(self) -> None:
        self._now = self.start

    @property
    def now(self) -> float:
        return self.wall.now + self.offset

    def jump_to(self, when: float) -> None:
        now = self.now
        if when > now:
            self.offset += when - now
            for listener in self.on_move:
                listener(when)

    def advance(self, seconds: float) -> int:
        if seconds < 0:
            raise ValueError(f"advance() takes seconds >= 0, got {seconds}")
        target = self.now + seconds
        fired = 0
        while (deadline := self._timers.peek()) is not None and deadline <= target:
            self.jump_to(deadline)
            fired += self.run_due()
        self.jump_to(target)
        return fired + self.run_due()

    def jump_to_next(self) -> bool:
        deadline = self._timers.peek()
        if deadline is None:
            return False
        self.jump_to(deadline)
        self.run_due()
        return True

    def run_due(self) -> int:
        fired = 0
        while (callback := self._timers.pop_due(self.now)) is not None:
            callback()
            fired += 1
        return fired


def _utc_naive(ts: float) -> datetime:
    # Round up to the microsecond: a task must never see a time before the
    # timer that woke it.
    micros = -(-round(ts * 1e7) // 10)
    return _EPOCH + timedelta(microseconds=micros)


_EPOCH = datetime(1970, 1, 1)


# Modules that must keep the real time while a simulation runs: Hypothesis
# measures its deadlines with it (freezegun adds its own defaults, pytest included).
_REAL_TIME_MODULES = ("hypothesis.", "threading", "queue")


@attrs.define(eq=False)
class TimePatch:
    """Makes ``time.time()`` and ``datetime.now()`` follow a ``VirtualClock``.

    freezegun is started once (it scans every loaded module, which costs
    milliseconds) and then moved along with the clock, which is cheap.
    """

    clock: VirtualClock
    tick: bool = False
    _freezer: Any = attrs.field(default=None, init=False)
    _frozen: Any = attrs.field(default=None, init=False)
    _settable: bool = attrs.field(default=False, init=False)

    def start(self) -> None:
        if self._frozen is not None:
            return
        from freezegun import freeze_time

        self._freezer = freeze_time(_utc_naive(self.clock.now), tick=self.tick, ignore=list(_REAL_TIME_MODULES))
        self._frozen = self._freezer.start()
        self._settable = type(self._frozen).__name__ == "FrozenDateTimeFactory" and hasattr(
            self._frozen, "time_to_freeze"
        )
        self.clock.on_move.append(self._move)

    def _move(self, when: float) -> None:
        frozen = self._frozen
        if frozen is None:
            return
        if self._settable:
            # What move_to() ends with for a non-ticking factory, without its
            # parsing and its numbers.Real checks: one timer jump pays this.
            frozen.time_to_freeze = _utc_naive(when)
        else:
            frozen.move_to(_utc_naive(when))

    def stop(self) -> None:
        if self._frozen is None:
            return
        self.clock.on_move.remove(self._move)
        self._freezer.stop()
        self._frozen = None
        self._freezer = None

    @property
    def active(self) -> bool:
        return self._frozen is not None

    def __enter__(self) -> TimePatch:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def to_timestamp(value: datetime | float | int, tz: Any = None) -> float:
    """A datetime (naive ones are in ``tz``, UTC by default) or epoch seconds, as epoch seconds."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=tz or UTC)
        return value.timestamp()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigurationError(f"eta must be a datetime or epoch seconds, got {value!r}")
    return float(value)
