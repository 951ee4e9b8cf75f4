"""The Redis transport, written on redis-py directly.

Capabilities:

- priority: native-equivalent. Each queue is ten Redis lists, one per simq
  priority (0 highest .. 9 lowest, none = 9); consumers pop the lists in
  priority order, so a waiting priority-0 message always goes first.
- exchanges: emulated with simq's own matcher (``simq.routing``), because
  kombu's virtual exchange disagrees with RabbitMQ on topic keys (``a.#`` vs
  ``a``, ``a.*`` vs ``a.b.c``). The binding table lives in Redis, shared by
  every process on the same namespace.
- mandatory: emulated from that binding table (no queue bound => ``Unroutable``).
- immediate: emulated and racy: the target queues must be empty and have a
  live consumer at the moment of the publish.
- unacknowledged messages: popped atomically (a Lua script) into an
  ``unacked`` hash owned by this connection; ``close()`` gives them back;
  after a crash a live connection restores them once the dead owner's
  liveness key (refreshed by a heartbeat thread) has expired.
- dead letters: a queue's ``x-dead-letter-exchange`` argument is honoured;
  otherwise rejected messages go to the list ``<prefix>dead:<queue>`` (the last 1000, each payload cut to 64 KiB, the list expiring a week after its last entry).

Why redis-py and not kombu's Redis transport: kombu creates a client per
command on the publish path (3.7k publishes/s here against 7.6k for a plain
LPUSH loop), its virtual exchanges get RabbitMQ's topic rules wrong, and its
priority emulation uses a handful of separate queues with polling between
them. Every behaviour here is a few Redis commands we control.

URL: ``redis://[:password@]host[:port][/db][?namespace=NAME&consumer_ttl=SECONDS]``.
``namespace`` prefixes every key (tests use one per run); ``consumer_ttl``
is how long a dead worker's unacknowledged messages wait before another
connection restores them (default 10 s).
"""

from __future__ import annotations

import itertools
import json
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from simq.exceptions import BrokerUnavailable, RoutingError
from simq.message import Delivery, Envelope
from simq.routing import DEFAULT_EXCHANGE, BindingTable, Exchange, Queue, not_delivered, unroutable
from simq.transport import Capabilities, Transport, redact_url
from simq_redis.connection import CONNECTION_ERRORS, connect_redis, dedicated_connection, owned
from simq_redis.payload import DEAD_LETTER_MAX, DEAD_LETTER_TTL, dead_letter_entry, pack, read_dead_letter, unpack

__all__ = ["RedisTransport", "redis_transport_factory"]

LEVELS = 10
LOWEST = LEVELS - 1
_SEP = "\x1f"

# Pop up to ARGV[3] messages from KEYS (in order: priority-major) into the
# unacked hash, atomically. Returns {key index, payload, ...}.
_FETCH = """
local out = {}
local n = tonumber(ARGV[3])
local tag = tonumber(ARGV[4])
for i, key in ipairs(KEYS) do
  while #out < 2 * n do
    local v = redis.call('LPOP', key)
    if not v then break end
    redis.call('HSET', ARGV[1], ARGV[2] .. ':' .. tag, key .. '\\31' .. v)
    tag = tag + 1
    out[#out + 1] = i
    out[#out + 1] = v
  end
  if #out >= 2 * n then break end
end
return out
"""

# Give back every unacked message whose owner's liveness key is gone.
_RESTORE = """
local entries = redis.call('HGETALL', KEYS[1])
local restored = 0
for i = 1, #entries, 2 do
  local field = entries[i]
  local owner = string.sub(field, 1, string.find(field, ':', 1, true) - 1)
  if redis.call('EXISTS', ARGV[1] .. owner) == 0 then
    local value = entries[i + 1]
    local cut = string.find(value, '\\31', 1, true)
    local key = string.sub(value, 1, cut - 1)
    local payload = '1' .. string.sub(value, cut + 2)
    redis.call('LPUSH', key, payload)
    redis.call('HDEL', KEYS[1], field)
    restored = restored + 1
  end
end
return restored
"""


