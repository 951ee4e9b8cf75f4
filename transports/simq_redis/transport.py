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
  otherwise rejected messages go to the list ``<prefix>dead:<queue>`` (last 1000).

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
import os
import threading
import time
import uuid
from collections import deque
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qs, urlsplit

import msgpack
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from simq.exceptions import AccessRefused, BrokerUnavailable, NotDelivered, RoutingError, Unroutable
from simq.message import Delivery, Envelope
from simq.routing import DEFAULT_EXCHANGE, Exchange, Queue, exchange_routes
from simq.transport import Capabilities, Transport, redact_url

__all__ = ["RedisTransport", "parse_redis_url", "redis_transport_factory"]

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


def parse_redis_url(url: str) -> tuple[dict[str, Any], dict[str, str]]:
    """redis-py connection arguments and simq's own query options from a ``redis://`` URL."""
    parts = urlsplit(url)
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    db = 0
    path = parts.path.strip("/")
    if path:
        try:
            db = int(path)
        except ValueError:
            raise RoutingError(f"the Redis database in {redact_url(url)!r} must be a number, got {path!r}") from None
    kwargs: dict[str, Any] = {
        "host": parts.hostname or "127.0.0.1",
        "port": parts.port or 6379,
        "db": db,
        "password": parts.password,
        "username": parts.username or None,
    }
    if parts.scheme == "rediss":
        kwargs["ssl"] = True
    return kwargs, query


def connect_redis(url: str, connect_timeout: float | None, what: str = "broker") -> tuple[redis.Redis, dict[str, str]]:
    """A checked redis-py client; ``BrokerUnavailable`` naming host:port (never the password) if unreachable."""
    kwargs, query = parse_redis_url(url)
    # no read timeout: BLPOP and BLMOVE block on purpose, and a dead server still fails fast (RST, keepalive)
    client = redis.Redis(socket_connect_timeout=connect_timeout, socket_timeout=None, socket_keepalive=True, **kwargs)
    probe = redis.Redis(
        socket_connect_timeout=connect_timeout, socket_timeout=connect_timeout, retry=Retry(NoBackoff(), 0), **kwargs
    )
    try:
        # a server that accepts but never answers must fail within connect_timeout too
        probe.ping()
        probe.close()
        client.ping()
    except redis.AuthenticationError as exc:  # a ConnectionError to redis-py: caught first
        probe.close()
        client.close()
        raise AccessRefused(
            f"Redis at {kwargs['host']}:{kwargs['port']} refused the credentials in {redact_url(url)}: {exc}"
        ) from None
    except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
        probe.close()
        client.close()
        raise BrokerUnavailable(
            f"cannot reach the Redis {what} at {kwargs['host']}:{kwargs['port']} ({redact_url(url)}) "
            f"within {connect_timeout} s: {exc}. Is redis-server running there?"
        ) from None
    return client, query


