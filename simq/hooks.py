"""Worker hooks: what acts around a task (canvas, tracing, faults, signals, limits) plugs in here.

A hook is an object with some of the methods of :class:`WorkerHook`, each a
moment in a message's life; the base class's methods do nothing, so a hook
overrides only the moments it needs. A worker calls its hooks in the order
they were given, and only those that override a moment and act on it now
(``acts_on``), so a moment no hook wants costs nothing on the hot path.

Two places call them:

- the **worker** (its own thread; one per worker process): ``worker_start``,
  ``worker_stop``, ``worker_crash``, ``on_received``, ``on_held``,
  ``on_rejected``, ``on_revoked``, ``before_ack``;
- the **executor** (a pool slot: inline, a thread, or a child process):
  ``before_run``, ``after_run``, ``on_success``, ``on_failure``,
  ``on_retry``, ``after_task``, ``on_batch``.

Slot hooks of a ``processes`` pool run in the child, which builds its hooks
from the app (``app.worker_hooks``), so a hook meant for every worker goes
there; the simulator adds its trace and fault hooks to its own workers.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from simq.exceptions import Retry
    from simq.executor import Executor
    from simq.message import Delivery
    from simq.worker import Request, Worker

__all__ = ["MOMENTS", "Hooks", "WorkerHook"]


class WorkerHook:
    """Base class of worker hooks: every moment is a no-op here."""

    #: True for a hook that acts only on requests whose message embeds a canvas (``message.embed``):
    #: the executor leaves it out of ``on_success`` for the others (``Hooks.on_success_plain``), which
    #: saves a call per plain task.
    canvas_only: bool = False

    # -- the worker's side ---------------------------------------------------------------
    def worker_start(self, worker: Worker) -> None:
        """The worker consumes its queues now."""

    def worker_stop(self, worker: Worker) -> None:
        """The worker stopped gracefully: it finished what it held and closed its connection."""

    def worker_crash(self, worker: Worker) -> None:
        """The worker died without cleaning up; the broker takes back what it held."""

    def on_received(self, worker: Worker, request: Request) -> None:
        """A delivery decoded into a request of a registered task (before any eta hold)."""

    def on_held(self, worker: Worker, request: Request) -> None:
        """The request waits in the worker for its eta."""

    def on_rejected(self, worker: Worker, delivery: Delivery, reason: str, detail: str) -> None:
        """A delivery was refused for good (dead-lettered), with why."""

    def on_revoked(self, executor: Executor, request: Request, exc: BaseException, reason: str) -> None:
        """The request is REVOKED and will not run (or run on): ``reason`` is ``expired`` (its ``expires``
        passed first), ``revoked`` (``revoke()`` before it started) or ``terminated`` (``revoke(terminate=True)``)."""

    def before_ack(self, worker: Worker, request: Request) -> None:
        """The request ran inline and its result is stored; a late-ack request is acknowledged next.

        (Pooled jobs report to the worker later; this moment is for inline runs: the simulator's last fault point.)
        """

    # -- the pool slot's side ---------------------------------------------------------------
    def before_run(self, executor: Executor, request: Request) -> None:
        """The body is about to run (an early-ack request is acknowledged already)."""

    def after_run(self, executor: Executor, request: Request) -> None:
        """The body returned or raised; its result is not stored yet."""

    def on_success(self, executor: Executor, request: Request, retval: Any) -> None:
        """The result is stored; what follows a success (callbacks, the next chain link) goes here."""

    def on_failure(self, executor: Executor, request: Request, exc: BaseException, traceback: str) -> None:
        """The failure is stored and the task's ``on_failure`` called."""

    def on_retry(self, executor: Executor, request: Request, retry: Retry) -> None:
        """The retry was sent and the RETRY state stored."""

    def after_task(self, executor: Executor, request: Request, state: str, value: Any) -> None:
        """Everything after the body is done: ``state`` is SUCCESS, FAILURE or RETRY; ``value`` the return value or exception."""

    def on_batch(self, executor: Executor, task: Any, requests: Sequence[Request]) -> None:
        """A batch of a Batches task ran (before its requests' results are settled)."""

    # -- not moments: which moments a hook acts on now ---------------------------------------
    def acts_on(self, moment: str) -> bool:
        """Whether this hook has anything to do at ``moment`` now; the worker leaves it out there while it has not.

        Only asked for the moments the hook overrides. A hook whose answer can
        change (the SignalHook: a signal gets its first receiver) calls
        ``refresh()`` on each ``Hooks`` that ``attach`` gave it when it does.
        """
        return True

    def attach(self, hooks: Hooks) -> None:
        """``hooks`` (one worker's, or one pool child's) holds this hook."""


_NOT_MOMENTS = frozenset(("acts_on", "attach"))
MOMENTS = tuple(
    name
    for name in vars(WorkerHook)
    if not name.startswith("_") and name not in _NOT_MOMENTS and callable(getattr(WorkerHook, name))
)


_Moment = tuple[Callable[..., None], ...]


class Hooks:
    """A worker's hooks, one tuple of bound methods per moment, holding only the hooks that act on it."""

    __slots__ = ("__weakref__", "_lock", "hooks", "on_success_plain", *MOMENTS)

    worker_start: _Moment
    worker_stop: _Moment
    worker_crash: _Moment
    on_received: _Moment
    on_held: _Moment
    on_rejected: _Moment
    on_revoked: _Moment
    before_ack: _Moment
    before_run: _Moment
    after_run: _Moment
    on_success: _Moment
    on_failure: _Moment
    on_retry: _Moment
    after_task: _Moment
    on_batch: _Moment
    #: ``on_success`` for a request whose message embeds no canvas: without the ``canvas_only`` hooks.
    on_success_plain: _Moment

    def __init__(self, hooks: Sequence[WorkerHook] = ()) -> None:
        self.hooks: tuple[WorkerHook, ...] = tuple(hooks)
        self._lock = threading.Lock()
        self.refresh()
        for hook in self.hooks:
            attach = getattr(hook, "attach", None)  # a hook need not subclass WorkerHook
            if attach is not None:
                attach(self)

    def refresh(self) -> None:
        """Work out again which hooks act on each moment (a hook whose ``acts_on`` answer changed calls this)."""
        with self._lock:  # each refresh reads the hooks' answers after the change that asked for it
            for moment in MOMENTS:
                base = getattr(WorkerHook, moment)
                acting: list[WorkerHook] = []
                for hook in self.hooks:
                    if getattr(type(hook), moment, base) is base:
                        continue
                    acts_on = getattr(hook, "acts_on", None)
                    if acts_on is None or acts_on(moment):
                        acting.append(hook)
                setattr(self, moment, tuple(getattr(hook, moment) for hook in acting))
                if moment == "on_success":
                    self.on_success_plain = tuple(
                        hook.on_success for hook in acting if not getattr(hook, "canvas_only", False)
                    )

    def __iter__(self) -> Any:
        return iter(self.hooks)

    def __len__(self) -> int:
        return len(self.hooks)
