"""Broker semantics every transport must honour, in seconds of real time so they run on real brokers too.

Routing edge cases where kombu's virtual exchange disagrees with RabbitMQ,
priority, mandatory/immediate, eta held by the worker, expiry, retries, and
the Transport seam itself (publish, consume, prefetch, ack, reject with
requeue, unacked deliveries coming back on close).
"""

from __future__ import annotations

import time

import pytest

from simq import Exchange, Queue, states
from simq.exceptions import NotDelivered, TaskRevokedError, Unroutable
from simq.message import Envelope
from simq.routing import Binding


def _where_app(backend, queues, **config):
    app = backend.app(task_queues=queues, task_default_queue=queues[0].name, **config)

    @app.task(bind=True, name="where")
    def where(self):
        return self.request.delivery_info["queue"]

    return app, where


# -- routing: the cases kombu's virtual exchange gets wrong ------------------------------------------
TOPIC_TABLE = [
    # (binding key, routing key, routed?)
    ("a.#", "a", True),
    ("a.#", "a.b.c", True),
    ("a.*", "a.b", True),
    ("a.*", "a.b.c", False),
    ("a.*", "a", False),
    ("*.stock.#", "usd.stock", True),
    ("*.stock.#", "euro.stock.db", True),
    ("*.stock.#", "stock.nasdaq", False),
    ("#", "", True),
    ("a.b", "a.b", True),
    ("a.b", "A.b", False),
]


@pytest.mark.simq_capability("topic_exchange")
@pytest.mark.parametrize(("binding", "key", "routed"), TOPIC_TABLE)
def test_topic_binding_table_is_rabbitmqs(backend, binding, key, routed):
    topic = Exchange("topics", type="topic")
    app, where = _where_app(backend, [Queue("bound", topic, routing_key=binding), Queue("spare")])
    if routed:
        assert where.apply_async(exchange="topics", routing_key=key, mandatory=True).get(timeout=10) == "bound"
    else:
        with pytest.raises(Unroutable):
            where.apply_async(exchange="topics", routing_key=key, mandatory=True)


@pytest.mark.simq_capability("topic_exchange")
def test_one_message_reaches_each_matching_queue_once(backend):
    topic = Exchange("topics", type="topic")
    seen = backend.record()
    app = backend.app(
        task_queues=[
            Queue("q1", topic, routing_key="video.#"),
            Queue("q2", topic, routing_key="*.compress"),
            Queue("q3", topic, routing_key="image.#"),
        ],
        task_default_queue="q1",
    )

    @app.task(bind=True, name="note")
    def note(self):
        seen.append(self.request.delivery_info["queue"])

    note.apply_async(exchange="topics", routing_key="video.compress")
    backend.settle(app)
    assert sorted(seen) == ["q1", "q2"]


def test_queue_with_two_bindings_gets_one_copy(backend):
    topic = Exchange("topics", type="topic")
    seen = backend.record()
    app = backend.app(
        task_queues=[
            Queue(
                "both",
                bindings=[
                    Binding(topic, "video.#"),
                    Binding(topic, "*.compress"),
                ],
            )
        ],
        task_default_queue="both",
    )

    @app.task(bind=True, name="note")
    def note(self):
        seen.append(self.request.delivery_info["queue"])

    note.apply_async(exchange="topics", routing_key="video.compress")
    backend.settle(app)
    assert seen == ["both"]


# -- priority --------------------------------------------------------------------------------------------
@pytest.mark.simq_capability("priority")
def test_priorities_come_out_highest_first_through_the_transport(backend):
    app = backend.app(queues=["celery"])
    conn = app.connection()
    try:
        conn.declare_queue(Queue("prio"))
        for p in [9, 3, None, 0, 5, 0]:
            conn.publish(_envelope(f"p{p}", p), "prio", "prio")
        got = _take(conn, "prio", 6)
        assert [d.envelope.body for d in got] == [b"p0", b"p0", b"p3", b"p5", b"p9", b"pNone"]
        assert [d.envelope.priority for d in got] == [0, 0, 3, 5, 9, None]
        for d in got:
            conn.ack(d)
    finally:
        conn.close()


