"""Serializers: a registry of (encode, decode, content type), one per app.

json is the default and the only content type a worker accepts unless told
otherwise (``accept_content``); pickle, yaml and msgpack are registered too.
The json and msgpack codecs carry datetimes, dates, times, UUIDs, Decimals and
bytes as tagged values, so they come back as the same types.
"""

from __future__ import annotations

import base64
import datetime as _dt
import decimal
import json
import pickle
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import attrs
import msgpack
import yaml

from simq.exceptions import ConfigurationError, ContentDisallowed, DecodeError, EncodeError

__all__ = ["Serializer", "SerializerRegistry", "find_unserializable"]


@attrs.frozen
class Serializer:
    """One registered codec."""

    name: str
    encode: Callable[[Any], bytes | str]
    decode: Callable[[bytes], Any]
    content_type: str
    content_encoding: str = "utf-8"


def _tag(value: Any) -> Any:
    if isinstance(value, _dt.datetime):
        return {"__type__": "datetime", "__value__": value.isoformat()}
    if isinstance(value, _dt.date):
        return {"__type__": "date", "__value__": value.isoformat()}
    if isinstance(value, _dt.time):
        return {"__type__": "time", "__value__": value.isoformat()}
    if isinstance(value, uuid.UUID):
        return {"__type__": "uuid", "__value__": str(value)}
    if isinstance(value, decimal.Decimal):
        return {"__type__": "decimal", "__value__": str(value)}
    if isinstance(value, bytes):
        return {"__type__": "bytes", "__value__": base64.b64encode(value).decode("ascii")}
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


_UNTAG: dict[str, Callable[[str], Any]] = {
    "datetime": _dt.datetime.fromisoformat,
    "date": _dt.date.fromisoformat,
    "time": _dt.time.fromisoformat,
    "uuid": uuid.UUID,
    "decimal": decimal.Decimal,
    "bytes": lambda v: base64.b64decode(v.encode("ascii")),
}


def _untag(obj: dict[str, Any]) -> Any:
    if len(obj) == 2 and "__type__" in obj and "__value__" in obj:
        untag = _UNTAG.get(obj["__type__"])
        if untag is not None:
            return untag(obj["__value__"])
    return obj


_json_encoder = json.JSONEncoder(default=_tag, separators=(",", ":"), ensure_ascii=False)
_json_decoder = json.JSONDecoder(object_hook=_untag)

# The hot path calls the C encoder and scanner that ``json`` builds on, without the
# per-call set-up of JSONEncoder.encode (a new C encoder and circular-reference
# dict each time) and JSONDecoder.decode (two whitespace regex matches); about
# 1.5 us saved per message. Circular references then end in RecursionError,
# which ``dumps`` turns into an EncodeError naming the argument. Interpreters
# without the C accelerator take the documented path.
_c_make_encoder: Any = getattr(json.encoder, "c_make_encoder", None)  # the C accelerator, when built
_json_c_encoder = (
    _c_make_encoder(None, _tag, json.encoder.encode_basestring, None, ":", ",", False, False, True)
    if _c_make_encoder is not None
    else None
)
_json_scan: Any = _json_decoder.scan_once  # type: ignore[attr-defined]  # set by JSONDecoder.__init__, untyped


def _json_dumps(value: Any) -> bytes:
    if _json_c_encoder is None or isinstance(value, str):
        return _json_encoder.encode(value).encode("utf-8")
    return "".join(_json_c_encoder(value, 0)).encode("utf-8")


def _json_loads(body: bytes) -> Any:
    text = body.decode("utf-8") if isinstance(body, bytes | bytearray) else body
    try:
        value, end = _json_scan(text, 0)
    except StopIteration:
        end = -1
    if end != len(text):  # leading or trailing whitespace, extra data or an error: the full path says which
        return _json_decoder.decode(text)
    return value


def _pickle_dumps(value: Any) -> bytes:
    return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)


def _yaml_dumps(value: Any) -> bytes:
    text: str = yaml.safe_dump(value, allow_unicode=True)
    return text.encode("utf-8")


def _yaml_loads(body: bytes) -> Any:
    return yaml.safe_load(body)


def _msgpack_default(value: Any) -> Any:
    tagged = _tag(value) if not isinstance(value, bytes) else None
    if tagged is None:
        raise TypeError(f"Object of type {type(value).__name__} is not msgpack serializable")
    return tagged


def _msgpack_dumps(value: Any) -> bytes:
    packed: bytes = msgpack.packb(value, default=_msgpack_default, use_bin_type=True)
    return packed


def _msgpack_loads(body: bytes) -> Any:
    return msgpack.unpackb(body, raw=False, object_hook=_untag, strict_map_key=False)


