"""``celery.Celery`` on simq: the constructor, ``conf``, ``config_from_object``, ``autodiscover_tasks``, ``task``.

A ``Celery`` is a simq ``App`` that reads Celery's setting names
(``simq.celery.settings``) and Celery's task options (``pydantic=True``).
Modules named by ``include=``, the ``imports``/``include`` settings and
``autodiscover_tasks`` are imported when the app's tasks are first looked up
(a send, a worker's first message), as Celery does when it finalizes the app,
so ``proj/celery.py`` and ``proj/tasks.py`` may import each other.
"""

from __future__ import annotations

import importlib
import importlib.util
import types
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from simq import task as _task
from simq.app import App
from simq.celery.settings import translate
from simq.celery.tasks import task_options
from simq.config import DEFAULTS, Config
from simq.exceptions import ConfigurationError
from simq.shared import current_app, make_current

__all__ = ["Celery", "CeleryConfig"]


class CeleryConfig(Config):
    """An App's settings under Celery's names: translated on the way in, refused when simq has no such thing."""

    def __init__(self, on_change: Callable[[], None], backend: Callable[[], Any], on_imports: Callable[[], None]):
        super().__init__(on_change)
        self._backend = backend
        self._on_imports = on_imports
        dict.update(self, {"include": (), "imports": ()})

    def update(self, *args: Any, **kwargs: Any) -> None:
        values, layer = translate(dict(*args, **kwargs), self._backend())
        if layer:
            for key, value in layer.items():
                modules = (value,) if isinstance(value, str) else tuple(value)
                if not all(isinstance(m, str) for m in modules):
                    raise ConfigurationError(f"setting {key!r} must name modules (strings), got {value!r}")
                dict.__setitem__(self, key, modules)
            self._on_imports()
        if values:
            super().update(values)

    def __setitem__(self, key: str, value: Any) -> None:
        self.update({key: value})

    def setdefault(self, key: str, default: Any = None) -> Any:
        if key not in self:
            self.update({key: default})
        return self[key]


