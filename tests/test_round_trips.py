"""Round trips saved on the real brokers: deferred result writes, counted chord parts, MGET, lost Lua
scripts, acks that do not wait for their reply, batched publishing."""

from __future__ import annotations

import time
import uuid

import pytest

from conformance.harness import require, result_url, with_namespace
from simq import App, states


@pytest.fixture
def rb():
    require("redis")
    app = App("rb", backend=with_namespace(result_url("redis"), f"rb{uuid.uuid4().hex[:10]}"))
    rb = app.backend
    yield rb
    rb.delete_namespace()
    rb.close()


def round_trips(rb, monkeypatch):
    """Count the pipelines and plain commands the backend sends from here on."""
    sent = []
    client = rb.client
    original = client.pipeline

    def pipeline(*args, **kwargs):
        pipe = original(*args, **kwargs)
        execute = pipe.execute

        def counted(*a, **k):
            sent.append("pipeline")
            return execute(*a, **k)

        pipe.execute = counted
        return pipe

    monkeypatch.setattr(client, "pipeline", pipeline)
    for name in ("get", "mget", "set"):
        method = getattr(client, name)
        monkeypatch.setattr(client, name, lambda *a, _m=method, _n=name, **k: (sent.append(_n), _m(*a, **k))[1])
    return sent


def test_a_result_and_its_chord_count_travel_in_one_round_trip(rb, monkeypatch):
    sent = round_trips(rb, monkeypatch)
    with rb.deferred_writes():
        rb.store_result("t1", 42, states.SUCCESS)
        assert sent == []  # queued, not sent
        assert rb.count_part("c.done", "c.part.t1") == 1
    assert sent == ["pipeline"]
    assert rb.get_meta("t1").result == 42


def test_a_read_inside_deferred_writes_sees_the_write_before_it(rb):
    with rb.deferred_writes():
        rb.store_result("t2", "v", states.SUCCESS)
        assert rb.get_meta("t2").result == "v"


def test_writes_deferred_and_never_read_are_sent_on_exit(rb):
    with rb.deferred_writes():
        rb.store_result("t3", [1, 2], states.SUCCESS)
    assert rb.wait_for("t3", timeout=5).result == [1, 2]


def test_a_part_counts_once_even_when_reported_twice(rb):
    assert rb.count_part("k.done", "k.part.a") == 1
    assert rb.count_part("k.done", "k.part.a") is None  # a redelivered part
    assert rb.count_part("k.done", "k.part.b") == 2


def test_get_many_reads_in_order_with_one_command_per_thousand(rb, monkeypatch):
    ids = [f"m{i}" for i in range(1500)]
    for i, task_id in enumerate(ids[:-1]):
        rb.store_result(task_id, i, states.SUCCESS)
    sent = round_trips(rb, monkeypatch)
    metas = rb.get_many(ids)
    assert [m.result for m in metas[:-1]] == list(range(1499))
    assert metas[-1].state == states.PENDING
    assert sent == ["mget", "mget"]


def test_scripts_lost_by_redis_are_loaded_again(rb):
    rb.client.script_flush()  # what a Redis restart does to loaded scripts
    with rb.deferred_writes():
        rb.store_result("s1", "after flush", states.SUCCESS)
        assert rb.count_part("s.done", "s.part.1") == 1
    assert rb.wait_for("s1", timeout=5).result == "after flush"


def test_acks_are_sent_at_once_and_their_replies_read_later():
    """The Redis transport does not wait a round trip per ack, yet the ack is on the wire when ack() returns."""
    require("redis")
    from simq.message import Envelope

    app = App("ra", broker=with_namespace(result_url("redis"), f"ra{uuid.uuid4().hex[:10]}"))
    conn = app.connection()
    try:
        conn.declare_queue(app.router.queue("celery"))
        for i in range(3):
            conn.publish(Envelope(b"[]", "application/json", "utf-8", {"id": f"m{i}", "task": "t"}), "", "celery")
        conn.consume("celery", prefetch=10)
        deliveries = conn.drain_events(0)
        unacked = f"{conn.prefix}u"
        assert conn.client.hlen(unacked) == 3
        for delivery in deliveries:
            conn.ack(delivery)
        assert conn._acks_unread == 3  # sent, replies not read yet
        # Another connection sees the acks applied without this one reading anything
        # (Redis runs them as they arrive; allow it a moment on a loaded machine).
        other = app.connection()
        try:
            deadline = time.monotonic() + 5
            while other.client.hlen(unacked) and time.monotonic() < deadline:
                time.sleep(0.01)
            assert other.client.hlen(unacked) == 0
        finally:
            other.close()
        conn.drain_events(0)  # reads the replies before fetching again
        assert conn._acks_unread == 0
    finally:
        conn.delete_namespace()
        conn.close()


