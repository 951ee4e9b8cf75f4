"""Signals around a task's life, named as Celery's, fired in the same order in the simulator and in production.

``@task_prerun.connect`` (optionally ``connect(sender="proj.add")`` to hear one
task only) registers a receiver; it is called with ``sender=`` and the named
arguments Celery passes, and should take ``**kwargs`` for the ones it does not
use. A receiver that raises is logged and does not stop the task or the
worker. The task signals fire from a worker hook (``SignalHook``, in every
App's ``worker_hooks``), the publish signals from ``App.send_call``; with no
receiver connected a signal costs one check.

Order, for one task: ``before_task_publish``, ``after_task_publish`` (sender
side); ``task_received``, ``task_prerun``, then ``task_success`` /
``task_failure`` / ``task_retry``, then ``task_postrun`` (worker side);
``task_revoked`` for an expired, revoked or terminated task, ``task_rejected`` / ``task_unknown`` for
a refused message. Worker: ``worker_init`` (the worker process starts),
``worker_process_init`` (each ``processes`` pool child), ``worker_ready``
(consuming), ``worker_shutdown`` (stopped).
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from simq.hooks import Hooks, WorkerHook

if TYPE_CHECKING:
    from simq.executor import Executor
    from simq.message import Delivery
    from simq.worker import Request, Worker

__all__ = [
    "Signal",
    "SignalHook",
    "after_task_publish",
    "before_task_publish",
    "task_failure",
    "task_postrun",
    "task_prerun",
    "task_received",
    "task_rejected",
    "task_retry",
    "task_revoked",
    "task_success",
    "task_unknown",
    "worker_init",
    "worker_process_init",
    "worker_ready",
    "worker_shutdown",
]

log = logging.getLogger("simq.signals")

Receiver = Callable[..., Any]


class Signal:
    """A named moment receivers can connect to; ``send`` calls them in the order they connected."""

    def __init__(self, name: str, providing_args: tuple[str, ...] = ()) -> None:
        self.name = name
        self.providing_args = providing_args
        self.receivers: list[tuple[Receiver, Any]] = []
        self._lock = threading.Lock()
        # the worker hooks that leave this signal's moment out while it has no receiver (insertion-ordered)
        self._watchers: weakref.WeakKeyDictionary[Hooks, None] = weakref.WeakKeyDictionary()

    def watch(self, hooks: Hooks) -> None:
        """Refresh ``hooks`` whenever a receiver connects or disconnects."""
        with self._lock:
            self._watchers[hooks] = None

    def _changed(self) -> None:
        with self._lock:
            watchers = list(self._watchers)
        for hooks in watchers:
            hooks.refresh()

    def connect(self, receiver: Receiver | None = None, *, sender: Any = None, **_: Any) -> Any:
        """``@signal.connect`` or ``signal.connect(fn, sender=...)``: ``sender`` a task, its name, or None for all."""

        def register(fn: Receiver) -> Receiver:
            key = sender.name if hasattr(sender, "name") and not isinstance(sender, str) else sender
            with self._lock:
                if not any(r is fn and s == key for r, s in self.receivers):
                    self.receivers = [*self.receivers, (fn, key)]
            self._changed()
            return fn

        if receiver is None:
            return register
        return register(receiver)

    def disconnect(self, receiver: Receiver, sender: Any = None) -> bool:
        key = sender.name if hasattr(sender, "name") and not isinstance(sender, str) else sender
        with self._lock:
            kept = [(r, s) for r, s in self.receivers if not (r is receiver and (sender is None or s == key))]
            removed = len(kept) != len(self.receivers)
            self.receivers = kept
        self._changed()
        return removed

    def send(self, sender: Any = None, **named: Any) -> list[tuple[Receiver, Any]]:
        """Call every receiver for ``sender``; return (receiver, response) pairs (a raised exception is the response)."""
        receivers = self.receivers
        if not receivers:
            return []
        name = getattr(sender, "name", sender)
        out: list[tuple[Receiver, Any]] = []
        for receiver, wanted in receivers:
            if wanted is not None and wanted != name:
                continue
            try:
                out.append((receiver, receiver(signal=self, sender=sender, **named)))
            except Exception as exc:
                log.exception("receiver %r of signal %s raised", receiver, self.name)
                out.append((receiver, exc))
        return out

    def __repr__(self) -> str:
        return f"<Signal: {self.name}>"


before_task_publish = Signal("before_task_publish", ("body", "exchange", "routing_key", "headers", "properties"))
after_task_publish = Signal("after_task_publish", ("body", "exchange", "routing_key", "headers"))
task_received = Signal("task_received", ("request",))
task_prerun = Signal("task_prerun", ("task_id", "task", "args", "kwargs"))
task_postrun = Signal("task_postrun", ("task_id", "task", "args", "kwargs", "retval", "state"))
task_success = Signal("task_success", ("result",))
task_failure = Signal("task_failure", ("task_id", "exception", "args", "kwargs", "traceback", "einfo"))
task_retry = Signal("task_retry", ("request", "reason", "einfo"))
task_revoked = Signal("task_revoked", ("request", "terminated", "signum", "expired"))
task_rejected = Signal("task_rejected", ("message", "exc"))
task_unknown = Signal("task_unknown", ("name", "id", "message", "exc"))
worker_init = Signal("worker_init")
worker_process_init = Signal("worker_process_init")
worker_ready = Signal("worker_ready")
worker_shutdown = Signal("worker_shutdown")


class SignalHook(WorkerHook):
    """Fires the task and worker signals from the worker's moments.

    A task moment whose signal has no receiver is left out of the worker's
    hooks (``acts_on``), so it costs nothing; connecting a receiver puts it back
    at once, in every worker.
    """

    def __init__(self) -> None:
        self._started: set[str] = set()  # hostnames whose worker_init/worker_ready fired (looked up, never iterated)

    def acts_on(self, moment: str) -> bool:
        signal = _FIRED_AT.get(moment)
        return signal is None or bool(signal.receivers)

    def attach(self, hooks: Hooks) -> None:
        for signal in _FIRED_AT.values():
            signal.watch(hooks)

    def worker_start(self, worker: Worker) -> None:
        # once per worker: a production worker that reconnects starts a new Worker under the same name
        if worker.hostname in self._started:
            return
        self._started.add(worker.hostname)
        worker_init.send(sender=worker)
        worker_ready.send(sender=worker)

    def worker_stop(self, worker: Worker) -> None:
        worker_shutdown.send(sender=worker)

    def on_received(self, worker: Worker, request: Request) -> None:
        if task_received.receivers:
            task_received.send(sender=worker, request=request.context())

    def on_rejected(self, worker: Worker, delivery: Delivery, reason: str, detail: str) -> None:
        from simq.exceptions import MessageRejected

        exc = MessageRejected(reason, detail)
        if reason == "unknown-task" and task_unknown.receivers:
            headers = delivery.envelope.headers
            get = headers.get if hasattr(headers, "get") else (lambda _k: None)
            task_unknown.send(sender=worker, name=get("task"), id=get("id"), message=delivery, exc=exc)
        elif task_rejected.receivers:
            task_rejected.send(sender=worker, message=delivery, exc=exc)

    def on_revoked(self, executor: Executor, request: Request, exc: BaseException, reason: str) -> None:
        if task_revoked.receivers:
            task_revoked.send(
                sender=request.task,
                request=request.context(),
                terminated=reason == "terminated",
                signum=getattr(exc, "signum", None),
                expired=reason == "expired",
            )

    def before_run(self, executor: Executor, request: Request) -> None:
        if task_prerun.receivers:
            m = request.message
            task_prerun.send(sender=request.task, task_id=m.id, task=request.task, args=m.args, kwargs=dict(m.kwargs))

    def on_success(self, executor: Executor, request: Request, retval: Any) -> None:
        if task_success.receivers:
            task_success.send(sender=request.task, result=retval)

    def on_failure(self, executor: Executor, request: Request, exc: BaseException, traceback: str) -> None:
        if task_failure.receivers:
            m = request.message
            task_failure.send(
                sender=request.task,
                task_id=m.id,
                exception=exc,
                args=m.args,
                kwargs=dict(m.kwargs),
                traceback=traceback,
                einfo=traceback,
            )

    def on_retry(self, executor: Executor, request: Request, retry: Any) -> None:
        if task_retry.receivers:
            task_retry.send(sender=request.task, request=request.context(), reason=retry.exc or retry, einfo=None)

    def after_task(self, executor: Executor, request: Request, state: str, value: Any) -> None:
        if task_postrun.receivers:
            m = request.message
            task_postrun.send(
                sender=request.task,
                task_id=m.id,
                task=request.task,
                args=m.args,
                kwargs=dict(m.kwargs),
                retval=value,
                state=state,
            )


#: The task moments that fire exactly one signal, and that signal: each is left out while its signal has no receiver.
_FIRED_AT: dict[str, Signal] = {
    "on_received": task_received,
    "on_revoked": task_revoked,
    "before_run": task_prerun,
    "on_success": task_success,
    "on_failure": task_failure,
    "on_retry": task_retry,
    "after_task": task_postrun,
}