def _connection_errors() -> tuple[type[BaseException], ...]:
    return (redis.ConnectionError, redis.TimeoutError)


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

    def __init__(self, url: str, *, connect_timeout: float | None = None, app: Any = None, **_: Any) -> None:
        self.url = url
        self.app = app
        self.client, query = connect_redis(url, connect_timeout)
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
        self._inbox: deque[Delivery] = deque()
        self._keys: list[str] = []
        self._key_queue: dict[str, tuple[str, int]] = {}
        self._exchanges: dict[str, str] = {}
        self._bindings: dict[str, list[tuple[str, str]]] = {}
        self._queues: dict[str, dict[str, Any]] = {}
        self._routes: dict[tuple[str, str], list[str]] = {}
        self._table_version = -1
        self._table_checked = 0.0
        self._declared: set[str] = set()
        self._last_restore = 0.0
        self._heartbeat: threading.Thread | None = None
        self._stop = threading.Event()
        self._fetch = self.client.register_script(_FETCH)
        self._restore = self.client.register_script(_RESTORE)
        self._packer = msgpack.Packer(use_bin_type=True)

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
        except _connection_errors() as exc:
            raise self._lost(exc) from exc
        self._exchanges[exchange.name] = exchange.type
        self._bindings.setdefault(exchange.name, [])

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
                added += self.client.sadd(f"{self.prefix}b:{binding.exchange.name}", f"{binding.routing_key}{_SEP}{queue.name}")
                pair = (binding.routing_key, queue.name)
                table = self._bindings.setdefault(binding.exchange.name, [])
                if pair not in table:
                    table.append(pair)
            if added:
                self.client.incr(f"{self.prefix}bv")
        except _connection_errors() as exc:
            raise self._lost(exc) from exc
        self._queues[queue.name] = arguments
        self._declared.add(queue.name)
        self._routes.clear()

    def _ensure_declared(self, exchange: str, routing_key: str) -> None:
        """Declare the app's queues the first time a send names something this connection has not declared."""
        if self.app is None:
            return
        known = routing_key in self._declared if exchange == "" else exchange in self._exchanges
        if known:
            return
        for queue in list(self.app.router.queues.values()):
            if queue.name not in self._declared:
                self.declare_queue(queue)

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
        self._exchanges = exchanges
        self._bindings = bindings
        self._queues = {k.decode(): json.loads(v) for k, v in queues.items()}
        self._table_version = version
        self._routes.clear()

    def route(self, exchange: str, routing_key: str) -> list[str]:
        """The queues ``exchange`` routes ``routing_key`` to, by RabbitMQ's rules."""
        cached = self._routes.get((exchange, routing_key))
        if cached is not None:
            return cached
        if exchange == "":
            targets = [routing_key] if routing_key in self._queues else []
        else:
            kind = self._exchanges.get(exchange)
            if kind is None:
                self._refresh_table(force=True)
                kind = self._exchanges.get(exchange)
                if kind is None:
                    raise RoutingError(f"no exchange named {exchange!r} is declared on this broker ({redact_url(self.url)})")
            targets = []
            for binding_key, queue in self._bindings.get(exchange, ()):
                if queue not in targets and exchange_routes(kind, binding_key, routing_key):
                    targets.append(queue)
        self._routes[(exchange, routing_key)] = targets
        return targets

    # -- publishing -----------------------------------------------------------------------
    def _pack(self, envelope: Envelope, exchange: str, routing_key: str) -> bytes:
        return b"0" + self._packer.pack(
            [
                envelope.body,
                envelope.content_type,
                envelope.content_encoding,
                dict(envelope.headers),
                envelope.priority,
                envelope.message_id,
                exchange,
                routing_key,
            ]
        )

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
            self._ensure_declared(exchange, routing_key)
            self._refresh_table()
            targets = self.route(exchange, routing_key)
            if not targets and (mandatory or immediate):
                self._refresh_table(force=True)
                targets = self.route(exchange, routing_key)
            if not targets:
                if mandatory or immediate:
                    raise Unroutable(
                        f"no queue is bound to exchange {exchange or '(default)'!r} for routing key "
                        f"{routing_key!r} (mandatory=True); bind a queue or fix the key"
                    )
                return
            if immediate and not any(self._can_take_now(q) for q in targets):
                raise NotDelivered(
                    f"no consumer can take a message for {routing_key!r} now (immediate=True, emulated on Redis): "
                    f"queues {targets} have no live consumer or already hold messages"
                )
            payload = self._pack(envelope, exchange, routing_key)
            if len(targets) == 1:
                self.client.rpush(self._qkey(targets[0], envelope.priority), payload)
            else:
                pipe = self.client.pipeline(transaction=False)
                for queue in targets:
                    pipe.rpush(self._qkey(queue, envelope.priority), payload)
                pipe.execute()
        except _connection_errors() as exc:
            raise self._lost(exc) from exc

    def publish_many(self, items: Sequence[tuple[Envelope, str, str]]) -> None:
        try:
            pipe = self.client.pipeline(transaction=False)
            for envelope, exchange, routing_key in items:
                self._ensure_declared(exchange, routing_key)
                self._refresh_table()
                payload = self._pack(envelope, exchange, routing_key)
                for queue in self.route(exchange, routing_key):
                    pipe.rpush(self._qkey(queue, envelope.priority), payload)
            pipe.execute()
        except _connection_errors() as exc:
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
        except _connection_errors() as exc:
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
            except _connection_errors():
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

    def has_events(self) -> bool:
        return bool(self._inbox)

    def _capacity(self) -> int:
        if not self.prefetch:
            return 100
        return max(0, self.prefetch - len(self._unacked))

    def _delivery(self, key: str, payload: bytes, tag: int) -> Delivery:
        queue, _ = self._key_queue[key]
        body, ctype, cenc, headers, priority, message_id, exchange, routing_key = msgpack.unpackb(payload[1:], raw=False)
        envelope = Envelope(body, ctype, cenc, headers, priority, message_id)
        self._unacked[tag] = (key, payload)
        return Delivery(envelope, tag, queue, exchange, routing_key, payload[:1] == b"1", "")

    def drain_events(self, timeout: float | None = 0) -> list[Delivery]:
        if self._inbox:
            out = list(self._inbox)
            self._inbox.clear()
            return out
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
        except _connection_errors() as exc:
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
        except _connection_errors() as exc:
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
        except _connection_errors() as exc:
            raise self._lost(exc) from exc

    def _dead_letter(self, delivery: Delivery, payload: bytes, reason: str) -> None:
        arguments = self._queues.get(delivery.queue) or {}
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
        pipe.rpush(key, self._packer.pack([reason, payload]))
        pipe.ltrim(key, -1000, -1)
        pipe.execute()

    def dead_letters(self, queue: str) -> list[tuple[str, Envelope]]:
        """(reason, envelope) of messages rejected from ``queue`` without a dead-letter exchange."""
        out = []
        for raw in self.client.lrange(f"{self.prefix}dead:{queue}", 0, -1):
            reason, payload = msgpack.unpackb(raw, raw=False)
            body, ctype, cenc, headers, priority, message_id, _, _ = msgpack.unpackb(payload[1:], raw=False)
            out.append((reason, Envelope(body, ctype, cenc, headers, priority, message_id)))
        return out

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
        self._inbox.clear()
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
        except _connection_errors():
            pass  # Redis is gone; the liveness key expires and another connection restores them
        finally:
            self._unacked.clear()
            self._consumers.clear()
            if self._ack_conn is not None:
                self._ack_conn.disconnect()
                self._ack_conn = None
                self._acks_unread = 0
            self.client.close()


def owned(conn: Any) -> bool:
    """Whether ``conn`` (a redis-py connection) was made by this process, not inherited through a fork."""
    return getattr(conn, "pid", None) == os.getpid()


def dedicated_connection(client: redis.Redis) -> Any:
    """A connection of ``client``'s pool kept apart, for commands whose replies are read later."""
    pool = client.connection_pool
    try:
        return pool.get_connection()  # redis-py >= 5.3
    except TypeError:
        return pool.get_connection("PING")


def redis_transport_factory(url: str, *, connect_timeout: float | None = None, app: Any = None, **kw: Any) -> Transport:
    """Entry point for ``redis://`` and ``rediss://`` broker URLs."""
    return RedisTransport(url, connect_timeout=connect_timeout, app=app, **kw)

