"""Time limits: ``soft_time_limit`` raises inside the task, ``time_limit`` ends it.

A task's limits come from the call (``apply_async(time_limit=...,
soft_time_limit=...)``, carried as Celery's ``timelimit`` header ``[hard,
soft]``), else from the task's options, else from the app's
``task_time_limit`` / ``task_soft_time_limit``. How they are enforced depends
on where the body runs, and each way is the nearest honest thing its place
allows:

- **In a simulation** a task's ``time.sleep()`` spends virtual time (the
  :class:`~simq.clock.TimePatch` routes it here): the clock jumps, nothing
  really sleeps, and a sleep that crosses a limit stops at the limit and
  raises there. Time passes only by sleeping: a loop that never sleeps takes
  no virtual time, so no limit can stop it.
- **On a thread that owns the process's signals** (a ``solo`` worker, a
  ``processes`` pool child) a ``SIGALRM`` timer raises the exception, which
  also interrupts a blocking ``time.sleep()`` or socket wait.
- **In a ``threads`` pool** a watchdog thread raises the exception in the
  task's thread (``PyThreadState_SetAsyncExc``): it lands at the next Python
  instruction, so a call blocked in C code sees it only when that call returns.
- **A ``processes`` pool's parent** kills the child at the hard limit and
  starts another; that is the only way that always ends a task.

The hard limit is raised as :class:`HardTimeLimit`, a ``BaseException``, so
the task's own ``except Exception`` cannot swallow it; the executor stores
the failure as :class:`~simq.exceptions.TimeLimitExceeded`.
"""

from __future__ import annotations

import contextlib
import ctypes
import heapq
import itertools
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import attrs

from simq.exceptions import ConfigurationError, SoftTimeLimitExceeded

if TYPE_CHECKING:
    from simq.clock import Clock, VirtualClock
    from simq.request import Request

__all__ = [
    "HardTimeLimit",
    "TimeLimits",
    "Watchdog",
    "check_limit",
    "raise_in_thread",
    "limits_for",
    "timelimit_header",
    "virtual_sleep",
]

#: The header a call's own limits travel in (Celery's name and shape: ``[hard, soft]``).
HEADER = "timelimit"


class HardTimeLimit(BaseException):
    """Raised in a task at its ``time_limit``; a ``BaseException`` so ``except Exception`` lets it pass."""


def check_limit(value: Any, what: str) -> float | None:
    """``value`` as seconds (None, 0 and 0.0 mean no limit); refuses anything else, naming it."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value or value < 0:
        raise ConfigurationError(f"{what} must be a number of seconds (or None), got {value!r}")
    return float(value) or None


@attrs.frozen
class TimeLimits:
    """A task run's limits in seconds from its start; None is no limit."""

    soft: float | None = None
    hard: float | None = None


def timelimit_header(time_limit: Any, soft_time_limit: Any) -> list[float | None]:
    """The ``timelimit`` header for a call's own limits, checked."""
    return [check_limit(time_limit, "time_limit"), check_limit(soft_time_limit, "soft_time_limit")]


def limits_for(request: Request, conf: Mapping[str, Any]) -> TimeLimits | None:
    """The limits ``request`` runs under (call, then task, then app), or None when it has none."""
    task = request.task
    hard = task.time_limit
    soft = task.soft_time_limit
    header = request.message.headers.get(HEADER) if request.message.headers else None
    if header is not None:
        if not (isinstance(header, list | tuple) and len(header) == 2):
            raise ConfigurationError(f"header {HEADER!r} must be [hard, soft] seconds, got {header!r}")
        call_hard = check_limit(header[0], f"header {HEADER!r}[0]")
        call_soft = check_limit(header[1], f"header {HEADER!r}[1]")
        hard = call_hard if call_hard is not None else hard
        soft = call_soft if call_soft is not None else soft
    if hard is None:
        hard = conf.get("task_time_limit")
    if soft is None:
        soft = conf.get("task_soft_time_limit")
    if not hard and not soft:
        return None
    return TimeLimits(soft=float(soft) if soft else None, hard=float(hard) if hard else None)


# -- in a simulation: sleeping spends virtual time ---------------------------------------------

_REAL_SLEEP = time.sleep


@attrs.define(eq=False)
class _VirtualRun:
    """The task body running in this thread of a simulation: its clock and deadlines."""

    clock: VirtualClock
    soft: float | None
    hard: float | None
    soft_limit: float | None
    hard_limit: float | None


#: The simulated task body running in each thread, as ``running.run`` (None outside one): what
#: ``virtual_sleep`` reads. The executor sets and restores it around each body with two attribute
#: writes (no call per task); ``limited_run`` builds the state of a body with time limits.
running = threading.local()


