"""Batches: a task that buffers its requests and runs them as one list.

``@app.task(base=Batches, flush_every=100, flush_interval=10)`` makes a task
whose body receives a list of :class:`SimpleRequest`. Each worker (one per
worker process, whatever its pool) keeps one buffer per batch task; the
buffer runs when it holds ``flush_every`` requests, ``flush_interval`` seconds
(on the worker's clock) after its first request arrived, or when the worker
shuts down; the flushed batch runs in one slot of the worker's pool. Messages are acknowledged only
after their batch ran, so a worker that dies first loses nothing.
"""

from __future__ import annotations

import logging
import traceback as tb_module
import weakref
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from simq import states
from simq.exceptions import BrokerUnavailable, ConfigurationError, SimqError
from simq.executor import Outcome
from simq.task import Task

if TYPE_CHECKING:
    from simq.backends.base import Backend
    from simq.clock import Timer
    from simq.executor import Executor
    from simq.result import EagerResult
    from simq.worker import Request, Worker

log = logging.getLogger("simq.worker")

__all__ = ["BatchError", "Batches", "SimpleRequest"]


class BatchError(SimqError, ValueError):
    """A batch body did something a batch cannot allow (e.g. marking a foreign id done)."""


@attrs.frozen
class SimpleRequest:
    """A pickleable view of one request in a batch."""

    id: str
    name: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = attrs.field(factory=dict)
    delivery_info: dict[str, Any] | None = None
    hostname: str | None = None

    @classmethod
    def from_request(cls, request: Request) -> SimpleRequest:
        return cls(
            id=request.id,
            name=request.name,
            args=tuple(request.args),
            kwargs=dict(request.kwargs),
            delivery_info=request.delivery_info,
            hostname=request.hostname,
        )


@attrs.define(eq=False)
class _Buffer:
    """What one worker holds for one batch task."""

    requests: list[Request] = attrs.field(factory=list)
    first_arrival: float | None = None
    timer: Timer | None = None
    checked: bool = False


@attrs.define(eq=False)
class _Guard:
    """Installed on the backend while a batch body runs: only ids of the batch may be marked."""

    ids: dict[str, Request]
    task_name: str
    marked: dict[str, Any] = attrs.field(factory=dict)

    def __call__(self, task_id: str, result: Any) -> None:
        if task_id not in self.ids:
            raise BatchError(
                f"mark_as_done({task_id!r}) inside batch task {self.task_name!r}: that id is not in the running "
                f"batch of {len(self.ids)} request(s); mark only request.id of the requests the body received"
            )
        self.marked[task_id] = result