class RedisTransport(Transport):
    """One connection to Redis: producer and consumer of simq messages."""

    scheme = "redis"
    capabilities = Capabilities(
        priority="native",
        mandatory="emulated",
        immediate="emulated",
        topic_exchange="emulated",
        fanout_exchange="emulated",
        dead_letter="emulated",
        redelivered_flag="native",
        shared_between_processes=True,
        notes=(
            "exchanges and bindings are emulated with simq's own matcher (RabbitMQ's topic rules)",
            "immediate is emulated and racy: empty target queue with a live consumer at publish time",
            "priority: ten lists per queue, popped in priority order",
        ),
    )

    def __init__(self, url: str, *, connect_timeout: float | None = None, **_: Any) -> None:
        self.url = url
        self.client, query = connect_redis(url, connect_timeout, role="broker")
        namespace = query.get("namespace", "")
        self.prefix = f"simq:{namespace}:" if namespace else "simq:"
        self.consumer_ttl = float(query.get("consumer_ttl", "10"))
        self.id = uuid.uuid4().hex[:16]
        self.closed = False
        self.prefetch = 0
        self._tags = itertools.count(1)
        self._consumers: dict[str, str] = {}  # consumer tag -> queue
        self._unacked: dict[int, tuple[str, bytes]] = {}  # delivery tag -> (list key, payload)
        # Acks go out on a connection of their own without waiting for Redis's
        # reply (it is read later, before the next fetch): an ack is on the wire
        # before ack() returns, and Redis runs it in order, but the worker does not
        # wait a round trip per task for the answer "1".
        self._ack_conn: Any = None
        self._acks_unread = 0
        self._keys: list[str] = []
        self._key_queue: dict[str, tuple[str, int]] = {}
        # the binding table every process on this namespace shares, as last read from Redis
        self.table = BindingTable()
        self._arguments: dict[str, dict[str, Any]] = {}  # queue -> its declared arguments
        self._table_version = -1
        self._table_checked = 0.0
        self._last_restore = 0.0
        self._heartbeat: threading.Thread | None = None
        self._stop = threading.Event()
        self._fetch = self.client.register_script(_FETCH)
        self._restore = self.client.register_script(_RESTORE)

    # -- keys -----------------------------------------------------------------------
    def _qkey(self, queue: str, priority: int | None) -> str:
        return f"{self.prefix}q:{queue}:{LOWEST if priority is None else priority}"

    # -- declaration ------------------------------------------------------------------
    def declare_exchange(self, exchange: Exchange) -> None:
        if exchange is DEFAULT_EXCHANGE or not exchange.name:
            return
        key = f"{self.prefix}x"
        try:
            if not self.client.hsetnx(key, exchange.name, exchange.type):
                existing = self.client.hget(key, exchange.name)
                existing_type = existing.decode() if existing is not None else exchange.type
                if existing_type != exchange.type:
                    raise RoutingError(
                        f"exchange {exchange.name!r} already declared as {existing_type!r}, not {exchange.type!r}"
                    )
        except CONNECTION_ERRORS as exc:
            raise self._lost(exc) from exc
        self.table.add_exchange(exchange.name, exchange.type)

    def declare_queue(self, queue: Queue) -> None:
        arguments = dict(queue.arguments)
        if queue.max_priority is not None:
            arguments["x-max-priority"] = queue.max_priority
        try:
            self.client.hsetnx(f"{self.prefix}qs", queue.name, json.dumps(arguments, sort_keys=True, default=str))
            added = 0
            for binding in queue.all_bindings:
                if binding.exchange.name == "":
                    continue
                self.declare_exchange(binding.exchange)
                added += self.client.sadd(
                    f"{self.prefix}b:{binding.exchange.name}", f"{binding.routing_key}{_SEP}{queue.name}"
                )
            if added:
                self.client.incr(f"{self.prefix}bv")
        except CONNECTION_ERRORS as exc:
            raise self._lost(exc) from exc
        self.table.add_queue(queue)
        self._arguments[queue.name] = arguments

    def _refresh_table(self, force: bool = False) -> None:
        """Reload exchanges and bindings other processes declared, at most once a second unless forced."""
        now = time.monotonic()
        if not force and now - self._table_checked < 1.0:
            return
        self._table_checked = now
        version = int(self.client.get(f"{self.prefix}bv") or 0)
        if version == self._table_version and not force:
            return
        exchanges = {k.decode(): v.decode() for k, v in self.client.hgetall(f"{self.prefix}x").items()}
        names = sorted(exchanges)
        pipe = self.client.pipeline(transaction=False)
        for name in names:
            pipe.smembers(f"{self.prefix}b:{name}")
        pipe.hgetall(f"{self.prefix}qs")
        *members, queues = pipe.execute()
        bindings: dict[str, list[tuple[str, str]]] = {}
        for name, found in zip(names, members, strict=True):
            pairs = []
            for item in sorted(m.decode() for m in found):
                key, _, queue = item.rpartition(_SEP)
                pairs.append((key, queue))
            bindings[name] = pairs
        self.table.replace(exchanges, bindings, (k.decode() for k in queues))
        self._arguments = {k.decode(): json.loads(v) for k, v in queues.items()}
        self._table_version = version

    def route(self, exchange: str, routing_key: str) -> list[str]:
        """The queues ``exchange`` routes ``routing_key`` to, by RabbitMQ's rules."""
        if exchange and exchange not in self.table.exchanges:
            self._refresh_table(force=True)  # declared by another process since the last read?
            if exchange not in self.table.exchanges:
                raise RoutingError(
                    f"no exchange named {exchange!r} is declared on this broker ({redact_url(self.url)})"
                )
        return self.table.route(exchange, routing_key)

    # -- publishing -----------------------------------------------------------------------
    def publish(
        self,
        envelope: Envelope,
        exchange: str,
        routing_key: str,
        *,
        mandatory: bool = False,
        immediate: bool = False,
    ) -> None:
        try:
            self._refresh_table()
            targets = self.route(exchange, routing_key)
            if not targets and (mandatory or immediate):
                self._refresh_table(force=True)  # bound by another process since the last read?
                targets = self.route(exchange, routing_key)
            if not targets:
                if mandatory or immediate:
                    raise unroutable(exchange, routing_key)
                return
            if immediate and not any(self._can_take_now(q) for q in targets):
                raise not_delivered(routing_key, targets, ", emulated on Redis")
            payload = pack(envelope, exchange, routing_key)
            if len(targets) == 1:
                self.client.rpush(self._qkey(targets[0], envelope.priority), payload)
            else:
                pipe = self.client.pipeline(transaction=False)
                for queue in targets:
                    pipe.rpush(self._qkey(queue, envelope.priority), payload)
                pipe.execute()
        except CONNECTION_ERRORS as exc:
            raise self._lost(exc) from exc

    def publish_many(self, items: Sequence[tuple[Envelope, str, str]]) -> None:
        try:
            pipe = self.client.pipeline(transaction=False)
            for envelope, exchange, routing_key in items:
                self._refresh_table()
                payload = pack(envelope, exchange, routing_key)
                for queue in self.route(exchange, routing_key):
                    pipe.rpush(self._qkey(queue, envelope.priority), payload)
            pipe.execute()
        except CONNECTION_ERRORS as exc:
            raise self._lost(exc) from exc

    def consumer_count(self, queue: str) -> int:
        """Live consumers of ``queue`` (connections whose liveness key has not expired)."""
        members = sorted(m.decode() for m in self.client.smembers(f"{self.prefix}cq:{queue}"))
        if not members:
            return 0
        pipe = self.client.pipeline(transaction=False)
        for member in members:
            pipe.exists(f"{self.prefix}c:{member}")
        return sum(1 for alive in pipe.execute() if alive)

    def _can_take_now(self, queue: str) -> bool:
        return self.queue_depth(queue) == 0 and self.consumer_count(queue) > 0

    # -- consuming ---------------------------------------------------------------------------
    def consume(self, queue: str, prefetch: int = 0, tag: str | None = None) -> str:
        if prefetch:
            self.prefetch = prefetch
        tag = tag or f"ctag-{self.id}-{len(self._consumers) + 1}"
        self._consumers[tag] = queue
        self._rebuild_keys()
        try:
            self._alive()
            self.client.sadd(f"{self.prefix}cq:{queue}", self.id)
            self.restore_orphans()
        except CONNECTION_ERRORS as exc:
            raise self._lost(exc) from exc
        if self._heartbeat is None:
            self._heartbeat = threading.Thread(target=self._beat, name=f"simq-redis-heartbeat-{self.id}", daemon=True)
            self._heartbeat.start()
        return tag

    def cancel(self, tag: str) -> None:
        queue = self._consumers.pop(tag, None)
        if queue is None:
            return
        self._rebuild_keys()
        if queue not in self._consumers.values():
            try:
                self.client.srem(f"{self.prefix}cq:{queue}", self.id)
            except CONNECTION_ERRORS:
                pass

    def set_prefetch(self, prefetch: int) -> None:
        self.prefetch = prefetch

    def _rebuild_keys(self) -> None:
        queues: list[str] = []
        for queue in self._consumers.values():
            if queue not in queues:
                queues.append(queue)
        self._keys = [self._qkey(q, level) for level in range(LEVELS) for q in queues]
        self._key_queue = {self._qkey(q, level): (q, level) for level in range(LEVELS) for q in queues}

    def _alive(self) -> None:
        self.client.set(f"{self.prefix}c:{self.id}", b"1", px=int(self.consumer_ttl * 1000))

    def _beat(self) -> None:
        interval = max(0.05, self.consumer_ttl / 3)
        while not self._stop.wait(interval):
            try:
                self._alive()
            except Exception:  # noqa: BLE001, S112 - the main loop reports a lost connection
                continue

    def restore_orphans(self) -> int:
        """Give back unacked messages of connections that died (their liveness key expired)."""
        self._last_restore = time.monotonic()
        return int(self._restore(keys=[f"{self.prefix}u"], args=[f"{self.prefix}c:"]))

    def _capacity(self) -> int:
        if not self.prefetch:
            return 100
        return max(0, self.prefetch - len(self._unacked))

    def _delivery(self, key: str, payload: bytes, tag: int) -> Delivery:
        queue, _ = self._key_queue[key]
        envelope, exchange, routing_key, redelivered = unpack(payload)  # any bytes: never raises
        self._unacked[tag] = (key, payload)
        return Delivery(envelope, tag, queue, exchange, routing_key, redelivered, "")

    def drain_events(self, timeout: float | None = 0) -> list[Delivery]:
        if not self._keys:
            if timeout:
                time.sleep(timeout)
            return []
        try:
            if self._acks_unread:
                self._read_acks()
            if time.monotonic() - self._last_restore > self.consumer_ttl:
                self.restore_orphans()
            capacity = self._capacity()
            if capacity <= 0:
                if timeout:
                    time.sleep(min(timeout, 1.0))
                return []
            out = self._fetch_now(capacity)
            if out or not timeout:
                return out
            # Nothing ready: block on every list at once (BLPOP takes them in
            # priority order), then record the message as unacked at once.
            wait = 1.0 if timeout is None else max(0.001, timeout)
            popped = self.client.blpop(self._keys, timeout=wait)
            if popped is None:
                return []
            key, payload = popped[0].decode(), popped[1]
            tag = next(self._tags)
            self.client.hset(f"{self.prefix}u", f"{self.id}:{tag}", f"{key}{_SEP}".encode() + payload)
            out = [self._delivery(key, payload, tag)]
            if capacity > 1:
                out.extend(self._fetch_now(capacity - 1))
            return out
        except CONNECTION_ERRORS as exc:
            raise self._lost(exc) from exc

    def _fetch_now(self, count: int) -> list[Delivery]:
        first = next(self._tags)
        got = self._fetch(keys=self._keys, args=[f"{self.prefix}u", self.id, count, first])
        if not got:
            return []
        out = []
        tag = first
        for i in range(0, len(got), 2):
            key = self._keys[int(got[i]) - 1]
            out.append(self._delivery(key, got[i + 1], tag))
            tag += 1
        # keep local tags ahead of the ones the script used
        self._tags = itertools.count(tag + 1)
        return out

    def ack(self, delivery: Delivery) -> None:
        if self._unacked.pop(delivery.tag, None) is None:
            return
        try:
            if self._ack_conn is None or not owned(self._ack_conn):  # none yet, or the parent's after a fork
                self._ack_conn, self._acks_unread = dedicated_connection(self.client), 0
            self._ack_conn.send_command("HDEL", f"{self.prefix}u", f"{self.id}:{delivery.tag}")
            self._acks_unread += 1
            if self._acks_unread >= 1000:
                self._read_acks()
        except CONNECTION_ERRORS as exc:
            raise self._lost(exc) from exc

    def _read_acks(self) -> None:
        """Read the replies to the acks sent so far (each is the number of fields HDEL removed)."""
        conn = self._ack_conn
        if not owned(conn):
            self._ack_conn, self._acks_unread = None, 0  # forked: those replies are the parent's
            return
        while self._acks_unread:
            self._acks_unread -= 1
            conn.read_response()

    def reject(self, delivery: Delivery, requeue: bool = False, reason: str = "") -> None:
        held = self._unacked.pop(delivery.tag, None)
        if held is None:
            return
        key, payload = held
        try:
            pipe = self.client.pipeline(transaction=True)
            pipe.hdel(f"{self.prefix}u", f"{self.id}:{delivery.tag}")
            if requeue:
                pipe.lpush(key, b"1" + payload[1:])
                pipe.execute()
                return
            pipe.execute()
            self._dead_letter(delivery, payload, reason or "rejected")
        except CONNECTION_ERRORS as exc:
            raise self._lost(exc) from exc

    def _dead_letter(self, delivery: Delivery, payload: bytes, reason: str) -> None:
        arguments = self._arguments.get(delivery.queue) or {}
        dlx = arguments.get("x-dead-letter-exchange")
        if dlx is not None:
            headers = dict(delivery.envelope.headers)
            headers["x-death-reason"] = reason
            envelope = Envelope(
                delivery.envelope.body,
                delivery.envelope.content_type,
                delivery.envelope.content_encoding,
                headers,
                delivery.envelope.priority,
                delivery.envelope.message_id,
            )
            self.publish(envelope, dlx, arguments.get("x-dead-letter-routing-key", delivery.routing_key))
            return
        key = f"{self.prefix}dead:{delivery.queue}"
        pipe = self.client.pipeline(transaction=False)
        pipe.rpush(key, dead_letter_entry(reason, payload))
        pipe.ltrim(key, -DEAD_LETTER_MAX, -1)
        pipe.expire(key, DEAD_LETTER_TTL)
        pipe.execute()

    def dead_letters(self, queue: str) -> list[tuple[str, Envelope]]:
        """(reason, envelope) of messages rejected from ``queue`` without a dead-letter exchange."""
        return [read_dead_letter(raw) for raw in self.client.lrange(f"{self.prefix}dead:{queue}", 0, -1)]

    @property
    def unacked(self) -> int:
        return len(self._unacked)

    # -- inspection -----------------------------------------------------------------------------
    def queue_depth(self, queue: str) -> int:
        pipe = self.client.pipeline(transaction=False)
        for level in range(LEVELS):
            pipe.llen(self._qkey(queue, level))
        return int(sum(pipe.execute()))

    def purge(self, queue: str) -> int:
        count = self.queue_depth(queue)
        self.client.delete(*[self._qkey(queue, level) for level in range(LEVELS)])
        return count

    def delete_namespace(self) -> int:
        """Delete every key under this connection's prefix (tests; never on the default namespace)."""
        if self.prefix == "simq:":
            raise RoutingError("refusing to delete the default simq namespace; give ?namespace=NAME")
        keys = list(self.client.scan_iter(match=f"{self.prefix}*", count=1000))
        if keys:
            self.client.delete(*keys)
        return len(keys)

    # -- closing -------------------------------------------------------------------------------
    def _lost(self, exc: BaseException) -> BrokerUnavailable:
        parts = urlsplit(self.url)
        return BrokerUnavailable(
            f"lost the connection to Redis at {parts.hostname}:{parts.port or 6379} ({redact_url(self.url)}): {exc}"
        )

    def close(self) -> None:
        """Cancel consumers and give every unacknowledged delivery back, flagged redelivered."""
        if self.closed:
            return
        self.closed = True
        self._stop.set()
        try:
            if self._acks_unread:
                self._read_acks()
            if self._unacked:
                pipe = self.client.pipeline(transaction=True)
                for tag in sorted(self._unacked, reverse=True):
                    key, payload = self._unacked[tag]
                    pipe.hdel(f"{self.prefix}u", f"{self.id}:{tag}")
                    pipe.lpush(key, b"1" + payload[1:])
                pipe.execute()
            for queue in set(self._consumers.values()):
                self.client.srem(f"{self.prefix}cq:{queue}", self.id)
            if self._consumers:
                self.client.delete(f"{self.prefix}c:{self.id}")
        except CONNECTION_ERRORS:
            pass  # Redis is gone; the liveness key expires and another connection restores them
        finally:
            self._unacked.clear()
            self._consumers.clear()
            if self._ack_conn is not None:
                self._ack_conn.disconnect()
                self._ack_conn = None
                self._acks_unread = 0
            self.client.close()


def redis_transport_factory(url: str, *, connect_timeout: float | None = None, **kw: Any) -> Transport:
    """Entry point for ``redis://`` and ``rediss://`` broker URLs."""
    return RedisTransport(url, connect_timeout=connect_timeout, **kw)
