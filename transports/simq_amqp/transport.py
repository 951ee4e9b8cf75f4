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

URL: ``amqp://user:password@host:port/vhost[?namespace=NAME]``; ``namespace``
prefixes every queue and exchange name on the broker (tests use one per run)
and such queues expire five minutes after their last use.
"""

from __future__ import annotations

import contextlib
import errno
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

import amqp
import amqp.exceptions
import amqp.transport
from kombu.utils.url import parse_url

from simq.exceptions import AccessRefused, BrokerUnavailable, ConfigurationError, NotDelivered, RoutingError, Unroutable
from simq.message import Delivery, Envelope
from simq.routing import DEFAULT_EXCHANGE, Exchange, Queue, exchange_routes
from simq.transport import Capabilities, Transport, redact_url

__all__ = ["AMQPTransport", "amqp_transport_factory"]

MAX_PRIORITY = 10
NAMESPACED_QUEUE_TTL_MS = 300_000

_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    amqp.exceptions.ConnectionError,
    amqp.exceptions.RecoverableConnectionError,
    ConnectionError,
    OSError,
)


_READ_AHEAD = 65536


class _ReadAheadTCPTransport(amqp.transport.TCPTransport):
    """py-amqp's TCP transport, reading ahead instead of one ``recv`` per frame part.

    py-amqp asks the socket for exactly the bytes it needs next (a frame
    header, then its payload, then the frame end), so a delivered message,
    three frames, costs six to nine ``recv`` calls. This asks for up to 64 KiB
    and keeps the rest in the same buffer py-amqp already has; frames are only
    ever read through ``_read``, so a frame waiting in the buffer is read
    before the socket is asked again.
    """

    def _read(self, n: int, initial: bool = False, _errnos: tuple[int, ...] = (errno.EAGAIN, errno.EINTR)) -> bytes:
        rbuf = self._read_buffer
        recv = self._quick_recv
        try:
            while len(rbuf) < n:
                try:
                    s = recv(max(n - len(rbuf), _READ_AHEAD))
                except OSError as exc:
                    if exc.errno in _errnos:
                        if initial and self.raise_on_initial_eintr:
                            raise TimeoutError from exc
                        continue
                    raise
                if not s:
                    raise OSError("Server unexpectedly closed connection")
                rbuf += s
        except BaseException:
            self._read_buffer = rbuf
            raise
        result, self._read_buffer = rbuf[:n], rbuf[n:]
        return result

    _cork: list[bytes] | None = None

    def write(self, s: Any) -> None:
        if self._cork is not None:
            self._cork.append(bytes(s))  # py-amqp hands over a view of a buffer it reuses
            return
        super().write(s)

    @contextlib.contextmanager
    def corked(self) -> Iterator[None]:
        """Frames written inside go out together, in one ``sendall``, on exit (publishes only: no replies)."""
        self._cork = []
        try:
            yield
        finally:
            data, self._cork = b"".join(self._cork), None
            if data:
                super().write(data)


class _Connection(amqp.Connection):  # type: ignore[misc]
    """An ``amqp.Connection`` on the read-ahead transport (plain TCP; TLS keeps py-amqp's own)."""

    def Transport(  # noqa: N802 - py-amqp's name
        self,
        host: str,
        connect_timeout: float | None,
        ssl: Any = False,
        read_timeout: float | None = None,
        write_timeout: float | None = None,
        **kwargs: Any,
    ) -> Any:
        if ssl:
            return super().Transport(host, connect_timeout, ssl, read_timeout, write_timeout, **kwargs)
        return _ReadAheadTCPTransport(
            host, connect_timeout=connect_timeout, read_timeout=read_timeout, write_timeout=write_timeout, **kwargs
        )



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

    def __init__(self, url: str, *, connect_timeout: float | None = None, app: Any = None, **_: Any) -> None:
        self.url = url
        self.app = app
        parts = urlsplit(url)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        namespace = query.get("namespace", "")
        self.prefix = f"{namespace}." if namespace else ""
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 5672
        plain = urlunsplit(parts._replace(query="", scheme="amqp"))
        info = parse_url(plain)
        # py-amqp directly (kombu parses the URL): kombu's Connection.connect()
        # retries after 2 s, which would break the connect_timeout promise.
        self.raw = _Connection(
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
        self._exchanges: dict[str, str] = {}
        self._bindings: dict[str, list[tuple[str, str]]] = {}
        self._declared: set[str] = set()
        self._checked_exchanges: set[str] = set()

    # -- names ----------------------------------------------------------------------------
    def _name(self, name: str) -> str:
        return f"{self.prefix}{name}" if name and self.prefix else name

    def _unname(self, name: str) -> str:
        if self.prefix and name.startswith(self.prefix):
            return name[len(self.prefix) :]
        return name

    def _lost(self, exc: BaseException) -> BrokerUnavailable:
        return BrokerUnavailable(f"lost the connection to RabbitMQ at {self.host}:{self.port} ({redact_url(self.url)}): {exc}")

    def _side_channel(self) -> amqp.Channel:
        if self._side is None or not self._side.is_open:
            self._side = self.raw.channel()
        return self._side

    # -- declaration ------------------------------------------------------------------------
    def declare_exchange(self, exchange: Exchange) -> None:
        if exchange is DEFAULT_EXCHANGE or not exchange.name:
            return
        if self._exchanges.get(exchange.name) == exchange.type:
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
        self._exchanges[exchange.name] = exchange.type
        self._bindings.setdefault(exchange.name, [])

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
                self._side_channel().queue_bind(self._name(queue.name), self._name(binding.exchange.name), binding.routing_key)
            except _CONNECTION_ERRORS as exc:
                raise self._lost(exc) from exc
            pair = (binding.routing_key, queue.name)
            table = self._bindings.setdefault(binding.exchange.name, [])
            if pair not in table:
                table.append(pair)
        self._declared.add(queue.name)

    def _ensure_declared(self, exchange: str, routing_key: str) -> None:
        """Declare the app's queues the first time a send names something this connection has not declared."""
        known = routing_key in self._declared if exchange == "" else exchange in self._exchanges
        if known:
            return
        if self.app is not None:
            for queue in list(self.app.router.queues.values()):
                if queue.name not in self._declared:
                    self.declare_queue(queue)
        if exchange and exchange not in self._exchanges and exchange not in self._checked_exchanges:
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
        self._ensure_declared(exchange, routing_key)
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
            raise Unroutable(
                f"no queue is bound to exchange {exchange or '(default)'!r} for routing key {routing_key!r} "
                f"(mandatory=True; RabbitMQ returned it: {code} {text}); bind a queue or fix the key"
            )

    def _on_return(self, exc: Any, exchange: str, routing_key: str, message: Any) -> None:
        self._returned.append((str(getattr(exc, "code", "")), str(getattr(exc, "reply_text", exc)), routing_key))

    def _targets(self, exchange: str, routing_key: str) -> list[str]:
        if exchange == "":
            return [routing_key] if routing_key in self._declared else []
        kind = self._exchanges.get(exchange, "direct")
        out: list[str] = []
        for binding_key, queue in self._bindings.get(exchange, ()):
            if queue not in out and exchange_routes(kind, binding_key, routing_key):
                out.append(queue)
        return out

    def _check_immediate(self, exchange: str, routing_key: str) -> None:
        targets = self._targets(exchange, routing_key)
        if not targets:
            return  # the confirmed publish reports it as unroutable
        for queue in targets:
            ready, consumers = self._queue_counts(queue)
            if consumers > 0 and ready == 0:
                return
        raise NotDelivered(
            f"no consumer can take a message for {routing_key!r} now (immediate=True, emulated on RabbitMQ): "
            f"queues {targets} have no consumer or already hold messages"
        )

    def publish_many(self, items: Sequence[tuple[Envelope, str, str]]) -> None:
        """Unconfirmed publishes, written to the socket together (declarations first, outside the batch)."""
        try:
            prepared = [(*self._prepare(envelope, exchange, key), self._name(exchange)) for envelope, exchange, key in items]
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
        return self._ch

    def _apply_qos(self) -> None:
        if self._qos != self.prefetch:
            self._consume_channel().basic_qos(0, self.prefetch, True)
            self._qos = self.prefetch

    def consume(self, queue: str, prefetch: int = 0, tag: str | None = None) -> str:
        if prefetch:
            self.prefetch = prefetch
        tag = tag or f"ctag-{len(self._consumers) + 1}"
        try:
            self._apply_qos()
            self._consume_channel().basic_consume(self._name(queue), consumer_tag=tag, no_ack=False, callback=self._on_message)
        except amqp.exceptions.NotFound:
            self._ch = None
            raise RoutingError(f"cannot consume from undeclared queue {queue!r}") from None
        except _CONNECTION_ERRORS as exc:
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
            self._apply_qos()

    def _on_message(self, message: amqp.Message) -> None:
        info = message.delivery_info
        props = message.properties
        tag = int(info["delivery_tag"])
        exchange = self._unname(info.get("exchange") or "")
        routing_key = info.get("routing_key") or ""
        if exchange == "":
            routing_key = self._unname(routing_key)
        body = message.body if isinstance(message.body, bytes) else bytes(message.body, "utf-8")
        envelope = Envelope(
            body,
            props.get("content_type") or "application/octet-stream",
            props.get("content_encoding") or "binary",
            props.get("application_headers") or {},
            _from_amqp_priority(props.get("priority")),
            props.get("message_id"),
        )
        consumer = info.get("consumer_tag") or ""
        queue = self._consumers.get(consumer, "")
        self._unacked.add(tag)
        self._inbox.append(Delivery(envelope, tag, queue, exchange, routing_key, bool(info.get("redelivered")), consumer))

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
            except _CONNECTION_ERRORS as exc:
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
        except _CONNECTION_ERRORS as exc:
            raise self._lost(exc) from exc

    def ack(self, delivery: Delivery) -> None:
        if delivery.tag not in self._unacked:
            return
        self._unacked.discard(delivery.tag)
        try:
            self._consume_channel().basic_ack(delivery.tag)
        except _CONNECTION_ERRORS as exc:
            raise self._lost(exc) from exc

    def reject(self, delivery: Delivery, requeue: bool = False, reason: str = "") -> None:
        if delivery.tag not in self._unacked:
            return
        self._unacked.discard(delivery.tag)
        try:
            self._consume_channel().basic_reject(delivery.tag, requeue)
        except _CONNECTION_ERRORS as exc:
            raise self._lost(exc) from exc

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


def amqp_transport_factory(url: str, *, connect_timeout: float | None = None, app: Any = None, **kw: Any) -> Transport:
    """Entry point for ``amqp://`` and ``pyamqp://`` broker URLs."""
    return AMQPTransport(url, connect_timeout=connect_timeout, app=app, **kw)
