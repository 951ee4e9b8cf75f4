"""Revoking: the revocation log, what a worker does with what it learns, and what it refuses."""

from __future__ import annotations

import pytest

import simq
from simq import signals, states
from simq.backends.memory import MemoryBackend
from simq.clock import VirtualClock
from simq.exceptions import ConfigurationError, TaskRevokedError
from simq.revoke import COUNTER, MAX_REMEMBERED, Revocation, Revocations, entry_key, revoke, signal_number
from simq.serialization import SerializerRegistry


@pytest.fixture
def app():
    app = simq.App("revoke")
    app.ran = []

    @app.task
    def work(x):
        app.ran.append(x)
        return x

    app.work = work
    return app


def test_a_revoked_task_held_for_its_eta_never_runs(app):
    heard = []

    def on_revoked(sender=None, request=None, terminated=None, expired=None, **_):
        heard.append((request.id, terminated, expired))

    signals.task_revoked.connect(on_revoked)
    try:
        with app.simulate(workers=2) as sim:
            held = app.work.apply_async((1,), countdown=3600)
            sim.advance(1)  # delivered and held by a worker now
            assert sum(w.held for w in sim.worker_list) == 1
            held.revoke()
            sim.run_until_idle()
            with pytest.raises(TaskRevokedError, match="revoked"):
                held.get()
            assert held.state == states.REVOKED
            assert sim.backend.get_meta(held.id).state == states.REVOKED
    finally:
        signals.task_revoked.disconnect(on_revoked)
    assert app.ran == []
    assert heard == [(held.id, False, False)]


def test_a_worker_started_after_the_revoke_reads_it_from_the_log(app):
    with app.simulate(workers=0) as sim:
        r = app.work.delay(1)
        app.control.revoke(r.id)
        sim.add_worker()
        sim.run_until_idle()
        assert r.state == states.REVOKED
    assert app.ran == []


def test_revoking_what_already_ran_changes_nothing(app):
    with app.simulate() as sim:
        r = app.work.delay(7)
        assert r.get() == 7
        r.revoke()
        sim.run_until_idle()
        assert r.state == states.SUCCESS


def test_a_revoked_chain_link_stops_the_chain(app):
    with app.simulate() as sim:
        last = simq.chain(app.work.s(1).set(countdown=10), app.work.s()).apply_async()
        last.parent.revoke()
        sim.run_until_idle()
        assert last.parent.state == states.REVOKED
        assert last.state != states.SUCCESS
    assert app.ran == []


def test_bad_revokes_are_refused_naming_the_problem(app):
    with pytest.raises(ConfigurationError, match="signal"):
        app.control.revoke("some-id", terminate=True, signal="SIGNOPE")
    with pytest.raises(ConfigurationError, match="destination"):
        app.control.revoke("some-id", destination=["worker@a"])
    with pytest.raises(ConfigurationError, match="task id"):
        app.control.revoke([])
    with pytest.raises(ConfigurationError, match="unknown option"):
        app.control.revoke("some-id", reply=True)
    assert signal_number("KILL") == signal_number("SIGKILL") == signal_number(9) == 9


def _log(clock):
    return MemoryBackend(SerializerRegistry(), clock, "json")


def test_the_log_is_read_from_where_a_worker_left_off_and_across_a_counter_restart():
    clock = VirtualClock()
    backend = _log(clock)
    reader = Revocations(backend, clock, 1.0)
    reader.poll()
    assert len(reader) == 0
    for n in range(1, 4):
        backend.put_record(entry_key(n), Revocation((f"id-{n}",)).encode())
    backend.incr(COUNTER, 3)
    reader.poll()
    assert list(reader) == ["id-1", "id-2", "id-3"]
    # the counter expired and began again: what is written under the new numbers is read
    backend._counters.pop(COUNTER)  # as if it expired, without waiting a day
    backend.put_record(entry_key(1), Revocation(("id-new",)).encode())
    backend.incr(COUNTER)
    reader.poll()
    assert "id-new" in reader


def test_a_worker_remembers_a_bounded_number_of_ids_the_oldest_go_first():
    clock = VirtualClock()
    reader = Revocations(_log(clock), clock, 1.0)
    reader._learn(Revocation(tuple(f"id-{n}" for n in range(MAX_REMEMBERED + 10))))
    assert len(reader) == MAX_REMEMBERED
    assert "id-0" not in reader and f"id-{MAX_REMEMBERED + 9}" in reader


def test_revoke_in_one_process_is_heard_at_once_by_its_workers(app):
    with app.simulate() as sim:
        (worker,) = sim.worker_list
        r = app.work.apply_async((1,), countdown=5)
        revoke(app, r.id)
        assert r.id in worker.revocations


def test_an_unreachable_backend_is_logged_and_read_again_later(caplog):
    from simq.exceptions import BrokerUnavailable

    clock = VirtualClock()
    calls = []

    class Down(MemoryBackend):
        def incr(self, key, by=1):
            calls.append(key)
            raise BrokerUnavailable("redis is down")

    backend = Down(SerializerRegistry(), clock, "json")
    reader = Revocations(backend, clock, 2.0)
    reader.start()  # does not raise: the worker starts, and reads the log when it can
    assert "cannot read the revocation log" in caplog.text
    reader.poll_if_due()
    assert len(calls) == 1  # not again before the interval
    clock.advance(2)
    reader.poll_if_due()
    assert len(calls) == 2


def test_an_entry_counted_but_not_yet_written_is_read_when_it_arrives():
    clock = VirtualClock()
    backend = _log(clock)
    reader = Revocations(backend, clock, 1.0)
    reader.poll()
    backend.incr(COUNTER)  # a revoke in another process has counted its entry, not written it yet
    reader.poll()
    assert len(reader) == 0
    backend.put_record(entry_key(1), Revocation(("late",)).encode())
    reader.poll()
    assert "late" in reader


def test_a_revoked_task_is_acknowledged_only_once_revoked_is_stored(app, monkeypatch):
    from simq.exceptions import BrokerUnavailable

    calls = []
    original = MemoryBackend.sync

    def flaky_sync(self):
        calls.append(1)
        if len(calls) == 1:
            raise BrokerUnavailable("redis went away")
        original(self)

    with app.simulate() as sim:
        r = app.work.apply_async((1,), countdown=5)
        r.revoke()
        monkeypatch.setattr(MemoryBackend, "sync", flaky_sync)
        sim.run_until_idle()
        (worker,) = sim.worker_list
        assert len(calls) >= 2  # the first discard was given back, the redelivery discarded again
        assert worker.stats.revoked == 1 and r.state == states.REVOKED
    assert app.ran == []
