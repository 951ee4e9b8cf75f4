"""The deterministic in-memory broker: the reference implementation of the Transport seam.

Capabilities: priority native (0..9, 0 highest, FIFO within a priority);
mandatory native; immediate native; direct, topic (RabbitMQ rules) and fanout
exchanges native; dead-letter place native (``broker.dead_letters``, or a
queue's ``x-dead-letter-exchange``); redelivered flag native.

Every choice it makes (which consumer gets the next message) comes from the
``random.Random`` it is handed; ties break on declaration order. It owns all
its state: two brokers never share a queue.
"""

from __future__ import annotations

import itertools
import random
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from simq.exceptions import RoutingError
from simq.message import Delivery, Envelope
from simq.routing import DEFAULT_EXCHANGE, BindingTable, Exchange, Queue, not_delivered, unroutable
from simq.transport import Capabilities, Transport

__all__ = ["DeadLetter", "MemoryBroker", "MemoryTransport", "QueueStats"]

LOWEST = 9


@attrs.define
class QueueStats:
    """Counters a test can read for one queue."""

    published: int = 0
    delivered: int = 0
    redelivered: int = 0
    acked: int = 0
    rejected: int = 0
    requeued: int = 0
    dead_lettered: int = 0


@attrs.frozen
class DeadLetter:
    """A message that was rejected without requeue, with why."""

    envelope: Envelope
    queue: str
    exchange: str
    routing_key: str
    reason: str


# How a message sits in a queue: its envelope, and beside it (exchange, routing
# key, redelivered). The two are kept in parallel deques so that the second,
# holding only strings and a bool, is left alone by the garbage collector: a
# million queued messages cost a million tracked objects, not two million.
_Route = tuple[str, str, bool]


@attrs.define(eq=False)
class _MemoryQueue:
    queue: Queue
    envelopes: list[deque[Envelope]] = attrs.field(factory=lambda: [deque() for _ in range(LOWEST + 1)])
    routes: list[deque[_Route]] = attrs.field(factory=lambda: [deque() for _ in range(LOWEST + 1)])
    consumers: list[_Consumer] = attrs.field(factory=list)
    size: int = 0
    stats: QueueStats = attrs.field(factory=QueueStats)
    _top: int = 0  # no level above this one holds a message

    def put(self, envelope: Envelope, route: _Route, front: bool = False) -> None:
        priority = envelope.priority
        level = LOWEST if priority is None else priority
        if level < self._top:
            self._top = level
        if front:
            self.envelopes[level].appendleft(envelope)
            self.routes[level].appendleft(route)
        else:
            self.envelopes[level].append(envelope)
            self.routes[level].append(route)
        self.size += 1

    def get(self) -> tuple[Envelope, _Route]:
        envelopes = self.envelopes
        level = self._top
        while level <= LOWEST:
            if envelopes[level]:
                self._top = level
                self.size -= 1
                return envelopes[level].popleft(), self.routes[level].popleft()
            level += 1
        self._top = LOWEST
        raise IndexError("empty queue")

    def waiting(self) -> list[Envelope]:
        """The envelopes in this queue, in the order they would be delivered."""
        return [envelope for level in self.envelopes for envelope in level]

    def purge(self) -> int:
        count = self.size
        for envelopes in self.envelopes:
            envelopes.clear()
        for routes in self.routes:
            routes.clear()
        self.size = 0
        return count


@attrs.define(eq=False)
class _Consumer:
    tag: str
    queue: str
    connection: MemoryTransport


