"""How a worker settles what did not end as a task normally does.

A delivery it refuses (dead-lettered, counted, its result marked FAILURE
naming why), a pool slot that died or was killed at a time limit, a task
revoked before it ran or terminated while it ran, one that expired: each is
stored, acknowledged (or given back) and told to the hooks here. A part of
:class:`~simq.worker.Worker`, kept in its own module to keep each one
readable.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING

from simq.exceptions import BrokerUnavailable, MessageRejected, TimeLimitExceeded, WorkerLostError
from simq.revoke import Revocation, signal_number

if TYPE_CHECKING:
    from simq.backends.base import Backend
    from simq.executor import Executor, Outcome
    from simq.hooks import Hooks
    from simq.message import Delivery
    from simq.pools import Pool
    from simq.request import Request, WorkerStats
    from simq.transport import Transport

__all__ = ["Settling"]

log = logging.getLogger("simq.worker")


class Settling:
    """The worker's settling methods (a base of :class:`~simq.worker.Worker`)."""

    if TYPE_CHECKING:
        transport: Transport
        backend: Backend | None
        stats: WorkerStats
        executor: Executor
        pool: Pool | None
        _hooks: Hooks
        _reject_on_lost: bool
        _ready: deque[Request]
        hostname: str

        def ack(self, request: Request) -> None: ...

    def reject(self, delivery: Delivery, reason: str, detail: str) -> None:
        """Refuse a delivery for good: dead-letter it, count it, log it once."""
        self.transport.reject(delivery, requeue=False, reason=f"{reason}: {detail}")
        self.stats.rejected[reason] = self.stats.rejected.get(reason, 0) + 1
        headers = delivery.envelope.headers
        message_id = headers.get("id") if isinstance(headers, Mapping) else None
        log.warning(
            "rejected message %r (delivery %s) from queue %r (%s): %s",
            message_id or delivery.envelope.message_id,
            delivery.tag,
            delivery.queue,
            reason,
            detail,
        )
        if isinstance(message_id, str) and message_id and len(message_id) <= 255:
            self._fail_refused(message_id, reason, detail)
        for hook in self._hooks.on_rejected:
            hook(self, delivery, reason, detail)

    def _fail_refused(self, task_id: str, reason: str, detail: str) -> None:
        """Whoever waits on a refused task learns why at once: its result becomes FAILURE, naming the reason.

        Only a task with no final result yet is marked: a forged or duplicated
        message cannot overwrite a result that is already there.
        """
        backend = self.backend
        assert backend is not None
        try:
            if backend.get_meta(task_id).ready:
                return
            backend.mark_as_failure(task_id, MessageRejected(reason, detail))
        except Exception:  # the rejection itself is done; the result is a courtesy
            log.warning("could not store the rejection of %r in the result backend", task_id, exc_info=True)

    def _lost(self, requests: tuple[Request, ...], outcome: Outcome, acks_late: bool) -> None:
        """The pool slot died running ``requests`` (a killed child process)."""
        for request in requests:
            if outcome.terminated:  # revoke(terminate=True) ended it
                self.discard_revoked(request, "terminated")
                continue
            if outcome.time_limit is not None:  # killed at its hard time limit: a failure, as Celery records it
                self.executor.failed(request, TimeLimitExceeded(outcome.time_limit), "", outcome.time_limit)
                self.stats.failed += 1
                self.ack(request)
                continue
            if acks_late and self._reject_on_lost:
                log.error(
                    "Task %s[%s]: %s; given back to the broker (task_reject_on_worker_lost)",
                    request.name,
                    request.id,
                    outcome.error,
                )
                self.transport.reject(request.delivery, requeue=True, reason=outcome.error or "worker lost")
                continue
            exc = WorkerLostError(f"task {request.name}[{request.id}]: {outcome.error}")
            log.error("Task %s[%s] failed: %s", request.name, request.id, exc)
            self.backend.mark_as_failure(request.id, exc, None, request=request.message)  # type: ignore[union-attr]
            self.stats.failed += 1
            for hook in self._hooks.on_failure:
                hook(self.executor, request, exc, "")
            self.ack(request)

    def give_back_unfinished(self) -> None:
        """A warm shutdown's deadline passed (``worker_soft_shutdown_timeout``): give back what has not finished.

        Requests not started yet go back to the broker unrun; the pool reports
        each running job given back (:meth:`simq.pools.Pool.abandon`), and the
        worker requeues its message if it is a late-ack one. An early-ack task
        that was running is lost: its message was acknowledged when it
        started, so the log names it.
        """
        running = self.pool.active() if self.pool is not None else []
        for request in running:
            if request.acked:
                log.error(
                    "%s: soft shutdown deadline: task %s[%s] was still running and is LOST: it was acknowledged "
                    "when it started (acks_late=True tasks go back to the broker instead)",
                    self.hostname,
                    request.name,
                    request.id,
                )
            else:
                log.warning(
                    "%s: soft shutdown deadline: task %s[%s] was still running; given back to the broker",
                    self.hostname,
                    request.name,
                    request.id,
                )
        while self._ready:
            request = self._ready.popleft()
            self.transport.reject(request.delivery, requeue=True, reason="soft shutdown: not started")
        if self.pool is not None:
            self.pool.abandon()

    def discard_revoked(self, request: Request, reason: str = "revoked") -> None:
        """``request`` was revoked before it ran: store REVOKED, acknowledge, never run it."""
        message = request.message
        meta = self.backend.mark_as_revoked(message.id, reason)  # type: ignore[union-attr]
        if not self._confirmed(request, "REVOKED"):
            return
        self.ack(request)
        self.stats.revoked += 1
        log.info(
            "Task %s[%s] revoked: %s",
            message.task,
            message.id,
            "terminated while running" if reason == "terminated" else "discarded without running",
        )
        for hook in self._hooks.on_revoked:
            hook(self.executor, request, meta.result, reason)

    def _confirmed(self, request: Request, state: str) -> bool:
        """Is what was just stored for ``request`` confirmed? If not, its message goes back to be settled again."""
        try:
            self.backend.sync()  # type: ignore[union-attr]
            return True
        except BrokerUnavailable as exc:
            if request.acked:
                log.error("Task %s[%s]: its %s state may be lost: %s", request.name, request.id, state, exc)
                return True
            log.warning(
                "Task %s[%s]: %s could not be stored (%s); given back to the broker to be settled again",
                request.name,
                request.id,
                state,
                exc,
            )
            self.transport.reject(request.delivery, requeue=True, reason="result backend unreachable")
            return False

    def _terminate(self, entry: Revocation) -> None:
        """A revoke with ``terminate=True``: end what this worker's pool runs of those ids."""
        pool = self.pool
        if pool is None:
            return  # inline: nothing runs while the worker reads revocations
        for request in pool.active():
            if request.id in entry.ids:
                how = pool.terminate(request, signal_number(entry.signal))
                log.warning("Task %s[%s] revoked with terminate=True: %s", request.name, request.id, how)

    def _expired(self, request: Request) -> None:
        message = request.message
        meta = self.backend.mark_as_revoked(message.id, "expired before it could run")  # type: ignore[union-attr]
        if not self._confirmed(request, "REVOKED (expired)"):
            return
        self.ack(request)
        self.stats.revoked += 1
        log.info("Task %s[%s] expired before it could run: revoked", message.task, message.id)
        for hook in self._hooks.on_revoked:
            hook(self.executor, request, meta.result, "expired")
