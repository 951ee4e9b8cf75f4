"""The values that travel: envelopes on the wire, deliveries off it, task messages inside.

These are plain frozen attrs classes. Encoding them to bytes lives in
``simq.protocol``; routing them lives in ``simq.routing``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

__all__ = [
    "MALFORMED_CONTENT_TYPE",
    "MALFORMED_HEADER",
    "Delivery",
    "Envelope",
    "TaskMessage",
    "malformed_envelope",
    "validate_priority",
]


def validate_priority(priority: int | None) -> int | None:
    """Priorities are 0..9 with 0 the highest; None means 'not given'."""
    if priority is None:
        return None
    if isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= 9:
        raise _config_error(f"priority must be an integer from 0 (highest) to 9 (lowest), got {priority!r}")
    return priority


def _config_error(text: str) -> Exception:
    from simq.exceptions import ConfigurationError

    return ConfigurationError(text)


def _check_priority(_inst: object, _attr: object, value: int | None) -> None:
    if value is not None and (type(value) is not int or not 0 <= value <= 9):
        validate_priority(value)  # raises, naming the value


@attrs.frozen(slots=True)
class Envelope:
    """What a broker carries: an opaque body plus the headers the worker routes on.

    ``priority`` is simq's scale (0 highest, 9 lowest, None not given); each
    transport maps it to its broker's own scheme.
    """

    body: bytes
    content_type: str
    content_encoding: str
    headers: Mapping[str, Any]
    priority: int | None = attrs.field(default=None, validator=_check_priority)
    message_id: str | None = None


#: What a transport hands the worker for bytes it could not even unpack into an envelope.
MALFORMED_CONTENT_TYPE = "application/x-simq-malformed"
MALFORMED_HEADER = "x-simq-malformed"


def malformed_envelope(raw: bytes, reason: str, message_id: str | None = None) -> Envelope:
    """An envelope standing for bytes a transport could not unpack (not msgpack, wrong shape, bad field).

    The transport delivers it like any other message; ``protocol.decode``
    refuses it as ``malformed`` with ``reason``, so the worker dead-letters,
    counts and logs it through its one rejection path, and never crashes.
    """
    return Envelope(bytes(raw), MALFORMED_CONTENT_TYPE, "binary", {MALFORMED_HEADER: reason}, None, message_id)


@attrs.frozen(slots=True)
class Delivery:
    """An envelope handed to one consumer; ``tag`` is what ack/reject name."""

    envelope: Envelope
    tag: int
    queue: str
    exchange: str
    routing_key: str
    redelivered: bool = False
    consumer: str = ""


def _non_empty(_inst: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not value:
        raise _config_error(f"{attribute.name} must be a non-empty string, got {value!r}")


@attrs.frozen(slots=True)
class TaskMessage:
    """A task call as the worker sees it once decoded.

    ``eta`` and ``expires`` are seconds since the epoch (None when not set).
    ``embed`` holds the canvas parts: callbacks, errbacks, chain, chord, group.
    """

    id: str = attrs.field(validator=_non_empty)
    task: str = attrs.field(validator=_non_empty)
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = attrs.field(factory=dict)
    eta: float | None = None
    expires: float | None = None
    retries: int = 0
    priority: int | None = attrs.field(default=None, validator=_check_priority)
    root_id: str | None = None
    parent_id: str | None = None
    group: str | None = None
    group_index: int | None = None
    embed: Mapping[str, Any] = attrs.field(factory=dict)
    headers: Mapping[str, Any] = attrs.field(factory=dict)
