"""The app a deployed-worker conformance backend runs: ``simq worker -A conformance.deployed_app:app``.

The test process passes, in ``SIMQ_CONFORMANCE_SPEC``, which test runs (its
module, qualified name and parameters), which of its apps this worker serves,
and the namespace of each app. Importing this module calls that test function
with a :class:`WorkerSide` harness: ``backend.app(...)`` builds the same app
on the same broker and result URLs, tasks are defined on it as in the test,
and the first send, wait or broker connection ends the call (the rest of the
test is the test process's). The app served gets a worker hook that counts what it
started and finished, which the test process reads to know when the workers
are idle.
"""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Callable
from typing import Any

from conformance.deployed import SPEC_ENV, SharedList, counter_keys, record_key, side_url
from conformance.harness import app_urls
from simq import App
from simq.connection import ProducerPool
from simq.hooks import WorkerHook
from simq.transport import Transport


class Defined(BaseException):
    """The test went past its definitions (it sent, waited or connected): stop calling it here."""


class WorkerSide:
    """The harness a test function sees inside a worker process."""

    virtual = False

    def __init__(self, spec: dict[str, Any]) -> None:
        self.name: str = spec["backend"]
        self.spec = spec
        self.apps: list[App] = []
        self.records = 0
        self.defining = True

    def app(
        self,
        *,
        workers: int | None = None,
        queues: list[str] | None = None,
        prefetch_multiplier: int | None = None,
        **config: Any,
    ) -> App:
        index = len(self.apps)
        broker, results, _ = app_urls(self.name, self.spec["base"], index)
        app = App(f"conformance-{index}", broker=broker, backend=results, **config)

        def connect(timeout: float | None) -> Transport:
            self._stop()
            return app.connection(None, timeout)

        app.pool = ProducerPool(connect, int(app.conf.broker_pool_limit))
        self.apps.append(app)
        return app

    def record(self) -> SharedList:
        self.records += 1
        return SharedList(record_key(self.spec["base"], self.records), lambda: self.defining)

    def _stop(self, *_args: Any, **_kwargs: Any) -> None:
        if self.defining:
            raise Defined

    # everything that means "the definitions are done"
    settle = advance = wait_until = workers = add_worker = crash_worker = stop_workers = _stop


def _target(spec: dict[str, Any]) -> Callable[..., Any]:
    module = importlib.import_module(spec["module"])
    value: Any = module
    parts = spec["qualname"].split(".")
    for i, part in enumerate(parts):
        value = getattr(value, part)
        if isinstance(value, type) and i < len(parts) - 1:
            value = value()  # a test class: its methods are called on an instance, as pytest does
    return value  # type: ignore[no-any-return]


class Counting(WorkerHook):
    """Counts one app's tasks started and finished in Redis (the test's idle check), from the worker hooks.

    A task held for its eta counts as started only when it starts (or expires):
    on the wall clock its time has not come, and the workers are idle meanwhile.
    """

    def __init__(self, namespace: str) -> None:
        import redis

        self.started, self.finished, self.held = counter_keys(namespace)
        self.client = redis.Redis.from_url(side_url())

    def on_received(self, worker: Any, request: Any) -> None:
        self.client.incr(self.started)

    def on_held(self, worker: Any, request: Any) -> None:
        self.client.sadd(self.held, request.message.id)
        self.client.decr(self.started)

    def before_run(self, executor: Any, request: Any) -> None:
        if self.client.srem(self.held, request.message.id):
            self.client.incr(self.started)

    def on_revoked(self, executor: Any, request: Any, exc: BaseException, reason: str) -> None:
        self.before_run(executor, request)
        self.client.incr(self.finished)

    def after_task(self, executor: Any, request: Any, state: str, value: Any) -> None:
        self.client.incr(self.finished)

    def on_batch(self, executor: Any, task: Any, requests: Any) -> None:
        for request in requests:
            self.before_run(executor, request)
        self.client.incrby(self.finished, len(requests))


def build(spec: dict[str, Any]) -> App:
    harness = WorkerSide(spec)
    try:
        _target(spec)(backend=harness, **spec["params"])
    except Defined:
        pass
    harness.defining = False
    index = spec["app"]
    if index >= len(harness.apps):
        raise RuntimeError(f"{spec['qualname']} sent before it made app {index}: it cannot run on a deployed worker")
    target = harness.apps[index]
    target.worker_hooks.append(Counting(app_urls(spec["backend"], spec["base"], index)[2]))
    return target


app = build(json.loads(os.environ[SPEC_ENV]))
