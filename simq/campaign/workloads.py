"""The campaign's workloads: small programs whose every task records each run it makes."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    from simq.app import App

__all__ = ["WORKLOADS", "Record", "Workload"]

Record = Callable[[Any], None]
#: What a workload's ``send`` may return: the final state of each task that must not end SUCCESS.
Expected = Mapping[str, str] | None


@attrs.frozen
class Workload:
    """A small program: ``setup(app, record)`` registers tasks (each calls ``record(self.request)``) and returns ``send``.

    ``send()`` sends; it returns the tasks whose final state must be other
    than SUCCESS (REVOKED, FAILURE), or None when every task must succeed.
    A task expected REVOKED must also never run.
    """

    name: str
    description: str
    setup: Callable[[App, Record], Callable[[], Expected]]


def _add(app: App, record: Record) -> Callable[[], Expected]:
    @app.task(bind=True, name="campaign.add")
    def add(self: Any, x: int, y: int) -> int:
        record(self.request)
        return x + y

    def send() -> None:
        for i in range(12):
            add.delay(i, i)

    return send


def _countdown(app: App, record: Record) -> Callable[[], Expected]:
    @app.task(bind=True, name="campaign.later")
    def later(self: Any, n: int) -> int:
        record(self.request)
        return n

    def send() -> None:
        for i in range(8):
            later.apply_async((i,), countdown=5 * i)

    return send


def _retry(app: App, record: Record) -> Callable[[], Expected]:
    @app.task(bind=True, name="campaign.flaky", max_retries=5)
    def flaky(self: Any, n: int) -> int:
        record(self.request)
        if self.request.retries < 2:
            raise self.retry(countdown=10, exc=RuntimeError("not yet"))
        return n

    def send() -> None:
        for i in range(6):
            flaky.delay(i)

    return send


def _link(app: App, record: Record) -> Callable[[], Expected]:
    @app.task(bind=True, name="campaign.add")
    def add(self: Any, x: int, y: int) -> int:
        record(self.request)
        return x + y

    @app.task(bind=True, name="campaign.store")
    def store(self: Any, value: int) -> int:
        record(self.request)
        return value

    def send() -> None:
        for i in range(6):
            add.apply_async((i, 1), link=store.s())

    return send


def _routed(app: App, record: Record) -> Callable[[], Expected]:
    from simq.routing import Exchange, Queue

    media = Exchange("media", "topic")
    app.conf.task_queues = [Queue("video", media, routing_key="video.#"), Queue("image", media, routing_key="image.#")]

    @app.task(bind=True, name="campaign.encode")
    def encode(self: Any, kind: str, n: int) -> str:
        record(self.request)
        return f"{kind}-{n}"

    def send() -> None:
        for i in range(5):
            encode.apply_async(("video", i), exchange="media", routing_key="video.compress")
            encode.apply_async(("image", i), exchange="media", routing_key="image.jpeg", priority=i % 10)

    return send


def _transient(app: App, record: Record) -> Callable[[], Expected]:
    from simq.routing import Queue

    app.conf.task_queues = [Queue("celery"), Queue("scratch", durable=False)]

    @app.task(bind=True, name="campaign.note")
    def note(self: Any, n: int) -> int:
        record(self.request)
        return n

    def send() -> None:
        for i in range(8):
            note.apply_async((i,), queue="scratch" if i % 2 else "celery", countdown=i)

    return send


def _chord(app: App, record: Record) -> Callable[[], Expected]:
    from simq.canvas import chord

    @app.task(bind=True, name="campaign.square")
    def square(self: Any, x: int) -> int:
        record(self.request)
        return x * x

    @app.task(bind=True, name="campaign.total")
    def total(self: Any, values: list[int]) -> int:
        record(self.request)
        return sum(values)

    def send() -> None:
        for width in (1, 4):
            chord([square.s(i) for i in range(width)])(total.s())

    return send


def _batch(app: App, record: Record) -> Callable[[], Expected]:
    from simq.batches import Batches

    app.conf.worker_prefetch_multiplier = 0  # a batch needs its whole flush_every prefetched

    @app.task(base=Batches, name="campaign.clicks", flush_every=4, flush_interval=10)
    def clicks(requests: list[Any]) -> list[int]:
        for request in requests:
            record(request)
        return [request.args[0] for request in requests]

    def send() -> None:
        for i in range(10):
            clicks.delay(i)

    return send


def _revoke(app: App, record: Record) -> Callable[[], Expected]:
    @app.task(bind=True, name="campaign.reminder")
    def reminder(self: Any, n: int) -> int:
        record(self.request)
        return n

    def send() -> Expected:
        results = [reminder.apply_async((i,), countdown=5 * (i + 1)) for i in range(8)]
        revoked = results[::2]
        app.control.revoke([r.id for r in revoked[:2]])
        for r in revoked[2:]:
            r.revoke()
        return {r.id: "REVOKED" for r in revoked}

    return send


def _time_limit(app: App, record: Record) -> Callable[[], Expected]:
    import time

    from simq.exceptions import SoftTimeLimitExceeded

    @app.task(bind=True, name="campaign.crawl", soft_time_limit=4, time_limit=10)
    def crawl(self: Any, seconds: float) -> str:
        record(self.request)
        try:
            time.sleep(seconds)  # noqa: TID251 - a user's task sleeping: virtual time in the simulation
            return "done"
        except SoftTimeLimitExceeded:
            time.sleep(seconds)  # noqa: TID251 - past the hard limit when 4 + seconds >= 10
            return "cleaned up"

    def send() -> Expected:
        expected = {}
        for seconds in (1, 3, 5, 7, 20, 0.5):
            r = crawl.delay(seconds)
            if seconds >= 4 and 4 + seconds >= 10:
                expected[r.id] = "FAILURE"
        return expected

    return send


WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        Workload("add", "twelve add.delay calls", _add),
        Workload("countdown", "eight calls with countdowns of 0 to 35 s", _countdown),
        Workload("retry", "six tasks that retry twice with countdown=10", _retry),
        Workload("link", "six adds, each linked to a callback", _link),
        Workload("routed", "topic exchange routing to two queues, with priorities", _routed),
        Workload("transient", "half the calls on a non-durable queue, half with countdowns", _transient),
        Workload("chord", "two chords (1 and 4 header tasks) into a summing body", _chord),
        Workload("batch", "ten calls to a Batches task (flush_every=4, flush_interval=10)", _batch),
        Workload("revoke", "eight calls with countdowns, every other one revoked before it is due", _revoke),
        Workload("time_limit", "six tasks sleeping past soft_time_limit=4 and time_limit=10, or not", _time_limit),
    )
}