@attrs.define(eq=False)
class MemoryBroker:
    """Exchanges, bindings and queues held in this object, and nowhere else."""

    rng: random.Random = attrs.field(factory=lambda: random.Random(0))
    table: BindingTable = attrs.field(factory=BindingTable, init=False)
    _queues: dict[str, _MemoryQueue] = attrs.field(factory=dict, init=False)
    dead_letters: list[DeadLetter] = attrs.field(factory=list, init=False)
    _tags: itertools.count[int] = attrs.field(factory=lambda: itertools.count(1), init=False)
    _consumer_ids: itertools.count[int] = attrs.field(factory=lambda: itertools.count(1), init=False)
    _pending: int = attrs.field(default=0, init=False)
    on_event: Callable[[str, str, Envelope], None] | None = None

    # -- declaration -------------------------------------------------------
    def declare_exchange(self, exchange: Exchange) -> None:
        self.table.add_exchange(exchange.name, exchange.type)

    def declare_queue(self, queue: Queue) -> None:
        if queue.name not in self._queues:
            self._queues[queue.name] = _MemoryQueue(queue)
        self.table.add_queue(queue)

    def has_queue(self, name: str) -> bool:
        return name in self._queues

    def queue_names(self) -> list[str]:
        return list(self._queues)

    # -- publishing ------------------------------------------------------------
    def route(self, exchange: str, routing_key: str) -> list[str]:
        """Names of the queues ``exchange`` routes ``routing_key`` to, without duplicates."""
        return list(self.table.route(exchange, routing_key))

    def publish(
        self,
        envelope: Envelope,
        exchange: str,
        routing_key: str,
        *,
        mandatory: bool = False,
        immediate: bool = False,
    ) -> list[str]:
        targets = self.table.route(exchange, routing_key)
        if not targets:
            if mandatory or immediate:
                raise unroutable(exchange, routing_key)
            if self.on_event is not None:
                self.on_event("unroutable", routing_key, envelope)
            return []
        if immediate and not any(self._can_take_now(name) for name in targets):
            raise not_delivered(routing_key, targets, "")
        route = (exchange, routing_key, False)
        for name in targets:
            mq = self._queues[name]
            mq.put(envelope, route)
            mq.stats.published += 1
        self._pending += len(targets)
        return list(targets)  # a copy: the table's list stays the table's

    def _can_take_now(self, name: str) -> bool:
        mq = self._queues[name]
        return mq.size == 0 and any(c.connection.has_capacity() for c in mq.consumers)

    # -- delivering ------------------------------------------------------------
    def dispatch(self) -> int:
        """Hand ready messages to consumers with free prefetch; return how many moved."""
        if not self._pending:
            return 0
        moved = 0
        rng = self.rng
        for mq in self._queues.values():
            if not mq.size or not mq.consumers:
                continue
            consumers = mq.consumers
            while mq.size:
                if len(consumers) == 1:  # one consumer: no list to build, no choice to make
                    consumer = consumers[0]
                    if not consumer.connection.has_capacity():
                        break
                else:
                    ready = [c for c in consumers if c.connection.has_capacity()]
                    if not ready:
                        break
                    consumer = ready[0] if len(ready) == 1 else ready[rng.randrange(len(ready))]
                envelope, (exchange, key, redelivered) = mq.get()
                self._pending -= 1
                delivery = Delivery(envelope, next(self._tags), mq.queue.name, exchange, key, redelivered, consumer.tag)
                mq.stats.delivered += 1
                if redelivered:
                    mq.stats.redelivered += 1
                consumer.connection._deliver(delivery)
                moved += 1
        return moved

    def add_consumer(self, connection: MemoryTransport, queue: str, tag: str | None) -> str:
        mq = self._queues.get(queue)
        if mq is None:
            raise RoutingError(f"cannot consume from undeclared queue {queue!r}")
        tag = tag or f"ctag-{next(self._consumer_ids)}"
        mq.consumers.append(_Consumer(tag, queue, connection))
        return tag

    def remove_consumer(self, tag: str) -> None:
        for mq in self._queues.values():
            mq.consumers[:] = [c for c in mq.consumers if c.tag != tag]

    def settle(self, delivery: Delivery, *, ack: bool, requeue: bool = False, reason: str = "") -> None:
        mq = self._queues.get(delivery.queue)
        if mq is None:
            return
        if ack:
            mq.stats.acked += 1
            return
        mq.stats.rejected += 1
        if requeue:
            mq.stats.requeued += 1
            mq.put(delivery.envelope, (delivery.exchange, delivery.routing_key, True), front=True)
            self._pending += 1
            return
        self._dead_letter(mq, delivery, reason or "rejected")

    def _dead_letter(self, mq: _MemoryQueue, delivery: Delivery, reason: str) -> None:
        mq.stats.dead_lettered += 1
        dlx = mq.queue.arguments.get("x-dead-letter-exchange")
        if dlx is not None:
            key = mq.queue.arguments.get("x-dead-letter-routing-key", delivery.routing_key)
            original = delivery.envelope.headers
            # Bad input may carry headers that are not a mapping: keep them, as a value, rather than fail.
            headers = dict(original) if isinstance(original, Mapping) else {"x-original-headers": repr(original)}
            headers["x-death-reason"] = reason
            self.publish(attrs.evolve(delivery.envelope, headers=headers), dlx, key)
            return
        self.dead_letters.append(
            DeadLetter(delivery.envelope, delivery.queue, delivery.exchange, delivery.routing_key, reason)
        )

    # -- inspection --------------------------------------------------------------
    def depth(self, queue: str) -> int:
        mq = self._queues.get(queue)
        return mq.size if mq is not None else 0

    def stats(self, queue: str) -> QueueStats:
        return self._queues[queue].stats

    def purge(self, queue: str) -> int:
        mq = self._queues[queue]
        purged = mq.purge()
        self._pending -= purged
        return purged

    def consumer_count(self, queue: str) -> int:
        mq = self._queues.get(queue)
        return len(mq.consumers) if mq is not None else 0

    @property
    def pending(self) -> int:
        return self._pending


