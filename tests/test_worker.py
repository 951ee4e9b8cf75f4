"""The worker: eta holding against prefetch, early and late acks, rejection of bad deliveries."""

from __future__ import annotations

import time

import pytest

from simq import App, states
from simq.exceptions import ConfigurationError, MessageRejected
from simq.message import Envelope


def make_app(**config):
    app = App("w", **config)

    @app.task(name="add")
    def add(x, y):
        return x + y

    @app.task(name="late", acks_late=True)
    def late():
        return "late"

    return app


def test_eta_messages_are_held_without_filling_the_prefetch_window():
    app = make_app(worker_prefetch_multiplier=2)
    with app.simulate(workers=1) as sim:
        worker = sim.worker_list[0]
        results = [app.tasks["add"].apply_async((i, i), countdown=10) for i in range(3)]
        sim.advance(1)
        assert worker.held == 3  # prefetch 2 counts only what is not waiting for its eta
        assert sim.depth("celery") == 0
        assert worker.transport.prefetch == 2 + 3
        assert [r.get() for r in results] == [0, 2, 4]
        assert worker.transport.prefetch == 2  # the window shrinks back as held messages fall due


def test_far_off_etas_never_stop_a_worker_taking_new_work():
    # Four messages a year away used to fill a -c 1 worker's window (prefetch 4) for good.
    app = make_app(worker_prefetch_multiplier=4)
    with app.simulate(workers=1) as sim:
        worker = sim.worker_list[0]
        for i in range(4):
            app.tasks["add"].apply_async((i, i), countdown=365 * 86400)
        sim.advance(1)
        assert worker.held == 4
        assert app.tasks["add"].delay(20, 22).get(timeout=5) == 42


def test_an_eta_beyond_the_limit_is_refused_at_send_naming_the_setting():
    app = make_app(task_eta_limit=3600)
    with app.simulate(workers=1):
        with pytest.raises(ConfigurationError, match="task_eta_limit=3600"):
            app.tasks["add"].apply_async((1, 1), countdown=7200)


def test_an_eta_beyond_the_workers_limit_is_dead_lettered_not_held():
    app = make_app(task_eta_limit=None)
    with app.simulate(workers=0) as sim:
        app.tasks["add"].apply_async((1, 1), countdown=7200)  # a sender without the limit
        app.conf.task_eta_limit = 3600
        worker = sim.add_worker()
        sim.run_until_idle()
        assert worker.held == 0
        assert worker.stats.rejected == {"eta-out-of-range": 1}
        assert "task_eta_limit=3600" in sim.dead_letters[0].reason


def test_early_ack_happens_before_the_body_runs():
    app = make_app()
    seen = []
    with app.simulate(workers=1) as sim:
        worker = sim.worker_list[0]

        @app.task(name="probe")
        def probe():
            seen.append(worker.transport.unacked)

        probe.delay().get()
    assert seen == [0]


def test_late_ack_happens_after_the_body_runs():
    app = make_app()
    seen = []
    with app.simulate(workers=1) as sim:
        worker = sim.worker_list[0]

        @app.task(name="probe", acks_late=True)
        def probe():
            seen.append(worker.transport.unacked)

        probe.delay().get()
        assert worker.transport.unacked == 0
    assert seen == [1]


def test_unknown_task_is_dead_lettered_and_the_worker_keeps_serving():
    app = make_app()
    with app.simulate(workers=1) as sim:
        r = app.send_task("not.registered", (1,))
        good = app.tasks["add"].delay(1, 1)
        assert good.get() == 2
        assert r.state == states.FAILURE  # the caller learns at once, not at its timeout
        assert "unknown-task" in sim.dead_letters[0].reason
        assert sim.worker_list[0].stats.rejected == {"unknown-task": 1}


def test_garbage_body_is_dead_lettered():
    app = make_app()
    with app.simulate(workers=1) as sim:
        bad = Envelope(b"{not json", "application/json", "utf-8", {"task": "add", "id": "x"})
        sim.producer.publish(bad, "celery", "celery")
        assert app.tasks["add"].delay(2, 2).get() == 4
        assert sim.dead_letters[0].reason.startswith("undecodable")


def test_graceful_stop_requeues_held_eta_messages():
    app = make_app()
    with app.simulate(workers=1) as sim:
        r = app.tasks["add"].apply_async((1, 2), countdown=100)
        sim.advance(1)
        sim.worker_list[0].stop()
        assert sim.depth("celery") == 1
        sim.add_worker()
        assert r.get() == 3


def test_held_eta_messages_run_in_eta_order_then_arrival_order_on_one_clock_timer():
    app = App("w", worker_prefetch_multiplier=0)
    ran = []

    @app.task(name="mark")
    def mark(label):
        ran.append((label, time.time()))  # virtual time, as task bodies see it

    with app.simulate(workers=1) as sim:
        start = sim.clock.now
        # Sent in falling eta order, with a tie at +20 s broken by arrival.
        for label, countdown in [("c", 30), ("b1", 20), ("b2", 20), ("a", 10)]:
            mark.apply_async((label,), countdown=countdown)
        sim.broker.dispatch()
        sim.worker_list[0].poll(0)
        assert sim.worker_list[0].held == 4
        assert sim.clock.pending_timers() == 1  # the worker arms one timer, for its earliest eta
        # A later arrival due sooner than everything held re-arms the timer earlier.
        mark.apply_async(("first",), countdown=5)
        sim.run_until_idle()
    assert [(label, t - start) for label, t in ran] == [("first", 5), ("a", 10), ("b1", 20), ("b2", 20), ("c", 30)]


def test_each_thread_sees_its_own_request_in_a_shared_task():
    """A threads-pool worker runs one task object in several threads; self.request must not leak between them."""
    import threading

    from simq.task import Context

    app = App("w")

    @app.task(bind=True, name="who")
    def who(self):
        return self.request.id

    both_pushed, both_read = threading.Barrier(2), threading.Barrier(2)
    seen = {}

    def run(task_id):
        who.push_request(Context(id=task_id, task="who"))
        both_pushed.wait()  # both threads have pushed before either reads,
        seen[task_id] = who.request.id
        both_read.wait()  # and both have read before either pops
        who.pop_request()

    threads = [threading.Thread(target=run, args=(f"id-{i}",)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == {"id-0": "id-0", "id-1": "id-1"}


def test_a_refused_message_fails_its_result_at_once_naming_why():
    app = make_app()
    with app.simulate(workers=1):
        r = app.send_task("nobody.registered.this", (1,))
        with pytest.raises(MessageRejected, match="unknown-task") as info:
            r.get(timeout=60)
        assert info.value.reason == "unknown-task" and "nobody.registered.this" in info.value.detail
        assert r.state == states.FAILURE


def test_a_refused_duplicate_never_overwrites_a_stored_result():
    app = make_app()
    with app.simulate(workers=1) as sim:
        done = app.tasks["add"].delay(1, 1)
        assert done.get() == 2
        bad = Envelope(b"not json", "application/json", "utf-8", {"task": "add", "id": done.id}, None, done.id)
        sim.producer.publish(bad, "", "celery")
        sim.run_until_idle()
        assert sim.worker_list[0].stats.rejected == {"undecodable": 1}
        assert app.AsyncResult(done.id).get() == 2
