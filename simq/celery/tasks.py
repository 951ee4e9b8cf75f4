"""Celery's task options that simq's ``@app.task`` does not take itself: ``pydantic=True``.

Celery 5.5 validates the arguments of a ``pydantic=True`` task into the
models its annotations name and dumps a returned model; the layer wraps the
function to do the same before simq registers it.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable, Mapping
from typing import Any

from simq.exceptions import ConfigurationError

__all__ = ["shared_task", "task_options"]

_PYDANTIC_OPTIONS = ("pydantic_strict", "pydantic_context", "pydantic_dump_kwargs")


def task_options(fun: Callable[..., Any], options: Mapping[str, Any]) -> tuple[Callable[..., Any], dict[str, Any]]:
    """The function and options simq's ``@app.task`` gets for a Celery-style ``@task(**options)``."""
    options = dict(options)
    if options.pop("pydantic", False):
        strict = bool(options.pop("pydantic_strict", False))
        context = options.pop("pydantic_context", None)
        dump = dict(options.pop("pydantic_dump_kwargs", None) or {})
        fun = _pydantic(fun, strict, context, dump)
    else:
        given = [k for k in _PYDANTIC_OPTIONS if k in options]
        if given:
            raise ConfigurationError(f"task option {given[0]!r} needs pydantic=True")
    return fun, options


def _pydantic(
    fun: Callable[..., Any], strict: bool, context: Mapping[str, Any] | None, dump: dict[str, Any]
) -> Callable[..., Any]:
    try:
        from pydantic import BaseModel
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ConfigurationError(f"task {fun.__qualname__!r} has pydantic=True: pip install pydantic ({exc})") from exc
    sig = inspect.signature(fun)

    @functools.wraps(fun)
    def run(*args: Any, **kwargs: Any) -> Any:
        hints = typing.get_type_hints(fun)  # at call time: string annotations name models defined later
        bound = sig.bind(*args, **kwargs)
        for name, value in bound.arguments.items():
            hint = hints.get(name)
            if isinstance(hint, type) and issubclass(hint, BaseModel) and not isinstance(value, hint):
                bound.arguments[name] = hint.model_validate(value, strict=strict, context=context)
        result = fun(*bound.args, **bound.kwargs)
        return result.model_dump(**dump) if isinstance(result, BaseModel) else result

    return run


def shared_task(*args: Any, **options: Any) -> Any:
    """Celery's ``@shared_task`` (with ``pydantic=True``) on simq's ``shared_task``."""
    from simq.shared import shared_task as simq_shared_task

    def decorator(fun: Callable[..., Any]) -> Any:
        fun, rest = task_options(fun, options)
        return simq_shared_task(**rest)(fun)

    if len(args) == 1 and callable(args[0]) and not options:
        return decorator(args[0])
    if args:
        raise ConfigurationError(f"@shared_task takes options by keyword, got {args!r}")
    return decorator