@pytest.mark.parametrize("name", ["amqp", "redis"])
def test_batched_publishing_holds_sends_until_the_block_ends_then_keeps_their_order(name):
    from conformance.harness import broker_url, delete_app_data
    from simq import Queue

    require(name)
    app = App("bp", broker=with_namespace(broker_url(name), f"bp{uuid.uuid4().hex[:10]}"), task_queues=[Queue("bp")])
    try:
        conn = app.connection()
        try:
            with app.batched_publishing():
                results = [app.send_task("nobody.runs.this", (i,), queue="bp") for i in range(20)]
                assert conn.queue_depth("bp") == 0  # held in this thread, not yet published
            conn.consume("bp", prefetch=0)
            got = []
            for _ in range(100):
                got.extend(conn.drain_events(0.1))
                if len(got) == 20:
                    break
            assert [d.envelope.headers["id"] for d in got] == [r.id for r in results]
        finally:
            conn.close()
    finally:
        delete_app_data(app)


def test_a_result_write_does_not_wait_for_its_reply_yet_is_visible_at_once(rb, monkeypatch):
    sent = round_trips(rb, monkeypatch)
    for i in range(5):
        rb.store_result(f"w{i}", i, states.SUCCESS)
    assert sent == []  # written on this thread's own connection, replies not read yet
    assert len(rb._writes().unread) == 5
    # Another client sees them at once: Redis ran them when they arrived.
    other = App("rb2", backend=rb.url).backend
    try:
        assert [other.wait_for(f"w{i}", timeout=5).result for i in range(5)] == list(range(5))
    finally:
        other.close()
    # This thread's next read first takes the replies, so it sees its own writes.
    assert rb.get_meta("w4").result == 4
    assert rb._writes().unread == []


def test_result_writes_survive_a_dead_connection(rb):
    # Each write is followed by the death of the connection it went out on (when the backend holds one:
    # a send that finds the socket dead already wrote again, waiting). Its reply may or may not have
    # arrived first; either way, every write is stored. (tests/test_backend_durability.py kills with CLIENT KILL.)
    for key, value in (("x1", "first"), ("x2", "second"), ("x3", "third")):
        rb.store_result(key, value, states.SUCCESS)
        conn = rb._writes().conn
        if conn is not None:
            conn._sock.shutdown(2)
    assert [rb.get_meta(k).result for k in ("x1", "x2", "x3")] == ["first", "second", "third"]


def test_a_forked_child_writes_on_its_own_connection(rb, monkeypatch):
    import os

    rb.store_result("f0", "parent", states.SUCCESS)  # the parent now holds a connection with a reply unread
    rb._writes().conn._sock.settimeout(5)  # if the child stole the reply, the parent fails instead of hanging
    pid = os.fork()
    if pid == 0:  # the child: write and read through its own connection, then leave at once
        code = 1
        try:
            rb.store_result("f1", "child", states.SUCCESS)
            code = 0 if rb.get_meta("f1").result == "child" else 2
        finally:
            os._exit(code)
    deadline = time.monotonic() + 20
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    if done[0] == 0:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        pytest.fail("the forked child hung: it was reading replies meant for the parent's connection")
    assert os.waitstatus_to_exitcode(done[1]) == 0
    # the parent's connection was left alone: its own reply is still there to read
    dropped = []
    monkeypatch.setattr(type(rb), "_lost", lambda self, *a: dropped.append(True))
    assert rb.get_meta("f0").result == "parent"
    assert dropped == []
    assert rb.get_meta("f1").result == "child"