def plain_run(clock: VirtualClock) -> _VirtualRun:
    """The state of a simulated task with no limits (one per executor, shared by its runs: it never changes)."""
    return _VirtualRun(clock, None, None, None, None)


def limited_run(plain: _VirtualRun, limits: TimeLimits) -> _VirtualRun:
    """The state of a simulated task body starting now under ``limits``: its ``time.sleep()`` moves the clock within them."""
    clock = plain.clock
    now = clock.now
    soft, hard = limits.soft, limits.hard
    return _VirtualRun(clock, None if soft is None else now + soft, None if hard is None else now + hard, soft, hard)


def _check_seconds(seconds: Any) -> None:
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise TypeError(f"sleep() takes a number of seconds, got {type(seconds).__name__}")
    if seconds < 0:
        raise ValueError("sleep length must be non-negative")


def virtual_sleep(seconds: float) -> None:
    """``time.sleep`` while a simulation runs (see :func:`patch_sleep`).

    Inside a simulated task: the clock jumps, within the task's limits. In the
    thread that entered the simulation, outside any task (a test's own polling
    loop): the simulation runs that much virtual time forward, so what the
    loop waits for happens. Any other thread: the real sleep.
    """
    run: _VirtualRun | None = getattr(running, "run", None)
    if run is None:
        driver = _drivers[-1] if _drivers else None
        if driver is None or driver[0] != threading.get_ident():
            _REAL_SLEEP(seconds)
            return
        _check_seconds(seconds)
        driver[1](seconds)
        return
    _check_seconds(seconds)
    clock = run.clock
    target = clock.now + seconds
    if run.soft is not None and target >= run.soft:
        clock.jump_to(max(run.soft, clock.now))
        run.soft = None  # raised once, as in production
        raise SoftTimeLimitExceeded(f"soft time limit ({run.soft_limit:g} s) exceeded")
    if run.hard is not None and target >= run.hard:
        clock.jump_to(max(run.hard, clock.now))
        raise HardTimeLimit(run.hard_limit)
    clock.jump_to(target)


# The simulations that patched ``time.sleep``, innermost last: (the thread that entered it, its advance).
_drivers: list[tuple[int, Callable[[float], Any]]] = []
_patch_lock = threading.Lock()
_unpatched: Callable[[float], None] = time.sleep


def patch_sleep(advance: Callable[[float], Any]) -> None:
    """Route ``time.sleep`` through :func:`virtual_sleep` while a simulation runs (nested ones nest).

    ``advance`` is the simulation's: the calling thread's own ``time.sleep``
    outside tasks runs it.
    """
    global _unpatched
    with _patch_lock:
        if not _drivers:
            _unpatched = time.sleep
        _drivers.append((threading.get_ident(), advance))
        time.sleep = virtual_sleep  # type: ignore[assignment]


def unpatch_sleep(advance: Callable[[float], Any]) -> None:
    """Undo :func:`patch_sleep` for ``advance``; the last one puts back what ``time.sleep`` was."""
    with _patch_lock:
        for index in range(len(_drivers) - 1, -1, -1):
            if _drivers[index][1] == advance:
                del _drivers[index]
                break
        if not _drivers:
            time.sleep = _unpatched  # type: ignore[assignment]


# -- in production -----------------------------------------------------------------------------------


def _soft_exception(limit: float) -> SoftTimeLimitExceeded:
    return SoftTimeLimitExceeded(f"soft time limit ({limit:g} s) exceeded")


_alarm_current: _AlarmRun | None = None  # the run the next SIGALRM is for (main thread only)


class _AlarmRun:
    """Limits on the thread that gets the process's signals: a ``SIGALRM`` timer raises in the task.

    An alarm that arrives after its run ended (it raced the body's end) finds
    another run, or none, current, and does nothing.
    """

    def __init__(self, limits: TimeLimits, clock: Clock) -> None:
        self.limits = limits
        self.clock = clock
        self.phase = "soft" if limits.soft is not None else "hard"
        self.previous: Any = None
        self.outer = 0.0  # an alarm somebody else had set (pytest-timeout does): set again on the way out
        self.began = 0.0

    def _on_alarm(self, _signum: int, _frame: Any) -> None:
        if _alarm_current is not self:
            return
        limits = self.limits
        if self.phase == "soft":
            assert limits.soft is not None
            if limits.hard is not None and limits.hard > limits.soft:
                self.phase = "hard"
                signal.setitimer(signal.ITIMER_REAL, limits.hard - limits.soft)
            else:
                self.phase = ""
            raise SoftTimeLimitExceeded(f"soft time limit ({limits.soft:g} s) exceeded")
        if self.phase == "hard":
            self.phase = ""
            raise HardTimeLimit(limits.hard)

    def __enter__(self) -> None:
        global _alarm_current
        limits = self.limits
        _alarm_current = self
        self.previous = signal.signal(signal.SIGALRM, self._on_alarm)
        first = limits.soft if self.phase == "soft" else limits.hard
        assert first is not None
        self.began = self.clock.now
        self.outer = signal.setitimer(signal.ITIMER_REAL, first)[0]

    def __exit__(self, *exc: object) -> None:
        global _alarm_current
        _alarm_current = None  # first: an alarm from here on is stale
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, self.previous)
        if self.outer > 0:
            left = self.outer - (self.clock.now - self.began)
            signal.setitimer(signal.ITIMER_REAL, max(left, 1e-6))


