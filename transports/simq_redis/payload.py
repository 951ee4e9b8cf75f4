"""What the Redis transport stores: a message as bytes, and back, whatever bytes a list holds.

A stored message is one flag byte (``0`` new, ``1`` redelivered) and a
msgpack array ``[body, content type, content encoding, headers, priority,
message id, exchange, routing key]``. ``unpack`` never raises: bytes that
are not that (anything written onto a list by someone else) come back as a
``malformed_envelope``, which the worker refuses, counts, logs and dead-letters.

Dead letters are kept for inspection, bounded: the last ``DEAD_LETTER_MAX``
per queue, each payload whole up to ``DEAD_LETTER_MAX_BYTES`` (cut to that,
with its size noted, beyond), and the list expires ``DEAD_LETTER_TTL``
seconds after its last entry.
"""

from __future__ import annotations

from typing import Any

import msgpack

from simq.message import Envelope, malformed_envelope

__all__ = [
    "DEAD_LETTER_MAX",
    "DEAD_LETTER_MAX_BYTES",
    "DEAD_LETTER_TTL",
    "dead_letter_entry",
    "pack",
    "read_dead_letter",
    "unpack",
]

DEAD_LETTER_MAX = 1000
DEAD_LETTER_MAX_BYTES = 64 * 1024
DEAD_LETTER_TTL = 7 * 24 * 3600

_packer = msgpack.Packer(use_bin_type=True)


def pack(envelope: Envelope, exchange: str, routing_key: str) -> bytes:
    return b"0" + _packer.pack(
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


def _fields(payload: bytes) -> tuple[Envelope, str, str]:
    fields = msgpack.unpackb(payload[1:], raw=False)
    if type(fields) is not list or len(fields) != 8:
        shape = f"{len(fields)} items" if isinstance(fields, list) else type(fields).__name__
        raise ValueError(f"a message is an array of 8 fields, this is {shape}")
    body, ctype, cenc, headers, priority, message_id, exchange, routing_key = fields
    for name, value, kind in (
        ("body", body, bytes),
        ("content type", ctype, str),
        ("content encoding", cenc, str),
        ("headers", headers, dict),
        ("exchange", exchange, str),
        ("routing key", routing_key, str),
    ):
        if type(value) is not kind:
            raise ValueError(f"{name} must be {kind.__name__}, got {type(value).__name__}")
    if message_id is not None and type(message_id) is not str:
        raise ValueError(f"message id must be a string, got {type(message_id).__name__}")
    # the priority validator refuses anything but None or an int 0..9
    return Envelope(body, ctype, cenc, headers, priority, message_id), exchange, routing_key


def unpack(payload: bytes) -> tuple[Envelope, str, str, bool]:
    """(envelope, exchange, routing key, redelivered) of a stored message; never raises."""
    redelivered = payload[:1] == b"1"
    if payload[:1] not in (b"0", b"1"):
        return malformed_envelope(payload, "not a simq message: unknown first byte"), "", "", redelivered
    try:
        envelope, exchange, routing_key = _fields(payload)
    except Exception as exc:  # noqa: BLE001 - any bytes may sit on a list; the worker refuses them
        reason = f"cannot unpack the stored message: {type(exc).__name__}: {exc}"
        return malformed_envelope(payload, reason[:500]), "", "", redelivered
    return envelope, exchange, routing_key, redelivered


def dead_letter_entry(reason: str, payload: bytes) -> bytes:
    """One dead-letter list entry: ``[reason, payload (cut to DEAD_LETTER_MAX_BYTES), original size]``."""
    return _packer.pack([reason, payload[:DEAD_LETTER_MAX_BYTES], len(payload)])


def read_dead_letter(raw: bytes) -> tuple[str, Envelope]:
    """(reason, envelope) of a dead-letter entry; a cut payload reads as malformed, its size named."""
    entry: Any = msgpack.unpackb(raw, raw=False)
    reason, payload, size = entry
    if size > len(payload):
        return reason, malformed_envelope(payload, f"dead letter cut to {len(payload)} of {size} bytes")
    return reason, unpack(payload)[0]
