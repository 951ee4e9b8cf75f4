"""The RabbitMQ transport: kombu parses the URL, py-amqp does the work.

Capabilities:

- priority: native. Queues are declared with ``x-max-priority=10`` and simq's
  0 (highest) .. 9 (lowest) is sent inverted as AMQP priority 9 .. 0; a
  message without a priority is AMQP 0, the lowest, as in simq.
- direct, topic and fanout exchanges: native (RabbitMQ's own rules, which
  simq's matcher copies).
- mandatory: native, raised synchronously: such a publish goes on a channel
  in publisher-confirm mode, and a ``basic.return`` that arrives before the
  confirm becomes ``Unroutable``.
- immediate: emulated and racy. RabbitMQ 3.x closes the connection with
  540 NOT_IMPLEMENTED when the flag is sent, so it is never sent: the
  target queues (from the bindings this process declared) must be empty and
  have a consumer (``queue.declare`` passive) at the moment of the publish.
- prefetch: ``basic.qos`` per channel (global), so it counts every queue this
  connection consumes, as in the memory broker.
- dead letters: native through the queue's ``x-dead-letter-exchange``
  argument; without one RabbitMQ drops a rejected message (the worker logs it).
- long etas: RabbitMQ closes a channel that holds a delivery longer than its
  ``consumer_timeout`` (30 min by default), so a consumer holds an eta
  message at most ``max_hold`` seconds (``?max_hold=``, default 900); one
  due later waits in a wait queue instead (``defer``) and comes back.
- anything on a queue becomes a delivery: properties or headers simq cannot
  read arrive as a malformed envelope, which the worker refuses and counts.

URL: ``amqp://user:password@host:port/vhost[?namespace=NAME&max_hold=SECONDS]``; ``namespace``
prefixes every queue and exchange name on the broker (tests use one per run)
and such queues expire five minutes after their last use.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

import amqp
import amqp.exceptions
import amqp.transport
from kombu.utils.url import parse_url

from simq.exceptions import AccessRefused, BrokerUnavailable, ConfigurationError, RoutingError
from simq.message import Delivery, Envelope, malformed_envelope
from simq.routing import DEFAULT_EXCHANGE, BindingTable, Exchange, Queue, not_delivered, unroutable
from simq.transport import Capabilities, Transport, redact_url
from simq_amqp.connection import Connection

__all__ = ["AMQPTransport", "amqp_transport_factory"]

MAX_PRIORITY = 10
NAMESPACED_QUEUE_TTL_MS = 300_000
#: basic.qos takes a 16-bit prefetch count.
MAX_PREFETCH = 65535
#: How long a consumer holds an eta message before handing it to a wait queue (``?max_hold=`` changes
#: it): half of RabbitMQ's default ``consumer_timeout`` (30 min), after which it closes the channel.
DEFAULT_MAX_HOLD = 900.0

_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    amqp.exceptions.ConnectionError,
    amqp.exceptions.RecoverableConnectionError,
    ConnectionError,
    OSError,
)


#: What the broker closing a channel (406 after consumer_timeout, 404, 403...) raises: the channel and
#: its deliveries are gone, so it counts as a lost connection (the worker reconnects; RabbitMQ redelivers).
_CHANNEL_ERRORS: tuple[type[BaseException], ...] = (amqp.exceptions.ChannelError,)


def _to_amqp_priority(priority: int | None) -> int | None:
    return None if priority is None else 9 - priority


def _from_amqp_priority(priority: int | None) -> int | None:
    if priority is None:
        return None
    return min(9, max(0, 9 - int(priority)))


class AMQPTransport(Transport):
    """One AMQP connection: a publish channel, a confirm channel for mandatory sends, a consume channel."""

    scheme = "amqp"
    capabilities = Capabilities(
        priority="native",
        mandatory="native",
        immediate="emulated",
        topic_exchange="native",
        fanout_exchange="native",
        dead_letter="native",
        redelivered_flag="native",
        shared_between_processes=True,
        notes=(
            "priority: x-max-priority=10, simq 0..9 sent as AMQP 9..0",
            "mandatory: publisher confirms + basic.return, raised synchronously",
            "immediate is emulated and racy (RabbitMQ 3 refuses the flag with 540 NOT_IMPLEMENTED)",
        ),
    )

    def __init__(self, url: str, *, connect_timeout: float | None = None, **_: Any) -> None:
        self.url = url
        parts = urlsplit(url)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        self.max_hold = _max_hold(query.get("max_hold"), url)
        namespace = query.get("namespace", "")
        self.prefix = f"{namespace}." if namespace else ""
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 5672
        plain = urlunsplit(parts._replace(query="", scheme="amqp"))
        info = parse_url(plain)
        # py-amqp directly (kombu parses the URL): kombu's Connection.connect()
        # retries after 2 s, which would break the connect_timeout promise.
        self.raw = Connection(
            host=f"{self.host}:{self.port}",
            userid=info.get("userid") or "guest",
            password=info.get("password") or "guest",
            virtual_host=info.get("virtual_host") or "/",
            connect_timeout=connect_timeout,
            heartbeat=0,
        )
        try:
            self.raw.connect()
        except amqp.exceptions.AccessRefused as exc:
            raise AccessRefused(
                f"RabbitMQ at {self.host}:{self.port} refused the credentials in {redact_url(url)}: {exc}"
            ) from None
        except (TimeoutError, *_CONNECTION_ERRORS) as exc:
            raise BrokerUnavailable(
                f"cannot reach RabbitMQ at {self.host}:{self.port} ({redact_url(url)}) within {connect_timeout} s: "
                f"{exc}. Is rabbitmq-server running there?"
            ) from None
        self.closed = False
        self.prefetch = 0
        self._qos = -1
        self._pub: amqp.Channel = self.raw.channel()
        self._confirm: amqp.Channel | None = None
        self._side: amqp.Channel | None = None
        self._ch: amqp.Channel | None = None
        self._returned: list[tuple[str, str, str]] = []
        self._inbox: deque[Delivery] = deque()
        self._consumers: dict[str, str] = {}  # consumer tag -> queue (simq name)
        self._unacked: set[int] = set()
        # what this process declared (RabbitMQ routes; the table answers the emulated immediate check)
        self.table = BindingTable()
        self._checked_exchanges: set[str] = set()

    # -- names ----------------------------------------------------------------------------
    def _name(self, name: str) -> str:
        return f"{self.prefix}{name}" if name and self.prefix else name

    def _unname(self, name: str) -> str:
        if self.prefix and name.startswith(self.prefix):
            return name[len(self.prefix) :]
        return name

    def _lost(self, exc: BaseException) -> BrokerUnavailable:
        return BrokerUnavailable(
            f"lost the connection to RabbitMQ at {self.host}:{self.port} ({redact_url(self.url)}): {exc}"
        )

    def _side_channel(self) -> amqp.Channel:
        if self._side is None or not self._side.is_open:
            self._side = self.raw.channel()
        return self._side

    # -- declaration ------------------------------------------------------------------------
    def declare_exchange(self, exchange: Exchange) -> None:
        if exchange is DEFAULT_EXCHANGE or not exchange.name:
            return
        if self.table.exchanges.get(exchange.name) == exchange.type:
            return
        try:
            self._side_channel().exchange_declare(
                self._name(exchange.name),
                exchange.type,
                durable=exchange.durable,
                auto_delete=exchange.auto_delete or bool(self.prefix),
                arguments=dict(exchange.arguments) or None,
            )
        except amqp.exceptions.PreconditionFailed as exc:
            self._side = None
            raise RoutingError(
                f"exchange {exchange.name!r} already exists on RabbitMQ with other settings than "
                f"type={exchange.type!r} durable={exchange.durable} auto_delete={exchange.auto_delete}: {exc.reply_text}"
            ) from None
        except _CONNECTION_ERRORS as exc:
            raise self._lost(exc) from exc
        self.table.add_exchange(exchange.name, exchange.type)

    def _queue_arguments(self, queue: Queue) -> dict[str, Any]:
        arguments: dict[str, Any] = {"x-max-priority": MAX_PRIORITY}
        arguments.update(queue.arguments)
        for key in ("x-dead-letter-exchange",):
            if arguments.get(key):
                arguments[key] = self._name(str(arguments[key]))
        if self.prefix:
            arguments.setdefault("x-expires", NAMESPACED_QUEUE_TTL_MS)
        return arguments

    def declare_queue(self, queue: Queue) -> None:
        arguments = self._queue_arguments(queue)
        channel = self._side_channel()
        try:
            channel.queue_declare(
                self._name(queue.name), durable=queue.durable, auto_delete=queue.auto_delete, arguments=arguments
            )
        except amqp.exceptions.PreconditionFailed as exc:
            self._side = None
            raise ConfigurationError(
                f"queue {queue.name!r} already exists on RabbitMQ with other arguments: simq declared "
                f"{arguments} (durable={queue.durable}, auto_delete={queue.auto_delete}) and the broker answered "
                f"{exc.reply_text!r}. Delete the queue (rabbitmqctl delete_queue {self._name(queue.name)}) "
                "or declare it with the same arguments."
            ) from None
        except _CONNECTION_ERRORS as exc:
            raise self._lost(exc) from exc
        for binding in queue.all_bindings:
            if binding.exchange.name == "":
                continue
            self.declare_exchange(binding.exchange)
            try:
                self._side_channel().queue_bind(
                    self._name(queue.name), self._name(binding.exchange.name), binding.routing_key
                )
            except _CONNECTION_ERRORS as exc:
                raise self._lost(exc) from exc
        self.table.add_queue(queue)

    def _check_exchange(self, exchange: str) -> None:
        """Make sure an exchange this connection did not declare exists before publishing to it."""
        if exchange and exchange not in self.table.exchanges and exchange not in self._checked_exchanges:
            # Declared by someone else? Ask passively; publishing to a missing
            # exchange would close the channel long after the call returned.
            try:
                self._side_channel().exchange_declare(self._name(exchange), "direct", passive=True)
            except amqp.exceptions.NotFound:
                self._side = None
                raise RoutingError(
                    f"no exchange named {exchange!r} is declared on RabbitMQ at {self.host}:{self.port}; "
                    "declare it in task_queues"
                ) from None
            self._checked_exchanges.add(exchange)

    # -- publishing ----------------------------------------------------------------------------
    def _message(self, envelope: Envelope) -> amqp.Message:
        properties: dict[str, Any] = {
            "content_type": envelope.content_type,
            "content_encoding": envelope.content_encoding,
            "application_headers": dict(envelope.headers),
            "delivery_mode": 2,
        }
        priority = _to_amqp_priority(envelope.priority)
        if priority is not None:
            properties["priority"] = priority
        if envelope.message_id is not None:
            properties["message_id"] = envelope.message_id
        return amqp.Message(envelope.body, **properties)

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
            message, key = self._prepare(envelope, exchange, routing_key)
            if immediate:
                self._check_immediate(exchange, routing_key)
            if not (mandatory or immediate):
                self._pub.basic_publish(message, self._name(exchange), key)
                return
            self._publish_confirmed(message, exchange, key, routing_key)
        except _CONNECTION_ERRORS as exc:
            raise self._lost(exc) from exc

    def _prepare(self, envelope: Envelope, exchange: str, routing_key: str) -> tuple[amqp.Message, str]:
        """Declare what publishing needs; return the message and the routing key RabbitMQ sees."""
        self._check_exchange(exchange)
        return self._message(envelope), (self._name(routing_key) if exchange == "" else routing_key)

    def _publish_confirmed(self, message: amqp.Message, exchange: str, key: str, routing_key: str) -> None:
        channel = self._confirm
        if channel is None or not channel.is_open:
            channel = self.raw.channel()
            channel.events["basic_return"].add(self._on_return)
            self._confirm = channel
        self._returned.clear()
        channel.basic_publish_confirm(message, self._name(exchange), key, mandatory=True)
        if self._returned:
            code, text, _ = self._returned[0]
            self._returned.clear()
            raise unroutable(exchange, routing_key, f"RabbitMQ returned it: {code} {text}")

    def _on_return(self, exc: Any, exchange: str, routing_key: str, message: Any) -> None:
        self._returned.append((str(getattr(exc, "code", "")), str(getattr(exc, "reply_text", exc)), routing_key))

    def _check_immediate(self, exchange: str, routing_key: str) -> None:
        known = exchange == "" or exchange in self.table.exchanges
        targets = self.table.route(exchange, routing_key) if known else []
        if not targets:
            return  # the confirmed publish reports it as unroutable
        for queue in targets:
            ready, consumers = self._queue_counts(queue)
            if consumers > 0 and ready == 0:
                return
        raise not_delivered(routing_key, targets, ", emulated on RabbitMQ")

    def publish_many(self, items: Sequence[tuple[Envelope, str, str]]) -> None:
        """Unconfirmed publishes, written to the socket together (declarations first, outside the batch)."""
        try:
            prepared = [
                (*self._prepare(envelope, exchange, key), self._name(exchange)) for envelope, exchange, key in items
            ]
            corked = getattr(self.raw.transport, "corked", None)
            with corked() if corked is not None else contextlib.nullcontext():
                for message, key, exchange in prepared:
                    self._pub.basic_publish(message, exchange, key)
        except _CONNECTION_ERRORS as exc:
            raise self._lost(exc) from exc

    # -- consuming --------------------------------------------------------------------------------
    def _consume_channel(self) -> amqp.Channel:
        if self._ch is None:
            self._ch = self.raw.channel()
            # bodies stay the bytes the broker holds: py-amqp would otherwise decode them
            # with whatever content_encoding a message claims (or keep them as bytes if it cannot)
            self._ch.auto_decode = False
        return self._ch

    def _apply_qos(self) -> None:
        prefetch = min(self.prefetch, MAX_PREFETCH)
        if self._qos != prefetch:
            self._consume_channel().basic_qos(0, prefetch, True)
            self._qos = prefetch

    def consume(self, queue: str, prefetch: int = 0, tag: str | None = None) -> str:
        if prefetch:
            self.prefetch = prefetch
        tag = tag or f"ctag-{len(self._consumers) + 1}"
        try:
            self._apply_qos()
            self._consume_channel().basic_consume(
                self._name(queue), consumer_tag=tag, no_ack=False, callback=self._on_message
            )
        except amqp.exceptions.NotFound:
            self._ch = None
            raise RoutingError(f"cannot consume from undeclared queue {queue!r}") from None
        except (*_CONNECTION_ERRORS, *_CHANNEL_ERRORS) as exc:
            raise self._lost(exc) from exc
        self._consumers[tag] = queue
        return tag

    def cancel(self, tag: str) -> None:
        if self._consumers.pop(tag, None) is None or self._ch is None:
            return
        try:
            self._ch.basic_cancel(tag)
        except _CONNECTION_ERRORS:
            pass

    def set_prefetch(self, prefetch: int) -> None:
        self.prefetch = prefetch
        if self._ch is not None:
            try:
                self._apply_qos()
            except (*_CONNECTION_ERRORS, *_CHANNEL_ERRORS) as exc:
                raise self._lost(exc) from exc

    def _on_message(self, message: amqp.Message) -> None:
        info = message.delivery_info
        tag = int(info["delivery_tag"])
        consumer = info.get("consumer_tag") or ""
        exchange = self._unname(info.get("exchange") or "")
        routing_key = info.get("routing_key") or ""
        if exchange == "":
            routing_key = self._unname(routing_key)
        try:
            envelope = self._envelope(message)
        except Exception as exc:  # noqa: BLE001 - anyone can publish anything; the worker refuses it
            raw = message.body if isinstance(message.body, bytes) else str(message.body).encode("utf-8", "replace")
            envelope = malformed_envelope(raw, f"cannot read the AMQP message: {type(exc).__name__}: {exc}"[:500])
        self._unacked.add(tag)
        queue = self._consumers.get(consumer, "")
        self._inbox.append(
            Delivery(envelope, tag, queue, exchange, routing_key, bool(info.get("redelivered")), consumer)
        )

    @staticmethod
    def _envelope(message: amqp.Message) -> Envelope:
        props = message.properties
        body = message.body
        if not isinstance(body, bytes):
            body = bytes(body)  # a memoryview or bytearray
        headers = props.get("application_headers") or {}
        if not isinstance(headers, dict):
            raise TypeError(f"application headers must be a table, got {type(headers).__name__}")
        message_id = props.get("message_id")
        return Envelope(
            body,
            props.get("content_type") or "application/octet-stream",
            props.get("content_encoding") or "binary",
            headers,
            _from_amqp_priority(props.get("priority")),
            message_id if message_id is None or isinstance(message_id, str) else str(message_id),
        )

    def has_events(self) -> bool:
        return bool(self._inbox)

    def drain_events(self, timeout: float | None = 0) -> list[Delivery]:
        if not self._inbox and self._consumers:
            wait = 0.0005 if not timeout else timeout
            try:
                self.raw.drain_events(timeout=wait)
                # take whatever else is already waiting, without blocking
                limit = self.prefetch or 100
                while len(self._inbox) < limit:
                    self.raw.drain_events(timeout=0.0001)
            except TimeoutError:
                pass
            except (*_CONNECTION_ERRORS, *_CHANNEL_ERRORS) as exc:
                raise self._lost(exc) from exc
        elif not self._inbox and timeout:
            self._idle(timeout)
        out = list(self._inbox)
        self._inbox.clear()
        return out

    def _idle(self, timeout: float) -> None:
        try:
            self.raw.drain_events(timeout=timeout)
        except TimeoutError:
            pass
        except (*_CONNECTION_ERRORS, *_CHANNEL_ERRORS) as exc:
            raise self._lost(exc) from exc

    def ack(self, delivery: Delivery) -> None:
        if delivery.tag not in self._unacked:
            return
        self._unacked.discard(delivery.tag)
        try:
            self._consume_channel().basic_ack(delivery.tag)
        except (*_CONNECTION_ERRORS, *_CHANNEL_ERRORS) as exc:
            raise self._lost(exc) from exc

    def reject(self, delivery: Delivery, requeue: bool = False, reason: str = "") -> None:
        if delivery.tag not in self._unacked:
            return
        self._unacked.discard(delivery.tag)
        try:
            self._consume_channel().basic_reject(delivery.tag, requeue)
        except (*_CONNECTION_ERRORS, *_CHANNEL_ERRORS) as exc:
            raise self._lost(exc) from exc

    def defer(self, delivery: Delivery, eta: float) -> None:
        """Park ``delivery`` in its queue's wait queue for ``max_hold`` seconds, then ack it here.

        The wait queue (``<queue>.simq-wait``, never consumed) has a fixed
        message TTL of ``max_hold`` and dead-letters expired messages back to
        the queue, so they leave in the order they came (no message waits
        behind a longer one) and return before their eta; the worker holds
        them then, or parks them again. The copy is confirmed by RabbitMQ
        before the original is acked: a crash in between duplicates, never loses.
        """
        if delivery.tag not in self._unacked:
            return
        try:
            wait = self._wait_queue(delivery.queue)
            self._publish_confirmed(self._message(delivery.envelope), "", wait, wait)
        except (*_CONNECTION_ERRORS, *_CHANNEL_ERRORS) as exc:
            raise self._lost(exc) from exc
        self.ack(delivery)

    def _wait_queue(self, queue: str) -> str:
        """Declare ``queue``'s wait queue (again: a declaration renews a namespaced queue's lease); its name."""
        assert self.max_hold is not None
        hold_ms = int(self.max_hold * 1000)
        name = self._name(f"{queue}.simq-wait")
        arguments: dict[str, Any] = {
            "x-message-ttl": hold_ms,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": self._name(queue),
        }
        if self.prefix:
            arguments["x-expires"] = hold_ms + NAMESPACED_QUEUE_TTL_MS
        try:
            self._side_channel().queue_declare(name, durable=not self.prefix, auto_delete=False, arguments=arguments)
        except amqp.exceptions.PreconditionFailed as exc:
            self._side = None
            raise ConfigurationError(
                f"the wait queue {name!r} exists with other arguments than {arguments} ({exc.reply_text}); "
                f"delete it (rabbitmqctl delete_queue {name}) or give this max_hold again"
            ) from None
        return name

    @property
    def unacked(self) -> int:
        return len(self._unacked)

    # -- inspection -----------------------------------------------------------------------------------
    def _queue_counts(self, queue: str) -> tuple[int, int]:
        """(ready messages, consumers) of ``queue``, or (0, 0) if it does not exist."""
        try:
            _, ready, consumers = self._side_channel().queue_declare(self._name(queue), passive=True)
        except amqp.exceptions.NotFound:
            self._side = None
            return 0, 0
        return int(ready), int(consumers)

    def queue_depth(self, queue: str) -> int:
        try:
            return self._queue_counts(queue)[0]
        except _CONNECTION_ERRORS as exc:
            raise self._lost(exc) from exc

    def consumer_count(self, queue: str) -> int:
        return self._queue_counts(queue)[1]

    def purge(self, queue: str) -> int:
        try:
            return int(self._side_channel().queue_purge(self._name(queue)) or 0)
        except amqp.exceptions.NotFound:
            self._side = None
            return 0

    def delete_queue(self, queue: str) -> None:
        try:
            self._side_channel().queue_delete(self._name(queue))
        except amqp.exceptions.NotFound:
            self._side = None

    def delete_exchange(self, exchange: str) -> None:
        """Delete an exchange (auto-delete ones go only once a binding came and went; one never bound stays)."""
        try:
            self._side_channel().exchange_delete(self._name(exchange))
        except amqp.exceptions.NotFound:
            self._side = None
        self.table.exchanges.pop(exchange, None)
        self._checked_exchanges.discard(exchange)

    # -- closing ------------------------------------------------------------------------------------
    def close(self) -> None:
        """Close the connection; RabbitMQ gives every unacknowledged delivery back, flagged redelivered."""
        if self.closed:
            return
        self.closed = True
        self._inbox.clear()
        self._unacked.clear()
        try:
            self.raw.close()
        except Exception:  # noqa: BLE001, S110 - closing a connection that is already gone
            pass


def _max_hold(value: str | None, url: str) -> float:
    if value is None:
        return DEFAULT_MAX_HOLD
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < 86400 * 365:
        raise ConfigurationError(f"max_hold in {redact_url(url)} must be a number of seconds > 0, got {value!r}")
    return seconds


def amqp_transport_factory(url: str, *, connect_timeout: float | None = None, **kw: Any) -> Transport:
    """Entry point for ``amqp://`` and ``pyamqp://`` broker URLs."""
    return AMQPTransport(url, connect_timeout=connect_timeout, **kw)
