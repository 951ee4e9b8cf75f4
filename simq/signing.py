"""Optional message signing: an HMAC over the body and the protocol headers, with a shared key.

With ``security_key`` set, every producer of the app adds a
``simq-signature`` header and every worker refuses (dead-letters, reason
``bad-signature``) a message that lacks one or whose body, content type or
protocol headers were changed after signing. The check runs before the body
is deserialized, so an attacker who can publish to the broker but does not
hold the key cannot make the worker decode, let alone run, anything.

The same key signs what the result backend keeps (results and the canvas's
records: chord bodies, chain links) over the record's key and bytes, and
every read checks it before decoding, so whoever can write to the backend
without the key cannot make a worker decode or run anything either.

It protects integrity and authenticity, not secrecy: bodies travel in clear.
See docs/security.md.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any

import attrs

from simq.exceptions import ConfigurationError, MessageRejected, RecordSignatureError
from simq.message import Envelope

__all__ = ["RECORD_PREFIX", "SIGNATURE_HEADER", "Signer", "signer_from_conf"]

SIGNATURE_HEADER = "simq-signature"

# A signed backend record: RECORD_PREFIX, the hex HMAC, b":", then the record's own bytes.
RECORD_PREFIX = b"simq-signed:"

# The headers a signature covers: everything the worker acts on before or instead of the body.
SIGNED_HEADERS = ("simq", "task", "id", "retries", "eta", "expires", "root_id", "parent_id", "group", "group_index")


def _check_key(_inst: object, _attr: object, value: bytes) -> None:
    if not isinstance(value, bytes) or len(value) < 16:
        raise ConfigurationError(
            f"security_key must be at least 16 bytes (got {len(value) if isinstance(value, bytes) else type(value).__name__}); "
            "use a long random secret, e.g. secrets.token_hex(32)"
        )


def _check_digest(_inst: object, _attr: object, value: str) -> None:
    if value not in hashlib.algorithms_guaranteed or value.startswith("shake_"):
        raise ConfigurationError(
            f"security_digest {value!r} is not a hash hashlib guarantees; use 'sha256' (the default), 'sha384' or 'sha512'"
        )


@attrs.frozen(repr=False)
class Signer:
    """Signs and verifies envelopes with one shared key; its repr never shows the key."""

    key: bytes = attrs.field(validator=_check_key)
    digest: str = attrs.field(default="sha256", validator=_check_digest)

    def __repr__(self) -> str:
        return f"Signer(digest={self.digest!r}, key=<{len(self.key)} bytes>)"

    def signature(self, envelope: Envelope) -> str:
        """The hex HMAC of ``envelope``'s content type, encoding, protocol headers and body."""
        headers = envelope.headers
        covered = {name: headers[name] for name in SIGNED_HEADERS if name in headers}
        preamble = json.dumps(
            [envelope.content_type, envelope.content_encoding, covered],
            sort_keys=True,
            separators=(",", ":"),
            default=repr,
        ).encode("utf-8")
        mac = hmac.new(self.key, digestmod=self.digest)
        mac.update(len(preamble).to_bytes(8, "big"))
        mac.update(preamble)
        mac.update(bytes(envelope.body))
        return mac.hexdigest()

    def sign(self, envelope: Envelope) -> Envelope:
        """``envelope`` with its signature header added."""
        headers = dict(envelope.headers)
        headers.pop(SIGNATURE_HEADER, None)
        unsigned = attrs.evolve(envelope, headers=headers)
        headers[SIGNATURE_HEADER] = self.signature(unsigned)
        return attrs.evolve(envelope, headers=headers)

    def verify(self, envelope: Envelope) -> None:
        """Raise ``MessageRejected('bad-signature', ...)`` unless ``envelope`` carries a valid signature."""
        headers = envelope.headers
        given = headers.get(SIGNATURE_HEADER) if isinstance(headers, Mapping) else None
        ident = headers.get("id") if isinstance(headers, Mapping) else None
        if not isinstance(given, str):
            raise MessageRejected(
                "bad-signature",
                f"message {ident!r} is not signed and security_key is set; sign it with the shared key",
            )
        try:
            expected = self.signature(envelope)
        except (TypeError, ValueError) as exc:
            raise MessageRejected("bad-signature", f"message {ident!r} cannot be checked: {exc}") from exc
        # Compare bytes: compare_digest refuses str with non-ASCII characters, which a forger may send.
        if not hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode("ascii")):
            raise MessageRejected(
                "bad-signature",
                f"message {ident!r}: signature does not match (tampered, or signed with another key)",
            )

    def _record_mac(self, key: str, body: bytes) -> bytes:
        name = key.encode("utf-8")
        mac = hmac.new(self.key, digestmod=self.digest)
        mac.update(b"simq-record\0")  # never equal to a message's MAC, whatever the bytes
        mac.update(len(name).to_bytes(8, "big"))
        mac.update(name)
        mac.update(body)
        return mac.hexdigest().encode("ascii")

    def sign_record(self, key: str, body: bytes) -> bytes:
        """``body`` as stored under ``key``: prefixed with an HMAC over the key name and the bytes."""
        return RECORD_PREFIX + self._record_mac(key, body) + b":" + body

    def verify_record(self, key: str, raw: bytes) -> bytes:
        """The bytes ``sign_record(key, ...)`` wrapped; ``RecordSignatureError`` if ``raw`` was not signed for ``key``."""
        raw = bytes(raw)
        if not raw.startswith(RECORD_PREFIX):
            raise RecordSignatureError(key, "is not signed")
        size = hashlib.new(self.digest).digest_size * 2
        start = len(RECORD_PREFIX)
        given, sep, body = raw[start : start + size], raw[start + size : start + size + 1], raw[start + size + 1 :]
        if sep != b":" or not hmac.compare_digest(given, self._record_mac(key, body)):
            raise RecordSignatureError(
                key,
                "has a signature that does not match (tampered, moved from another key, or signed with another key)",
            )
        return body


def signer_from_conf(conf: Mapping[str, Any]) -> Signer | None:
    """The app's signer, or None when ``security_key`` is not set."""
    key = conf.get("security_key")
    if key is None:
        return None
    if isinstance(key, str):
        key = key.encode("utf-8")
    return Signer(key, str(conf.get("security_digest") or "sha256"))
