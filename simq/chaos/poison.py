"""Raw poison written straight onto a queue, past simq's producer: the bytes a transport reads off the broker.

Each poison message is drawn from a ``random.Random`` and is one of:

- bytes that are not a message at all (on Redis: not msgpack, or msgpack of
  the wrong shape or field types; on RabbitMQ: a body no serializer reads);
- a mangled task message from ``simq.campaign``'s mutator (garbage bodies,
  refused content types, headers of the wrong type), naming the campaign's
  own tasks, which cannot run without their ``key`` argument;
- a well-formed message for ``chaos.canary`` that must be held, not run:
  an eta in year 9999 or at 1e300 seconds;
- a well-formed canary with a value no broker field allows: priority 200 on
  Redis, AMQP priority 255, an eta of NaN; the worker may refuse it or run
  it (clamped, or at once), but must neither crash nor stall on it.

``Poison.must_not_run`` says which: the checker reports a run of those as
*unexpected*. The canaries' task ids are ``<run>.poison.<n>``.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
from typing import Any

import attrs

from simq.campaign.fuzz import bad_envelope as _bad_envelope
from simq.campaign.fuzz import random_value as _random_value
from simq.chaos.ledger import plain_redis_url

__all__ = ["Poison", "PoisonWriter", "poison_writer"]

FAR_FUTURE = 253402300799.0  # 9999-12-31T23:59:59Z
_TARGETS = ("chaos.late.add", "chaos.early.add", "chaos.late.total", "chaos.early.flaky")


@attrs.frozen
class Poison:
    """One message written: what it was, and whether running it would be wrong."""

    variant: str
    task_id: str | None  # the canary's id; None for what has no usable id
    must_not_run: bool

    def line(self) -> str:
        return f"{self.variant}{' ' + self.task_id if self.task_id else ''}"


def _canary(task_id: str, **headers: Any) -> tuple[bytes, dict[str, Any]]:
    body = json.dumps([[], {"key": task_id}, {}]).encode()
    return body, {"simq": 1, "task": "chaos.canary", "id": task_id, "retries": 0, **headers}


@attrs.define(eq=False)
class PoisonWriter:
    """Writes poison for one transport; ``write(rng, n)`` draws and writes ``n`` messages."""

    run: str
    queue: str = "celery"
    written: int = 0

    def next_id(self) -> str:
        self.written += 1
        return f"{self.run}.poison.{self.written}"

    def write(self, rng: random.Random, count: int) -> list[Poison]:
        return [self.write_one(rng) for _ in range(count)]

    def write_one(self, rng: random.Random) -> Poison:  # pragma: no cover - per transport
        raise NotImplementedError

    def close(self) -> None:
        pass


@attrs.define(eq=False)
class RedisPoison(PoisonWriter):
    """RPUSH onto the queue's priority lists, in simq's Redis payload format or not."""

    client: Any = None
    prefix: str = "simq:"

    def _push(self, payload: bytes, level: int = 9) -> None:
        self.client.rpush(f"{self.prefix}q:{self.queue}:{level}", payload)

    @staticmethod
    def _pack(body: bytes, ctype: str, headers: Any, priority: Any, message_id: Any) -> bytes:
        import msgpack

        packed: bytes = msgpack.packb(
            [body, ctype, "utf-8", headers, priority, message_id, "", "celery"], use_bin_type=True
        )
        return b"0" + packed

    def write_one(self, rng: random.Random) -> Poison:
        import msgpack

        choice = rng.randrange(8)
        level = rng.randrange(10)
        if choice == 0:
            self._push(rng.randbytes(rng.randrange(1, 48)), level)
            return Poison("redis: random bytes", None, True)
        if choice == 1:
            self._push(b"0" + msgpack.packb(_random_value(rng), use_bin_type=True), level)
            return Poison("redis: msgpack of the wrong shape", None, True)
        if choice == 2:
            fields: list[Any] = [_random_value(rng) for _ in range(8)]
            self._push(b"0" + msgpack.packb(fields, use_bin_type=True), level)
            return Poison("redis: eight fields of the wrong types", None, True)
        if choice == 3:
            env = _bad_envelope(rng, _TARGETS)
            self._push(self._pack(env.body, env.content_type, dict(env.headers), None, None), level)
            return Poison("redis: mangled task message", None, True)
        task_id = self.next_id()
        if choice == 4:
            body, headers = _canary(task_id)
            self._push(self._pack(body, "application/json", headers, 200, task_id), 9)
            return Poison("redis: canary with priority 200", task_id, False)
        if choice == 5:
            body, headers = _canary(task_id, eta=FAR_FUTURE)
            self._push(self._pack(body, "application/json", headers, None, task_id), level)
            return Poison("redis: canary with eta 9999-12-31", task_id, True)
        if choice == 6:
            body, headers = _canary(task_id, eta=1e300)
            self._push(self._pack(body, "application/json", headers, None, task_id), level)
            return Poison("redis: canary with eta 1e300", task_id, True)
        body, headers = _canary(task_id, eta=math.nan)
        self._push(self._pack(body, "application/json", headers, None, task_id), level)
        return Poison("redis: canary with eta NaN", task_id, False)

    def close(self) -> None:
        self.client.close()


@attrs.define(eq=False)
class AmqpPoison(PoisonWriter):
    """``basic.publish`` on the default exchange straight to the (namespaced) queue, with any properties."""

    connect: Any = None  # () -> amqp.Connection, connected
    connection: Any = None
    channel: Any = None
    routing_key: str = "celery"

    def _publish(self, body: bytes, **properties: Any) -> None:
        import amqp

        properties.setdefault("delivery_mode", 2)
        for attempt in (1, 2):
            try:
                if self.channel is None:
                    self.connection = self.connect()
                    self.channel = self.connection.channel()
                self.channel.basic_publish(amqp.Message(body, **properties), exchange="", routing_key=self.routing_key)
                return
            except (OSError, amqp.exceptions.AMQPError):
                self.close()  # the broker restarted (stop-app) or closed us: connect again, once
                self.channel = None
                if attempt == 2:
                    raise

    def write_one(self, rng: random.Random) -> Poison:
        choice = rng.randrange(7)
        if choice == 0:
            self._publish(rng.randbytes(rng.randrange(1, 48)), content_type="application/json")
            return Poison("amqp: random bytes as JSON", None, True)
        if choice == 1:
            headers = {"simq": "one", "task": rng.randrange(100), "id": ["x"], "retries": "many", "eta": "soon"}
            self._publish(b"[[1, 2], {}, {}]", content_type="application/json", application_headers=headers)
            return Poison("amqp: headers of the wrong types", None, True)
        if choice == 2:
            env = _bad_envelope(rng, _TARGETS)
            try:
                self._publish(env.body, content_type=env.content_type, application_headers=_amqp_table(env.headers))
            except (TypeError, ValueError, OverflowError):
                self._publish(env.body, content_type=env.content_type)
            return Poison("amqp: mangled task message", None, True)
        task_id = self.next_id()
        body, headers = _canary(task_id)
        if choice == 3:
            self._publish(body, content_type="application/json", application_headers=headers, priority=255)
            return Poison("amqp: canary with priority 255", task_id, False)
        if choice == 4:
            headers["eta"] = FAR_FUTURE
            self._publish(body, content_type="application/json", application_headers=headers)
            return Poison("amqp: canary with eta 9999-12-31", task_id, True)
        if choice == 5:
            headers["eta"] = 1e300
            self._publish(body, content_type="application/json", application_headers=headers)
            return Poison("amqp: canary with eta 1e300", task_id, True)
        headers["eta"] = math.nan
        self._publish(body, content_type="application/json", application_headers=headers)
        return Poison("amqp: canary with eta NaN", task_id, False)

    def close(self) -> None:
        if self.connection is not None:
            with contextlib.suppress(Exception):  # closing a poison connection that may already be gone
                self.connection.close()
            self.connection = None


def _amqp_table(headers: Any) -> dict[str, Any]:
    """What an AMQP field table can carry: keys as strings, values as they are (py-amqp refuses the rest)."""
    if not isinstance(headers, dict):
        return {"mangled": repr(headers)}
    return {str(k)[:120]: v for k, v in headers.items()}


def poison_writer(broker_url: str, namespace: str, run: str) -> PoisonWriter:
    """A writer for the broker at ``broker_url`` whose simq queues carry ``namespace``."""
    from urllib.parse import unquote, urlsplit

    parts = urlsplit(broker_url)
    if parts.scheme in ("redis", "rediss"):
        import redis

        client = redis.Redis.from_url(plain_redis_url(broker_url), client_name=f"simq-chaos:{run}:poison")
        return RedisPoison(run, client=client, prefix=f"simq:{namespace}:" if namespace else "simq:")
    if parts.scheme in ("amqp", "pyamqp"):
        import amqp

        vhost = unquote(parts.path[1:]) if len(parts.path) > 1 else "/"

        def connect() -> Any:
            conn = amqp.Connection(
                host=f"{parts.hostname or '127.0.0.1'}:{parts.port or 5672}",
                userid=unquote(parts.username or "guest"),
                password=unquote(parts.password or "guest"),
                virtual_host=vhost or "/",
                client_properties={"connection_name": f"simq-chaos {run} poison"},
                connect_timeout=5,
            )
            conn.connect()
            return conn

        key = f"{namespace}.celery" if namespace else "celery"
        return AmqpPoison(run, connect=connect, routing_key=key)
    raise ValueError(f"no poison writer for {parts.scheme!r} URLs (amqp:// and redis:// are supported)")
