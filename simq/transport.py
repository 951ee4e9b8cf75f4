"""The Transport seam: the small synchronous interface every broker plugin implements.

The memory transport (``simq.memory``) is the reference implementation; the
RabbitMQ and Redis plugins are measured against it by the conformance suite.
Transports are found through the ``simq.transports`` entry-point group, by URL
scheme, so a third party adds one without touching simq.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Sequence
from importlib.metadata import entry_points
from typing import Any, Literal
from urllib.parse import urlsplit

import attrs

from simq.exceptions import TransportNotFound
from simq.message import Delivery, Envelope
from simq.routing import Exchange, Queue

__all__ = [
    "Capabilities",
    "Transport",
    "available_transports",
    "load_transport",
    "redact_url",
]

Support = Literal["native", "emulated", "none"]


@attrs.frozen
class Capabilities:
    """What a transport does natively, emulates, or cannot do.

    The conformance matrix prints these next to each behaviour.
    """

    priority: Support = "native"
    mandatory: Support = "native"
    immediate: Support = "native"
    topic_exchange: Support = "native"
    fanout_exchange: Support = "native"
    dead_letter: Support = "native"
    redelivered_flag: Support = "native"
    delayed_delivery: Support = "none"
    shared_between_processes: bool = False
    notes: tuple[str, ...] = ()


class Transport:
    """One connection to a broker.

    Methods a plugin must implement raise ``NotImplementedError`` here;
    ``publish_many`` and ``declare`` have defaults built on the others that a
    transport may override for speed.

    Delivery model: ``consume`` registers a consumer on a queue with a
    prefetch limit (the number of unacknowledged deliveries it may hold,
    0 meaning unlimited). ``drain_events`` returns deliveries that arrived for
    this connection's consumers, waiting at most ``timeout`` seconds (0 = do
    not wait). Every delivery is eventually ``ack``-ed or ``reject``-ed;
    ``reject(requeue=False)`` sends it to the queue's dead-letter place.
    """

    scheme: str = ""
    capabilities: Capabilities = Capabilities()
    #: The longest a consumer may keep a delivery unacknowledged before the broker takes it
    #: back (RabbitMQ's ``consumer_timeout``), in seconds; None when there is no such limit.
    #: The worker does not hold an eta message longer than this: it hands it to ``defer``.
    max_hold: float | None = None

    def declare_exchange(self, exchange: Exchange) -> None:
        raise NotImplementedError

    def declare_queue(self, queue: Queue) -> None:
        """Declare the queue and all its bindings (declaring their exchanges)."""
        raise NotImplementedError

    def declare(self, queues: Iterable[Queue]) -> None:
        for queue in queues:
            self.declare_queue(queue)

    def publish(
        self,
        envelope: Envelope,
        exchange: str,
        routing_key: str,
        *,
        mandatory: bool = False,
        immediate: bool = False,
    ) -> None:
        """Route ``envelope``; raise ``Unroutable`` / ``NotDelivered`` as the flags ask."""
        raise NotImplementedError

    def publish_many(self, items: Sequence[tuple[Envelope, str, str]]) -> None:
        for envelope, exchange, routing_key in items:
            self.publish(envelope, exchange, routing_key)

    def consume(self, queue: str, prefetch: int = 0, tag: str | None = None) -> str:
        """Start consuming ``queue``; return the consumer tag."""
        raise NotImplementedError

    def cancel(self, tag: str) -> None:
        raise NotImplementedError

    def set_prefetch(self, prefetch: int) -> None:
        """Change the prefetch limit of this connection's consumers."""

    def drain_events(self, timeout: float | None = 0) -> list[Delivery]:
        raise NotImplementedError

    def has_events(self) -> bool:
        """Whether deliveries already read off the broker wait for ``drain_events`` (none by default)."""
        return False

    def ack(self, delivery: Delivery) -> None:
        raise NotImplementedError

    def reject(self, delivery: Delivery, requeue: bool = False, reason: str = "") -> None:
        raise NotImplementedError

    def defer(self, delivery: Delivery, eta: float) -> None:
        """Give ``delivery`` back to the broker to be delivered again later, and settle this one.

        For eta messages due after ``max_hold``: the broker keeps the message
        (not this consumer), and delivers it again, to any consumer of its
        queue, no later than ``eta`` (earlier is allowed: the worker checks the
        eta again and holds or defers once more). The copy must be stored before
        the original is acknowledged, so a crash in between duplicates, never loses.
        Transports with ``max_hold = None`` need not implement it.
        """
        raise NotImplementedError(f"the {self.scheme or type(self).__name__} transport cannot defer deliveries")

    def queue_depth(self, queue: str) -> int:
        """Messages ready in ``queue`` (not counting unacknowledged ones)."""
        raise NotImplementedError

    def purge(self, queue: str) -> int:
        raise NotImplementedError

    def close(self) -> None:
        """Close the connection; unacknowledged deliveries go back to their queues."""

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


TransportFactory = Callable[..., Transport]


_USERINFO = re.compile(
    r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^:@]*):(?P<password>.*)@(?P<rest>[^@]*)$", re.S
)


def redact_url(url: str) -> str:
    """The URL with any password replaced, for error messages and logs.

    Read by hand, not with ``urlsplit``: a password with an unencoded ``#``,
    ``/`` or ``?`` makes ``urlsplit`` end the host early, and the password would
    show. Everything between ``user:`` and the last ``@`` is the password.
    """
    match = _USERINFO.match(url)
    if match is None:
        return url
    return f"{match['scheme']}{match['user']}:***@{match['rest']}"


def available_transports() -> dict[str, Any]:
    """URL scheme -> entry point, for every installed transport plugin."""
    found: dict[str, Any] = {}
    for ep in sorted(entry_points(group="simq.transports"), key=lambda e: e.name):
        found.setdefault(ep.name, ep)
    return found


_EXTRAS = {"amqp": "amqp", "pyamqp": "amqp", "redis": "redis", "rediss": "redis"}


def load_transport(url: str) -> TransportFactory:
    """Find the transport factory for ``url``'s scheme, or say which ones exist."""
    scheme = urlsplit(url).scheme or url.split(":", 1)[0]
    installed = available_transports()
    ep = installed.get(scheme)
    if ep is None:
        names = sorted(installed)
        hint = ""
        if scheme in _EXTRAS:
            hint = f" Install it with: pip install 'simq[{_EXTRAS[scheme]}]'."
        else:
            close = difflib.get_close_matches(scheme, names, n=1)
            if close:
                hint = f" Did you mean {close[0]!r}?"
        raise TransportNotFound(
            f"no transport for URL scheme {scheme!r} (in {redact_url(url)!r}); "
            f"installed: {', '.join(names) or 'none'}.{hint}"
        )
    try:
        factory: TransportFactory = ep.load()
    except ImportError as exc:
        extra = _EXTRAS.get(scheme, scheme)
        raise TransportNotFound(
            f"the {scheme!r} transport is registered but cannot load ({exc}); "
            f"install its dependencies with: pip install 'simq[{extra}]'"
        ) from exc
    return factory
