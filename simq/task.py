"""Tasks: the functions ``@app.task`` turns into things you can send."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, NoReturn, Protocol

from simq.context import Context
from simq.exceptions import ConfigurationError, MaxRetriesExceededError, Retry
from simq.message import validate_priority

if TYPE_CHECKING:
    from simq.app import App
    from simq.result import AsyncResult, EagerResult
    from simq.worker import Request, Worker

__all__ = ["Context", "Task"]


class _HasContext(Protocol):
    def context(self) -> Context: ...


_CALL_OPTIONS = (
    "countdown",
    "eta",
    "expires",
    "task_id",
    "serializer",
    "routing_key",
    "exchange",
    "queue",
    "priority",
    "mandatory",
    "immediate",
    "link",
    "link_error",
    "connection",
    "connect_timeout",
    "headers",
)


class Task:
    """A registered task. ``@app.task`` makes one subclass and instance per function.

    Class attributes are the task's options (``serializer``, ``queue``,
    ``routing_key``, ``exchange``, ``priority``, ``max_retries``,
    ``default_retry_delay``, ``acks_late``, ``ignore_result``, and the retry
    policy: ``autoretry_for``, ``dont_autoretry_for``, ``retry_kwargs``,
    ``retry_backoff``, ``retry_backoff_max``, ``retry_jitter``, the time
    limits ``time_limit`` and ``soft_time_limit``, and ``rate_limit``, which
    each worker enforces); a call's own options win over them.
    """

    name: ClassVar[str] = ""
    app: ClassVar[App]
    typing: ClassVar[bool] = True
    bind: ClassVar[bool] = False
    serializer: ClassVar[str | None] = None
    queue: ClassVar[Any] = None
    routing_key: ClassVar[str | None] = None
    exchange: ClassVar[Any] = None
    priority: ClassVar[int | None] = None
    max_retries: ClassVar[int | None] = 3
    default_retry_delay: ClassVar[float] = 180
    acks_late: ClassVar[bool | None] = None
    ignore_result: ClassVar[bool | None] = None
    expires: ClassVar[float | None] = None
    track_started: ClassVar[bool | None] = None
    time_limit: ClassVar[float | None] = None  # seconds; simq.limits
    soft_time_limit: ClassVar[float | None] = None
    autoretry_for: ClassVar[tuple[type[BaseException], ...]] = ()
    dont_autoretry_for: ClassVar[tuple[type[BaseException], ...]] = ()
    retry_kwargs: ClassVar[Mapping[str, Any]] = {}
    retry_backoff: ClassVar[bool | int | float] = False
    retry_backoff_max: ClassVar[float] = 600
    retry_jitter: ClassVar[bool] = True
    rate_limit: ClassVar[str | float | None] = None  # "10/s", "100/m", "1000/h" or per second (simq.ratelimit)

    _routing_options: ClassVar[dict[str, Any]]

    def __init__(self) -> None:
        # One request stack per thread: a threads-pool worker runs the same task
        # object in several threads at once, and each must see its own request.
        self._local = threading.local()

    def _stack(self) -> list[Any]:
        try:
            return self._local.stack  # type: ignore[no-any-return]
        except AttributeError:
            stack: list[Any] = []
            self._local.stack = stack
            return stack

    # -- running --------------------------------------------------------------------
    def run(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"task {self.name!r} has no body")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the body here and now, as a plain function call."""
        stack = self._stack()
        if stack:
            return self.run(*args, **kwargs)
        stack.append(Context(task=self.name, args=args, kwargs=kwargs))
        try:
            return self.run(*args, **kwargs)
        finally:
            stack.pop()

    @property
    def request(self) -> Context:
        stack = self._stack()
        if not stack:
            return Context(task=self.name)
        top = stack[-1]
        if type(top) is not Context:  # a worker's Request: its Context is built on first read
            top = stack[-1] = top.context()
        return top  # type: ignore[no-any-return]

    def push_request(self, request: Context | _HasContext) -> None:
        """Make ``request`` what ``self.request`` shows in this thread (a Context, or anything with ``.context()``)."""
        self._stack().append(request)

    def pop_request(self) -> None:
        self._stack().pop()

    # -- sending -------------------------------------------------------------------
    def delay(self, *args: Any, **kwargs: Any) -> AsyncResult:
        """Send with these arguments and the task's default options."""
        return self.apply_async(args, kwargs)

    def apply_async(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> AsyncResult:
        """Send with explicit options (see the calling guide for each one)."""
        return self.app.send_task(self.name, args, kwargs, _task=self, **options)

    def apply(
        self, args: Sequence[Any] | None = None, kwargs: Mapping[str, Any] | None = None, **options: Any
    ) -> EagerResult:
        """Run the task here and now, with no broker; an ``EagerResult`` holding what it returned or raised.

        The outcome is stored in the result backend too, as a worker stores it.
        A ``self.replace(sig)`` in the body runs ``sig`` here as well (``Signature.apply``),
        and so do ``link`` callbacks and ``link_error`` errbacks, each in its own form.
        """
        import traceback

        from simq import states
        from simq.exceptions import Replaced
        from simq.result import EagerResult

        app = self.app
        callbacks, errbacks = _links(options.pop("link", None)), _links(options.pop("link_error", None))
        if callbacks or errbacks:
            # as Celery's: they run here too (Signature.apply runs the task itself through this method)
            sig = self.signature(args, kwargs)
            for callback in callbacks:
                sig.link(callback)
            for errback in errbacks:
                sig.link_error(errback)
            return sig.apply(**options)  # type: ignore[no-any-return]
        unknown = sorted(set(options) - {"task_id"})
        if unknown:
            raise ConfigurationError(
                f"{self.name}.apply() runs the task here and now, so it takes no sending option: got "
                f"{', '.join(unknown)} (apply_async() sends it with them)"
            )
        args, kwargs = tuple(args or ()), dict(kwargs or {})
        task_id = options.get("task_id") or app.new_id()
        self.push_request(
            Context(id=task_id, task=self.name, args=args, kwargs=kwargs, called_directly=False, is_eager=True)
        )
        backend = app.backend
        try:
            value = self.run(*args, **kwargs)
        except Replaced as replaced:  # the replacement ran here, under this task's id
            return replaced.result  # type: ignore[no-any-return]
        except Exception as exc:  # noqa: BLE001 - stored, as a worker would
            tb = traceback.format_exc()
            backend.mark_as_failure(task_id, exc, tb)
            return EagerResult(task_id, exc, states.FAILURE, tb, app, name=self.name)
        else:
            backend.store_result(task_id, value, states.SUCCESS, name=self.name)
            return EagerResult(task_id, value, states.SUCCESS, None, app, name=self.name)
        finally:
            self.pop_request()

    def retry(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        exc: BaseException | None = None,
        throw: bool = True,
        eta: datetime | float | None = None,
        countdown: float | None = None,
        max_retries: int | None = None,
        **options: Any,
    ) -> Retry:
        """Send this task again later; raises ``Retry`` for the worker to catch.

        Past ``max_retries`` it raises ``exc`` (or ``MaxRetriesExceededError``)
        instead, so the task fails.
        """
        request = self.request
        if request.called_directly:
            # Called as a plain function: there is nothing to retry; re-raise.
            if exc is not None:
                raise exc
            raise MaxRetriesExceededError(f"{self.name} called directly cannot be retried")
        limit = self.max_retries if max_retries is None else max_retries
        if limit is not None and request.retries >= limit:
            if exc is not None:
                raise exc
            raise MaxRetriesExceededError(
                f"Can't retry {self.name}[{request.id}] args:{request.args} kwargs:{dict(request.kwargs)} "
                f"(max_retries={limit})"
            )
        unknown = sorted(set(options) - set(RETRY_OPTIONS))
        if unknown:
            import difflib

            close = difflib.get_close_matches(unknown[0], RETRY_OPTIONS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigurationError(
                f"{self.name}.retry() got unknown option {unknown[0]!r}{hint} (it takes {', '.join(RETRY_OPTIONS)})"
            )
        if "priority" in options and options["priority"] is not None:
            validate_priority(options["priority"])
        if countdown is None and eta is None:
            countdown = self.default_retry_delay
        retry = Retry(f"Retry in {countdown}s" if countdown is not None else f"Retry at {eta}", exc=exc)
        retry.args_override = tuple(args) if args is not None else None  # type: ignore[attr-defined]
        retry.kwargs_override = dict(kwargs) if kwargs is not None else None  # type: ignore[attr-defined]
        retry.countdown = countdown  # type: ignore[attr-defined]
        retry.eta = eta  # type: ignore[attr-defined]
        retry.options = options  # type: ignore[attr-defined]
        if throw:
            raise retry
        return retry

    def replace(self, sig: Any) -> NoReturn:
        """End this task by sending ``sig`` in its place; ``sig``'s result becomes this task's result.

        As Celery's: the replacement gets this task's id (on its last task; a
        group's list of results is gathered into one), its callbacks and
        errbacks, what follows it in a chain and the chord or group it is in.
        It raises ``Replaced`` (an ``Ignore``): the worker stores nothing for
        this call and acknowledges its message. ``chain()`` with no task is refused.
        """
        from simq.canvas.handoff import inherit_stamps

        request = self.request
        if request.called_directly:
            raise ConfigurationError(
                f"{self.name}.replace() needs a task that was sent or applied (it hands the task's place in its "
                f"canvas to {sig!r}); called as a plain function there is none: use delay(), apply_async() or apply()"
            )
        self.on_replace(inherit_stamps(request, sig))
        raise AssertionError(f"{type(self).__name__}.on_replace() returned; it must end with super().on_replace(sig)")

    def on_replace(self, sig: Any) -> NoReturn:
        """Send ``sig`` in this task's place (what ``replace`` ends with); override it to change ``sig`` first.

        As Celery's hook: ``sig`` already carries this task's stamps; an
        override ends with ``super().on_replace(sig)``, which raises ``Replaced``.
        """
        from simq.canvas.handoff import replace, replacement
        from simq.exceptions import Replaced

        request = self.request
        if request.is_eager:  # Task.apply(): the replacement runs here too
            from simq.canvas.eager import run_frozen

            work = replacement(self.app, request, sig)
            raise Replaced(f"replaced by {work!r}", result=run_frozen(self.app, work, (), {}, None))
        sent = replace(self.app, request, sig)
        raise Replaced(f"replaced by {sent!r}")

    def add_to_chord(self, sig: Any) -> Any:
        """Add ``sig`` to the chord this running header task belongs to; send it and return its result handle.

        The chord's body then also waits for ``sig`` and gets its result after
        the header's results (Celery's ``add_to_chord``). Refused where the task
        reports to no chord.
        """
        from simq.canvas.handoff import add_to_chord

        request = self.request
        if request.called_directly or request.is_eager:
            raise ConfigurationError(
                f"{self.name}.add_to_chord() needs a task a worker runs as part of a chord's header; "
                f"{'called as a plain function' if request.called_directly else 'run by Task.apply()'} it has none"
            )
        return add_to_chord(self.app, request, sig)

    def update_state(
        self, task_id: str | None = None, state: str | None = None, meta: Any = None, **kwargs: Any
    ) -> None:
        """Store ``state`` (Celery's custom states too, e.g. ``"PROGRESS"``) and ``meta`` for a task, as Celery's.

        ``task_id`` defaults to the running task's own. A caller reads them as
        ``AsyncResult.state`` and ``AsyncResult.info``; a state that is not
        ready (not SUCCESS, FAILURE or REVOKED) keeps ``get()`` waiting, and
        the task's own outcome replaces it when it ends.
        """
        if kwargs:
            raise ConfigurationError(f"{self.name}.update_state() takes task_id, state and meta, got {sorted(kwargs)}")
        if not state or not isinstance(state, str):
            raise ConfigurationError(f"{self.name}.update_state() needs a state name (a str), got {state!r}")
        if task_id is None:
            request = self.request
            if request.called_directly or request.id is None:
                raise ConfigurationError(
                    f"{self.name}.update_state() without task_id= needs a running task (called as a plain function "
                    "there is no task id)"
                )
            task_id = request.id
        self.app.backend.store_result(task_id, meta, state, name=self.name)

    # -- canvas ----------------------------------------------------------------------------
    def signature(
        self, args: Sequence[Any] | None = None, kwargs: Mapping[str, Any] | None = None, **options: Any
    ) -> Any:
        from simq.canvas.signatures import Signature

        return Signature(self, args, kwargs, options)

    subtask = signature

    def s(self, *args: Any, **kwargs: Any) -> Any:
        """A partial signature: the parent's result will be prepended to ``args``."""
        from simq.canvas.signatures import Signature

        return Signature(self, args, kwargs)

    def si(self, *args: Any, **kwargs: Any) -> Any:
        """An immutable signature: it takes nothing from its parent."""
        from simq.canvas.signatures import Signature

        return Signature(self, args, kwargs, immutable=True)

    def map(self, it: Any) -> Any:
        """One message that calls this task on each item of ``it``, in order: ``tsum.map([range(3), range(4)])``."""
        from simq.canvas.signatures import xmap

        return xmap(self, it, app=self.app)

    def starmap(self, it: Any) -> Any:
        """Like ``map`` but each item is an argument tuple: ``add.starmap(zip(range(3), range(3)))``."""
        from simq.canvas.signatures import xstarmap

        return xstarmap(self, it, app=self.app)

    def chunks(self, it: Any, n: int) -> Any:
        """Split ``it`` (argument tuples) into parts of ``n``; each part is one ``starmap`` message."""
        from simq.canvas.composites import chunks

        return chunks(self, it, n, app=self.app)

    def AsyncResult(self, task_id: str) -> AsyncResult:  # noqa: N802 - Celery's name
        from simq.result import AsyncResult

        return AsyncResult(task_id, self.app)

    # -- worker hooks (Batches overrides these) --------------------------------------------
    def handle(self, worker: Worker, request: Request) -> None:
        """A request for this task is due: run it (Batches buffers it instead)."""
        worker.execute(request)

    def check_worker(self, worker: Worker) -> None:
        """Refuse, at worker start, a configuration this task can never work under."""

    def on_worker_shutdown(self, worker: Worker) -> None:
        """The worker is stopping: finish anything this task holds."""

    # -- user hooks, as in Celery ---------------------------------------------------------
    def on_success(self, retval: Any, task_id: str, args: Any, kwargs: Any) -> None:
        """Called in the worker after the task succeeded."""

    def on_failure(self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        """Called in the worker after the task failed."""

    def on_retry(self, exc: BaseException | None, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        """Called in the worker when the task is sent again."""

    def __repr__(self) -> str:
        return f"<@task: {self.name}>"


def make_task_class(
    app: App,
    fun: Callable[..., Any],
    base: type[Task],
    name: str,
    options: Mapping[str, Any],
) -> type[Task]:
    bind = options.get("bind", False)
    run: Any = fun if bind else staticmethod(fun)

    namespace: dict[str, Any] = {
        "name": name,
        "app": app,
        "run": run,
        "__doc__": fun.__doc__,
        "__module__": fun.__module__,
        "__wrapped__": fun,
        "__qualname__": getattr(fun, "__qualname__", name),
    }
    namespace.update(options)
    return type(fun.__name__, (base,), namespace)


CALL_OPTIONS = _CALL_OPTIONS

#: What ``self.retry(**options)`` may change about the message it sends again.
RETRY_OPTIONS = ("queue", "exchange", "routing_key", "priority", "serializer", "headers", "expires")


def check_retry_policy(task: type[Task]) -> None:
    """Refuse, when the task is defined, a retry policy that could never work."""
    for name in ("autoretry_for", "dont_autoretry_for"):
        value = getattr(task, name)
        if isinstance(value, type):
            value = (value,)
            setattr(task, name, value)
        if not isinstance(value, tuple) or not all(isinstance(c, type) and issubclass(c, BaseException) for c in value):
            raise ConfigurationError(f"task {task.name!r}: {name} must be a tuple of exception classes, got {value!r}")
    kwargs = task.retry_kwargs
    if not isinstance(kwargs, Mapping):
        raise ConfigurationError(f"task {task.name!r}: retry_kwargs must be a dict, got {kwargs!r}")
    allowed = ("countdown", "eta", "max_retries", *RETRY_OPTIONS)
    for key in kwargs:
        if key not in allowed:
            raise ConfigurationError(f"task {task.name!r}: retry_kwargs has {key!r}; it takes {', '.join(allowed)}")
    backoff = task.retry_backoff
    if not isinstance(backoff, bool | int | float) or backoff < 0:
        raise ConfigurationError(
            f"task {task.name!r}: retry_backoff must be True, False or a factor in seconds, got {backoff!r}"
        )
    if not isinstance(task.retry_backoff_max, int | float) or task.retry_backoff_max < 0:
        raise ConfigurationError(
            f"task {task.name!r}: retry_backoff_max must be seconds >= 0, got {task.retry_backoff_max!r}"
        )


def backoff_countdown(task: Task, retries: int, rng: Any) -> float:
    """Celery's exponential backoff: ``factor * 2 ** retries``, capped, then (with jitter) uniform in [0, that]."""
    factor = 1 if task.retry_backoff is True else float(task.retry_backoff)
    countdown = min(float(task.retry_backoff_max), factor * float(2**retries))
    if task.retry_jitter:
        countdown = float(rng.uniform(0, countdown))
    return max(0.0, countdown)


def _links(value: Any) -> list[Any]:
    """``link=`` / ``link_error=``: one signature or a list of them."""
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]
