"""The one exception tree of simq: every error a user can see is a ``SimqError``.

Each message names the offending value and says how to mend it.
"""

from __future__ import annotations

import builtins
import json
import sys
from collections.abc import Mapping
from typing import Any


class SimqError(Exception):
    """Root of every error simq raises on purpose."""


class ConfigurationError(SimqError, ValueError):
    """A setting, task option or argument that can never work."""


class NotRegistered(SimqError, KeyError):
    """A task name that no ``@app.task`` registered."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "task not registered"


class SerializationError(SimqError):
    """A value that cannot be encoded or decoded."""


class EncodeError(SerializationError, TypeError):
    """An argument or result the chosen serializer cannot encode."""


class DecodeError(SerializationError, ValueError):
    """A message body the declared serializer cannot decode."""


class ContentDisallowed(SerializationError):
    """A message whose content type is not in ``accept_content``."""


class RoutingError(SimqError):
    """A message that cannot be routed as asked."""


class Unroutable(RoutingError):
    """``mandatory=True`` and no queue is bound for the routing key."""


class NotDelivered(RoutingError):
    """``immediate=True`` and no consumer can take the message now."""


class UnknownQueue(RoutingError, KeyError):
    """A queue name that is neither declared nor allowed to be created."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown queue"


class BrokerUnavailable(SimqError, ConnectionError):
    """The broker could not be reached within the connect timeout."""


class AccessRefused(BrokerUnavailable):
    """The broker refused the credentials (or the vhost / database): retrying will not help."""


class TransportNotFound(ConfigurationError):
    """A broker URL whose scheme no installed transport handles."""


class TimeoutError(SimqError, builtins.TimeoutError):  # noqa: A001 - deliberately also the builtin
    """A result did not become ready within the time asked."""


class SimulationIdle(TimeoutError):
    """The simulation ran out of work while a result was still awaited."""


class TaskRevokedError(SimqError):
    """The task was revoked (for instance its ``expires`` passed) and never ran."""


class SoftTimeLimitExceeded(SimqError):
    """Raised inside a task when its ``soft_time_limit`` passes; the task may catch it and clean up."""

    def __init__(self, *args: object) -> None:  # raised in a thread by class, with no arguments
        super().__init__(*(args or ("soft time limit exceeded",)))


class TimeLimitExceeded(SimqError):
    """A task ran past its ``time_limit`` and was ended; stored as its failure. ``args[0]`` is the limit in seconds."""

    def __str__(self) -> str:
        if len(self.args) == 1 and isinstance(self.args[0], int | float):
            return f"the task ran past its time_limit of {self.args[0]:g} s and was ended"
        return super().__str__()


class MaxRetriesExceededError(SimqError):
    """A task asked to retry more often than ``max_retries`` allows."""


class Retry(SimqError):
    """Raised by ``Task.retry`` to tell the worker to send the task again."""

    def __init__(self, message: str = "", exc: BaseException | None = None, when: float | None = None) -> None:
        super().__init__(message)
        self.exc = exc
        self.when = when


class Ignore(SimqError):
    """Raised in a task body: the worker stores no result for this call and acknowledges its message.

    ``Task.replace`` raises it (as ``Replaced``) once the replacement is sent:
    the replacement owns the task's id, so its result is the task's result.
    """


class Replaced(Ignore):
    """Raised by ``Task.replace``: this call was replaced by the canvas it sent.

    Inside ``Task.apply`` the replacement runs at once; ``result`` is its result handle.
    """

    def __init__(self, message: str = "", result: Any = None) -> None:
        super().__init__(message)
        self.result = result


class ChordError(SimqError):
    """A chord could not end, and no header task's own exception says why.

    A chord whose header task failed raises *that task's* exception (with a
    note naming it and the chord), not this; simq raises ``ChordError`` when
    the body can never be sent (its message cannot be encoded or routed; the
    error is the cause) or a header result is FAILURE without a stored
    exception.

    ``ChordError(message, failed_task_id, cause)``: ``cause`` is the failed
    task's exception in its stored (dict) form; it comes back as
    ``__cause__`` when the error is read from a result backend.
    """

    def __init__(self, message: str = "", task_id: str | None = None, cause: object = None) -> None:
        super().__init__(message, task_id, cause)
        self.task_id = task_id
        if isinstance(cause, dict) and "exc_type" in cause:
            self.__cause__ = exception_from_dict(cause)
        elif isinstance(cause, BaseException):
            self.__cause__ = cause

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "chord failed"