_set_async_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc
_set_async_exc.argtypes = (ctypes.c_ulong, ctypes.py_object)
_set_async_exc.restype = ctypes.c_int


def raise_in_thread(ident: int, exc_type: type[BaseException] | None) -> None:
    """Have thread ``ident`` raise ``exc_type`` at its next instruction (None clears what is pending)."""
    _set_async_exc(ident, ctypes.py_object() if exc_type is None else ctypes.py_object(exc_type))


@attrs.define(eq=False)
class _Watch:
    ident: int
    limits: TimeLimits
    done: bool = False
    fired: bool = False


@attrs.define(eq=False)
class Watchdog:
    """One thread that raises limit exceptions in the threads it watches, at their deadlines.

    Deadlines are read on ``clock`` (the wall clock in production); the
    watchdog thread starts at the first watch and waits on a condition, never
    polling. ``on_hard`` hears each hard limit it raised (the pool logs what a
    thread cannot be made to do).
    """

    clock: Clock
    on_hard: Callable[[TimeLimits], None] | None = None
    _cond: threading.Condition = attrs.field(factory=threading.Condition, init=False)
    _heap: list[tuple[float, int, str, _Watch]] = attrs.field(factory=list, init=False)
    _current: dict[int, _Watch] = attrs.field(factory=dict, init=False)
    _seq: Iterator[int] = attrs.field(factory=itertools.count, init=False)
    _thread: threading.Thread | None = attrs.field(default=None, init=False)

    def watching(self, limits: TimeLimits) -> _Watching:
        """A context that watches the calling thread while its block runs."""
        return _Watching(self, limits)

    def _start(self, limits: TimeLimits) -> _Watch:
        watch = _Watch(threading.get_ident(), limits)
        now = self.clock.now
        with self._cond:
            self._end_locked(watch.ident)
            self._current[watch.ident] = watch
            if limits.soft is not None:
                heapq.heappush(self._heap, (now + limits.soft, next(self._seq), "soft", watch))
            if limits.hard is not None:
                heapq.heappush(self._heap, (now + limits.hard, next(self._seq), "hard", watch))
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name="simq-time-limits", daemon=True)
                self._thread.start()
            self._cond.notify()
        return watch

    def _end_locked(self, ident: int) -> None:
        watch = self._current.pop(ident, None)
        if watch is not None:
            watch.done = True
            if watch.fired:
                raise_in_thread(ident, None)  # raised too late to matter: clear it, if still pending

    def forget(self, ident: int | None = None) -> None:
        """End whatever watch thread ``ident`` (default: this one) has; a pool calls it after each job."""
        with self._cond:
            self._end_locked(threading.get_ident() if ident is None else ident)

    def _serve(self) -> None:
        with self._cond:
            while True:
                while self._heap and self._heap[0][3].done:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._cond.wait()
                    continue
                deadline, _seq, kind, watch = self._heap[0]
                delay = deadline - self.clock.now
                if delay > 0:
                    self._cond.wait(delay)
                    continue
                heapq.heappop(self._heap)
                watch.fired = True
                raise_in_thread(watch.ident, SoftTimeLimitExceeded if kind == "soft" else HardTimeLimit)
                if kind == "hard" and self.on_hard is not None:
                    self.on_hard(watch.limits)


class _Watching:
    def __init__(self, watchdog: Watchdog, limits: TimeLimits) -> None:
        self.watchdog = watchdog
        self.limits = limits

    def __enter__(self) -> None:
        self.watchdog._start(self.limits)

    def __exit__(self, *exc: object) -> None:
        # An exception raised here, as the body ends, leaves the watch for forget() to end.
        self.watchdog.forget()


def enforcing(
    limits: TimeLimits, *, clock: Clock, hard: bool, watchdog: Callable[[], Watchdog]
) -> contextlib.AbstractContextManager[None] | None:
    """What a production task body runs in so that ``limits`` hold (see the module's text for how, where).

    ``hard=False`` leaves the hard limit to someone else (a processes pool's
    parent); None when nothing is left to enforce here.
    """
    if not hard and limits.hard is not None:
        if limits.soft is None:
            return None
        limits = attrs.evolve(limits, hard=None)
    if threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer"):
        return _AlarmRun(limits, clock)
    return watchdog().watching(limits)
