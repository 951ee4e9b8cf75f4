"""``Task.update_state``: Celery's custom states, read back as ``AsyncResult.state`` and ``.info``."""

from __future__ import annotations

import pytest

from simq import App
from simq.exceptions import ConfigurationError


def test_a_custom_state_and_its_meta_are_seen_while_the_task_runs_then_its_result():
    app = App("progress")
    seen = []

    @app.task(bind=True, name="p.work")
    def work(self, n):
        for i in range(n):
            self.update_state(state="PROGRESS", meta={"done": i, "total": n})
            seen.append((app.AsyncResult(self.request.id).state, app.AsyncResult(self.request.id).info))
        return n

    with app.simulate():
        result = work.delay(2)
        assert result.get() == 2
        assert result.state == "SUCCESS"
    assert seen == [("PROGRESS", {"done": 0, "total": 2}), ("PROGRESS", {"done": 1, "total": 2})]


def test_update_state_of_another_task_and_the_refusals():
    app = App("progress2")

    @app.task(name="p.noop")
    def noop():
        return None

    with app.simulate():
        noop.update_state("someone-else", "PROGRESS", {"step": 3})
        other = app.AsyncResult("someone-else")
        assert (other.state, other.info, other.ready()) == ("PROGRESS", {"step": 3}, False)
    with pytest.raises(ConfigurationError, match="running task"):
        noop.update_state(state="PROGRESS")
    with pytest.raises(ConfigurationError, match="state name"):
        noop.update_state("x")