# -- mandatory and immediate -----------------------------------------------------------------------------
@pytest.mark.simq_capability("mandatory")
def test_mandatory_on_fanout_with_no_queue_is_unroutable(backend):
    fan = Exchange("empty_fanout", type="fanout")
    app, where = _where_app(backend, [Queue("solo"), Queue("other", Exchange("side", "direct"), routing_key="x")])
    conn = app.connection()
    try:
        conn.declare_exchange(fan)
        with pytest.raises(Unroutable):
            conn.publish(_envelope("x"), "empty_fanout", "anything", mandatory=True)
    finally:
        if hasattr(conn, "delete_exchange"):  # RabbitMQ keeps an auto-delete exchange that was never bound
            conn.delete_exchange("empty_fanout")
        conn.close()


@pytest.mark.simq_capability("immediate")
def test_immediate_without_a_consumer_is_not_delivered(backend):
    if backend.name == "eager":
        pytest.skip("eager mode's private worker consumes every queue, so a consumer is always free")
    app = backend.app(queues=["celery"])

    @app.task(name="side")
    def side():
        return 1

    assert side.delay().get(timeout=10) == 1  # workers are up, consuming 'celery' only
    with pytest.raises(NotDelivered):
        side.apply_async(queue=Queue("orphan"), immediate=True)


@pytest.mark.simq_capability("immediate")
def test_immediate_with_an_idle_consumer_is_delivered(backend):
    app = backend.app(queues=["celery"])

    @app.task(name="side")
    def side(x):
        return x

    assert side.delay(1).get(timeout=10) == 1
    backend.settle(app)
    assert side.apply_async((2,), immediate=True).get(timeout=10) == 2


# -- eta, expiry, retries in seconds ----------------------------------------------------------------------
def test_countdown_is_held_by_the_worker_not_the_broker(backend):
    app = backend.app()

    @app.task
    def stamp():
        return time.time()

    sent = time.time()
    r = stamp.apply_async(countdown=1)
    assert r.get(timeout=10) >= sent + 1


def test_expires_before_eta_revokes(backend):
    app = backend.app()
    ran = backend.record()

    @app.task
    def work():
        ran.append(1)

    r = work.apply_async(countdown=1.5, expires=0.5)
    with pytest.raises(TaskRevokedError):
        r.get(timeout=10)
    assert r.state == states.REVOKED
    assert ran == []


def test_retry_after_a_short_countdown(backend):
    app = backend.app()
    attempts = backend.record()

    @app.task(bind=True, max_retries=3)
    def flaky(self):
        attempts.append(time.time())
        if len(attempts) < 3:
            raise self.retry(countdown=0.5, exc=RuntimeError("again"))
        return "done"

    assert flaky.delay().get(timeout=15) == "done"
    assert len(attempts) == 3
    assert attempts[1] - attempts[0] >= 0.5 and attempts[2] - attempts[1] >= 0.5


def test_held_eta_message_goes_back_to_the_queue_on_graceful_stop(backend):
    if backend.name == "eager":
        pytest.skip("eager mode runs every send to completion; nothing is held")
    app = backend.app(queues=["celery"])

    @app.task
    def later():
        return 1

    @app.task
    def now():
        return 2

    later.apply_async(countdown=300)
    assert now.delay().get(timeout=10) == 2
    if not backend.virtual:
        backend.settle(app)  # (on a virtual clock settling would run 'later')
        if not backend.deployed:  # (deployed: the Worker objects live in the worker processes)
            assert sum(w.held for w in backend.workers(app)) == 1
    backend.stop_workers(app)
    if backend.virtual:
        assert app.simulation.depth("celery") == 1
    else:
        conn = app.connection()
        try:
            assert conn.queue_depth("celery") == 1
        finally:
            conn.close()


