"""Running a task: the body, its result, its retries and what the canvas does next.

This is the part of a worker that runs in a pool slot: inline in the
simulator and in a ``solo`` worker, in a thread of a ``threads`` pool, in a
child process of a ``processes`` pool. Receiving, holding, acknowledging and
batch buffering stay with the :class:`~simq.worker.Worker` (one per worker
process), which hands each due request to the pool and gets an
:class:`Outcome` back.
"""

from __future__ import annotations

import logging
import random
import traceback as tb_module
from typing import TYPE_CHECKING, Any

import attrs

from simq import limits as limits_module
from simq import states
from simq.clock import EagerClock, VirtualClock, to_timestamp
from simq.exceptions import BrokerUnavailable, Ignore, Retry, TimeLimitExceeded
from simq.hooks import Hooks
from simq.limits import HardTimeLimit, Watchdog
from simq.revoke import Terminated
from simq.task import backoff_countdown

if TYPE_CHECKING:
    from simq.app import App
    from simq.backends.base import Backend
    from simq.clock import Clock
    from simq.worker import Request

__all__ = ["Executor", "Outcome"]

log = logging.getLogger("simq.worker")

_MAX_LOGGED_RESULT = 200


@attrs.frozen
class Outcome:
    """What one job (a task, or one batch) did, as the worker counts it.

    ``error`` says the slot could not finish the job (the result backend was
    unreachable, the child process died); ``transient`` marks errors worth
    another delivery (the broker keeps a late-ack message for a retry);
    ``lost`` says the slot itself died (a killed child process) mid-job;
    ``time_limit`` (seconds), that it was killed because the task ran past that limit;
    ``terminated``, that ``revoke(terminate=True)`` ended it;
    ``ignored``, that the body raised ``Ignore`` (``Task.replace``): nothing stored.
    """

    succeeded: int = 0
    failed: int = 0
    retried: int = 0
    error: str | None = None
    transient: bool = False
    lost: bool = False
    time_limit: float | None = None
    terminated: bool = False
    ignored: int = 0

    def __add__(self, other: Outcome) -> Outcome:
        return Outcome(
            self.succeeded + other.succeeded,
            self.failed + other.failed,
            self.retried + other.retried,
            self.error or other.error,
            self.transient or other.transient,
            self.lost or other.lost,
            self.time_limit if self.time_limit is not None else other.time_limit,
            self.terminated or other.terminated,
            self.ignored + other.ignored,
        )


SUCCEEDED = Outcome(succeeded=1)
FAILED = Outcome(failed=1)
RETRIED = Outcome(retried=1)
IGNORED = Outcome(ignored=1)
NOTHING = Outcome()


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_LOGGED_RESULT else f"{text[:_MAX_LOGGED_RESULT]}..."


