"""Where a worker's due requests run: threads or child processes of one worker process.

The :class:`~simq.worker.Worker` receives, holds eta messages, buffers
batches and acknowledges, in one thread with one broker connection; it hands
each due request (or each batch) to its pool as a job and settles the
:class:`~simq.executor.Outcome` the pool reports. Without a pool (``solo``,
and the simulator) jobs run inline.

- :class:`ThreadPool`: ``size`` threads sharing the process's app, result
  backend and producer pool.
- :class:`ProcessPool`: ``size`` child processes, started with the ``spawn``
  method (nothing of the parent's connections or threads is inherited; the
  broker URL and its password travel over a pipe, never on a command line).
  Each child imports the app from its ``-A`` spec once, and runs one job at a
  time; a child that dies mid-job is replaced and its job reported lost. A
  child dies with its parent (Linux ``PR_SET_PDEATHSIG``, and an end-of-file
  on its pipe elsewhere), so a killed ``simq worker`` never leaves children behind.
  A child is also replaced after ``max_tasks_per_child`` jobs, or when it holds
  more than ``max_memory_per_child`` KiB after one (``simq.lifecycle``); the
  child's side is ``simq.pool_child``.

At a soft shutdown deadline :meth:`Pool.abandon` reports each running job
given back, once (:data:`GIVEN_BACK`), and runs nothing more.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import queue as queue_module
import signal
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from simq.exceptions import ConfigurationError
from simq.executor import Executor, Outcome
from simq.limits import TimeLimits, limits_for, raise_in_thread
from simq.pool_child import ChildSpec, child_main
from simq.revoke import Terminated

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

    from simq.worker import Request

__all__ = ["ChildSpec", "Pool", "ProcessPool", "ThreadPool"]

log = logging.getLogger("simq.pools")

Report = Callable[[Outcome], None]
# A job: ("task", request) or ("batch", (task, requests)), with whom to report to.
_Job = tuple[str, Any, "_Once", tuple["Request", ...]]


class Pool:
    """Runs jobs for one worker; ``free()`` says how many more it can start now."""

    size: int = 1
    if TYPE_CHECKING:  # what the pools below have, and shrink / _start_slot use
        _slots: _Slots
        _jobs: queue_module.SimpleQueue[_Job | None]
        _threads: list[threading.Thread]

        def _serve(self, index: int) -> None: ...

    def free(self) -> int:
        raise NotImplementedError

    def submit_task(self, request: Request, report: Report) -> None:
        raise NotImplementedError

    def submit_batch(self, task: Any, requests: Sequence[Request], report: Report) -> None:
        raise NotImplementedError

    def active(self) -> list[Request]:
        """The requests running right now, in no particular order."""
        raise NotImplementedError

    def terminate(self, request: Request, signum: int) -> str:
        """End ``request`` if it is running (``revoke(terminate=True)``); say what was done."""
        raise NotImplementedError

    def close(self, wait: bool = True) -> None:
        """Stop taking jobs; with ``wait``, let running ones finish first."""

    def grow(self, n: int) -> int:
        """Add ``n`` slots (``app.control.pool_grow``); the new size."""
        raise ConfigurationError(f"the {type(self).__name__} cannot grow")

    def shrink(self, n: int) -> int:
        """Take ``n`` slots away once they are idle, keeping one at least (``app.control.pool_shrink``); the new size.

        The next ``n`` slots to be idle each take a stop mark from the job queue and end
        (a processes pool's slot stops its child as it does).
        """
        n = min(n, self.size - 1)
        self._slots.resize(-n)
        self.size -= n
        for _ in range(n):
            self._jobs.put(None)
        return self.size

    def _start_slot(self, index: int, name: str) -> None:
        """Start the thread serving slot ``index``."""
        thread = threading.Thread(target=self._serve, args=(index,), name=f"{name}-{index + 1}", daemon=True)
        thread.start()
        self._threads.append(thread)

    def abandon(self) -> None:
        """A warm shutdown's deadline passed: report every running job as given back, and take no new ones.

        Each running job is reported once, as :data:`GIVEN_BACK` (the worker
        gives a late-ack message back to the broker); what the slot reports
        later is dropped; jobs submitted from now on are given back unrun.
        """
        raise NotImplementedError


#: How a job the pool gave up at a soft shutdown deadline is reported: transient, so a late ack is requeued.
GIVEN_BACK = Outcome(error="given back to the broker at the soft shutdown deadline", transient=True)


@attrs.define(eq=False)
class _Once:
    """Reports a job's outcome once: either the slot's own report, or the soft shutdown's :data:`GIVEN_BACK`."""

    report: Report
    _lock: threading.Lock = attrs.field(factory=threading.Lock)
    _done: bool = False

    def claim(self) -> bool:
        """True for the first caller only; that caller must report."""
        with self._lock:
            done, self._done = self._done, True
            return not done

    def __call__(self, outcome: Outcome) -> None:
        if self.claim():
            self.report(outcome)


@attrs.define(eq=False)
class _Slots:
    """Busy slots and the requests they run; shared by a pool's threads."""

    size: int
    _lock: threading.Lock = attrs.field(factory=threading.Lock)
    _busy: int = 0
    _running: dict[int, tuple[Request, ...]] = attrs.field(factory=dict)
    _reports: dict[int, _Once] = attrs.field(factory=dict)
    shedding: bool = False  # past a soft shutdown deadline: jobs are given back unrun

    def free(self) -> int:
        return self.size - self._busy

    def resize(self, by: int) -> None:
        with self._lock:
            self.size += by

    def taken(self) -> None:
        with self._lock:
            self._busy += 1

    def begin(self, slot: int, requests: tuple[Request, ...], report: _Once) -> bool:
        """Slot ``slot`` starts ``requests``; False (and it must not run them) past a soft shutdown deadline."""
        with self._lock:
            if self.shedding:
                return False
            self._running[slot] = requests
            self._reports[slot] = report
            return True

    def clear(self, slot: int) -> None:
        """Slot ``slot`` ended its job (it stays taken until :meth:`release`)."""
        with self._lock:
            self._running.pop(slot, None)
            self._reports.pop(slot, None)

    def release(self) -> None:
        with self._lock:
            self._busy -= 1

    def end(self, slot: int) -> None:
        self.clear(slot)
        self.release()

    def abandon(self) -> list[tuple[int, _Once]]:
        """Take no more jobs; the running slots whose report this call claimed."""
        with self._lock:
            self.shedding = True
            return [(slot, once) for slot, once in self._reports.items() if once.claim()]

    def active(self) -> list[Request]:
        with self._lock:
            return [request for requests in self._running.values() for request in requests]

    def busy_slots(self) -> list[int]:
        with self._lock:
            return list(self._running)

    def slot_of(self, task_id: str) -> int | None:
        with self._lock:
            for slot, requests in self._running.items():
                if any(r.id == task_id for r in requests):
                    return slot
            return None


@attrs.define(eq=False)
class ThreadPool(Pool):
    """``size`` threads running jobs with one shared :class:`Executor`."""

    executor: Executor
    size: int = 4
    _jobs: queue_module.SimpleQueue[_Job | None] = attrs.field(factory=queue_module.SimpleQueue, init=False)
    _slots: _Slots = attrs.field(init=False)
    _threads: list[threading.Thread] = attrs.field(factory=list, init=False)

    def __attrs_post_init__(self) -> None:
        self._slots = _Slots(self.size)
        for index in range(self.size):
            self._start_slot(index, "simq-pool")

    def free(self) -> int:
        return self._slots.free()

    def submit_task(self, request: Request, report: Report) -> None:
        self._slots.taken()
        self._jobs.put(("task", request, _Once(report), (request,)))

    def submit_batch(self, task: Any, requests: Sequence[Request], report: Report) -> None:
        self._slots.taken()
        self._jobs.put(("batch", (task, list(requests)), _Once(report), tuple(requests)))

    def grow(self, n: int) -> int:
        for _ in range(n):
            self._start_slot(len(self._threads), "simq-pool")
        self._slots.resize(n)
        self.size += n
        return self.size

    def abandon(self) -> None:
        """Report the running jobs given back; their threads run on (a thread cannot be stopped) and end with the process."""
        for _slot, once in self._slots.abandon():
            once.report(GIVEN_BACK)

    def active(self) -> list[Request]:
        return self._slots.active()

    def terminate(self, request: Request, signum: int) -> str:
        """A thread cannot be killed: :class:`~simq.revoke.Terminated` is raised in it at its next Python instruction."""
        slot = self._slots.slot_of(request.id)
        if slot is None:
            return "it had already ended"
        ident = self._threads[slot].ident
        if ident is not None:
            raise_in_thread(ident, Terminated)
        return (
            "Terminated raised in its pool thread (the threads pool cannot send a signal to one task; "
            "a call blocked in C code sees it when it returns)"
        )

    def _serve(self, index: int) -> None:
        executor = self.executor
        executor.app.set_current()  # contextvars do not follow a new thread
        while (job := self._jobs.get()) is not None:
            kind, payload, report, requests = job
            if not self._slots.begin(index, requests, report):
                self._slots.release()
                report(GIVEN_BACK)
                continue
            try:
                if kind == "task":
                    outcome = executor.run_task(payload)
                else:
                    task, batch = payload
                    outcome = task.execute_batch(executor, batch)
            except BaseException as exc:  # noqa: BLE001 - e.g. sys.exit() in a task: the job is lost, the slot lives
                log.error("pool thread %d: %s escaped a job; its task fails", index + 1, type(exc).__name__)
                outcome = Outcome(error=f"{type(exc).__name__} escaped the task: {exc}", lost=True)
            finally:
                self._slots.end(index)
                executor.end_job()
            report(outcome)
            if self._jobs.empty():
                executor.confirm_writes()  # going idle: nothing this slot wrote stays unconfirmed

    def close(self, wait: bool = True) -> None:
        for _ in self._threads:
            self._jobs.put(None)
        if wait:
            # A job given back at a soft shutdown deadline may still run in its thread: it is not
            # waited for (a thread cannot be stopped); it ends with the process.
            running = set(self._slots.busy_slots())
            for index, thread in enumerate(self._threads):
                thread.join(timeout=0 if index in running else None)


@attrs.define(eq=False)
class _Child:
    index: int
    process: Any
    conn: Connection
    ready: bool = False  # it built its app and said so; jobs go to it only then
    jobs: int = 0  # jobs it has run (worker_max_tasks_per_child)
    rss: int | None = None  # KiB resident after its last job, when the pool asked (worker_max_memory_per_child)


class PoolStartError(ConfigurationError):
    """A pool child could not build the app (its import failed, or it did not answer in time)."""


@attrs.define(eq=False)
class ProcessPool(Pool):
    """``size`` child processes, one job at a time each; a dead child is replaced."""

    spec: ChildSpec
    size: int = 4
    _jobs: queue_module.SimpleQueue[_Job | None] = attrs.field(factory=queue_module.SimpleQueue, init=False)
    _slots: _Slots = attrs.field(init=False)
    _children: list[_Child] = attrs.field(factory=list, init=False)
    _threads: list[threading.Thread] = attrs.field(factory=list, init=False)
    _context: Any = attrs.field(factory=lambda: multiprocessing.get_context("spawn"), init=False)
    _closing: bool = attrs.field(default=False, init=False)
    _terminated: set[int] = attrs.field(factory=set, init=False)  # slots whose child a revoke ended
    _abandoned: set[int] = attrs.field(factory=set, init=False)  # slots whose child a soft shutdown killed

    ready_timeout: float = 120.0
    #: Replace a child after it ran this many jobs (None: never).
    max_tasks_per_child: int | None = None
    #: Replace a child whose resident memory is over this many KiB after a job (None: never).
    max_memory_per_child: int | None = None

    def __attrs_post_init__(self) -> None:
        self._slots = _Slots(self.size)
        if self.max_memory_per_child is not None and not self.spec.report_memory:
            self.spec = attrs.evolve(self.spec, report_memory=True)
        self._children = [self._spawn(index) for index in range(self.size)]
        # The worker consumes only once every child can run a job: a message fetched before
        # that would wait in this process while other workers could run it, and an app the
        # children cannot import is a start-up error, not a crash loop at the first task.
        try:
            for child in self._children:
                self._await_ready(child, self.ready_timeout)
        except PoolStartError:
            self._closing = True
            for child in self._children:
                child.process.kill()
                child.process.join(timeout=5)
            raise
        for index in range(self.size):
            self._start_slot(index, "simq-child")

    @property
    def pids(self) -> list[int]:
        return [child.process.pid for child in self._children if child.process.is_alive()]

    def grow(self, n: int) -> int:
        """Start ``n`` children; each takes jobs once it built the app."""
        for _ in range(n):
            index = len(self._children)
            child = self._spawn(index)
            self._await_ready(child, self.ready_timeout)
            self._children.append(child)
            self._start_slot(index, "simq-child")
        self._slots.resize(n)
        self.size += n
        return self.size

    def _spawn(self, index: int) -> _Child:
        parent_end, child_end = self._context.Pipe(duplex=True)
        process = self._context.Process(
            target=child_main, args=(child_end, self.spec), name=f"simq-child-{index + 1}", daemon=True
        )
        process.start()
        child_end.close()
        return _Child(index, process, parent_end)

    def _await_ready(self, child: _Child, timeout: float) -> None:
        """Wait for ``child``'s word that it built the app; PoolStartError if it could not."""
        try:
            if not child.conn.poll(timeout):
                raise PoolStartError(f"pool child {child.index + 1} did not build the app within {timeout:g} s")
            word, detail = child.conn.recv()
        except (EOFError, OSError) as exc:
            child.process.join(timeout=5)
            raise PoolStartError(
                f"pool child {child.index + 1} exited while building the app (exit code {child.process.exitcode})"
            ) from exc
        if word != "ready":
            raise PoolStartError(f"pool child {child.index + 1} cannot build the app: {detail}")
        child.ready = True

    def free(self) -> int:
        return self._slots.free()

    def submit_task(self, request: Request, report: Report) -> None:
        self._slots.taken()
        self._jobs.put(("task", request, _Once(report), (request,)))

    def submit_batch(self, task: Any, requests: Sequence[Request], report: Report) -> None:
        self._slots.taken()
        self._jobs.put(("batch", (task, list(requests)), _Once(report), tuple(requests)))

    def abandon(self) -> None:
        """Kill the children still running a job (so no result comes after its message went back), then report."""
        claimed = self._slots.abandon()
        self._closing = True  # no replacement children from now on
        for slot, _once in claimed:
            self._abandoned.add(slot)
            process = self._children[slot].process
            process.kill()
            process.join(timeout=5)
        for _slot, once in claimed:
            once.report(GIVEN_BACK)

    def active(self) -> list[Request]:
        return self._slots.active()

    def terminate(self, request: Request, signum: int) -> str:
        """Signal the child running ``request``; it is replaced like any child that dies.

        Children ignore SIGTERM and SIGINT (a service manager's stop is a warm
        shutdown of the parent), so those ask the child to raise
        :class:`~simq.revoke.Terminated` in the task (SIGUSR1 is how); any other
        signal, SIGKILL included, is sent as it is.
        """
        slot = self._slots.slot_of(request.id)
        if slot is None:
            return "it had already ended"
        child = self._children[slot]
        sent = signal.SIGUSR1 if signum in (signal.SIGTERM, signal.SIGINT) else signum
        self._terminated.add(slot)
        try:
            os.kill(child.process.pid, sent)
        except ProcessLookupError:
            return "its child had already exited"
        return f"sent {signal.Signals(sent).name} to pool child {slot + 1} (pid {child.process.pid})"

    def _serve(self, index: int) -> None:
        while (job := self._jobs.get()) is not None:
            kind, payload, report, requests = job
            hard = None
            wire: Any
            if kind == "task":
                # worked out here, with this process's task options (app.control.time_limit changes them)
                limits = limits_for(payload, payload.task.app.conf) or TimeLimits()
                hard = limits.hard
                wire = ("task", (*payload.portable(), limits.soft, limits.hard))
            else:
                task, batch = payload
                wire = ("batch", (task.name, [r.portable() for r in batch]))
            if not self._slots.begin(index, requests, report):
                self._slots.release()
                report(GIVEN_BACK)
                continue
            try:
                outcome = self._run(index, wire, hard)
            finally:
                self._slots.clear(index)
            report(outcome)
            try:  # the slot stays taken while its child is replaced: no job waits for a child to start
                self._recycle_if_due(index)
            finally:
                self._slots.release()
        if not self._closing:  # pool_shrink: this slot ends, and its child with it
            child = self._children[index]
            with contextlib.suppress(OSError):
                child.conn.send(None)
            child.process.join(timeout=10)

    def _recycle_if_due(self, index: int) -> None:
        """Replace child ``index`` if it ran its ``max_tasks_per_child``th job or holds too much memory."""
        child = self._children[index]
        if not child.ready or self._closing:  # a replacement already (it died, or was killed at a limit)
            return
        child.jobs += 1
        if self.max_tasks_per_child is not None and child.jobs >= self.max_tasks_per_child:
            why = f"it ran {child.jobs} jobs (worker_max_tasks_per_child={self.max_tasks_per_child})"
        elif self.max_memory_per_child is not None and (child.rss or 0) > self.max_memory_per_child:
            why = f"it holds {child.rss} KiB after a job (worker_max_memory_per_child={self.max_memory_per_child} KiB)"
        else:
            return
        pid = child.process.pid
        with contextlib.suppress(OSError):
            child.conn.send(None)  # its loop ends and it exits cleanly, as after a warm shutdown
        child.process.join(timeout=10)
        if child.process.is_alive():
            log.warning("pool child %d (pid %s) did not exit when asked; killed", index + 1, pid)
            child.process.kill()
            child.process.join(timeout=5)
        child.conn.close()
        if self._closing:
            return
        fresh = self._spawn(index)
        try:
            self._await_ready(fresh, self.ready_timeout)
        except PoolStartError as exc:  # its first job tries again (and reports the job lost if it still cannot)
            log.error("pool child %d: its replacement could not start: %s", index + 1, exc)
        self._children[index] = fresh
        log.info("pool child %d (pid %s) replaced: %s; pid %s takes its place", index + 1, pid, why, fresh.process.pid)

    def _run(self, index: int, wire: Any, hard: float | None = None) -> Outcome:
        child = self._children[index]
        try:
            if not child.ready:  # a replacement child: its word comes first
                self._await_ready(child, self.ready_timeout)
            child.conn.send(wire)
            if hard is not None and not child.conn.poll(hard):
                return self._time_limit(index, hard)
            outcome: Outcome
            outcome, child.rss = child.conn.recv()
            if index in self._terminated:  # it raised Terminated and said so: counted as the revoke's
                self._terminated.discard(index)
                if outcome.terminated:
                    return outcome
            return outcome
        except (EOFError, OSError, PoolStartError) as exc:
            if index in self._abandoned:  # a soft shutdown killed it; its job was reported given back
                return GIVEN_BACK
            if index in self._terminated:
                self._terminated.discard(index)
                child.process.join(timeout=5)
                if not self._closing:
                    self._children[index] = self._spawn(index)
                log.warning("pool child %d ended by revoke(terminate=True); starting another", index + 1)
                return Outcome(error="terminated by revoke(terminate=True)", lost=True, terminated=True)
            child.process.join(timeout=5)
            code = child.process.exitcode
            how = f"killed by {signal.Signals(-code).name}" if code is not None and code < 0 else f"exit code {code}"
            log.error(
                "pool child %d (pid %s) died running a job (%s); starting another", index + 1, child.process.pid, how
            )
            if not self._closing:
                self._children[index] = self._spawn(index)
            return Outcome(error=f"the pool child process running it died ({how}): {type(exc).__name__}", lost=True)

    def _time_limit(self, index: int, hard: float) -> Outcome:
        """The job of child ``index`` ran past its hard time limit: kill the child, start another."""
        child = self._children[index]
        log.error(
            "pool child %d (pid %s) ran a task past its time_limit of %g s: killed; starting another",
            index + 1,
            child.process.pid,
            hard,
        )
        child.process.kill()
        child.process.join(timeout=5)
        child.conn.close()
        if not self._closing:
            self._children[index] = self._spawn(index)
        return Outcome(error=f"killed at its time_limit of {hard:g} s", lost=True, time_limit=hard)

    def close(self, wait: bool = True) -> None:
        self._closing = True
        for _ in self._threads:
            self._jobs.put(None)
        if wait:
            for thread in self._threads:
                thread.join()
        for child in self._children:
            with contextlib.suppress(OSError):
                child.conn.send(None)
        for child in self._children:
            child.process.join(timeout=10 if wait else 0.5)
            if child.process.is_alive():
                child.process.kill()
                child.process.join(timeout=5)
            child.conn.close()