# -- the Transport seam ------------------------------------------------------------------------------------
def _envelope(body: str, priority: int | None = None) -> Envelope:
    return Envelope(body.encode(), "application/octet-stream", "binary", {"n": body}, priority, None)


def _take(conn, queue, n, prefetch=0, deadline=10.0):
    conn.consume(queue, prefetch=prefetch, tag=f"take-{queue}")
    return _take_more(conn, n, deadline)


def test_publish_consume_ack_round_trip(backend):
    app = backend.app(queues=["celery"])
    conn = app.connection()
    try:
        conn.declare_queue(Queue("raw"))
        conn.publish(_envelope("hello"), "raw", "raw")
        (d,) = _take(conn, "raw", 1)
        assert d.envelope.body == b"hello" and d.envelope.headers["n"] == "hello"
        assert d.queue == "raw" and d.routing_key == "raw" and not d.redelivered
        conn.ack(d)
        assert conn.queue_depth("raw") == 0
    finally:
        conn.close()


def test_publish_many_delivers_every_message_in_order(backend):
    app = backend.app(queues=["celery"])
    conn = app.connection()
    try:
        conn.declare_queue(Queue("raw"))
        conn.publish_many([(_envelope(str(i)), "raw", "raw") for i in range(50)])
        got = _take(conn, "raw", 50)
        assert [d.envelope.body for d in got] == [str(i).encode() for i in range(50)]
        for d in got:
            conn.ack(d)
    finally:
        conn.close()


def test_prefetch_limits_unacked_deliveries(backend):
    app = backend.app(queues=["celery"])
    conn = app.connection()
    try:
        conn.declare_queue(Queue("raw"))
        for i in range(5):
            conn.publish(_envelope(str(i)), "raw", "raw")
        got = _take(conn, "raw", 5, prefetch=2, deadline=1.0)
        assert len(got) == 2
        conn.ack(got[0])
        more = _take_more(conn, 1)
        assert len(more) == 1
        assert [d.envelope.body for d in got + more] == [b"0", b"1", b"2"]
    finally:
        conn.close()


def _take_more(conn, n, deadline=5.0):
    # counted in polls, not read from a clock: a simulation freezes time.monotonic
    got = []
    for _ in range(int(deadline / 0.1)):
        if len(got) >= n:
            break
        got.extend(conn.drain_events(0.1))
    return got


def test_reject_with_requeue_redelivers_flagged(backend):
    app = backend.app(queues=["celery"])
    conn = app.connection()
    try:
        conn.declare_queue(Queue("raw"))
        conn.publish(_envelope("again"), "raw", "raw")
        (d,) = _take(conn, "raw", 1)
        conn.reject(d, requeue=True)
        (d2,) = _take_more(conn, 1)
        assert d2.envelope.body == b"again" and d2.redelivered
        conn.ack(d2)
    finally:
        conn.close()


def test_reject_without_requeue_removes_the_message(backend):
    app = backend.app(queues=["celery"])
    conn = app.connection()
    try:
        conn.declare_queue(Queue("raw"))
        conn.publish(_envelope("bad"), "raw", "raw")
        (d,) = _take(conn, "raw", 1)
        conn.reject(d, requeue=False, reason="test")
        assert _take_more(conn, 1, deadline=0.5) == []
        assert conn.queue_depth("raw") == 0
    finally:
        conn.close()


def test_unacked_deliveries_come_back_when_the_connection_closes(backend):
    app = backend.app(queues=["celery"])
    first = app.connection()
    first.declare_queue(Queue("raw"))
    first.publish(_envelope("keep"), "raw", "raw")
    (d,) = _take(first, "raw", 1)
    assert not d.redelivered
    first.close()
    second = app.connection()
    try:
        (d2,) = _take(second, "raw", 1)
        assert d2.envelope.body == b"keep" and d2.redelivered
        second.ack(d2)
    finally:
        second.close()
