"""simq's Celery compatibility layer: ``import celery`` resolves to simq, switched on explicitly.

In a script: ``import simq.celery; simq.celery.install()``, then ``from celery
import Celery, shared_task, group, chain, chord`` give simq's objects, even
where the real celery is installed. In pytest: ``pytest -p simq.celery``
installs it before any test module or conftest imports celery, and provides
the ``celery.contrib.pytest`` fixtures on the simulator (the default), eagerly
or on real ``simq worker`` processes (``--simq-celery-mode``). docs/celery.md
is the migration guide.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import threading
import types
from collections.abc import Sequence
from typing import Any

__all__ = ["MODES", "install", "installed", "uninstall"]

#: How the pytest plugin's worker fixtures run tasks.
MODES = ("sim", "eager", "deployed")

_lock = threading.Lock()


class _Refuse(importlib.abc.MetaPathFinder):
    """Stops ``import celery.<something the layer lacks>`` from reaching a real celery on sys.path."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname == "celery" or fullname.startswith("celery."):
            raise ModuleNotFoundError(
                f"{fullname} is not provided by simq's Celery layer (simq.celery is installed); "
                "simq has no such module: see docs/celery.md",
                name=fullname,
            )
        return None


def _ours(name: str) -> bool:
    """A module name the layer provides (celery and its submodules, celery_batches)."""
    return name in ("celery", "celery_batches") or name.startswith("celery.")


def installed() -> bool:
    """Whether ``import celery`` gives simq's layer now."""
    module = sys.modules.get("celery")
    return module is not None and getattr(module, "__file__", None) == _layer_file()


def _layer_file() -> str:
    from simq.celery.modules import LAYER_FILE

    return LAYER_FILE


def install() -> None:
    """Put the layer's ``celery`` modules into ``sys.modules`` (replacing a real celery's); idempotent."""
    from simq.celery.modules import build_modules

    with _lock:
        if not any(isinstance(f, _Refuse) for f in sys.meta_path):
            sys.meta_path.insert(0, _Refuse())
        if installed():
            return
        for name in [n for n in sys.modules if _ours(n)]:
            del sys.modules[name]
        sys.modules.update(build_modules())


def uninstall() -> None:
    """Take the layer out again (``import celery`` then finds a real celery, if one is installed)."""
    with _lock:
        for name in [n for n in sys.modules if _ours(n)]:
            del sys.modules[name]
        sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _Refuse)]


# -- the pytest plugin (``pytest -p simq.celery``); pytest is imported only by the fixtures module ------
def pytest_addoption(parser: Any) -> None:
    group = parser.getgroup("simq.celery")
    group.addoption(
        "--simq-celery-mode",
        choices=MODES,
        default="sim",
        help="how celery_worker/celery_session_worker run tasks: sim (seeded simulation), eager, deployed",
    )
    group.addoption("--simq-celery-broker", default=None, help="deployed mode: the broker URL the workers use")
    group.addoption("--simq-celery-backend", default=None, help="deployed mode: the result backend URL")
    group.addoption(
        "--simq-celery-pool", choices=("threads", "processes", "solo"), default="threads", help="deployed mode: pool"
    )
    group.addoption("--simq-celery-concurrency", type=int, default=4, help="deployed mode: -c of each worker")


def pytest_load_initial_conftests(early_config: Any, parser: Any, args: Any) -> None:
    """Before any conftest.py is imported: switch the layer on, so ``import celery`` is simq's."""
    install()


def pytest_configure(config: Any) -> None:
    install()
    config.addinivalue_line("markers", "celery(**settings): settings the celery_app fixture adds for this test")
    from simq.celery import fixtures

    if not config.pluginmanager.is_registered(fixtures):
        config.pluginmanager.register(fixtures, "simq.celery.fixtures")
