"""The wire format: how a ``TaskMessage`` becomes an ``Envelope`` and back.

Headers carry what a worker needs before it decodes the body (task name, id,
eta, expires, retries, lineage); the body is ``[args, kwargs, embed]``
encoded with the chosen serializer. See docs/protocol.md.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from simq.exceptions import EncodeError, MessageRejected, SerializationError
from simq.message import MALFORMED_CONTENT_TYPE, MALFORMED_HEADER, Delivery, Envelope, TaskMessage
from simq.serialization import SerializerRegistry, find_unserializable

if TYPE_CHECKING:
    from simq.signing import Signer

__all__ = ["PROTOCOL_VERSION", "decode", "embedded_task_names", "encode", "encode_signed"]

PROTOCOL_VERSION = 1

_OPTIONAL_HEADERS = ("eta", "expires", "root_id", "parent_id", "group", "group_index")
_PROTOCOL_HEADERS = frozenset(("simq", "task", "id", "retries", *_OPTIONAL_HEADERS))
_SEQUENCES = (list, tuple)
_BYTES = (bytes, bytearray)
# One shared, read-only empty mapping for the empty embed and user headers of a
# decoded message: a million held messages need not hold two million empty dicts.
_NOTHING: Mapping[str, Any] = MappingProxyType({})


def encode(message: TaskMessage, serializers: SerializerRegistry, serializer: str) -> Envelope:
    """Encode ``message``; raises ``EncodeError`` naming any argument that cannot be encoded."""
    try:
        body, content_type, content_encoding = serializers.dumps(
            [list(message.args), dict(message.kwargs), dict(message.embed)], serializer, what="message"
        )
    except EncodeError as exc:
        # Name the argument itself: args[1], kwargs['when'], embed['callbacks'][0]...
        codec = serializers.get(serializer).encode
        for path, part in (
            ("args", list(message.args)),
            ("kwargs", dict(message.kwargs)),
            ("embed", dict(message.embed)),
        ):
            found = find_unserializable(part, path, codec)
            if found is not None:
                where, leaf = found
                raise EncodeError(
                    f"cannot serialize {where} of type {type(leaf).__name__!r} with {serializer} "
                    f"(task {message.task!r}): {exc.__cause__}. Pass plain data, or choose another serializer."
                ) from exc.__cause__
        raise
    headers: dict[str, Any] = {
        "simq": PROTOCOL_VERSION,
        "task": message.task,
        "id": message.id,
        "retries": message.retries,
    }
    # _OPTIONAL_HEADERS, unrolled (same keys, same order)
    if message.eta is not None:
        headers["eta"] = message.eta
    if message.expires is not None:
        headers["expires"] = message.expires
    if message.root_id is not None:
        headers["root_id"] = message.root_id
    if message.parent_id is not None:
        headers["parent_id"] = message.parent_id
    if message.group is not None:
        headers["group"] = message.group
    if message.group_index is not None:
        headers["group_index"] = message.group_index
    if message.headers:
        headers.update(message.headers)
    return Envelope(body, content_type, content_encoding, headers, message.priority, message.id)


def encode_signed(
    message: TaskMessage, serializers: SerializerRegistry, serializer: str, signer: Signer | None
) -> Envelope:
    """``encode``, then sign the envelope when ``signer`` is given (``security_key`` is set)."""
    envelope = encode(message, serializers, serializer)
    return envelope if signer is None else signer.sign(envelope)


def decode(
    delivery: Delivery,
    serializers: SerializerRegistry,
    accept: frozenset[str],
    max_size: int | None = None,
    signer: Signer | None = None,
) -> TaskMessage:
    """Decode a delivery or raise ``MessageRejected`` saying why it cannot run.

    ``max_size`` (bytes) refuses bodies larger than that, and ``signer``
    unsigned or tampered messages, before the body is deserialized.
    """
    envelope = delivery.envelope
    headers = envelope.headers
    body = envelope.body
    if type(headers) is not dict and not isinstance(headers, Mapping):
        raise MessageRejected("malformed", f"headers must be a mapping, got {type(headers).__name__}")
    if type(body) is not bytes and not isinstance(body, _BYTES):
        raise MessageRejected("malformed", f"body must be bytes, got {type(body).__name__}")
    if max_size is not None and len(body) > max_size:
        raise MessageRejected(
            "oversized",
            f"message {headers.get('id')!r}: body of {len(body)} bytes exceeds "
            f"worker_max_message_size={max_size}; send a reference (a URL, a key) instead of the data",
        )
    content_type = envelope.content_type
    if content_type == MALFORMED_CONTENT_TYPE:
        raise MessageRejected("malformed", f"the transport could not unpack it: {headers.get(MALFORMED_HEADER)}")
    if signer is not None:
        signer.verify(envelope)
    if type(content_type) is not str:
        raise MessageRejected("malformed", f"content type must be a string, got {content_type!r}")
    get = headers.get
    task = get("task")
    task_id = get("id")
    if type(task) is not str or not task:
        if not isinstance(task, str) or not task:
            raise MessageRejected("malformed", f"header 'task' must be a non-empty string, got {task!r}")
    if type(task_id) is not str or not task_id:
        if not isinstance(task_id, str) or not task_id:
            raise MessageRejected("malformed", f"header 'id' must be a non-empty string, got {task_id!r}")
    try:
        decoded = serializers.loads(body, content_type, accept)
    except SerializationError as exc:
        reason = "content-disallowed" if type(exc).__name__ == "ContentDisallowed" else "undecodable"
        raise MessageRejected(reason, f"task {task}[{task_id}]: {exc}") from exc
    if not (isinstance(decoded, _SEQUENCES) and len(decoded) == 3):
        raise MessageRejected("malformed", f"task {task}[{task_id}]: body must be [args, kwargs, embed]")
    args, kwargs, embed = decoded
    if not (
        isinstance(args, _SEQUENCES)
        and (type(kwargs) is dict or isinstance(kwargs, Mapping))
        and (type(embed) is dict or isinstance(embed, Mapping))
    ):
        raise MessageRejected("malformed", f"task {task}[{task_id}]: body must be [list, dict, dict]")
    if kwargs and not all(type(key) is str or isinstance(key, str) for key in kwargs):
        raise MessageRejected("malformed", f"task {task}[{task_id}]: keyword argument names must be strings")
    try:
        # Exact types take the short way; anything else goes through the checks that name the problem.
        retries = get("retries")
        if type(retries) is not int:
            retries = _opt_int(retries, "retries") or 0
        if retries < 0:
            raise ValueError(f"header 'retries' must not be negative, got {retries}")
        eta = get("eta")
        if eta is not None and (type(eta) is not float or eta - eta != 0.0):  # not a finite float
            eta = _opt_float(eta)
        expires = get("expires")
        if expires is not None and (type(expires) is not float or expires - expires != 0.0):
            expires = _opt_float(expires)
        group_index = get("group_index")
        if group_index is not None:
            group_index = _opt_int(group_index, "group_index")
        root_id = get("root_id")
        parent_id = get("parent_id")
        group = get("group")
        for name, value in (("root_id", root_id), ("parent_id", parent_id), ("group", group)):
            if value is not None and type(value) is not str and not isinstance(value, str):
                raise TypeError(f"header {name!r} must be a string, got {value!r}")
        if embed:
            _check_embed(embed)
        return TaskMessage(
            id=task_id,
            task=task,
            args=tuple(args),
            kwargs=kwargs,
            eta=eta,
            expires=expires,
            retries=retries,
            priority=envelope.priority,
            root_id=root_id,
            parent_id=parent_id,
            group=group,
            group_index=group_index,
            embed=embed or _NOTHING,
            headers=_user_headers(headers),
        )
    except (TypeError, ValueError) as exc:
        raise MessageRejected("malformed", f"task {task}[{task_id}]: bad header value: {exc}") from exc


def _user_headers(headers: Mapping[str, Any]) -> Mapping[str, Any]:
    """The headers the sender added, without simq's own."""
    if len(headers) <= len(_PROTOCOL_HEADERS) and headers.keys() <= _PROTOCOL_HEADERS:
        return _NOTHING
    return {key: value for key, value in headers.items() if key not in _PROTOCOL_HEADERS}


