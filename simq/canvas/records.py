"""The canvas's records in the result backend: key names in one place, read and written through the backend's record API.

A chord's record (its body, what follows it, the chord around it, where its
header's values are), a long chain's stored links, a group's shape and a
task's children live here. Records are encoded with the app's task
serializer (children: always json) and, with a ``security_key``, signed and
verified by the backend before they are decoded.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from simq.exceptions import InvalidSignature

if TYPE_CHECKING:
    from simq.app import App

__all__ = [
    "added_key",
    "chord_key",
    "children_key",
    "group_key",
    "link_key",
    "load",
    "load_children",
    "load_group_spec",
    "save_children",
    "save_group",
    "store",
]

_JSON = json.JSONEncoder(separators=(",", ":"))


def chord_key(cid: str) -> str:
    """The chord's record; its counters are this key with ``.done``, ``.part.<id>`` (failed parts too), ``.sent``
    and ``.added`` (how many ``Task.add_to_chord`` calls added parts, each at ``added_key``)."""
    return f"simq-chord-{cid}"


def added_key(cid: str, index: int) -> str:
    """Where the spec of the ``index``-th part added to chord ``cid`` by ``Task.add_to_chord`` is (from 1)."""
    return f"simq-chord-{cid}.added.{index}"


def link_key(chain_id: str, index: int) -> str:
    return f"simq-chain-{chain_id}-{index}"


def group_key(gid: str) -> str:
    return f"simq-group-{gid}"


def children_key(task_id: str) -> str:
    return f"simq-children-{task_id}"


def store(app: App, key: str, value: Any) -> None:
    """Write a canvas record and wait until it is stored: the send that follows may reach a worker at once.

    Inside a canvas task's deferred writes a record would otherwise wait for the
    task's end, and a header task on another pool slot found no chord record.
    """
    body, _, _ = app.serializers.dumps(value, app.conf.task_serializer, what=key)
    app.backend.put_record(key, body)
    app.backend.sync()


def load(app: App, key: str) -> Any:
    raw = app.backend.get_record(key)  # verified before it is decoded: RecordSignatureError
    if raw is None:
        raise InvalidSignature(f"canvas record {key!r} is missing from the result backend (expired or never stored)")
    return app.serializers.get(app.conf.task_serializer).decode(raw)


def save_group(app: App, gid: str, spec: Any) -> None:
    store(app, group_key(gid), spec)


def load_group_spec(app: App, gid: str) -> Any:
    raw = app.backend.get_record(group_key(gid))
    if raw is None:
        return None
    return app.serializers.get(app.conf.task_serializer).decode(raw)


def save_children(app: App, task_id: str, children: list[Any]) -> None:
    # ids and nested lists only: always plain json, whatever the task serializer
    app.backend.put_record(children_key(task_id), _JSON.encode(children).encode("utf-8"))


def load_children(app: App, task_id: str) -> list[Any]:
    raw = app.backend.get_record(children_key(task_id))
    if raw is None:
        return []
    return list(json.loads(raw))
