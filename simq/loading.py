"""Finding the app a command names: ``-A module:attribute``."""

from __future__ import annotations

import importlib
import os
import sys
from typing import TYPE_CHECKING, Any

from simq.exceptions import ConfigurationError

if TYPE_CHECKING:
    from simq.app import App

__all__ = ["CELERY_ENV", "load_app"]

#: Set to 1 (``--celery``), the app is imported with simq's Celery layer switched on; pool children inherit it.
CELERY_ENV = "SIMQ_CELERY"


def load_app(spec: str) -> App:
    """``module:attribute`` (or ``module``, which must hold ``app``) -> the App it names."""
    from simq.app import App

    module_name, _, attr = spec.partition(":")
    if os.environ.get(CELERY_ENV) == "1":
        import simq.celery

        simq.celery.install()
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"cannot import {module_name!r} for -A {spec!r}: {exc}") from exc
    candidates = [attr] if attr else ["app", "simq_app"]
    for name in candidates:
        value: Any = module
        try:
            for part in name.split("."):
                value = getattr(value, part)
        except AttributeError:
            continue
        if isinstance(value, App):
            return value
        hint = ""
        if type(value).__module__.split(".")[0] == "celery":
            hint = (
                " (a Celery app: give --celery to switch on simq's Celery layer, docs/celery.md, "
                "or call simq.celery.install() before celery is imported)"
            )
        raise ConfigurationError(f"-A {spec!r} names {type(value).__name__} {name!r}, not a simq.App{hint}")
    raise ConfigurationError(
        f"module {module_name!r} has no App named {' or '.join(candidates)!r}; use -A module:attribute"
    )
