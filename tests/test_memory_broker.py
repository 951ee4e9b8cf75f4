"""The memory broker: priorities, prefetch, ack/reject/requeue, dead letters, counters."""

from __future__ import annotations

import random

import pytest

from simq import Exchange, Queue
from simq.exceptions import NotDelivered, Unroutable
from simq.memory.broker import MemoryBroker, MemoryTransport
from simq.message import Envelope


def env(n, priority=None):
    return Envelope(str(n).encode(), "application/json", "utf-8", {"task": "t", "id": str(n)}, priority)


@pytest.fixture
def broker():
    b = MemoryBroker(rng=random.Random(0))
    b.declare_queue(Queue("q"))
    return b


def bodies(deliveries):
    return [int(d.envelope.body) for d in deliveries]


class TestPriority:
    def test_zero_is_highest_and_fifo_within_a_priority(self, broker):
        for n, p in [(1, 9), (2, 0), (3, 5), (4, 0), (5, None)]:
            broker.publish(env(n, p), "q", "q")
        conn = MemoryTransport(broker)
        conn.consume("q")
        assert bodies(conn.drain_events()) == [2, 4, 3, 1, 5]


class TestPrefetch:
    def test_consumer_holds_at_most_prefetch_unacked(self, broker):
        for n in range(5):
            broker.publish(env(n), "q", "q")
        conn = MemoryTransport(broker)
        conn.consume("q", prefetch=2)
        first = conn.drain_events()
        assert bodies(first) == [0, 1]
        assert conn.drain_events() == []
        conn.ack(first[0])
        assert bodies(conn.drain_events()) == [2]
        assert broker.depth("q") == 2


class TestSettling:
    def test_reject_with_requeue_redelivers_flagged(self, broker):
        broker.publish(env(1), "q", "q")
        conn = MemoryTransport(broker)
        conn.consume("q")
        (d,) = conn.drain_events()
        assert not d.redelivered
        conn.reject(d, requeue=True)
        (again,) = conn.drain_events()
        assert again.redelivered and again.envelope == d.envelope
        assert broker.stats("q").requeued == 1

    def test_reject_without_requeue_dead_letters_with_reason(self, broker):
        broker.publish(env(1), "q", "q")
        conn = MemoryTransport(broker)
        conn.consume("q")
        (d,) = conn.drain_events()
        conn.reject(d, requeue=False, reason="malformed: bad body")
        assert broker.depth("q") == 0
        assert [x.reason for x in broker.dead_letters] == ["malformed: bad body"]
        assert broker.stats("q").dead_lettered == 1

    def test_dead_letter_exchange_argument_republishes(self):
        b = MemoryBroker()
        dlx = Exchange("dlx", "fanout")
        b.declare_queue(Queue("dead", dlx))
        b.declare_queue(Queue("work", arguments={"x-dead-letter-exchange": "dlx"}))
        b.publish(env(1), "work", "work")
        conn = MemoryTransport(b)
        conn.consume("work")
        (d,) = conn.drain_events()
        conn.reject(d, reason="nope")
        assert b.depth("dead") == 1 and b.dead_letters == []

    def test_closing_a_connection_gives_unacked_back_in_order(self, broker):
        for n in range(3):
            broker.publish(env(n), "q", "q")
        conn = MemoryTransport(broker)
        conn.consume("q")
        got = conn.drain_events()
        conn.ack(got[1])
        conn.close()
        other = MemoryTransport(broker)
        other.consume("q")
        again = other.drain_events()
        assert bodies(again) == [0, 2] and all(d.redelivered for d in again)
        assert broker.stats("q").acked == 1


class TestFlags:
    def test_mandatory_unroutable(self, broker):
        with pytest.raises(Unroutable):
            broker.publish(env(1), "", "missing", mandatory=True)

    def test_immediate_needs_a_free_consumer(self, broker):
        with pytest.raises(NotDelivered):
            broker.publish(env(1), "q", "q", immediate=True)
        conn = MemoryTransport(broker)
        conn.consume("q", prefetch=1)
        broker.publish(env(2), "q", "q", immediate=True)
        conn.drain_events()
        with pytest.raises(NotDelivered):
            broker.publish(env(3), "q", "q", immediate=True)


class TestDispatchChoice:
    def test_same_seed_same_consumer_choices(self):
        def run(seed):
            b = MemoryBroker(rng=random.Random(seed))
            b.declare_queue(Queue("q"))
            conns = [MemoryTransport(b) for _ in range(3)]
            for c in conns:
                c.consume("q")
            for n in range(30):
                b.publish(env(n), "q", "q")
            b.dispatch()
            return [bodies(c.drain_events()) for c in conns]

        assert run(3) == run(3)
        assert run(3) != run(4)