class Batches(Task):
    """Base class for batch tasks; the body gets ``list[SimpleRequest]``.

    Results: ``app.backend.mark_as_done(request.id, value)`` sets one request's
    result. Requests the body did not mark end SUCCESS with ``None``, or, if the
    body returns a list with exactly one value per request, with those values in
    order. If the body raises, every unmarked request ends FAILURE with that
    exception.
    """

    flush_every: int = 10
    flush_interval: float = 30

    @classmethod
    def validate_options(cls) -> None:
        every, interval = cls.flush_every, cls.flush_interval
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ConfigurationError(
                f"batch task {cls.name!r}: flush_every must be an integer >= 1, got {every!r}; "
                "set flush_every=10 (the default) or another positive count"
            )
        if isinstance(interval, bool) or not isinstance(interval, int | float) or not interval > 0:
            raise ConfigurationError(
                f"batch task {cls.name!r}: flush_interval must be a number of seconds > 0, got {interval!r}; "
                "set flush_interval=30 (the default) or another positive duration"
            )
        if cls.time_limit or cls.soft_time_limit:
            raise ConfigurationError(
                f"batch task {cls.name!r}: time_limit and soft_time_limit are not supported on Batches tasks "
                "(a flush runs many requests at once); bound the work inside the flush function instead"
            )

    def apply(
        self, args: Sequence[Any] | None = None, kwargs: Mapping[str, Any] | None = None, **options: Any
    ) -> EagerResult:
        """Run the body here on a batch of one request, ``body([SimpleRequest])``, as celery-batches does.

        The request's result is what the body marks for it, else the single
        value of a one-item list it returns, else None; FAILURE if it raises.
        """
        from simq.result import EagerResult
        from simq.task import Context

        unknown = sorted(k for k in options if k != "task_id")
        if unknown:
            raise ConfigurationError(f"batch task {self.name!r}: apply() takes only task_id=, got {unknown[0]!r}")
        app = self.app
        task_id = options.get("task_id") or app.new_id()
        simple = SimpleRequest(id=task_id, name=self.name, args=tuple(args or ()), kwargs=dict(kwargs or {}))
        guard = _Guard({task_id: simple}, self.name)  # type: ignore[dict-item]
        backend = app.backend
        previous_guard = backend.mark_guard
        backend.mark_guard = guard
        self.push_request(Context(id=task_id, task=self.name, called_directly=False, is_eager=True))
        try:
            retval = self.run([simple])
        except Exception as exc:  # noqa: BLE001 - stored, as a worker would
            if task_id not in guard.marked:
                backend.mark_as_failure(task_id, exc, tb_module.format_exc())
        else:
            if task_id not in guard.marked:
                value = retval[0] if isinstance(retval, list) and len(retval) == 1 else None
                backend.store_result(task_id, value, states.SUCCESS, name=self.name)
        finally:
            self.pop_request()
            backend.mark_guard = previous_guard
        meta = backend.get_meta(task_id)
        return EagerResult(task_id, meta.result, meta.state, meta.traceback, app, name=self.name)

    # -- per-worker buffers ----------------------------------------------------------------
    def _buffer(self, worker: Worker) -> _Buffer:
        buffers = self.__dict__.get("_buffers")
        if buffers is None:
            buffers = self.__dict__["_buffers"] = weakref.WeakKeyDictionary()
        buf = buffers.get(worker)
        if buf is None:
            buf = buffers[worker] = _Buffer()
        return buf

    def buffered(self, worker: Worker) -> int:
        """How many requests ``worker`` holds for this task right now."""
        buffers = self.__dict__.get("_buffers")
        buf = buffers.get(worker) if buffers is not None else None
        return len(buf.requests) if buf is not None else 0

    # -- worker hooks --------------------------------------------------------------------------
    def check_worker(self, worker: Worker) -> None:
        if _eager(worker):
            return
        prefetch = worker.prefetch
        if prefetch and prefetch < self.flush_every:
            raise ConfigurationError(
                f"batch task {self.name!r} has flush_every={self.flush_every} but worker {worker.hostname!r} "
                f"prefetches at most {prefetch} message(s) (concurrency={worker.concurrency} x "
                f"prefetch_multiplier={worker.prefetch_multiplier}), so a batch could never fill; set "
                f"worker_prefetch_multiplier so that concurrency x multiplier >= {self.flush_every}, "
                "or 0 for unlimited, or lower flush_every"
            )

    def handle(self, worker: Worker, request: Request) -> None:
        if _eager(worker):
            self._flush(worker, [request])
            return
        buf = self._buffer(worker)
        if not buf.checked:
            # Tasks defined after the worker started were not checked at start.
            self.check_worker(worker)
            buf.checked = True
        message = request.message
        now = worker.clock.now
        if message.expires is not None and now >= message.expires:
            worker.execute(request)  # the worker's own expiry path: REVOKED, acked
            return
        buf.requests.append(request)
        if buf.first_arrival is None:
            buf.first_arrival = now
            buf.timer = worker.clock.call_at(now + float(self.flush_interval), lambda: self._on_timer(worker))
        if len(buf.requests) >= self.flush_every:
            self._flush_buffer(worker, buf)

    def on_worker_shutdown(self, worker: Worker) -> None:
        buffers = self.__dict__.get("_buffers")
        buf = buffers.get(worker) if buffers is not None else None
        if buf is not None and buf.requests:
            self._flush_buffer(worker, buf)

    def _on_timer(self, worker: Worker) -> None:
        buf = self._buffer(worker)
        buf.timer = None
        if worker.crashed:
            # The worker died (a graceful stop cancels this timer after flushing):
            # its unacknowledged messages are back at the broker; forget them here.
            buf.requests.clear()
            buf.first_arrival = None
            return
        if buf.requests:
            self._flush_buffer(worker, buf)

    def _flush_buffer(self, worker: Worker, buf: _Buffer) -> None:
        if buf.timer is not None:
            buf.timer.cancel()
            buf.timer = None
        requests = buf.requests[: self.flush_every]
        del buf.requests[: self.flush_every]
        buf.first_arrival = None
        if buf.requests:  # cannot happen with handle() flushing at flush_every, kept for safety
            buf.first_arrival = worker.clock.now
            buf.timer = worker.clock.call_at(
                worker.clock.now + float(self.flush_interval), lambda: self._on_timer(worker)
            )
        self._flush(worker, requests)

    # -- running one batch -------------------------------------------------------------------
    def _flush(self, worker: Worker, requests: list[Request]) -> None:
        """Hand one batch to the worker's pool; its messages are acknowledged after it ran."""
        worker.run_batch(self, requests)

    def execute_batch(self, executor: Executor, requests: list[Request]) -> Outcome:
        """Run the body on ``requests`` in a pool slot and settle each request's result."""
        simple = [SimpleRequest.from_request(r) for r in requests]
        guard = _Guard({r.id: r for r in requests}, self.name)
        backends: list[Backend] = []
        for backend in (executor.backend, self.app.backend):
            if backend is not None and all(backend is not b for b in backends):
                backends.append(backend)
        previous_guards = [b.mark_guard for b in backends]
        for b in backends:
            b.mark_guard = guard
        app = self.app
        self.push_request(requests[0])
        previous = app.enter_task(requests[0])
        error: BaseException | None = None
        trace = ""
        retval: Any = None
        began = executor.clock.now
        try:
            retval = self.run(simple)
        except Exception as exc:  # noqa: BLE001 - a batch's failure is data, not a crash
            error = exc
            trace = tb_module.format_exc()
        finally:
            app.leave_task(previous)
            self.pop_request()
            for b, prev in zip(backends, previous_guards, strict=True):
                b.mark_guard = prev
        runtime = executor.clock.now - began
        log.info(
            "Batch %s of %d request(s) ran in %.6fs%s",
            self.name,
            len(requests),
            runtime,
            f": {type(error).__name__}: {error}" if error is not None else "",
        )
        for hook in executor.hooks.on_batch:
            hook(executor, self, requests)
        per_request = isinstance(retval, list) and len(retval) == len(requests)
        outcome = Outcome()
        try:
            for index, request in enumerate(requests):
                if request.id in guard.marked:
                    outcome = outcome + Outcome(succeeded=1)
                    for hook in executor.hooks.on_success:  # stored by the body itself: what follows a success
                        hook(executor, request, guard.marked[request.id])
                elif error is not None:
                    outcome = outcome + executor.failed(request, error, trace, runtime)
                else:
                    outcome = outcome + executor.succeeded(request, retval[index] if per_request else None, runtime)
            executor.backend.sync()  # the messages are acknowledged once this returns
        except BrokerUnavailable as exc:
            log.error("Batch %s: the result backend is unreachable, results may be lost: %s", self.name, exc)
            return outcome + Outcome(error=f"{type(exc).__name__}: {exc}", transient=True)
        return outcome


def _eager(worker: Worker) -> bool:
    driver = worker.app.simulation
    return bool(driver is not None and getattr(driver, "eager", False))