def _builtin() -> list[Serializer]:
    return [
        Serializer("json", _json_dumps, _json_loads, "application/json"),
        Serializer("pickle", _pickle_dumps, pickle.loads, "application/x-python-serialize", "binary"),
        Serializer("yaml", _yaml_dumps, _yaml_loads, "application/x-yaml"),
        Serializer("msgpack", _msgpack_dumps, _msgpack_loads, "application/x-msgpack", "binary"),
    ]


def find_unserializable(
    value: Any, path: str, probe: Callable[[Any], object], _inside: tuple[int, ...] = ()
) -> tuple[str, Any] | None:
    """Walk lists, tuples and dicts to name the first leaf ``probe`` refuses (or the first circular reference)."""
    if isinstance(value, list | tuple | dict):
        if id(value) in _inside:
            return f"{path} (a circular reference: it contains itself)", value
        inside = (*_inside, id(value))
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            step = f"[{key!r}]" if isinstance(value, dict) else f"[{key}]"
            found = find_unserializable(item, path + step, probe, inside)
            if found:
                return found
        return None
    try:
        probe(value)
    except Exception:  # noqa: BLE001 - any refusal names this leaf
        return path, value
    return None


@attrs.define(eq=False)
class SerializerRegistry:
    """The codecs an app knows, by name and by content type."""

    _by_name: dict[str, Serializer] = attrs.field(factory=dict, init=False)
    _by_type: dict[str, Serializer] = attrs.field(factory=dict, init=False)

    def __attrs_post_init__(self) -> None:
        for serializer in _builtin():
            self._add(serializer)

    def _add(self, serializer: Serializer) -> None:
        self._by_name[serializer.name] = serializer
        self._by_type[serializer.content_type] = serializer

    def register(
        self,
        name: str,
        encode: Callable[[Any], bytes | str],
        decode: Callable[[bytes], Any],
        content_type: str,
        content_encoding: str = "utf-8",
    ) -> Serializer:
        """Add (or replace) a codec; ``name`` is what ``serializer=`` and ``accept_content`` use."""
        if not name or not content_type:
            raise ConfigurationError("register_serializer needs a non-empty name and content_type")
        serializer = Serializer(name, encode, decode, content_type, content_encoding)
        self._add(serializer)
        return serializer

    def names(self) -> list[str]:
        return sorted(self._by_name)

    def get(self, name: str) -> Serializer:
        try:
            return self._by_name[name]
        except KeyError:
            raise ConfigurationError(
                f"unknown serializer {name!r}; registered: {', '.join(self.names())}. "
                "Register your own with app.register_serializer(name, encode, decode, content_type)."
            ) from None

    def name_for(self, content_type: str) -> str:
        """The registered name of the codec for ``content_type``."""
        serializer = self._by_type.get(content_type)
        if serializer is None:
            raise ConfigurationError(f"no serializer registered for content type {content_type!r}")
        return serializer.name

    def content_types(self, names: Iterable[str]) -> frozenset[str]:
        """Map ``accept_content`` entries (names or content types) to content types."""
        types = []
        for entry in names:
            if entry in self._by_name:
                types.append(self._by_name[entry].content_type)
            elif "/" in entry:
                types.append(entry)
            else:
                raise ConfigurationError(
                    f"accept_content names unknown serializer {entry!r}; registered: {', '.join(self.names())}"
                )
        return frozenset(types)

    def dumps(self, value: Any, name: str, what: str = "value") -> tuple[bytes, str, str]:
        """Encode ``value``; on failure name the first part that cannot be encoded."""
        serializer = self.get(name)
        try:
            body = serializer.encode(value)
        except Exception as exc:
            found = find_unserializable(value, what, serializer.encode)
            if found is not None:
                where, leaf = found
                raise EncodeError(
                    f"cannot serialize {where} of type {type(leaf).__name__!r} with {name}: {exc}. "
                    "Pass plain data (or choose another serializer)."
                ) from exc
            raise EncodeError(f"cannot serialize {what} with {name}: {exc}") from exc
        if isinstance(body, str):
            body = body.encode(serializer.content_encoding)
        return body, serializer.content_type, serializer.content_encoding

    def loads(self, body: bytes, content_type: str, accept: frozenset[str] | None = None) -> Any:
        """Decode ``body``; refuse content types outside ``accept``."""
        if accept is not None and content_type not in accept:
            raise ContentDisallowed(
                f"refusing content of type {content_type!r}: accept_content allows {sorted(accept)}. "
                "Add the serializer to accept_content if you trust the sender."
            )
        serializer = self._by_type.get(content_type)
        if serializer is None:
            raise DecodeError(f"no serializer registered for content type {content_type!r}")
        try:
            return serializer.decode(body)
        except Exception as exc:
            raise DecodeError(f"cannot decode {content_type} body: {exc}") from exc
