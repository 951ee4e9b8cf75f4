"""Revoking tasks (``AsyncResult.revoke``, ``app.control.revoke``) on every backend.

A revoked task that has not started never runs: the worker stores REVOKED,
acknowledges the message and goes on. The tasks here wait for an eta, so the
revoke is known to every worker before they are due, however the worker
hears it (at once in-process, from the revocation log within a poll interval
elsewhere).
"""

from __future__ import annotations

import pytest

from simq import group, states
from simq.exceptions import TaskRevokedError

pytestmark = pytest.mark.simq_not_eager("an eager task has run before revoke() can be called, as in Celery")


def test_a_revoked_task_never_runs_and_its_result_says_revoked(backend):
    app = backend.app()
    ran = backend.record()

    @app.task
    def work(x):
        ran.append(x)
        return x

    countdown = 3
    doomed = work.apply_async((1,), countdown=countdown)
    kept = work.apply_async((2,), countdown=countdown)
    doomed.revoke()
    assert kept.get(timeout=60) == 2
    with pytest.raises(TaskRevokedError):
        doomed.get(timeout=60)
    assert doomed.state == states.REVOKED
    assert list(ran) == [2]


def test_control_revoke_takes_several_ids_and_a_group_revokes_its_members(backend):
    app = backend.app()
    ran = backend.record()

    @app.task
    def work(x):
        ran.append(x)
        return x

    countdown = 3
    first = work.apply_async((1,), countdown=countdown)
    second = work.apply_async((2,), countdown=countdown)
    members = group(work.s(3).set(countdown=countdown), work.s(4).set(countdown=countdown)).apply_async()
    app.control.revoke([first.id, second.id])
    members.revoke()
    survivor = work.apply_async((5,), countdown=countdown)
    assert survivor.get(timeout=60) == 5
    for result in (first, second, *members.results):
        with pytest.raises(TaskRevokedError):
            result.get(timeout=60)
    assert list(ran) == [5]
