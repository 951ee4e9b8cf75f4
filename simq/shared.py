"""What is process-wide by definition: tasks defined without an app, and which app is current.

``@shared_task`` defines a task for every App (those that exist and those made
later); ``current_app()`` is the app such a task, a signature without an app,
or a bare ``AsyncResult(id)`` resolves to. This module imports no other simq
module at run time, so anything may ask it for the current app.
"""

from __future__ import annotations

import contextvars
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from simq.exceptions import ConfigurationError

if TYPE_CHECKING:
    from simq.app import App
    from simq.task import Task

__all__ = ["SharedTask", "current_app", "make_current", "register_shared", "shared_task"]

# The one piece of process-wide state simq keeps: the definitions, and which app is current.
_shared_definitions: list[tuple[Callable[..., Any], dict[str, Any]]] = []
_apps: list[weakref.ref[App]] = []
_current_app: contextvars.ContextVar[App | None] = contextvars.ContextVar("simq_current_app", default=None)
# The app most recently made current in any thread: where a fresh thread's current_app() goes.
_default: list[weakref.ref[App]] = []


def make_current(app: App) -> None:
    """Make ``app`` current in this context and the process's default (see ``current_app``)."""
    _current_app.set(app)
    _default[:] = [weakref.ref(app)]


def register_shared(app: App) -> None:
    """A new app: register every shared task on it and make it current."""
    _apps.append(weakref.ref(app))
    make_current(app)
    for fun, options in _shared_definitions:
        _define(app, fun, options)


def _define(app: App, fun: Callable[..., Any], options: dict[str, Any]) -> None:
    app.task(**options)(fun)


def current_app() -> App:
    """The app made current in this context (``app.set_current()``), else the process's newest one.

    A thread started by user code, or by a library, does not inherit the
    context of the thread that started it; it falls back to the app most
    recently made current anywhere in the process, as Celery's default app does.
    """
    app = _current_app.get()
    if app is None:
        app = _process_default()
    if app is None:
        raise ConfigurationError("no simq App exists yet: create one with simq.App('name')")
    return app


def _process_default() -> App | None:
    for ref in reversed(_default):
        app = ref()
        if app is not None:
            return app
    return None


class SharedTask:
    """A task defined without an app: it is registered on every app and resolves to the current one."""

    def __init__(self, fun: Callable[..., Any], options: dict[str, Any]) -> None:
        self._fun = fun
        self._options = options
        self.name = options.get("name") or f"{fun.__module__}.{fun.__qualname__}"
        self.__wrapped__ = fun
        self.__doc__ = fun.__doc__

    def _task(self) -> Task:
        return current_app().tasks[self.name]

    def __getattr__(self, attr: str) -> Any:
        try:
            task = self._task()
        except ConfigurationError as exc:
            # hasattr() and getattr(task, name, default) must keep working before any App exists
            raise AttributeError(f"shared task {self.name!r} has no {attr!r} yet: {exc}") from None
        return getattr(task, attr)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._task()(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<@shared_task: {self.name}>"


def shared_task(*args: Any, **options: Any) -> Any:
    """``@shared_task``: a task registered on every App, used through the current one."""

    def decorator(fun: Callable[..., Any]) -> SharedTask:
        _shared_definitions.append((fun, dict(options)))
        for ref in _apps:
            app = ref()
            if app is not None:
                _define(app, fun, dict(options))
        return SharedTask(fun, dict(options))

    if len(args) == 1 and callable(args[0]) and not options:
        return decorator(args[0])
    return decorator
