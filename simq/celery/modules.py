"""The ``celery`` modules the layer puts into ``sys.modules``, each filled with simq's own objects.

A name simq does not have is left out: ``from celery.canvas import
maybe_signature`` fails with an ImportError whose location is this file,
and ``celery.canvas.maybe_signature`` with an AttributeError naming the layer.
"""

from __future__ import annotations

import logging
import types
import uuid as _uuid
from collections.abc import Callable
from typing import Any

__all__ = ["LAYER_FILE", "MODULE_NAMES", "build_modules"]

LAYER_FILE = __file__

#: Every module the layer provides, parents before children.
MODULE_NAMES = (
    "celery",
    "celery.app",
    "celery.app.task",
    "celery.backends",
    "celery.backends.base",
    "celery.canvas",
    "celery.contrib",
    "celery.contrib.pytest",
    "celery.contrib.testing",
    "celery.contrib.testing.manager",
    "celery.exceptions",
    "celery.result",
    "celery.signals",
    "celery.states",
    "celery.utils",
    "celery.utils.log",
    "celery_batches",
)


class _CurrentApp:
    """``celery.current_app``: a proxy to the app that is current when an attribute is read."""

    def __getattr__(self, name: str) -> Any:
        from simq.shared import current_app

        return getattr(current_app(), name)

    def __repr__(self) -> str:
        return "<celery.current_app proxy (simq.celery)>"


def _missing(module: str) -> Callable[[str], Any]:
    def __getattr__(name: str) -> Any:  # noqa: N807 - a module's __getattr__
        if name.startswith("__"):
            raise AttributeError(name)
        raise AttributeError(
            f"{module}.{name} is not provided by simq's Celery layer (simq.celery): simq has no such feature; "
            "see docs/celery.md"
        )

    return __getattr__


def get_task_logger(name: str) -> logging.Logger:
    """Celery's ``get_task_logger``: a logger under ``celery.task`` (simq adds no task-id formatting)."""
    return logging.getLogger(f"celery.task.{name}" if name != "celery.task" else name)


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(name)


def uuid() -> str:
    """Celery's ``celery.utils.uuid``: a random id, as a string."""
    return str(_uuid.uuid4())


def _contents() -> dict[str, dict[str, Any]]:
    import simq
    from simq import batches, canvas, exceptions, result, signals, states
    from simq.backends import base as backends_base
    from simq.celery.app import Celery
    from simq.celery.tasks import shared_task
    from simq.task import Context, Task

    signal_names = [n for n in signals.__all__ if isinstance(getattr(signals, n), signals.Signal)]
    state_names = [n for n in dir(states) if n.isupper()]
    canvas_names = {
        "Signature": canvas.Signature,
        "signature": simq.signature,
        "chain": canvas.chain,
        "group": canvas.group,
        "chord": canvas.chord,
        "chunks": canvas.chunks,
        "StampingVisitor": canvas.StampingVisitor,
    }
    return {
        "celery": {
            "Celery": Celery,
            "Task": Task,
            "shared_task": shared_task,
            "current_app": _CurrentApp(),
            "uuid": uuid,
            "__version__": "5.6.2",
            **canvas_names,
        },
        "celery.app": {"shared_task": shared_task},
        "celery.app.task": {"Task": Task, "Context": Context},
        "celery.backends": {},
        "celery.backends.base": {
            "Backend": backends_base.Backend,
            "BaseBackend": backends_base.Backend,
            "KeyValueStoreBackend": backends_base.Backend,
            "BaseKeyValueStoreBackend": backends_base.Backend,
        },
        "celery.canvas": dict(canvas_names),
        "celery.contrib": {},
        "celery.contrib.pytest": "simq.celery.fixtures",  # type: ignore[dict-item]
        "celery.contrib.testing": {},
        "celery.contrib.testing.manager": "simq.celery.manager",  # type: ignore[dict-item]
        "celery.exceptions": {
            "CeleryError": exceptions.SimqError,
            "ImproperlyConfigured": exceptions.ConfigurationError,
            "ChordError": exceptions.ChordError,
            "MaxRetriesExceededError": exceptions.MaxRetriesExceededError,
            "NotRegistered": exceptions.NotRegistered,
            "QueueNotFound": exceptions.UnknownQueue,
            "Retry": exceptions.Retry,
            "SoftTimeLimitExceeded": exceptions.SoftTimeLimitExceeded,
            "TaskRevokedError": exceptions.TaskRevokedError,
            "TimeLimitExceeded": exceptions.TimeLimitExceeded,
            "TimeoutError": exceptions.TimeoutError,
            "WorkerLostError": exceptions.WorkerLostError,
            "ContentDisallowed": exceptions.ContentDisallowed,
            "EncodeError": exceptions.EncodeError,
            "DecodeError": exceptions.DecodeError,
        },
        "celery.result": {
            "AsyncResult": result.AsyncResult,
            "GroupResult": result.GroupResult,
            "ResultSet": result.ResultSet,
        },
        "celery.signals": {n: getattr(signals, n) for n in signal_names},
        "celery.states": {n: getattr(states, n) for n in state_names},
        "celery.utils": {"uuid": uuid},
        "celery.utils.log": {"get_task_logger": get_task_logger, "get_logger": get_logger},
        "celery_batches": {"Batches": batches.Batches, "SimpleRequest": batches.SimpleRequest},
    }


def build_modules() -> dict[str, types.ModuleType]:
    """Fresh module objects for every name in ``MODULE_NAMES``, children set as their parents' attributes."""
    import importlib

    modules: dict[str, types.ModuleType] = {}
    for name, contents in _contents().items():
        if isinstance(contents, str):
            module = importlib.import_module(contents)
        else:
            module = types.ModuleType(name, f"simq's Celery layer: {name} (simq.celery)")
            module.__file__ = LAYER_FILE
            module.__dict__.update(contents)
            module.__dict__["__getattr__"] = _missing(name)
            module.__all__ = sorted(k for k in contents if not k.startswith("_"))  # type: ignore[attr-defined]
            module.__path__ = []  # a package: `import celery.x.y` finds the layer's module in sys.modules
        modules[name] = module
    for name in MODULE_NAMES:
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(modules[parent], child, modules[name])
    return modules
