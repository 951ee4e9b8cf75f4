"""From a call (``apply_async`` options, where it came from, the canvas it carries) to a message and its route.

Every send builds its :class:`~simq.message.TaskMessage` here, once: a plain
``delay``, a canvas member (with its :class:`Lineage` and embedded
continuation) and a retry all go through :func:`build`, then through the
App's one publish path. Options are checked here, each once.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import attrs

from simq.clock import to_timestamp
from simq.exceptions import ConfigurationError
from simq.limits import HEADER, timelimit_header
from simq.message import TaskMessage

if TYPE_CHECKING:
    from simq.app import App
    from simq.clock import Clock
    from simq.request import Request
    from simq.task import Task

__all__ = ["CALL_OPTIONS", "Lineage", "build", "check_options"]

#: What ``apply_async`` takes (Celery's names).
CALL_OPTIONS = (
    "countdown",
    "eta",
    "expires",
    "task_id",
    "serializer",
    "routing_key",
    "exchange",
    "queue",
    "priority",
    "mandatory",
    "immediate",
    "link",
    "link_error",
    "connection",
    "connect_timeout",
    "headers",
    "time_limit",
    "soft_time_limit",
    "stamped_headers",
)
_KNOWN = frozenset(CALL_OPTIONS)
#: The options ``build`` reads besides countdown, eta and expires.
_RARER = frozenset(("priority", "serializer", "task_id", "headers", "time_limit", "soft_time_limit", "stamped_headers"))


@attrs.frozen
class Lineage:
    """Where a message sits in a canvas: its group and place in it (root and parent come from the sender)."""

    group_id: str | None = None
    group_index: int | None = None
    root_id: str | None = None
    parent_id: str | None = None


NO_LINEAGE = Lineage()


def check_options(options: Mapping[str, Any]) -> None:
    """Refuse an option ``apply_async`` does not take, suggesting the closest name."""
    for key in options:
        if key not in _KNOWN:
            if key in (options.get("stamped_headers") or ()):  # a stamp (simq.canvas.stamping), named there
                continue
            close = difflib.get_close_matches(key, CALL_OPTIONS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigurationError(f"apply_async got unknown option {key!r}{hint}")


def stamp_headers(name: str, stamped: Any, options: Mapping[str, Any]) -> dict[str, Any]:
    """The ``stamps`` and ``stamped_headers`` headers of a call whose options carry stamps (Celery's headers)."""
    if not isinstance(stamped, list | tuple) or not all(isinstance(s, str) for s in stamped):
        raise ConfigurationError(f"stamped_headers of {name!r} must be a list of stamp names, got {stamped!r}")
    return {"stamped_headers": list(stamped), "stamps": {s: options.get(s) for s in stamped}}


def build(
    app: App,
    name: str,
    args: Sequence[Any] | None,
    kwargs: Mapping[str, Any] | None,
    task: Task | None,
    options: Mapping[str, Any],
    clock: Clock,
    new_id: Callable[[], str],
    current: Request | None,
    lineage: Lineage = NO_LINEAGE,
    embed: Mapping[str, Any] | None = None,
) -> tuple[TaskMessage, str]:
    """The message for one call, and the serializer it goes with.

    ``embed`` is the canvas the message carries (its continuation, chord,
    and the ``link``/``link_error`` signatures as dicts: the caller converts them).
    ``new_id`` draws a fresh task id, called only when the options give none
    (after every check, so a refused call draws none). ``clock`` is read only
    by a call with a countdown, an eta or an expiry (a plain ``delay()`` has none).
    """
    countdown = eta = expires = priority = serializer = task_id = headers = time_limit = soft_time_limit = None
    if options:  # a plain delay() has none: no lookups
        get = options.get
        countdown, eta, expires = get("countdown"), get("eta"), get("expires")
        if not _RARER.isdisjoint(options):  # one test instead of six lookups for a call giving none of these
            priority, serializer, task_id, headers = get("priority"), get("serializer"), get("task_id"), get("headers")
            time_limit, soft_time_limit = get("time_limit"), get("soft_time_limit")
            stamped = get("stamped_headers")
            if stamped:
                headers = {**(headers or {}), **stamp_headers(name, stamped, options)}
    if countdown is not None and eta is not None:
        raise ConfigurationError(
            f"give either countdown= or eta= when sending {name!r}, not both (countdown={countdown!r}, eta={eta!r})"
        )
    if expires is None and task is not None:
        expires = task.expires
    now = clock.now if countdown is not None or eta is not None or expires is not None else 0.0
    eta_ts: float | None = None
    if countdown is not None:
        if isinstance(countdown, bool) or not isinstance(
            countdown, (int, float)
        ):  # a tuple: `int | float` builds a union per call
            raise ConfigurationError(f"countdown must be a number of seconds, got {countdown!r}")
        eta_ts = now + countdown
    elif eta is not None:
        eta_ts = to_timestamp(eta, app.tz if isinstance(eta, datetime) else None)  # the zone only for datetimes
    conf = app.conf
    if eta_ts is not None:
        limit = conf["task_eta_limit"]
        if eta_ts != eta_ts or (limit is not None and eta_ts - now > limit):
            raise ConfigurationError(
                f"the eta of {name!r} is {eta_ts - now:.0f} s ahead, beyond task_eta_limit={limit} s: "
                "a worker would hold it for ever; raise task_eta_limit (None disables it) if you mean it"
            )
    expires_ts: float | None = None
    if expires is not None:
        expires_ts = to_timestamp(expires, app.tz) if isinstance(expires, datetime) else now + float(expires)
    if priority is None and task is not None:
        priority = task.priority
    if priority is None:
        priority = conf["task_default_priority"]
    serializer = serializer or (task.serializer if task is not None else None) or conf["task_serializer"]
    root_id, parent_id = lineage.root_id, lineage.parent_id
    if current is not None:
        parent_id = parent_id or current.message.id
        root_id = root_id or current.message.root_id or current.message.id
    task_id = task_id or new_id()
    if time_limit is not None or soft_time_limit is not None:
        headers = {**(headers or {}), HEADER: timelimit_header(time_limit, soft_time_limit)}
    # By position, in TaskMessage's field order (tests/test_hot_path.py pins it): matching 14 keyword
    # names cost about 5,000 instructions a send. Validates priority (0..9) and the id, once.
    message = TaskMessage(
        task_id,  # id
        name,  # task
        tuple(args) if args is not None else (),  # args
        dict(kwargs) if kwargs else {},  # kwargs
        eta_ts,  # eta
        expires_ts,  # expires
        0,  # retries
        priority,  # priority
        root_id or task_id,  # root_id
        parent_id,  # parent_id
        lineage.group_id,  # group
        lineage.group_index,  # group_index
        dict(embed) if embed else {},  # embed
        dict(headers) if headers else {},  # headers
    )
    return message, serializer
