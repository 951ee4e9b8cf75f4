"""The campaign's tasks: what the workers load with ``-A`` (through a two-line module the runner writes).

Each task is registered twice, as ``chaos.late.<name>`` (``acks_late=True``)
and ``chaos.early.<name>`` (acknowledged when it starts), and writes the
ledger (``start`` on entry, ``end`` with its outcome and value before it
returns). A body's ``sleep`` is slept in short steps (``nap``), so a time limit
raised in a threads-pool thread lands within a step, as the docs tell users
to write such tasks. Every task but the canary takes a keyword-only ``key``, so a
mangled or forged message that names one of them, without that key, can never
enter its body. ``chaos.canary`` is what the campaign's poison names when it
is well formed enough to run: any run of it is in the ledger, and the checker
says whether that run was allowed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from simq.app import App
from simq.chaos.ledger import Event, Ledger
from simq.clock import WallClock

__all__ = ["ACK_MODES", "NAP_STEP", "DeliberateFailure", "WrongInput", "build_app", "from_env", "nap", "task_name"]

ACK_MODES = {"late": True, "early": False}
NAP_STEP = 0.05  # seconds: the longest a body sleeps at once
ENV = ("SIMQ_CHAOS_BROKER", "SIMQ_CHAOS_BACKEND", "SIMQ_CHAOS_LEDGER", "SIMQ_CHAOS_RUN")


class DeliberateFailure(Exception):
    """Raised by ``chaos.*.fail``: a failure the workload asked for (the oracle expects it)."""


class WrongInput(Exception):
    """Raised by ``chaos.*.total`` when a header value is not an int (e.g. ``None``): the chord was fed wrongly."""


def task_name(mode: str, name: str) -> str:
    return f"chaos.{mode}.{name}"


def nap(clock: WallClock, seconds: float) -> None:
    """Sleep ``seconds`` in steps of at most ``NAP_STEP``: a limit raised in the thread between steps ends it."""
    until = clock.monotonic() + seconds
    while (left := until - clock.monotonic()) > 0:
        clock.sleep(min(NAP_STEP, left))


def _register(app: App, ledger: Ledger, mode: str, acks_late: bool) -> None:
    clock = WallClock()

    def begin(task: Any) -> None:
        req = task.request
        info = req.delivery_info or {}
        ledger.record(
            Event("start", req.id, req.retries, os.getpid(), os.getppid(), ledger.now(), bool(info.get("redelivered")))
        )

    def end(task: Any, outcome: str, value: Any) -> None:
        req = task.request
        ledger.record(Event("end", req.id, req.retries, os.getpid(), os.getppid(), ledger.now(), False, outcome, value))

    @app.task(bind=True, name=task_name(mode, "add"), acks_late=acks_late)
    def add(self: Any, x: int, y: int, *, key: str, sleep: float = 0.0) -> int:
        begin(self)
        nap(clock, sleep)
        end(self, "ok", x + y)
        return x + y

    @app.task(bind=True, name=task_name(mode, "mul"), acks_late=acks_late)
    def mul(self: Any, x: int, factor: int, *, key: str, sleep: float = 0.0) -> int:
        begin(self)
        nap(clock, sleep)
        end(self, "ok", x * factor)
        return x * factor

    @app.task(bind=True, name=task_name(mode, "total"), acks_late=acks_late)
    def total(self: Any, values: list[Any], *, key: str, sleep: float = 0.0) -> int:
        begin(self)
        nap(clock, sleep)
        if not isinstance(values, list) or not all(type(v) is int for v in values):
            end(self, "fail", values)
            raise WrongInput(f"{key}: chord body got {values!r}, not a list of ints")
        end(self, "ok", values)
        return sum(values)

    @app.task(bind=True, name=task_name(mode, "fail"), acks_late=acks_late)
    def fail(self: Any, x: int, *, key: str, sleep: float = 0.0) -> None:
        begin(self)
        nap(clock, sleep)
        end(self, "fail", x)
        raise DeliberateFailure(f"{key} fails on purpose")

    @app.task(bind=True, name=task_name(mode, "flaky"), acks_late=acks_late, max_retries=10)
    def flaky(self: Any, x: int, *, key: str, fails: int, countdown: float) -> int:
        begin(self)
        if self.request.retries < fails:
            end(self, "retry", x)
            raise self.retry(countdown=countdown, exc=DeliberateFailure(f"{key}: attempt {self.request.retries}"))
        end(self, "ok", x)
        return x


def build_app(broker: str, backend: str, ledger_url: str, run: str) -> App:
    """The campaign app: its tasks in both ack modes and the canary, writing ``run``'s ledger at ``ledger_url``."""
    app = App(f"chaos-{run}", broker=broker, backend=backend)
    ledger = Ledger.connect(ledger_url, run)
    for mode, acks_late in ACK_MODES.items():
        _register(app, ledger, mode, acks_late)

    @app.task(bind=True, name="chaos.canary", acks_late=True)
    def canary(self: Any, *args: Any, **kwargs: Any) -> None:
        req = self.request
        ledger.record(Event("start", req.id, req.retries, os.getpid(), os.getppid(), ledger.now()))
        ledger.record(Event("end", req.id, req.retries, os.getpid(), os.getppid(), ledger.now(), False, "ok", None))

    return app


def from_env(env: Mapping[str, str] | None = None) -> App:
    """``build_app`` from ``SIMQ_CHAOS_BROKER`` / ``_BACKEND`` / ``_LEDGER`` / ``_RUN``: what the worker's module calls."""
    env = os.environ if env is None else env
    missing = [name for name in ENV if not env.get(name)]
    if missing:
        raise RuntimeError(f"the chaos task module needs {', '.join(missing)} in the environment (set by simq chaos)")
    return build_app(
        env["SIMQ_CHAOS_BROKER"], env["SIMQ_CHAOS_BACKEND"], env["SIMQ_CHAOS_LEDGER"], env["SIMQ_CHAOS_RUN"]
    )