def _opt_float(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise TypeError(f"expected a finite number of seconds, got {value!r}")
    return float(value)


def _opt_int(value: Any, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"header {name!r} must be an integer, got {value!r}")
    return value


_MAX_EMBED_DEPTH = 64


def _check_embed(embed: Mapping[str, Any]) -> None:
    """Callbacks and errbacks must be lists of signatures (mappings naming a task)."""
    for key in ("callbacks", "errbacks"):
        value = embed.get(key)
        if value is None:
            continue
        if not isinstance(value, list | tuple):
            raise TypeError(f"embedded {key!r} must be a list of signatures, got {value!r}")
        for item in value:
            if not isinstance(item, Mapping) or not isinstance(item.get("task"), str) or not item["task"]:
                raise TypeError(f"embedded {key!r} holds {item!r}, which is not a signature naming a task")
    embedded_task_names(embed)


_COMPOSITE_KINDS = frozenset(("chain", "group", "chord", "chunks"))


def embedded_task_names(embed: Any) -> list[str]:
    """Every task name a signature inside ``embed`` points to, in order (depth-first).

    A mapping with a ``"task"`` key is a signature; nesting deeper than
    ``_MAX_EMBED_DEPTH`` is refused as malformed (``ValueError``).
    """
    names: list[str] = []
    stack: list[tuple[Any, int]] = [(embed, 0)]
    while stack:
        value, depth = stack.pop()
        if depth > _MAX_EMBED_DEPTH:
            raise ValueError(f"embedded canvas nests deeper than {_MAX_EMBED_DEPTH} levels")
        if isinstance(value, Mapping):
            if value.get("subtask_type") in _COMPOSITE_KINDS:
                # chain/group/chord/chunks: a canvas node, not a task; its members are in kwargs.
                children = list(value.values())
            elif "task" in value and depth:
                task = value["task"]
                if not isinstance(task, str) or not task:
                    raise TypeError(f"embedded signature names task {task!r}, not a task name")
                names.append(task)
                # A signature's own arguments are data, not canvas: do not look inside them.
                children = [v for k, v in value.items() if k not in ("args", "kwargs")]
            else:
                children = list(value.values())
            stack.extend((item, depth + 1) for item in reversed(children))
        elif isinstance(value, list | tuple):
            stack.extend((item, depth + 1) for item in reversed(value))
    return names
