"""Task states, as Celery names them."""

from __future__ import annotations

PENDING = "PENDING"
RECEIVED = "RECEIVED"
STARTED = "STARTED"
SUCCESS = "SUCCESS"
FAILURE = "FAILURE"
RETRY = "RETRY"
REVOKED = "REVOKED"
#: What ``task_postrun`` reports for a task that raised ``Ignore`` (``Task.replace``); never stored.
IGNORED = "IGNORED"

#: States after which a task will not change again.
READY_STATES = frozenset({SUCCESS, FAILURE, REVOKED})
#: States that raise from ``AsyncResult.get()`` when ``propagate=True``.
PROPAGATE_STATES = frozenset({FAILURE, REVOKED})
ALL_STATES = (PENDING, RECEIVED, STARTED, SUCCESS, FAILURE, RETRY, REVOKED)