@attrs.define(eq=False)
class Executor:
    """Runs requests of ``app``; one is shared by every slot of a pool in one process."""

    app: App
    backend: Backend
    clock: Clock
    hostname: str
    hooks: Hooks = attrs.field(default=None)  # default: the app's worker_hooks (the canvas among them)
    #: Where retry jitter comes from: the simulation's seed in a simulation, the OS elsewhere.
    rng: random.Random = attrs.field(factory=random.SystemRandom)
    #: False where somebody else ends a task at its hard time limit (a processes pool's parent kills the child).
    hard_limits: bool = True
    _ignore_result_default: bool = attrs.field(default=False, init=False)
    _track_started: bool = attrs.field(default=False, init=False)
    #: task_acks_late, for tasks that do not say (read by the worker too, on its hot path).
    acks_late_default: bool = attrs.field(default=False, init=False)
    # In a simulation a task's time.sleep() spends virtual time (simq.limits).
    _virtual: bool = attrs.field(default=False, init=False)
    _app_limits: bool = attrs.field(default=False, init=False)
    _watchdog: Watchdog | None = attrs.field(default=None, init=False)
    _plain_run: Any = attrs.field(default=None, init=False)

    def __attrs_post_init__(self) -> None:
        if self.hooks is None:
            self.hooks = Hooks(self.app.worker_hooks)
        conf = self.app.conf
        self._ignore_result_default = bool(conf.task_ignore_result)
        self._track_started = bool(conf.task_track_started)
        self.acks_late_default = bool(conf.task_acks_late)
        self._virtual = isinstance(self.clock, VirtualClock) and not isinstance(self.clock, EagerClock)
        if self._virtual:
            self._plain_run = limits_module.plain_run(self.clock)  # type: ignore[arg-type]
        self._app_limits = bool(
            limits_module.check_limit(conf.get("task_time_limit"), "task_time_limit")
            or limits_module.check_limit(conf.get("task_soft_time_limit"), "task_soft_time_limit")
        )

    def watchdog(self) -> Watchdog:
        """The thread raising time limits in this executor's threads (started at the first limited task)."""
        if self._watchdog is None:
            self._watchdog = Watchdog(self.clock, on_hard=self._hard_in_thread)
        return self._watchdog

    def end_job(self) -> None:
        """A pool thread finished a job: a time limit raised as it ended must not hit the next one."""
        if self._watchdog is not None:
            self._watchdog.forget()

    @staticmethod
    def _hard_in_thread(limits: limits_module.TimeLimits) -> None:
        log.error(
            "a task ran past its time_limit of %g s: TimeLimitExceeded is raised in its thread, which "
            "ends it at its next Python instruction (a thread cannot be killed; a call blocked in C code "
            "sees it when that call returns; the processes pool kills the child instead)",
            limits.hard,
        )

    def time_limits(self, request: Request) -> limits_module.TimeLimits | None:
        """The time limits ``request`` runs under (its call's, its task's, the app's), or None."""
        task = request.task
        if task.time_limit or task.soft_time_limit or self._app_limits or request.message.headers:
            return limits_module.limits_for(request, self.app.conf)
        return None

    def acks_late(self, request: Request) -> bool:
        late = request.task.acks_late
        return self.acks_late_default if late is None else bool(late)

    def confirm_writes(self) -> None:
        """Make sure what this thread wrote to the result backend is stored, before it goes idle.

        A result travels unconfirmed while the slot is busy (one round trip for
        many); a slot about to wait confirms, so a write sent on a connection
        Redis had closed is written again now, not at the slot's next task,
        which may never come.
        """
        try:
            self.backend.sync()
        except BrokerUnavailable as exc:  # kept by the backend: the next command or sync tries again
            log.warning("the result backend is unreachable; results are kept and sent again: %s", exc)

    # -- one task -----------------------------------------------------------------------
    def run_task(self, request: Request, acks_late: bool | None = None) -> Outcome:
        """Run one request's body and everything after it; never raises ``Exception``.

        A worker that dies (``BaseException``, e.g. the simulator's crash
        fault, raised from a hook) passes through, so nothing is reported and nothing acknowledged.
        """
        try:
            outcome = self._run(request)
            if acks_late is None:
                late = request.task.acks_late  # what ``acks_late()`` says, without the call
                acks_late = self.acks_late_default if late is None else bool(late)
            if acks_late:
                # The message is acknowledged once this returns: its result must be stored by then.
                self.backend.sync()
            return outcome
        except BrokerUnavailable as exc:
            log.error(
                # the result backend, or the broker a send after the body needed (the exception names which)
                "Task %s[%s]: its result or what it sends next could not be delivered and may be lost: %s",
                request.name,
                request.id,
                exc,
            )
            return Outcome(error=f"{type(exc).__name__}: {exc}", transient=True)
        except Exception as exc:
            log.exception("Task %s[%s]: internal error after its body ran", request.name, request.id)
            try:
                self.backend.mark_as_failure(request.id, exc, tb_module.format_exc(), request=request.message)
            except Exception:
                log.debug("could not store the internal error of %s", request.id, exc_info=True)
            return Outcome(failed=1, error=f"{type(exc).__name__}: {exc}")

    def _run(self, request: Request) -> Outcome:
        message = request.message
        task = request.task
        hooks = self.hooks
        # ``if`` before each hot loop over hooks: most moments have none, and looping over an empty
        # tuple still builds an iterator (about 150 instructions a loop, several loops a task).
        if hooks.before_run:
            for hook in hooks.before_run:
                hook(self, request)
        if self._track_started or task.track_started:
            self.backend.mark_as_started(message.id)
        requests = task._stack()  # what self.request reads, in this thread
        requests.append(request)  # its Context is built only if the task reads self.request
        app = self.app
        limits = request.limits  # set by a processes pool's parent (TimeLimits() for none)
        if limits is None:
            if task.time_limit or task.soft_time_limit or self._app_limits or message.headers:  # time_limits()
                limits = limits_module.limits_for(request, app.conf)
        elif limits.soft is None and limits.hard is None:
            limits = None
        local = app.task_local  # what app.enter_task() and leave_task() do, without the two calls
        previous = getattr(local, "request", None)
        local.request = request
        timed = log.isEnabledFor(logging.INFO)  # the runtime is only read by the log lines
        began = self.clock.now if timed else 0.0
        virtual = self._virtual
        guard = None
        if virtual:  # its time.sleep() spends virtual time (simq.limits.running); restored below
            running = limits_module.running
            outer = getattr(running, "run", None)
            running.run = self._plain_run if limits is None else limits_module.limited_run(self._plain_run, limits)
        elif limits is not None:
            guard = limits_module.enforcing(limits, clock=self.clock, hard=self.hard_limits, watchdog=self.watchdog)
        try:
            try:
                if guard is None:
                    retval = task.run(*message.args, **message.kwargs)
                else:
                    with guard:
                        retval = task.run(*message.args, **message.kwargs)
            except Exception as exc:
                if task.autoretry_for and not isinstance(exc, Retry | Ignore):
                    self._autoretry(request, exc)  # raises Retry, or ``exc`` past max_retries
                raise
        # What follows the body runs while the request is still this thread's current one:
        # the next chain link, callbacks and retries take their root and parent from it.
        except Retry as retry:
            for hook in hooks.after_run:
                hook(self, request)
            outcome = self.retried(request, retry)
            state: str
            value: Any
            state, value = states.RETRY, retry
        except Ignore as ignored:  # Task.replace(): the replacement, sent already, owns this id and its result
            for hook in hooks.after_run:
                hook(self, request)
            log.info("Task %s[%s] ignored: %s", message.task, message.id, ignored)
            outcome = IGNORED
            state, value = states.IGNORED, None
        except Terminated:  # revoke(terminate=True), raised in this thread by its pool
            for hook in hooks.after_run:
                hook(self, request)
            outcome = Outcome(error="terminated by revoke(terminate=True)", lost=True, terminated=True)
            state, value = states.REVOKED, None
        except HardTimeLimit:
            for hook in hooks.after_run:
                hook(self, request)
            ended = TimeLimitExceeded(limits.hard if limits is not None else None)
            outcome = self.failed(request, ended, tb_module.format_exc(), self.clock.now - began if timed else 0.0)
            state, value = states.FAILURE, ended
        except Exception as error:  # noqa: BLE001 - a task's failure is data, not a crash
            for hook in hooks.after_run:
                hook(self, request)
            outcome = self.failed(request, error, tb_module.format_exc(), self.clock.now - began if timed else 0.0)
            state, value = (states.FAILURE if outcome.failed else states.SUCCESS), error
        else:
            if hooks.after_run:
                for hook in hooks.after_run:
                    hook(self, request)
            runtime = self.clock.now - began if timed else 0.0
            if message.embed:
                outcome = self.succeeded(request, retval, runtime)
            else:  # what succeeded() does for a task without a canvas, one call fewer
                ignore = task.ignore_result if task.ignore_result is not None else self._ignore_result_default
                outcome = self._succeeded(request, retval, runtime, store=not ignore, logged=timed)
            state, value = (states.SUCCESS if outcome.succeeded else states.FAILURE), retval
        finally:
            if virtual:
                running.run = outer
            local.request = previous
            requests.pop()
        if hooks.after_task:  # read after the body: a receiver connected while it ran is heard
            for hook in hooks.after_task:
                hook(self, request, state, value)
        return outcome

    def _autoretry(self, request: Request, exc: Exception) -> None:
        """``autoretry_for``: retry as ``retry_kwargs`` and ``retry_backoff`` say (Celery's rules)."""
        task = request.task
        if not isinstance(exc, task.autoretry_for) or (
            task.dont_autoretry_for and isinstance(exc, task.dont_autoretry_for)
        ):
            return
        kwargs = dict(task.retry_kwargs)
        if task.retry_backoff and "countdown" not in kwargs and "eta" not in kwargs:
            kwargs["countdown"] = backoff_countdown(task, request.message.retries, self.rng)
        task.retry(exc=exc, **kwargs)

    # -- after the body ---------------------------------------------------------------------
    def succeeded(self, request: Request, retval: Any, runtime: float = 0.0) -> Outcome:
        """Store ``retval`` and run what follows a success (callbacks, the next chain link, chord count)."""
        task = request.task
        message = request.message
        if message.embed:
            # A canvas task: its result and what follows it (a chord part's count,
            # the next link) may share round trips; all is written before the ack.
            with self.backend.deferred_writes():
                return self._succeeded(request, retval, runtime, store=True)
        ignore = task.ignore_result if task.ignore_result is not None else self._ignore_result_default
        return self._succeeded(request, retval, runtime, store=not ignore)

    def _succeeded(
        self, request: Request, retval: Any, runtime: float, *, store: bool, logged: bool | None = None
    ) -> Outcome:
        """``logged``: whether INFO is logged, if the caller asked already."""
        task = request.task
        message = request.message
        if store:
            try:
                self.backend.store_result(message.id, retval, states.SUCCESS, name=message.task)
            except BrokerUnavailable:
                raise
            except Exception as exc:  # noqa: BLE001 - e.g. a result the serializer refuses
                return self.failed(request, exc, tb_module.format_exc(), runtime)
        if logged if logged is not None else log.isEnabledFor(logging.INFO):
            log.info("Task %s[%s] succeeded in %.6fs: %s", message.task, message.id, runtime, _short(retval))
        hooks = self.hooks
        acting = hooks.on_success if message.embed else hooks.on_success_plain
        if acting:
            for hook in acting:
                hook(self, request, retval)
        task.on_success(retval, message.id, message.args, message.kwargs)
        return SUCCEEDED

    def failed(self, request: Request, exc: BaseException, traceback: str, runtime: float = 0.0) -> Outcome:
        """Store the failure, call the task's hook, the errbacks, and fail what the canvas would run next."""
        message = request.message
        self.backend.mark_as_failure(message.id, exc, traceback, request=message)
        log.error(
            "Task %s[%s] raised unexpected: %s: %s (after %.6fs)%s",
            message.task,
            message.id,
            type(exc).__name__,
            exc,
            runtime,
            f"\n{traceback.rstrip()}" if traceback.strip() else "",
        )
        for hook in self.hooks.on_failure:
            hook(self, request, exc, traceback)
        try:
            request.task.on_failure(exc, message.id, message.args, message.kwargs, traceback)
        except Exception:
            log.exception("on_failure hook of %s raised", message.task)
        return FAILED

    def retried(self, request: Request, retry: Retry) -> Outcome:
        """Send the task again as ``retry`` asks; if that fails, the task fails."""
        message = request.message
        task = request.task
        args_override = getattr(retry, "args_override", None)
        kwargs_override = getattr(retry, "kwargs_override", None)
        countdown = getattr(retry, "countdown", None)
        eta = getattr(retry, "eta", None)
        now = self.clock.now
        when = to_timestamp(eta) if eta is not None else now + float(countdown or 0)
        again = attrs.evolve(
            message,
            retries=message.retries + 1,
            eta=when,
            args=args_override if args_override is not None else message.args,
            kwargs=kwargs_override if kwargs_override is not None else message.kwargs,
        )
        options = getattr(retry, "options", None) or {}
        if options.get("priority") is not None:
            again = attrs.evolve(again, priority=options["priority"])
        if options.get("headers"):
            again = attrs.evolve(again, headers={**again.headers, **options["headers"]})
        if options.get("expires") is not None:
            expires = options["expires"]
            again = attrs.evolve(
                again, expires=to_timestamp(expires) if not isinstance(expires, int | float) else now + float(expires)
            )
        serializer = self.app.serializers.name_for(request.delivery.envelope.content_type)
        try:
            delivery = request.delivery
            self.app.republish(again, serializer, delivery.exchange, delivery.routing_key, options)
        except Exception as exc:  # noqa: BLE001 - could not send the retry: the task fails
            return self.failed(request, exc, tb_module.format_exc())
        self.backend.mark_as_retry(message.id, retry.exc, None, retries=again.retries)
        log.info("Task %s[%s] retry %d in %gs: %s", message.task, message.id, again.retries, when - now, retry)
        retry.when = when  # for hooks: when the retry is due
        for hook in self.hooks.on_retry:
            hook(self, request, retry)
        task.on_retry(retry.exc, message.id, message.args, message.kwargs, None)
        return RETRIED
