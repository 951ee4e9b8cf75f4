"""The ``celery.contrib.pytest`` fixtures on simq (the module ``celery.contrib.pytest`` is, once installed).

Modes (``--simq-celery-mode``): ``sim`` (default) runs each test's app in a
seeded simulation (``--simq-seed`` replays) and the worker fixtures are that
simulation; ``eager`` sets ``task_always_eager``; ``deployed`` starts real
``simq worker`` processes on ``--simq-celery-broker`` (``simq.celery.deployed``).
Override ``celery_config``, ``celery_includes`` and the rest in a conftest.py,
as with Celery.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
import time
import types
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pytest

from simq.celery.app import Celery
from simq.exceptions import ConfigurationError
from simq.shared import current_app, make_current

__all__ = [
    "celery_app",
    "celery_class_tasks",
    "celery_config",
    "celery_enable_logging",
    "celery_includes",
    "celery_parameters",
    "celery_session_app",
    "celery_session_worker",
    "celery_worker",
    "celery_worker_parameters",
    "celery_worker_pool",
    "depends_on_current_app",
    "use_celery_app_trap",
]


class SimulatedWorker:
    """What ``celery_worker`` is in sim and eager mode: the simulation (or eager run) does the work."""

    def __init__(self, app: Celery, mode: str) -> None:
        self.app = app
        self.mode = mode
        self.hostname = f"simq-{mode}@localhost"

    def __repr__(self) -> str:
        return f"<simq.celery {self.mode} worker of {self.app.main!r}>"


def _mode(config: Any) -> str:
    # default: the fixtures imported by a conftest.py without the plugin loaded (as Celery's suite does)
    return str(config.getoption("--simq-celery-mode", default="sim"))


def _seed(config: Any) -> int:
    seed = config.getoption("--simq-seed", default=None)
    return 0 if seed is None else int(seed)


def _current() -> Any:
    try:
        return current_app()
    except ConfigurationError:  # no app yet
        return None


@contextlib.contextmanager
def _virtual_sleep_in(modules: Sequence[types.ModuleType], real: Any) -> Iterator[None]:
    """Inside a simulation, ``from time import sleep`` names in ``modules`` sleep virtually too.

    simq routes ``time.sleep`` to the simulation; a module that bound the name
    at import time (Celery's suite does, in its tests and its tasks) keeps the
    real one, so its polling loops would wait on the wall clock. While the
    simulation runs those names point at the routed function; after, back.
    """
    routed = vars(time)["sleep"]
    changed: list[tuple[types.ModuleType, str]] = []
    if routed is not real:
        for module in modules:
            for name, value in list(vars(module).items()):
                if value is real:
                    setattr(module, name, routed)
                    changed.append((module, name))
    try:
        yield
    finally:
        for module, name in changed:
            setattr(module, name, real)


def _test_modules(request: Any, includes: Sequence[str]) -> list[types.ModuleType]:
    modules = [sys.modules[name] for name in includes if name in sys.modules]
    module = getattr(request, "module", None)
    if module is not None:
        modules.append(module)
    return modules


def make_app(
    request: Any,
    config: Mapping[str, Any],
    parameters: Mapping[str, Any],
    includes: Sequence[str] = (),
    class_tasks: Sequence[Any] = (),
) -> Celery:
    """The app a fixture yields: ``config`` under Celery's names, plus what the mode needs."""
    from simq.celery import deployed

    settings = dict(config)
    mode = _mode(request.config)
    if mode == "eager":
        settings["task_always_eager"] = True
    elif mode == "deployed":
        settings.update(deployed.settings(request.config))
    params = dict(parameters)
    main = params.pop("main", "celery.tests")
    previous = _current()
    app = Celery(main, set_as_current=False, **params)
    app.conf.update(settings)
    for module in includes:
        importlib.import_module(module)
    for task in class_tasks:
        app.register_task(task)
    if previous is not None:
        make_current(previous)
    return app


@pytest.fixture(scope="session")
def use_celery_app_trap() -> bool:
    return False


@pytest.fixture(scope="session")
def celery_config() -> Mapping[str, Any]:
    """Settings of the test apps (Celery's names); override it in your conftest.py."""
    return {}


@pytest.fixture(scope="session")
def celery_parameters() -> Mapping[str, Any]:
    """Keyword arguments of the test apps' ``Celery(...)``."""
    return {}


@pytest.fixture(scope="session")
def celery_worker_parameters() -> Mapping[str, Any]:
    """Options of the worker fixtures (deployed mode: ``queues``, ``concurrency``)."""
    return {}


@pytest.fixture(scope="session")
def celery_enable_logging() -> bool:
    return False


@pytest.fixture(scope="session")
def celery_includes() -> Sequence[str]:
    """Modules the test apps import (their tasks)."""
    return ()


@pytest.fixture(scope="session")
def celery_worker_pool() -> str:
    """Celery's worker pool name; simq's fixtures take the pool from the mode (docs/celery.md)."""
    return "solo"


@pytest.fixture(scope="session")
def celery_class_tasks() -> Sequence[Any]:
    """Class-based tasks to register on the test apps."""
    return ()


@pytest.fixture(scope="session")
def celery_session_app(
    request: Any,
    celery_config: Mapping[str, Any],
    celery_parameters: Mapping[str, Any],
    celery_enable_logging: bool,
    use_celery_app_trap: bool,
) -> Iterator[Celery]:
    """One app for the session."""
    app = make_app(request, celery_config, celery_parameters)
    yield app
    app.close()


@pytest.fixture(scope="session")
def celery_session_worker(
    request: Any,
    celery_session_app: Celery,
    celery_includes: Sequence[str],
    celery_class_tasks: Sequence[Any],
    celery_worker_pool: str,
    celery_worker_parameters: Mapping[str, Any],
) -> Iterator[Any]:
    """The session's worker: the simulation (sim), eager runs (eager), or ``simq worker`` processes (deployed)."""
    for module in celery_includes:
        importlib.import_module(module)
    for task in celery_class_tasks:
        celery_session_app.register_task(task)
    with _worker(request, celery_session_app, celery_includes, celery_class_tasks) as worker:
        yield worker


@pytest.fixture
def celery_app(
    request: Any,
    celery_config: Mapping[str, Any],
    celery_parameters: Mapping[str, Any],
    celery_enable_logging: bool,
    use_celery_app_trap: bool,
) -> Iterator[Celery]:
    """A fresh app per test, current while the test runs; in sim mode, inside its own seeded simulation."""
    mark = request.node.get_closest_marker("celery")
    config = dict(celery_config, **(mark.kwargs if mark else {}))
    includes = request.getfixturevalue("celery_includes")
    class_tasks = request.getfixturevalue("celery_class_tasks")
    app = make_app(request, config, celery_parameters, includes, class_tasks)
    previous = _current()
    app.set_current()
    try:
        if _mode(request.config) == "sim":
            with _simulation(request, app, includes) as sim:
                yield app
            report = getattr(request.node, "rep_call", None)
            if report is not None and report.failed:
                print(f"\nsimq: replay with --simq-seed={_seed(request.config)} (trace digest {sim.digest[:16]})")
        else:
            yield app
    finally:
        app.close()
        if previous is not None:
            make_current(previous)


@pytest.fixture
def celery_worker(
    request: Any,
    celery_app: Celery,
    celery_includes: Sequence[str],
    celery_class_tasks: Sequence[Any],
    celery_worker_pool: str,
    celery_worker_parameters: Mapping[str, Any],
) -> Iterator[Any]:
    """A worker for ``celery_app``: its simulation (sim), eager runs, or ``simq worker`` processes (deployed)."""
    with _worker(request, celery_app, celery_includes, celery_class_tasks) as worker:
        yield worker


@contextlib.contextmanager
def _worker(request: Any, app: Celery, includes: Sequence[str], class_tasks: Sequence[Any]) -> Iterator[Any]:
    if _mode(request.config) != "deployed":
        yield SimulatedWorker(app, _mode(request.config))
        return
    from simq.celery import deployed

    with deployed.workers(request.config, app, includes, class_tasks) as handle:
        yield handle


@contextlib.contextmanager
def _simulation(request: Any, app: Celery, includes: Sequence[str]) -> Iterator[Any]:
    """``app`` in a simulation seeded by ``--simq-seed``, ``from time import sleep`` names of the tests virtual too."""
    real_sleep = vars(time)["sleep"]
    with (
        app.simulate(seed=_seed(request.config)) as sim,
        _virtual_sleep_in(_test_modules(request, includes), real_sleep),
    ):
        yield sim


@pytest.fixture
def depends_on_current_app(celery_app: Celery) -> None:
    celery_app.set_current()


@pytest.fixture(autouse=True)
def _simq_celery_session_simulation(request: Any) -> Iterator[None]:
    """sim mode, a test using the session app but not ``celery_app``: run it in a simulation of the session app."""
    names = request.fixturenames
    if _mode(request.config) != "sim" or "celery_app" in names or "celery_session_app" not in names:
        yield
        return
    app = request.getfixturevalue("celery_session_app")
    includes = request.getfixturevalue("celery_includes") if "celery_includes" in names else ()
    with _simulation(request, app, includes):
        yield
