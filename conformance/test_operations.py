"""Operations: what a running fleet needs (docs/operations.md), the same on every backend.

Rate limits are per worker, as in Celery, so these tests run one worker of
concurrency 1. On virtual time the limit is minutes and the spacing exact; on
a real broker it is a fraction of a second, so the run stays short. The
worker hands requests to its pool on the limit's schedule, never earlier, but a
body may start a little after its hand-over (a ``processes`` child under load:
up to ~0.1 s measured), which can make the next gap that much shorter, hence
``TOLERANCE``. Without a limit the gaps are milliseconds.
"""

from __future__ import annotations

import itertools
import time

TOLERANCE = 0.15  # seconds, of a 0.5 s interval; real brokers only


def _limit(backend):
    """The rate to set and the seconds it puts between two starts."""
    return ("6/m", 10.0) if backend.virtual else ("2/s", 0.5)


def test_rate_limit_spaces_the_starts_of_one_task_type(backend):
    rate, interval = _limit(backend)
    app = backend.app(workers=1, worker_concurrency=1)
    starts = backend.record()

    @app.task(rate_limit=rate)
    def tick(i):
        starts.append((i, time.time()))
        return i

    results = [tick.delay(i) for i in range(3)]
    assert [r.get(timeout=30) for r in results] == [0, 1, 2]
    assert [i for i, _ in starts] == [0, 1, 2]  # held, not refused, and in arrival order
    gaps = [b - a for (_, a), (_, b) in itertools.pairwise(starts)]
    if backend.name == "simulated":
        assert gaps == [interval, interval]
    elif backend.virtual:  # eager: its clock is the wall clock plus the jumps, so a body reads it a little late
        assert all(abs(gap - interval) < 0.5 for gap in gaps), gaps
    else:
        assert all(gap >= interval - TOLERANCE for gap in gaps), gaps


def test_a_rate_limited_task_does_not_hold_back_other_tasks(backend):
    rate, interval = _limit(backend)
    app = backend.app(workers=1, worker_concurrency=1)
    starts = backend.record()

    @app.task(rate_limit=rate)
    def slow(i):
        starts.append(("slow", i, time.time()))
        return i

    @app.task
    def fast():
        starts.append(("fast", 0, time.time()))
        return "fast"

    limited = [slow.delay(i) for i in range(3)]
    other = fast.delay()
    assert other.get(timeout=30) == "fast"
    assert [r.get(timeout=30) for r in limited] == [0, 1, 2]
    order = [(kind, i) for kind, i, _ in starts]
    if backend.name != "eager":  # eager runs each send to its end before the next send
        assert order.index(("fast", 0)) < order.index(("slow", 2)), order
    slow_starts = [at for kind, _, at in starts if kind == "slow"]
    assert slow_starts[-1] - slow_starts[0] >= 2 * interval - (0 if backend.name == "simulated" else TOLERANCE)