@attrs.define(eq=False)
class MemoryTransport(Transport):
    """One connection to a ``MemoryBroker``: consumers, prefetch and unacked deliveries."""

    scheme = "memory"
    capabilities = Capabilities(
        priority="native",
        mandatory="native",
        immediate="native",
        topic_exchange="native",
        fanout_exchange="native",
        dead_letter="native",
        redelivered_flag="native",
        shared_between_processes=False,
        notes=("in-process only; the reference implementation",),
    )

    broker: MemoryBroker
    prefetch: int = 0
    _inbox: deque[Delivery] = attrs.field(factory=deque, init=False)
    _unacked: dict[int, Delivery] = attrs.field(factory=dict, init=False)
    _tags: list[str] = attrs.field(factory=list, init=False)
    closed: bool = attrs.field(default=False, init=False)

    def declare_exchange(self, exchange: Exchange) -> None:
        if exchange is not DEFAULT_EXCHANGE and exchange.name:
            self.broker.declare_exchange(exchange)

    def declare_queue(self, queue: Queue) -> None:
        self.broker.declare_queue(queue)

    def publish(
        self,
        envelope: Envelope,
        exchange: str,
        routing_key: str,
        *,
        mandatory: bool = False,
        immediate: bool = False,
    ) -> None:
        self.broker.publish(envelope, exchange, routing_key, mandatory=mandatory, immediate=immediate)

    def consume(self, queue: str, prefetch: int = 0, tag: str | None = None) -> str:
        if prefetch:
            self.prefetch = prefetch
        tag = self.broker.add_consumer(self, queue, tag)
        self._tags.append(tag)
        return tag

    def cancel(self, tag: str) -> None:
        self.broker.remove_consumer(tag)
        if tag in self._tags:
            self._tags.remove(tag)

    def set_prefetch(self, prefetch: int) -> None:
        self.prefetch = prefetch

    def has_capacity(self) -> bool:
        return not self.prefetch or len(self._unacked) < self.prefetch

    def _deliver(self, delivery: Delivery) -> None:
        self._unacked[delivery.tag] = delivery
        self._inbox.append(delivery)

    def has_events(self) -> bool:
        return bool(self._inbox)

    def drain_events(self, timeout: float | None = 0) -> list[Delivery]:
        self.broker.dispatch()
        if not self._inbox:
            return []
        out = list(self._inbox)
        self._inbox.clear()
        return out

    def ack(self, delivery: Delivery) -> None:
        if self._unacked.pop(delivery.tag, None) is not None:
            self.broker.settle(delivery, ack=True)

    def reject(self, delivery: Delivery, requeue: bool = False, reason: str = "") -> None:
        if self._unacked.pop(delivery.tag, None) is not None:
            self.broker.settle(delivery, ack=False, requeue=requeue, reason=reason)

    @property
    def unacked(self) -> int:
        return len(self._unacked)

    def queue_depth(self, queue: str) -> int:
        return self.broker.depth(queue)

    def purge(self, queue: str) -> int:
        return self.broker.purge(queue)

    def close(self) -> None:
        """Cancel consumers and give every unacknowledged delivery back, flagged redelivered."""
        if self.closed:
            return
        self.closed = True
        for tag in list(self._tags):
            self.cancel(tag)
        self._inbox.clear()
        for delivery in sorted(self._unacked.values(), key=lambda d: d.tag, reverse=True):
            self.broker.settle(delivery, ack=False, requeue=True)
        self._unacked.clear()


def memory_transport_factory(url: str = "memory://", *, broker: MemoryBroker | None = None, **_: Any) -> Transport:
    """Entry point for ``memory://``: needs the broker the app or simulation owns."""
    if broker is None:
        raise RoutingError("memory:// needs the MemoryBroker owned by an app or simulation")
    return MemoryTransport(broker)