class Celery(App):
    """``Celery("proj", broker=..., backend=...)`` as a simq App (docs/celery.md)."""

    def __init__(
        self,
        main: str | None = None,
        broker: str | None = None,
        backend: str | None = None,
        *,
        include: Iterable[str] | None = None,
        config_source: Any = None,
        set_as_current: bool = True,
        namespace: str | None = None,
        **settings: Any,
    ) -> None:
        unknown = [k for k in settings if k not in DEFAULTS]
        if unknown:
            raise ConfigurationError(
                f"Celery() got {unknown[0]!r}, which simq's Celery layer does not take "
                "(it takes main, broker, backend, include, config_source, set_as_current, namespace and settings)"
            )
        try:
            previous: App | None = current_app()
        except ConfigurationError:
            previous = None
        self._tasks: dict[str, _task.Task] = {}
        self._pending: list[str] = []
        self._imported: set[str] = set()
        super().__init__(main or "__main__", broker=broker, backend=backend)
        old = self.conf
        self.conf = CeleryConfig(self._conf_changed, lambda: old.get("result_backend"), self._queue_imports)
        dict.update(self.conf, old)
        self._namespace = namespace
        if settings:
            self.conf.update(settings)
        if include is not None:
            self.conf.update(include=list(include))
        if config_source is not None:
            self.config_from_object(config_source, namespace=namespace)
        if not set_as_current and previous is not None:
            make_current(previous)

    # -- the task registry, filled by the include/imports modules when first read ----------------
    @property
    def tasks(self) -> dict[str, _task.Task]:
        if self._pending:
            pending, self._pending = self._pending, []
            for name in pending:
                self._import(name)
        return self._tasks

    @tasks.setter
    def tasks(self, value: dict[str, _task.Task]) -> None:
        self._tasks = value

    def _queue_imports(self) -> None:
        for key in ("imports", "include"):
            for name in self.conf.get(key, ()):
                if name not in self._imported and name not in self._pending:
                    self._pending.append(name)

    def _import(self, name: str) -> None:
        self._imported.add(name)
        importlib.import_module(name)

    def loader_import_default_modules(self) -> None:
        """Import the include/imports/autodiscover modules now (a worker does this at start)."""
        _ = self.tasks

    # -- Celery's configuration entry points ------------------------------------------------------
    def config_from_object(
        self, obj: Any, silent: bool = False, force: bool = False, namespace: str | None = None
    ) -> None:
        """Settings from a module path (``"proj.celeryconfig"``, ``"mod:attr"``), a module, an object or a dict."""
        del force  # simq reads the object now; Celery's lazy read changes nothing observable here
        if isinstance(obj, str):
            try:
                obj = _by_name(obj)
            except ImportError:
                if silent:
                    return
                raise
        values = _settings_of(obj, namespace or self._namespace)
        self.conf.update(values)

    def autodiscover_tasks(
        self,
        packages: Iterable[str] | Callable[[], Iterable[str]] | None = None,
        related_name: str = "tasks",
        force: bool = False,
    ) -> None:
        """Import ``<package>.<related_name>`` for each package (now with ``force=True``, else at the first lookup)."""
        if packages is None:
            raise ConfigurationError(
                "autodiscover_tasks() needs the packages: simq has no Django fixup to find them (docs/celery.md)"
            )
        names = list(packages() if callable(packages) else packages)
        for package in names:
            module = f"{package}.{related_name}" if related_name else package
            try:
                found = importlib.util.find_spec(module) is not None
            except ModuleNotFoundError:
                found = False
            if not found:
                continue  # Celery skips a package without a tasks module too
            if module not in self._imported and module not in self._pending:
                self._pending.append(module)
        if force:
            _ = self.tasks

    def set_default(self) -> None:
        """Celery's ``set_default``: simq has one notion of the current app, so this is ``set_current``."""
        self.set_current()

    @property
    def Task(self) -> type[_task.Task]:  # noqa: N802 - Celery's name
        """The base class of this app's tasks (``class MyTask(app.Task)``)."""
        return _task.Task

    # -- tasks ------------------------------------------------------------------------------------
    def task(self, *args: Any, **options: Any) -> Any:
        """``@app.task`` or ``@app.task(bind=True, base=..., pydantic=True, ...)``."""
        if len(args) == 1 and callable(args[0]) and not options:
            return self._register(*task_options(args[0], {}))
        if args:
            raise ConfigurationError(f"@app.task takes options by keyword, got {args!r}")

        def decorator(fun: Callable[..., Any]) -> _task.Task:
            return self._register(*task_options(fun, options))

        return decorator

    def register_task(self, task: Any) -> _task.Task:
        """Register a ``Task`` instance, or a class-based task (a ``Task`` subclass with ``name`` and ``run``)."""
        if isinstance(task, type) and issubclass(task, _task.Task):
            if not task.name:
                raise ConfigurationError(f"class-based task {task.__qualname__} needs a name attribute")
            run = task.__dict__.get("run") or task.run
            options = {"name": task.name, "base": task, "bind": True}
            return self._register(run, options)
        if isinstance(task, _task.Task):
            return super().register_task(task)
        raise ConfigurationError(f"register_task takes a Task or a Task subclass, got {task!r}")


def _by_name(path: str) -> Any:
    module_name, _, attr = path.partition(":")
    module = importlib.import_module(module_name)
    value: Any = module
    for part in attr.split(".") if attr else ():
        value = getattr(value, part)
    return value


def _settings_of(obj: Any, namespace: str | None) -> dict[str, Any]:
    if isinstance(obj, Mapping):
        items = dict(obj)
    else:
        items = {k: getattr(obj, k) for k in dir(obj) if not k.startswith("_")}
    values: dict[str, Any] = {}
    prefix = f"{namespace}_" if namespace else None
    for key, value in items.items():
        if isinstance(value, types.ModuleType | types.FunctionType | type):
            continue
        if prefix is not None:
            if key.startswith(prefix):
                values[key[len(prefix) :].lower()] = value
        elif key.islower() or key.isupper():
            values[key] = value
    return values
