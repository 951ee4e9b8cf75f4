"""One delivered task call as a worker holds it, and the counters a worker keeps."""

from __future__ import annotations

from typing import Any

import attrs

from simq.message import Delivery, TaskMessage
from simq.task import Context, Task

__all__ = ["Request", "WorkerStats"]


@attrs.define(eq=False, slots=True)
class Request:
    """One delivered task call, from decode to acknowledgement."""

    message: TaskMessage
    delivery: Delivery
    task: Task
    hostname: str
    acked: bool = False
    #: The time limits a processes pool's parent worked out for it (its child uses them, not its own).
    limits: Any = None

    @property
    def id(self) -> str:
        return self.message.id

    @property
    def name(self) -> str:
        return self.message.task

    @property
    def args(self) -> tuple[Any, ...]:
        return self.message.args

    @property
    def kwargs(self) -> Any:
        return self.message.kwargs

    @property
    def delivery_info(self) -> dict[str, Any]:
        d = self.delivery
        return {
            "exchange": d.exchange,
            "routing_key": d.routing_key,
            "queue": d.queue,
            "priority": d.envelope.priority,
            "redelivered": d.redelivered,
        }

    def portable(self) -> tuple[str, TaskMessage, Delivery, str]:
        """What a child process needs to rebuild this request (no Task object, plain mappings)."""
        m = self.message
        message = attrs.evolve(m, kwargs=dict(m.kwargs), embed=dict(m.embed), headers=dict(m.headers))
        d = self.delivery
        delivery = attrs.evolve(d, envelope=attrs.evolve(d.envelope, headers=dict(d.envelope.headers)))
        return m.task, message, delivery, self.hostname

    def context(self) -> Context:
        m = self.message
        embed = m.embed
        return Context(
            id=m.id,
            task=m.task,
            args=m.args,
            kwargs=m.kwargs,
            retries=m.retries,
            eta=m.eta,
            expires=m.expires,
            hostname=self.hostname,
            delivery_info=self.delivery_info,
            root_id=m.root_id,
            parent_id=m.parent_id,
            group=m.group,
            group_index=m.group_index,
            callbacks=embed.get("callbacks"),
            errbacks=embed.get("errbacks"),
            chain=embed.get("chain"),
            chord=embed.get("chord"),
            headers=m.headers,
            called_directly=False,
        )


@attrs.define
class WorkerStats:
    """What one worker did; a test can read every counter."""

    received: int = 0
    succeeded: int = 0
    failed: int = 0
    retried: int = 0
    ignored: int = 0  # bodies that raised Ignore: Task.replace (nothing stored; the replacement counts itself)
    revoked: int = 0
    deferred: int = 0
    rate_limited: int = 0  # requests held back by their task's rate limit (simq.ratelimit)
    acked: int = 0
    rejected: dict[str, int] = attrs.field(factory=dict)

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())
