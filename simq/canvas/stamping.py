"""Stamping: headers put on every task of a canvas, read back by the workers (Celery's ``StampingVisitor``).

``sig.stamp(visitor, **stamps)`` walks a canvas. Each task signature met
gets the stamps given, merged with what the visitor's hooks return for the
nodes around it (``on_group_start``, ``on_chain_start``, ``on_chord_header_start``,
``on_chord_body``, ``on_callback``, ``on_errback``) and for itself
(``on_signature``). A stamp is an option of the signature, named in its
``stamped_headers`` option; the send path moves them into the message's
``stamps`` and ``stamped_headers`` headers, and a running task reads them as
``self.request.stamps`` and ``self.request.stamped_headers``. They stay on a
retried task, and a task that replaces itself hands them to its replacement.

Stamping again replaces a stamp's value; with ``append_stamps=True`` the
values are kept as a list, oldest first.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from simq.exceptions import ConfigurationError

if TYPE_CHECKING:
    from simq.canvas.signatures import Signature

__all__ = ["STAMPED_HEADERS", "StampingVisitor", "gathered", "merge_stamps", "set_stamps", "stamps_of"]

#: The option (and message header) that names a signature's stamps.
STAMPED_HEADERS = "stamped_headers"


class StampingVisitor:
    """Says which stamps each node of a canvas gets; subclass it and define ``on_signature``.

    Every hook is called with the stamps gathered so far as keyword
    arguments and returns a mapping of more stamps (``{}`` for none).
    """

    def on_signature(self, sig: Signature, **headers: Any) -> Mapping[str, Any]:
        """The stamps of one task signature."""
        raise NotImplementedError(f"{type(self).__name__} must define on_signature(sig, **headers)")

    def on_group_start(self, group: Signature, **headers: Any) -> Mapping[str, Any]:
        """Stamps for every member of ``group``."""
        return {}

    def on_group_end(self, group: Signature, **headers: Any) -> None:
        """Called after the group's members were stamped."""

    def on_chain_start(self, chain: Signature, **headers: Any) -> Mapping[str, Any]:
        """Stamps for every task of ``chain``."""
        return {}

    def on_chain_end(self, chain: Signature, **headers: Any) -> None:
        """Called after the chain's tasks were stamped."""

    def on_chord_header_start(self, chord: Signature, **headers: Any) -> Mapping[str, Any]:
        """Stamps for every task of the chord's header (by default, those of ``on_group_start`` for it)."""
        return self.on_group_start(_header_group(chord), **headers)

    def on_chord_header_end(self, chord: Signature, **headers: Any) -> None:
        """Called after the chord's header was stamped (by default, ``on_group_end`` for it)."""
        self.on_group_end(_header_group(chord), **headers)

    def on_chord_body(self, chord: Signature, **headers: Any) -> Mapping[str, Any]:
        """Stamps for the chord's body."""
        return {}

    def on_callback(self, callback: Signature, **headers: Any) -> Mapping[str, Any]:
        """Stamps for a ``link`` callback, besides those of ``on_signature`` for it."""
        return {}

    def on_errback(self, errback: Signature, **headers: Any) -> Mapping[str, Any]:
        """Stamps for a ``link_error`` errback, besides those of ``on_signature`` for it."""
        return {}


def _header_group(chord: Signature) -> Signature:
    """The chord's header group; the chord itself while its header is a generator not read yet."""
    header = chord["kwargs"].get("header")
    return header if isinstance(header, Mapping) else chord  # type: ignore[return-value]  # a group is a dict


def merge_stamps(
    current: Mapping[str, Any], new: Mapping[str, Any], append: bool, where: str = "stamp"
) -> dict[str, Any]:
    """``current`` stamps with ``new`` ones: a new value replaces the old, or, with ``append``, joins it in a list."""
    merged = dict(current)
    for key, value in new.items():
        if key == STAMPED_HEADERS:
            continue
        if not isinstance(key, str):
            raise ConfigurationError(f"{where}: a stamp's name must be a str, got {key!r}")
        if append and key in merged and merged[key] != value:
            old = merged[key]
            old_values = list(old) if isinstance(old, list) else [old]
            new_values = list(value) if isinstance(value, list) else [value]
            merged[key] = old_values + [v for v in new_values if v not in old_values]
        else:
            merged[key] = value
    return merged


def stamps_of(options: Mapping[str, Any]) -> dict[str, Any]:
    """The stamps a signature's options carry (those its ``stamped_headers`` names), in that order."""
    names = options.get(STAMPED_HEADERS)
    if not names:
        return {}
    return {name: options.get(name) for name in names}


def set_stamps(sig: Signature, stamps: Mapping[str, Any], append: bool) -> None:
    """Write ``stamps`` into ``sig``'s options, next to the ones it has."""
    options = sig["options"]
    merged = merge_stamps(stamps_of(options), stamps, append, repr(sig))
    if not merged:
        return
    reserved = [name for name in merged if name in _OPTION_NAMES]
    if reserved:
        raise ConfigurationError(
            f"stamping {sig!r}: {reserved[0]!r} is a calling option (apply_async's), not a stamp name; "
            "name the stamp otherwise"
        )
    sig["options"] = {**options, **merged, STAMPED_HEADERS: list(merged)}


def gathered(
    visitor: StampingVisitor | None, hook: str, node: Signature, append: bool, headers: Mapping[str, Any]
) -> dict[str, Any]:
    """``headers`` merged with what ``visitor``'s ``hook`` returns for ``node`` (no visitor: ``headers``)."""
    if visitor is None:
        return dict(headers)
    return merge_stamps(headers, getattr(visitor, hook)(node, **headers) or {}, append, repr(node))


def _option_names() -> frozenset[str]:
    from simq.calling import CALL_OPTIONS

    return frozenset((*CALL_OPTIONS, STAMPED_HEADERS, "immutable", "subtask_type"))


_OPTION_NAMES = _option_names()