class WorkerLostError(SimqError):
    """The worker running a task went away before it finished."""


class InvalidSignature(SimqError):
    """A canvas that can never run (unknown task, cycle, bad shape)."""


class RecordSignatureError(InvalidSignature):
    """A record read back from the result backend is unsigned, or its signature does not match its key.

    Raised, with ``security_key`` set, before the record is decoded: someone
    without the key wrote it, or moved it from another key. ``key`` names it.
    """

    def __init__(self, key: str = "", detail: str = "failed verification") -> None:
        super().__init__(key, detail)
        self.key = key
        self.detail = detail

    def __str__(self) -> str:
        return f"result backend record {self.key!r} {self.detail}; it was not decoded (security_key is set)"


class MessageRejected(SimqError):
    """A delivery the worker refused (malformed, refused content, unknown task).

    It is also the stored result of a refused task whose id could be read, so
    that ``result.get()`` raises it at once, naming why, instead of waiting.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        if not detail and ": " in reason:  # rebuilt from a stored result: one "reason: detail" text
            reason, detail = reason.split(": ", 1)
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


__all__ = [
    "AccessRefused",
    "BrokerUnavailable",
    "ChordError",
    "ConfigurationError",
    "ContentDisallowed",
    "DecodeError",
    "EncodeError",
    "Ignore",
    "InvalidSignature",
    "MaxRetriesExceededError",
    "MessageRejected",
    "NotDelivered",
    "NotRegistered",
    "RecordSignatureError",
    "Replaced",
    "Retry",
    "RoutingError",
    "SerializationError",
    "SimqError",
    "SimulationIdle",
    "SoftTimeLimitExceeded",
    "TaskRevokedError",
    "TimeLimitExceeded",
    "TimeoutError",
    "TransportNotFound",
    "UnknownQueue",
    "Unroutable",
    "WorkerLostError",
    "exception_from_dict",
    "exception_to_dict",
]


def exception_to_dict(exc: BaseException) -> dict[str, Any]:
    """How a result backend stores an exception: its class name, module and arguments (as json data)."""
    cls = type(exc)
    args: Any = exc.args
    try:
        json.dumps(args)
    except (TypeError, ValueError):
        args = [repr(a) for a in exc.args]
    data: dict[str, Any] = {"exc_type": cls.__qualname__, "exc_module": cls.__module__, "exc_message": list(args)}
    notes = getattr(exc, "__notes__", None)
    if notes:
        # PEP 678 notes (``exc.add_note``): what simq adds when a chord fails travels with the exception
        data["exc_notes"] = [str(n) for n in notes]
    return data


def exception_from_dict(data: Mapping[str, Any]) -> BaseException:
    """The exception a stored record describes; a stand-in ``SimqError`` subclass when its class is not loaded."""
    name = data.get("exc_type", "Exception")
    module = data.get("exc_module", "builtins")
    args = data.get("exc_message", ())
    if not isinstance(args, list | tuple):
        args = (args,)
    cls: Any = None
    # Only modules already imported: reading a record never imports (runs) code it names.
    mod = builtins if module == "builtins" else sys.modules.get(str(module))
    if mod is not None:
        try:
            cls = mod
            for part in str(name).split("."):
                cls = getattr(cls, part)
        except AttributeError:
            cls = None
    if not (isinstance(cls, type) and issubclass(cls, BaseException)):
        cls = type(str(name).rsplit(".", 1)[-1], (SimqError,), {"__module__": str(module)})
    exc: BaseException
    try:
        exc = cls(*args)
    except Exception:  # noqa: BLE001 - exception classes with odd signatures
        exc = cls.__new__(cls)
        exc.args = tuple(args)
    notes = data.get("exc_notes")
    if isinstance(notes, list | tuple):
        for n in notes:
            exc.add_note(str(n))
    return exc
