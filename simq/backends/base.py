"""Shared logic of every result backend; subclasses implement only storage.

A backend stores one record per task id (state, result, traceback, when) as
bytes encoded with the app's ``result_serializer``, so a result that could not
cross a real backend fails in the simulator too. Exceptions are stored as
(type, module, args) and rebuilt on read, from classes already imported only.
The canvas keeps its own records (chord bodies, long chains, group layouts)
through ``put_record`` / ``get_record``. With the app's ``security_key`` set,
every record is signed (an HMAC over its key and bytes) and verified before it
is decoded. Records expire after ``result_expires`` seconds (one day by
default; None or 0: never). Subclasses implement ``_get``, ``_set``, ``_incr``
and ``_wait``; everything else is here.
"""

from __future__ import annotations

import contextlib
import datetime
import math
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from simq import states
from simq.exceptions import ConfigurationError, SerializationError, exception_from_dict, exception_to_dict

if TYPE_CHECKING:
    from simq.clock import Clock
    from simq.serialization import SerializerRegistry
    from simq.signing import Signer

__all__ = ["DAY", "Backend", "ResultMeta", "exception_from_dict", "exception_to_dict", "expires_seconds"]

DAY = 86_400.0
"""The default ``result_expires``: one day, as Celery."""


def expires_seconds(value: Any) -> float | None:
    """``result_expires`` (seconds or a ``timedelta``) as seconds; None when records never expire (None or 0, as Celery)."""
    if value is None:
        return None
    if isinstance(value, datetime.timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise ConfigurationError(
            f"result_expires must be a number of seconds or a datetime.timedelta (None or 0: never expire); got {value!r}"
        )
    if math.isnan(seconds) or seconds < 0:
        raise ConfigurationError(
            f"result_expires must be positive seconds, or None/0 to keep results for ever; got {value!r}"
        )
    if seconds == 0 or math.isinf(seconds):
        return None
    return seconds


@attrs.frozen
class ResultMeta:
    """What a backend knows of one task."""

    task_id: str
    state: str = states.PENDING
    result: Any = None
    traceback: str | None = None
    date_done: float | None = None
    name: str | None = None
    retries: int = 0
    children: tuple[Any, ...] = ()

    @property
    def ready(self) -> bool:
        return self.state in states.READY_STATES


_EXCEPTION_STATES = frozenset((states.FAILURE, states.RETRY, states.REVOKED))


@attrs.define(eq=False)
class Backend:
    """Store and read task results; wait for them; count chord parts atomically."""

    serializers: SerializerRegistry
    clock: Clock
    serializer: str = "json"
    expires: float | None = DAY
    """Seconds a record is kept (``result_expires``, checked by ``expires_seconds``); None keeps it for ever."""
    signer: Signer | None = None
    """Signs every record and verifies it before decoding, when the app has a ``security_key``."""
    on_change: list[Callable[[str, ResultMeta], None]] = attrs.field(factory=list, init=False)
    #: Workers of this process that hear each revocation and control command at once (simq.revoke, simq.remote).
    listeners: list[Callable[[int, Any], None]] = attrs.field(factory=list, init=False)
    _guards: threading.local = attrs.field(factory=threading.local, init=False, repr=False)

    @property
    def mark_guard(self) -> Callable[[str, Any], None] | None:
        """Consulted by ``mark_as_done`` while a batch body runs in this thread (simq.batches); may refuse an id.

        Per thread: batches of a threads-pool worker run at once, each with its own guard.
        """
        return getattr(self._guards, "guard", None)

    @mark_guard.setter
    def mark_guard(self, guard: Callable[[str, Any], None] | None) -> None:
        self._guards.guard = guard

    def __attrs_post_init__(self) -> None:
        # checked here rather than by an attrs converter, which would put a hook on every attribute write
        self.expires = expires_seconds(self.expires)

    # -- storage hooks ------------------------------------------------------------
    def _get(self, key: str) -> bytes | None:
        raise NotImplementedError

    def _set(self, key: str, value: bytes) -> None:
        raise NotImplementedError

    def _set_result(self, task_id: str, body: bytes, state: str, now: float) -> None:
        """Write a task's result record (``store_result``): ``_set``, unless a backend keeps more.

        The memory backend also notes whether ``state`` is ready (for ``is_ready``) and takes ``now``, the
        record's ``date_done``, as its write time, instead of reading the clock again.
        """
        self._set(task_id, body)

    def _get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """``_get`` for each key, in order; backends on a network override it with one round trip."""
        return [self._get(key) for key in keys]

    def _incr(self, key: str, by: int = 1) -> int:
        raise NotImplementedError

    def _wait(self, key: str, timeout: float | None) -> bytes | None:
        """Block until ``key`` holds a ready record or ``timeout`` passes (wall-clock backends)."""
        raise NotImplementedError

    def _delete(self, key: str) -> None:
        raise NotImplementedError

    # -- records ------------------------------------------------------------------
    def store_result(
        self,
        task_id: str,
        result: Any,
        state: str,
        traceback: str | None = None,
        *,
        name: str | None = None,
        retries: int = 0,
        children: tuple[Any, ...] = (),
    ) -> ResultMeta:
        date_done = self.clock.now
        payload: dict[str, Any] = {"status": state, "result": result, "date_done": date_done}
        if isinstance(result, BaseException):
            payload["result"] = exception_to_dict(result)
        if traceback is not None:
            payload["traceback"] = traceback
        if name is not None:
            payload["name"] = name
        if retries:
            payload["retries"] = retries
        if children:
            payload["children"] = list(children)
        try:
            body, _, _ = self.serializers.dumps(payload, self.serializer, what="result")
        except SerializationError:
            as_tuple = getattr(result, "as_tuple", None)
            if not callable(as_tuple):
                raise
            # A task returned a result handle (AsyncResult, GroupResult): stored as its tuple, as Celery stores it
            # (simq.result.result_from_tuple makes the handle again); only here, so other results pay nothing.
            result = payload["result"] = as_tuple()
            body, _, _ = self.serializers.dumps(payload, self.serializer, what="result")
        self._set_result(
            task_id, body if self.signer is None else self.signer.sign_record(task_id, body), state, date_done
        )
        # What _meta(task_id, payload, result) gives, built from the arguments without reading the payload back.
        value = result
        if state in _EXCEPTION_STATES and isinstance(value, Mapping) and "exc_type" in value:
            value = exception_from_dict(value)
        meta = ResultMeta(task_id, state, value, traceback, date_done, name, retries, tuple(children))
        if self.on_change:  # usually none: an empty loop still builds an iterator
            for listener in self.on_change:
                listener(task_id, meta)
        return meta

    def _meta(self, task_id: str, payload: Mapping[str, Any], result: Any = attrs.NOTHING) -> ResultMeta:
        get = payload.get
        state = get("status", states.PENDING)
        value = get("result") if result is attrs.NOTHING else result
        if state in _EXCEPTION_STATES and isinstance(value, Mapping) and "exc_type" in value:
            value = exception_from_dict(value)
        children = get("children")
        # positional, in field order: task_id, state, result, traceback, date_done, name, retries, children
        return ResultMeta(
            task_id,
            state,
            value,
            get("traceback"),
            get("date_done"),
            get("name"),
            get("retries", 0),
            tuple(children) if children else (),
        )

    def get_many(self, task_ids: Sequence[str]) -> list[ResultMeta]:
        """``get_meta`` for each id, in order (a chord's header, read at once)."""
        return [
            ResultMeta(task_id) if raw is None else self._decode(task_id, raw)
            for task_id, raw in zip(task_ids, self._get_many(task_ids), strict=True)
        ]

    def get_meta(self, task_id: str) -> ResultMeta:
        raw = self._get(task_id)
        if raw is None:
            return ResultMeta(task_id)
        return self._decode(task_id, raw)

    def _decode(self, task_id: str, raw: bytes) -> ResultMeta:
        if self.signer is not None:
            raw = self.signer.verify_record(task_id, raw)  # before decoding: a forged record is never decoded
        serializer = self.serializers.get(self.serializer)
        return self._meta(task_id, serializer.decode(raw))

    # -- canvas records -------------------------------------------------------------
    def put_record(self, key: str, body: bytes) -> None:
        """Store ``body`` under ``key`` (a chord, a chain link, a group's layout); signed when the app has a key.

        Written like a result: it may travel with the thread's next command,
        and ``sync()`` confirms it. It expires with ``result_expires``.
        """
        self._set(key, body if self.signer is None else self.signer.sign_record(key, body))

    def get_record(self, key: str) -> bytes | None:
        """The bytes stored under ``key`` by ``put_record``, or None if there are none (expired, never stored).

        With a signer, raises ``RecordSignatureError`` (naming ``key``) unless
        the record carries a valid signature for this very key: a record
        written without the key, or moved from another key, is never returned,
        so it is never decoded.
        """
        raw = self._get(key)
        if raw is None or self.signer is None:
            return raw
        return self.signer.verify_record(key, raw)

    def get_records(self, keys: Sequence[str]) -> list[bytes | None]:
        """``get_record`` for each key, in order, in one round trip where the backend can."""
        raws = self._get_many(keys)
        if self.signer is None:
            return raws
        return [
            raw if raw is None else self.signer.verify_record(key, raw) for key, raw in zip(keys, raws, strict=True)
        ]

    def wait_for(self, task_id: str, timeout: float | None = None) -> ResultMeta:
        """Wait on the wall clock until the task is ready; raise ``TimeoutError`` if not in time."""
        meta = self.get_meta(task_id)
        if meta.ready:
            return meta
        raw = self._wait(task_id, timeout)
        if raw is None:
            from simq.exceptions import TimeoutError as SimqTimeout

            raise SimqTimeout(f"task {task_id} not ready after {timeout} s (state {self.get_meta(task_id).state})")
        return self._decode(task_id, raw)

    def forget(self, task_id: str) -> None:
        self._delete(task_id)

    # -- the names Celery users call ------------------------------------------------
    def mark_as_done(self, task_id: str, result: Any, request: Any = None) -> ResultMeta:
        if self.mark_guard is not None:
            self.mark_guard(task_id, result)
        return self.store_result(task_id, result, states.SUCCESS, name=getattr(request, "task", None))

    def mark_as_failure(
        self, task_id: str, exc: BaseException, traceback: str | None = None, request: Any = None
    ) -> ResultMeta:
        return self.store_result(task_id, exc, states.FAILURE, traceback, name=getattr(request, "task", None))

    def mark_as_retry(
        self, task_id: str, exc: BaseException | None, traceback: str | None = None, retries: int = 0
    ) -> ResultMeta:
        return self.store_result(task_id, exc, states.RETRY, traceback, retries=retries)

    def mark_as_revoked(self, task_id: str, reason: str = "revoked") -> ResultMeta:
        from simq.exceptions import TaskRevokedError

        return self.store_result(task_id, TaskRevokedError(f"task {task_id} {reason}"), states.REVOKED)

    def mark_as_started(self, task_id: str) -> ResultMeta:
        return self.store_result(task_id, None, states.STARTED)

    def mark_as_received(self, task_id: str) -> ResultMeta:
        return self.store_result(task_id, None, states.RECEIVED)

    # -- chords -----------------------------------------------------------------------
    def incr(self, key: str, by: int = 1) -> int:
        """Atomically add ``by`` to the counter ``key``; return the new value."""
        return self._incr(key, by)

    @contextlib.contextmanager
    def deferred_writes(self) -> Iterator[None]:
        """Inside, writes may travel with the next read (one round trip for both); all are done on exit.

        Order is kept: a write is never overtaken by a later read or write. The
        worker wraps a canvas task's result and what follows it (a chord
        part's count) in this. Backends in memory write at once.
        """
        yield

    def sync(self) -> None:
        """Return once every write this thread sent is stored; raise ``BrokerUnavailable`` if one cannot be.

        The worker calls it before acknowledging a late-ack task, so a task is
        never acknowledged while its result could still be lost with a
        connection. Backends that write synchronously have nothing to do.
        """

    def count_part(self, counter: str, part: str) -> int | None:
        """Count ``part`` once towards ``counter``: the new count, or None if ``part`` was counted before.

        A redelivered chord part reports twice; the per-part marker makes the
        second report a no-op. Backends on a network override this to do both
        steps in one round trip.
        """
        if self._incr(part, 1) != 1:
            return None
        return self._incr(counter, 1)

    def ensure_chords_allowed(self) -> None:
        """Celery's check that a backend can join chords: every simq backend can (an atomic counter), so it passes."""
