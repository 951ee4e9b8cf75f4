"""``celery.contrib.testing.manager.Manager`` on simq: waiting helpers for integration tests.

In a simulation every wait runs the simulation (``run_until_idle``); against
real workers it polls on the wall clock, as Celery's does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from simq import exceptions, states
from simq.clock import WallClock

__all__ = ["Manager"]

T = TypeVar("T")

_IN_PROGRESS_OR_DONE = (states.STARTED, states.SUCCESS)


class Manager:
    """Celery's test manager: ``wait_until_idle``, ``inspect``, ``wait_for``, result-state assertions."""

    def __init__(self, app: Any, **kwargs: Any) -> None:
        if kwargs:
            raise TypeError(f"Manager() got {sorted(kwargs)[0]!r}; simq's Manager takes only the app")
        self.app = app

    def inspect(self, timeout: float = 1.0) -> Any:
        return self.app.control.inspect(timeout=timeout)

    def wait_until_idle(self, timeout: float = 30.0) -> None:
        """Return once no task is running or waiting (the simulation has run dry, or no worker reports one)."""
        sim = self.app.simulation
        if sim is not None:
            sim.run_until_idle()
            return

        def idle() -> bool:
            replies = [self.inspect().active() or {}, self.inspect().reserved() or {}]
            return all(not tasks for reply in replies for tasks in reply.values())

        self.wait_for(idle, desc="workers idle", timeout=timeout)

    def wait_for(
        self,
        fun: Callable[[], T],
        catch: Sequence[type[BaseException]] = (),
        desc: str = "thing",
        sleep: float = 0.5,
        timeout: float = 30.0,
        **_: Any,
    ) -> T:
        """Call ``fun`` until it returns something true (sleeping ``sleep`` between tries); raise after ``timeout``."""
        sim = self.app.simulation
        wall = WallClock()
        deadline = (sim.clock.now if sim is not None else wall.monotonic()) + timeout
        while True:
            try:
                value = fun()
            except tuple(catch):
                value = None
            if value:
                return value
            if (sim.clock.now if sim is not None else wall.monotonic()) >= deadline:
                raise exceptions.TimeoutError(f"waited {timeout} s for {desc}")
            if sim is not None:
                sim.advance(sleep)  # virtual seconds: the simulation does what falls due meanwhile
            else:
                wall.sleep(sleep)

    def join(self, r: Any, propagate: bool = False, max_retries: int = 10, **kwargs: Any) -> Any:
        return r.get(propagate=propagate, **kwargs)

    def _states(self, results: Iterable[Any]) -> list[str]:
        return [r.state for r in results]

    def assert_result_tasks_in_states(
        self, async_results: Sequence[Any], wanted: Sequence[str], timeout: float = 30.0, interval: float = 0.5
    ) -> bool:
        def check() -> bool:
            return all(s in wanted for s in self._states(async_results))

        return self.wait_for(check, desc=f"results in {list(wanted)}", sleep=interval, timeout=timeout)

    def assert_result_tasks_in_progress_or_completed(
        self, async_results: Sequence[Any], interval: float = 0.5, desc: str = "", timeout: float = 30.0, **_: Any
    ) -> bool:
        return self.assert_result_tasks_in_states(async_results, _IN_PROGRESS_OR_DONE, timeout, interval)
