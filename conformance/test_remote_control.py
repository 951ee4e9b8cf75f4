"""Remote control (``app.control``, ``app.control.inspect()``) on every backend.

Every worker of the app answers; in a simulation at once, elsewhere within
the gathering timeout (workers read the control log every
``worker_control_poll_interval``).
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.simq_not_eager("eager mode has no workers to ask")

TIMEOUT = 5.0  # a gathering without destination= waits this long; CI's load once needed more than 3 s


def test_every_worker_answers_a_ping_and_says_what_it_runs(backend):
    app = backend.app()

    @app.task
    def add(x, y):
        return x + y

    assert add.delay(1, 2).get(timeout=30) == 3  # the workers are up
    replies = _until_answered(backend, lambda: app.control.ping(timeout=TIMEOUT))
    assert replies and all(reply == {"ok": "pong"} for r in replies for reply in r.values())
    hostnames = [hostname for r in replies for hostname in r]
    # asked by name, the gathering ends when they all answered: a long timeout costs nothing unless one is
    # slow (CI once had no answer within 3 s from an in-process worker while the deployed columns ran)
    registered = app.control.inspect(destination=hostnames, timeout=15).registered()
    assert registered and all(add.name in names for names in registered.values())
    # every worker that answered the ping answers this too (a worker started after a command never hears it)
    assert set(hostnames) <= set(registered)


def test_inspect_scheduled_shows_a_task_held_for_its_eta(backend):
    app = backend.app()

    @app.task
    def later():
        return "done"

    assert later.delay().get(timeout=30) == "done"  # the workers are up, so the eta below has not passed on arrival
    r = later.apply_async(countdown=8)
    seen: list[list[str]] = []

    def scheduled() -> bool:
        # each inspect takes up to TIMEOUT: keep the answer that was seen, not a second one taken nearer the eta
        seen.append(_scheduled_ids(app))
        return bool(seen[-1])

    backend.wait_until(scheduled, timeout=30)
    assert seen[-1] == [r.id]
    assert r.get(timeout=60) == "done"


def _until_answered(backend, ask):
    """``ask()`` again until a worker answered: on a loaded machine one gathering can end before any reply."""
    got = []

    def answered():
        got.append(ask())
        return bool(got[-1])

    backend.wait_until(answered, timeout=60)
    return got[-1]


def _scheduled_ids(app):
    scheduled = app.control.inspect(timeout=TIMEOUT).scheduled() or {}
    return [entry["request"]["id"] for entries in scheduled.values() for entry in entries]


def test_rate_limit_reaches_the_workers(backend):
    app = backend.app()

    @app.task(rate_limit="1/h")
    def slow():
        return "ran"

    assert slow.delay().get(timeout=30) == "ran"  # the first token; the next would wait an hour
    replies = _until_answered(backend, lambda: app.control.rate_limit(slow.name, "100/s", reply=True, timeout=TIMEOUT))
    assert replies and all("ok" in reply for r in replies for reply in r.values())
    assert slow.delay().get(timeout=30) == "ran"
