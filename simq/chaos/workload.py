"""The jobs a seed draws, how each is sent, and what the oracle expects of it.

A ``Job`` is one call of the API: a plain task, a retrying task, a failing
task, a chain, a group, a chord, a chain holding a chord (the shape
Celery's threads pool got wrong: ``chain(a, group(b, c), d)``), a task sent
with a countdown and revoked at once (``revoke``), or a task with a
``time_limit`` whose body sleeps far past it (``time-limit``). Its ``Node``s
are the task calls it makes, each with a task id fixed by the campaign
(``<run>.<job>.<node>``), so the ledger, the worker logs and the result backend
all name the same call, and what each node must do: finish ``ok`` with a
value, ``fail`` on purpose, ``never`` run (it follows a failure in a chain
or sits behind a failed chord header), be ``revoked`` (never run, REVOKED),
or be cut off at its ``limit`` (FAILURE with TimeLimitExceeded). Every choice comes from the
``random.Random`` handed in, so one seed gives one workload.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import TYPE_CHECKING, Any

import attrs

from simq.chaos.tasks import task_name

if TYPE_CHECKING:
    from simq.app import App
    from simq.clock import WallClock

__all__ = ["KINDS", "Job", "Node", "RevokeRecord", "draw_workload", "revoke_job", "send_job"]

KINDS = ("task", "retry", "fail", "chain", "group", "chord", "chain-chord", "revoke", "time-limit")
_WEIGHTS = (26, 10, 5, 17, 12, 20, 10, 6, 4)  # the first seven as before the last two came: their odds among them hold
_SLEEPS = (0.0, 0.0, 0.0, 0.02, 0.1, 0.3, 0.8)
#: A revoke job's countdown: long enough that a revoke written at once beats the eta by more than a poll interval.
REVOKE_COUNTDOWNS = (3.0, 4.0, 5.0)
#: A time-limit job's hard limit, and how long its body would sleep without one.
TIME_LIMIT, LIMITED_SLEEP = 2.0, 20.0


@attrs.frozen
class Node:
    """One task call of a job and what the oracle expects of it."""

    key: str  # "<job>.<node>", e.g. "j12.n0" or "j12.body"
    task: str  # add | mul | total | fail | flaky
    args: tuple[int, ...]  # its own arguments (a chain's later links get the parent's value first)
    options: tuple[tuple[str, Any], ...]  # extra keyword arguments: sleep, fails, countdown
    expect: str  # "ok" | "fail" | "never" | "revoked" | "limit"
    value: Any  # what its final ledger ``end`` records (a chord body: the header values it got; revoked: had it run)
    result: Any  # what the result backend holds for it when ``ok`` (a chord body: their sum; revoked: had it run)

    def task_id(self, run: str) -> str:
        return f"{run}.{self.key}"


@attrs.frozen
class Job:
    """One call of the API: what it sends, when (seconds from the start), with which ack mode."""

    index: int
    kind: str
    acks_late: bool
    at: float
    nodes: tuple[Node, ...]
    priority: int | None = None
    countdown: float | None = None  # revoke: sent with this countdown, revoked right after
    time_limit: float | None = None  # time-limit: the call's hard limit (Celery's ``timelimit`` header)

    @property
    def mode(self) -> str:
        return "late" if self.acks_late else "early"

    @property
    def handles(self) -> tuple[Node, ...]:
        """The nodes whose result-backend state is the job's outcome (a group's members; else the last node)."""
        return self.nodes if self.kind == "group" else (self.nodes[-1],)

    def expected_state(self, node: Node) -> str:
        """The final state the backend must show for a handle node."""
        if node.expect == "ok":
            return "SUCCESS"
        if node.expect == "revoked":
            return "REVOKED"
        return "FAILURE"  # failed on purpose, the chain / chord it ends failed, or cut off at its time limit

    def line(self) -> str:
        nodes = " ".join(f"{n.task}{list(n.args)}{'!' if n.expect == 'fail' else ''}" for n in self.nodes)
        extra = f" priority={self.priority}" if self.priority is not None else ""
        extra += f" countdown={self.countdown:g}" if self.countdown is not None else ""
        extra += f" time_limit={self.time_limit:g}" if self.time_limit is not None else ""
        return f"t+{self.at:6.2f}s job {self.index:4d} {self.kind:<11} acks={self.mode:<5}{extra} {nodes}"


def _sleep(rng: random.Random) -> float:
    return _SLEEPS[rng.randrange(len(_SLEEPS))]


def _node(key: str, task: str, args: tuple[int, ...], expect: str, value: Any, result: Any, **options: Any) -> Node:
    return Node(key, task, args, tuple(sorted(options.items())), expect, value, result)


def _draw_job(rng: random.Random, index: int, kind: str, acks_late: bool, at: float) -> Job:
    j = f"j{index}"
    priority = None
    countdown = time_limit = None
    nodes: list[Node] = []
    if kind == "task":
        x, y = rng.randrange(1000), rng.randrange(1000)
        nodes.append(_node(f"{j}.n0", "add", (x, y), "ok", x + y, x + y, sleep=_sleep(rng)))
        if rng.random() < 0.3:
            priority = rng.randrange(10)
    elif kind == "retry":
        x = rng.randrange(1000)
        fails, countdown = 1 + rng.randrange(2), rng.choice((0.5, 1.0, 2.0, 3.0))
        nodes.append(_node(f"{j}.n0", "flaky", (x,), "ok", x, x, fails=fails, countdown=countdown))
    elif kind == "fail":
        x = rng.randrange(1000)
        nodes.append(_node(f"{j}.n0", "fail", (x,), "fail", x, None, sleep=_sleep(rng)))
    elif kind == "chain":
        length = 2 + rng.randrange(3)
        failing = rng.randrange(length) if rng.random() < 0.15 else -1
        x, y = rng.randrange(100), rng.randrange(100)
        value: int | None = None
        for i in range(length):
            key = f"{j}.n{i}"
            if value is None and i > 0:
                nodes.append(_node(key, "add", (1,), "never", None, None))  # after the failure: never runs
                continue
            if i == failing:
                arg = (x,) if i == 0 else ()
                nodes.append(_node(key, "fail", arg, "fail", x if i == 0 else value, None, sleep=_sleep(rng)))
                value = None
            elif i == 0:
                value = x + y
                nodes.append(_node(key, "add", (x, y), "ok", value, value, sleep=_sleep(rng)))
            elif rng.random() < 0.5:
                factor = 2 + rng.randrange(3)
                assert value is not None
                value *= factor
                nodes.append(_node(key, "mul", (factor,), "ok", value, value, sleep=_sleep(rng)))
            else:
                c = rng.randrange(100)
                assert value is not None
                value += c
                nodes.append(_node(key, "add", (c,), "ok", value, value, sleep=_sleep(rng)))
    elif kind == "group":
        for i in range(2 + rng.randrange(4)):
            x, y = rng.randrange(1000), rng.randrange(1000)
            if rng.random() < 0.08:
                nodes.append(_node(f"{j}.n{i}", "fail", (x,), "fail", x, None, sleep=_sleep(rng)))
            else:
                nodes.append(_node(f"{j}.n{i}", "add", (x, y), "ok", x + y, x + y, sleep=_sleep(rng)))
    elif kind == "chord":
        width = rng.choice((0, 1, 2, 3, 4, 5, 6, 8))
        failing = rng.randrange(width) if width and rng.random() < 0.12 else -1
        values: list[int] = []
        for i in range(width):
            x, y = rng.randrange(1000), rng.randrange(1000)
            if i == failing:
                nodes.append(_node(f"{j}.h{i}", "fail", (x,), "fail", x, None, sleep=_sleep(rng)))
            else:
                values.append(x + y)
                nodes.append(_node(f"{j}.h{i}", "add", (x, y), "ok", x + y, x + y, sleep=_sleep(rng)))
        if failing >= 0:
            nodes.append(_node(f"{j}.body", "total", (), "never", None, None))
        else:
            nodes.append(_node(f"{j}.body", "total", (), "ok", values, sum(values), sleep=_sleep(rng)))
    elif kind == "chain-chord":
        x, y = rng.randrange(100), rng.randrange(100)
        first = x + y
        nodes.append(_node(f"{j}.n0", "add", (x, y), "ok", first, first, sleep=_sleep(rng)))
        values = []
        # two members at least: a group of one in a chain is its task (Celery's rule), and the chord would be gone
        for i in range(2 + rng.randrange(3)):
            factor = 2 + rng.randrange(3)
            values.append(first * factor)
            nodes.append(_node(f"{j}.g{i}", "mul", (factor,), "ok", first * factor, first * factor, sleep=_sleep(rng)))
        nodes.append(_node(f"{j}.body", "total", (), "ok", values, sum(values), sleep=_sleep(rng)))
    elif kind == "revoke":
        x, y = rng.randrange(1000), rng.randrange(1000)
        countdown = rng.choice(REVOKE_COUNTDOWNS)
        nodes.append(_node(f"{j}.n0", "add", (x, y), "revoked", x + y, x + y))
    elif kind == "time-limit":
        x, y = rng.randrange(1000), rng.randrange(1000)
        time_limit = TIME_LIMIT
        nodes.append(_node(f"{j}.n0", "add", (x, y), "limit", None, None, sleep=LIMITED_SLEEP))
    else:  # pragma: no cover - KINDS is closed
        raise ValueError(f"unknown job kind {kind!r}")
    return Job(index, kind, acks_late, round(at, 3), tuple(nodes), priority, countdown, time_limit)


def draw_workload(
    rng: random.Random, *, tasks: int, window: float, acks: tuple[bool, ...] = (True, False)
) -> tuple[Job, ...]:
    """Jobs until they hold at least ``tasks`` task calls, sent at times spread over ``window`` seconds."""
    jobs: list[Job] = []
    count = 0
    kinds: list[tuple[str, bool]] = []
    while count < tasks:
        kind = rng.choices(KINDS, _WEIGHTS)[0]
        acks_late = acks[rng.randrange(len(acks))]
        kinds.append((kind, acks_late))
        job = _draw_job(rng, len(jobs), kind, acks_late, 0.0)
        jobs.append(job)
        count += len(job.nodes)
    times = sorted(rng.uniform(0.0, window) for _ in jobs)
    return tuple(attrs.evolve(job, at=round(at, 3)) for job, at in zip(jobs, times, strict=True))


def summary(jobs: tuple[Job, ...]) -> str:
    kinds = Counter(job.kind for job in jobs)
    late = sum(len(job.nodes) for job in jobs if job.acks_late)
    total = sum(len(job.nodes) for job in jobs)
    parts = ", ".join(f"{kinds[k]} {k}" for k in KINDS if kinds[k])
    return f"{len(jobs)} jobs ({parts}), {total} task calls ({late} acks_late, {total - late} early acks)"


# -- sending -----------------------------------------------------------------------------------------------
def _signature(app: App, job: Job, node: Node, run: str) -> Any:
    task = app.tasks[task_name(job.mode, node.task)]
    return task.s(*node.args, key=node.key, **dict(node.options)).set(task_id=node.task_id(run))


def send_job(app: App, job: Job, run: str) -> None:
    """Send ``job`` through the public API; ``mandatory=True`` so that a return means the broker confirmed it."""
    from simq.canvas import chain, chord, group

    opts: dict[str, Any] = {"mandatory": True}
    if job.priority is not None:
        opts["priority"] = job.priority
    if job.countdown is not None:
        opts["countdown"] = job.countdown
    if job.time_limit is not None:
        opts["time_limit"] = job.time_limit
    sigs = [_signature(app, job, node, run) for node in job.nodes]
    if job.kind in ("task", "retry", "fail", "revoke", "time-limit"):
        (node,) = job.nodes
        task = app.tasks[task_name(job.mode, node.task)]
        task.apply_async(node.args, {"key": node.key, **dict(node.options)}, task_id=node.task_id(run), **opts)
    elif job.kind == "chain":
        chain(*sigs, app=app).apply_async(**opts)
    elif job.kind == "group":
        group(sigs, app=app).apply_async(**opts)
    elif job.kind == "chord":
        chord(sigs[:-1], sigs[-1], app=app).apply_async(**opts)
    elif job.kind == "chain-chord":
        chain(sigs[0], group(sigs[1:-1], app=app), sigs[-1], app=app).apply_async(**opts)
    else:  # pragma: no cover
        raise ValueError(f"unknown job kind {job.kind!r}")


@attrs.frozen
class RevokeRecord:
    """What the sender saw of one revoke: when the send began, when ``revoke()`` returned, or what it raised."""

    sent: float  # wall-clock time just before the send: the eta is at least ``sent + countdown``
    returned: float | None  # wall-clock time ``revoke()`` returned; None when it raised
    error: str = ""  # "<type>: <message>" when it raised: the revoke may or may not be in the log


def revoke_job(app: App, job: Job, run: str, sent: float, clock: WallClock) -> RevokeRecord:
    """Revoke a sent ``revoke`` job through ``AsyncResult.revoke()``; a revoke that raises is recorded, not raised."""
    (node,) = job.nodes
    try:
        app.AsyncResult(node.task_id(run)).revoke()
    except Exception as exc:  # noqa: BLE001 - an impossible revoke is data: the checker relaxes the guarantee
        return RevokeRecord(sent, None, f"{type(exc).__name__}: {exc}")
    return RevokeRecord(sent, clock.now)
