"""Signals, named as Celery's, fired in a defined order (the same in the simulator and on a real worker)."""

from __future__ import annotations

import pytest

from simq import App, signals
from simq.message import Envelope


@pytest.fixture
def heard():
    events: list[tuple] = []
    connected = []

    def listen(signal, sender_filter=None):
        def receiver(sender=None, signal=None, **kwargs):
            events.append((signal.name, getattr(sender, "name", sender), kwargs))

        signal.connect(receiver, sender=sender_filter)
        connected.append((signal, receiver))

    yield events, listen
    for signal, receiver in connected:
        signal.disconnect(receiver)


ALL = [
    signals.before_task_publish,
    signals.after_task_publish,
    signals.task_received,
    signals.task_prerun,
    signals.task_success,
    signals.task_failure,
    signals.task_retry,
    signals.task_postrun,
    signals.task_revoked,
    signals.task_rejected,
    signals.task_unknown,
]


def make():
    app = App("signals")

    @app.task(name="add")
    def add(x, y):
        return x + y

    @app.task(name="boom")
    def boom():
        raise ValueError("boom")

    @app.task(name="again", bind=True)
    def again(self):
        if self.request.retries == 0:
            raise self.retry(countdown=1)
        return "ok"

    return app


def names(events):
    return [name for name, _, _ in events]


def test_a_success_fires_publish_receive_prerun_success_postrun_in_order(heard):
    events, listen = heard
    for signal in ALL:
        listen(signal)
    app = make()
    with app.simulate():
        r = app.tasks["add"].delay(2, 3)
        assert r.get() == 5
    assert names(events) == [
        "before_task_publish",
        "after_task_publish",
        "task_received",
        "task_prerun",
        "task_success",
        "task_postrun",
    ]
    assert events[0][2]["routing_key"] == "celery" and events[0][2]["headers"]["id"] == r.id
    assert events[3][2]["task_id"] == r.id and events[3][2]["args"] == (2, 3)
    assert events[4][2]["result"] == 5
    assert events[5][2]["retval"] == 5 and events[5][2]["state"] == "SUCCESS"


def test_a_failure_and_a_retry(heard):
    events, listen = heard
    for signal in (signals.task_failure, signals.task_retry, signals.task_postrun):
        listen(signal)
    app = make()
    with app.simulate():
        app.tasks["boom"].delay().get(propagate=False)
        assert app.tasks["again"].delay().get() == "ok"
    assert names(events) == ["task_failure", "task_postrun", "task_retry", "task_postrun", "task_postrun"]
    assert isinstance(events[0][2]["exception"], ValueError)
    assert [e[2]["state"] for e in events if e[0] == "task_postrun"] == ["FAILURE", "RETRY", "SUCCESS"]


def test_sender_filters_one_task(heard):
    events, listen = heard
    listen(signals.task_success, "add")
    app = make()
    with app.simulate():
        app.tasks["add"].delay(1, 1).get()
        app.tasks["again"].delay().get()
    assert [(n, s) for n, s, _ in events] == [("task_success", "add")]


def test_expired_rejected_and_unknown(heard):
    events, listen = heard
    for signal in (signals.task_revoked, signals.task_rejected, signals.task_unknown):
        listen(signal)
    app = make()
    with app.simulate() as sim:
        app.tasks["add"].apply_async((1, 1), countdown=20, expires=10)
        app.send_task("nobody.has.this")
        sim.producer.publish(Envelope(b"{", "application/json", "utf-8", {"task": "add", "id": "x1"}), "", "celery")
        sim.run_until_idle()
    kinds = {name: kwargs for name, _, kwargs in events}
    assert kinds["task_revoked"]["expired"] is True
    assert kinds["task_unknown"]["name"] == "nobody.has.this"
    assert kinds["task_rejected"]["exc"].reason == "undecodable"


def test_a_raising_receiver_is_logged_and_the_task_goes_on(caplog):
    def bad(**kwargs):
        raise RuntimeError("receiver bug")

    signals.task_prerun.connect(bad)
    try:
        app = make()
        with app.simulate():
            assert app.tasks["add"].delay(1, 2).get() == 3
    finally:
        signals.task_prerun.disconnect(bad)
    assert "receiver bug" in caplog.text


def test_worker_init_and_ready_once_per_worker_and_shutdown(heard):
    events, listen = heard
    for signal in (signals.worker_init, signals.worker_ready, signals.worker_shutdown):
        listen(signal)
    app = make()
    with app.simulate(workers=2):
        pass
    assert sorted(names(events)) == sorted(["worker_init", "worker_ready"] * 2 + ["worker_shutdown"] * 2)


def test_a_receiver_connected_while_the_worker_runs_is_heard_at_once(heard):
    events, listen = heard
    app = make()
    with app.simulate():
        app.tasks["add"].delay(1, 1).get()  # no receivers: the worker left those moments out
        listen(signals.task_received)
        listen(signals.task_success)
        app.tasks["add"].delay(2, 2).get()
    assert [(n, kwargs.get("result")) for n, _, kwargs in events] == [("task_received", None), ("task_success", 4)]


def test_a_disconnected_receiver_is_not_called_again():
    calls = []

    def receiver(**kwargs):
        calls.append(kwargs["result"])

    app = make()
    with app.simulate():
        signals.task_success.connect(receiver)
        try:
            app.tasks["add"].delay(1, 1).get()
        finally:
            signals.task_success.disconnect(receiver)
        app.tasks["add"].delay(2, 2).get()
    assert calls == [2]
