"""Fault campaigns: many seeds, random fault plans, a set of workloads, and an oracle for each run.

``run_case(seed, plan, workload, acks_late=...)`` runs one workload in a
simulation with faults and returns an ``Outcome``: what was sent, run, lost,
duplicated, and which losses the trace accounts for. ``replay`` is the same
call, named for what you use it for. ``campaign(seeds)`` runs many cases,
each drawn from its seed (workload, plan, ack mode), so ``simq replay SEED``
rebuilds a case from the seed alone.

The oracle: with late acks no task the broker accepted is lost (except
messages of a non-durable queue at a broker restart, as on RabbitMQ); with
early acks every lost task is one the trace shows was acknowledged and then
hit by a crash before its result was stored (or lost at a broker restart),
and nothing else.

``main(argv)`` is the ``simq campaign`` / ``simq replay`` command line.
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TextIO

import attrs

from simq import states
from simq.memory.faults import CRASHES, KINDS, FaultPlan
from simq.message import Envelope

if TYPE_CHECKING:
    from simq.app import App

__all__ = [
    "WORKLOADS",
    "CampaignSummary",
    "Outcome",
    "Workload",
    "campaign",
    "case_for_seed",
    "fuzz_bad_inputs",
    "main",
    "replay",
    "run_case",
]

Record = Callable[[Any], None]


@attrs.frozen
class Workload:
    """A small program: ``setup(app, record)`` registers tasks (each calls ``record(self.request)``) and returns ``send``."""

    name: str
    description: str
    setup: Callable[[App, Record], Callable[[], None]]


def _add(app: App, record: Record) -> Callable[[], None]:
    @app.task(bind=True, name="campaign.add")
    def add(self: Any, x: int, y: int) -> int:
        record(self.request)
        return x + y

    def send() -> None:
        for i in range(12):
            add.delay(i, i)

    return send


def _countdown(app: App, record: Record) -> Callable[[], None]:
    @app.task(bind=True, name="campaign.later")
    def later(self: Any, n: int) -> int:
        record(self.request)
        return n

    def send() -> None:
        for i in range(8):
            later.apply_async((i,), countdown=5 * i)

    return send


def _retry(app: App, record: Record) -> Callable[[], None]:
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


def _link(app: App, record: Record) -> Callable[[], None]:
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


def _routed(app: App, record: Record) -> Callable[[], None]:
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


def _transient(app: App, record: Record) -> Callable[[], None]:
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


def _chord(app: App, record: Record) -> Callable[[], None]:
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


def _batch(app: App, record: Record) -> Callable[[], None]:
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
    )
}


@attrs.frozen
class Outcome:
    """One run's result, judged by the oracle."""

    seed: int
    plan: FaultPlan
    workload: str
    acks_late: bool
    sent: int
    executions: int
    duplicated: int
    lost: tuple[str, ...]
    permitted: tuple[str, ...]
    faults: tuple[tuple[str, int], ...]
    digest: str
    trace: str = attrs.field(default="", repr=False)
    fault_lines: tuple[str, ...] = attrs.field(default=(), repr=False)

    @property
    def unexplained(self) -> tuple[str, ...]:
        """Lost tasks the trace does not account for: must be empty."""
        allowed = set(self.permitted)
        return tuple(task_id for task_id in self.lost if task_id not in allowed)

    @property
    def ok(self) -> bool:
        return not self.unexplained

    @property
    def faults_injected(self) -> int:
        return sum(count for _, count in self.faults)

    def replay_command(self) -> str:
        kinds = f" --kinds {','.join(self.plan.kinds)}"  # always: the seed alone would draw other kinds
        acks = "late" if self.acks_late else "early"
        return (
            f"simq replay {self.seed} --workload {self.workload} --rate {self.plan.rate}{kinds} "
            f"--max-faults {self.plan.max_faults} --acks {acks}"
        )

    def replay_call(self) -> str:
        return f"simq.campaign.replay({self.seed}, {self.plan!r}, {self.workload!r}, acks_late={self.acks_late})"

    def report(self) -> str:
        lines = [
            f"seed={self.seed} workload={self.workload} acks={'late' if self.acks_late else 'early'} plan={self.plan!r}",
            f"  sent={self.sent} executions={self.executions} duplicated={self.duplicated} lost={len(self.lost)} "
            f"(accounted for: {len(self.lost) - len(self.unexplained)}, unexplained: {len(self.unexplained)})",
            f"  faults={dict(self.faults)} digest={self.digest[:16]}",
        ]
        if self.unexplained:
            lines.append(f"  UNEXPLAINED LOSSES: {list(self.unexplained)}")
        lines.append(f"  replay: {self.replay_command()}")
        lines.append(f"      or: {self.replay_call()}")
        return "\n".join(lines)


def run_case(
    seed: int,
    plan: FaultPlan | None = None,
    workload: str = "add",
    *,
    acks_late: bool = True,
    workers: int = 2,
    keep_trace: bool = False,
) -> Outcome:
    """Run ``workload`` under ``plan`` from ``seed`` and judge it; same arguments, same trace digest."""
    from simq.app import App

    try:
        chosen = WORKLOADS[workload]
    except KeyError:
        raise ValueError(f"unknown workload {workload!r}; choose one of {sorted(WORKLOADS)}") from None
    plan = plan if plan is not None else FaultPlan()
    app = App(f"campaign-{chosen.name}", task_acks_late=acks_late)
    runs: Counter[tuple[str, int]] = Counter()

    def record(request: Any) -> None:
        runs[(request.id, getattr(request, "retries", 0))] += 1  # a batch's SimpleRequest has no retries

    send = chosen.setup(app, record)
    with app.simulate(seed=seed, workers=workers, faults=plan, patch_time=False) as sim:
        send()
        sim.run_until_idle()
        trace = sim.trace
        accepted = list(dict.fromkeys(e.task_id for e in trace if e.kind == "sent"))
        lost = tuple(t for t in accepted if sim.backend.get_meta(t).state != states.SUCCESS)
        log = sim.fault_log
        permitted = {f.task_id for f in log if f.kind in CRASHES and f.acked and f.point in ("run", "ran")}
        for f in log:
            permitted.update(f.lost)
        digest = sim.digest
        text = sim.trace_text() if keep_trace else ""
    kinds = Counter(f.kind for f in log)
    return Outcome(
        seed=seed,
        plan=plan,
        workload=chosen.name,
        acks_late=acks_late,
        sent=len(accepted),
        executions=sum(runs.values()),
        duplicated=sum(1 for count in runs.values() if count > 1),
        lost=lost,
        permitted=tuple(t for t in accepted if t in permitted),
        faults=tuple(sorted(kinds.items())),
        digest=digest,
        trace=text,
        fault_lines=tuple(f.line() for f in log),
    )


def replay(
    seed: int, plan: FaultPlan | None = None, workload: str = "add", *, acks_late: bool = True, workers: int = 2
) -> Outcome:
    """Run a case again, exactly, with its trace kept: ``replay(seed, plan, workload, acks_late=...)``."""
    return run_case(seed, plan, workload, acks_late=acks_late, workers=workers, keep_trace=True)


def case_for_seed(
    seed: int,
    *,
    rate: float | None = None,
    kinds: Sequence[str] | None = None,
    workloads: Sequence[str] | None = None,
    acks: Sequence[bool] = (True, False),
) -> tuple[FaultPlan, str, bool]:
    """The (plan, workload, acks_late) a campaign runs for ``seed``: drawn from the seed alone."""
    rng = random.Random(f"simq-campaign:{seed}")
    names = list(workloads) if workloads else list(WORKLOADS)
    workload = names[rng.randrange(len(names))]
    plan = FaultPlan.random(rng)
    if rate is not None:
        plan = attrs.evolve(plan, rate=rate)
    if kinds is not None:
        plan = attrs.evolve(plan, kinds=tuple(kinds))
    acks_late = list(acks)[rng.randrange(len(acks))]
    return plan, workload, acks_late


@attrs.define
class CampaignSummary:
    """Totals over a campaign."""

    seeds: int = 0
    sent: int = 0
    executions: int = 0
    duplicated: int = 0
    faults: Counter[str] = attrs.field(factory=Counter)
    lost_late: int = 0
    lost_early: int = 0
    unexplained: int = 0
    failures: list[Outcome] = attrs.field(factory=list)
    bad_inputs: int = 0
    bad_input_crashes: int = 0

    def add(self, outcome: Outcome) -> None:
        self.seeds += 1
        self.sent += outcome.sent
        self.executions += outcome.executions
        self.duplicated += outcome.duplicated
        self.faults.update(dict(outcome.faults))
        if outcome.acks_late:
            self.lost_late += len(outcome.lost)
        else:
            self.lost_early += len(outcome.lost)
        self.unexplained += len(outcome.unexplained)
        if not outcome.ok:
            self.failures.append(outcome)

    def report(self) -> str:
        kinds = ", ".join(f"{k}={self.faults[k]}" for k in KINDS if self.faults[k])
        lines = [
            f"seeds run:           {self.seeds}",
            f"tasks sent:          {self.sent}",
            f"tasks run:           {self.executions}",
            f"duplicated:          {self.duplicated} (task runs repeated by at-least-once delivery)",
            f"faults injected:     {sum(self.faults.values())} ({kinds})",
            f"lost, late acks:     {self.lost_late} (all at broker restarts of non-durable queues)",
            f"lost, early acks:    {self.lost_early} (each acknowledged, then crashed before its result)",
            f"lost, unexplained:   {self.unexplained} (must be 0)",
        ]
        if self.bad_inputs:
            lines.append(f"bad inputs tried:    {self.bad_inputs}")
            lines.append(f"worker crashes:      {self.bad_input_crashes} (must be 0)")
        for outcome in self.failures[:10]:
            lines.append("FAILED " + outcome.report())
        return "\n".join(lines)


def campaign(
    seeds: int,
    *,
    start: int = 0,
    rate: float | None = None,
    kinds: Sequence[str] | None = None,
    workloads: Sequence[str] | None = None,
    acks: Sequence[bool] = (True, False),
    progress: Callable[[int, int, CampaignSummary], None] | None = None,
) -> CampaignSummary:
    """Run seeds ``start .. start + seeds - 1``, each with the case its seed draws."""
    summary = CampaignSummary()
    for index in range(seeds):
        seed = start + index
        plan, workload, acks_late = case_for_seed(seed, rate=rate, kinds=kinds, workloads=workloads, acks=acks)
        summary.add(run_case(seed, plan, workload, acks_late=acks_late))
        if progress is not None:
            progress(index + 1, seeds, summary)
    return summary


# -- bad input, at campaign scale ---------------------------------------------------------------
_CONTENT_TYPES = (
    "application/json",
    "application/x-python-serialize",
    "application/x-yaml",
    "application/x-msgpack",
    "text/plain",
    "",
)


def _random_value(rng: random.Random, depth: int = 0) -> Any:
    choice = rng.randrange(8 if depth < 3 else 5)
    if choice == 0:
        return None
    if choice == 1:
        return rng.randrange(-(2**40), 2**40)
    if choice == 2:
        return rng.choice([0.5, -1.0, float("nan"), float("inf"), 1e308])
    if choice == 3:
        return "".join(chr(rng.randrange(32, 0x2FF)) for _ in range(rng.randrange(8)))
    if choice == 4:
        return rng.choice([True, False, b"\x00\xff"])
    if choice == 5:
        return [_random_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {str(_random_value(rng, depth + 1)): _random_value(rng, depth + 1) for _ in range(rng.randrange(4))}


def _bad_envelope(rng: random.Random, task_names: Sequence[str]) -> Envelope:
    import json

    headers: Any = {"simq": 1, "task": rng.choice(list(task_names)), "id": f"bad-{rng.getrandbits(32):08x}", "retries": 0}
    body = json.dumps([[1, 2], {}, {}]).encode()
    content_type = "application/json"
    for _ in range(1 + rng.randrange(3)):
        mutation = rng.randrange(7)
        if mutation == 0:
            body = rng.randbytes(rng.randrange(64))
        elif mutation == 1:
            content_type = rng.choice(_CONTENT_TYPES)
        elif mutation == 2:
            headers[rng.choice(["task", "id", "eta", "expires", "retries", "group_index", "root_id"])] = _random_value(rng)
        elif mutation == 3:
            headers = {str(_random_value(rng)): _random_value(rng) for _ in range(rng.randrange(4))}
        elif mutation == 4:
            try:
                body = json.dumps(_random_value(rng), default=repr).encode()
            except ValueError:
                body = b"["
        elif mutation == 5:
            embed = {"callbacks": [{"task": rng.choice(["no.such.task", *task_names]), "args": []}]}
            body = json.dumps([[1, 2], {}, embed]).encode()
        else:
            body = bytes(b ^ (1 << rng.randrange(8)) if rng.random() < 0.1 else b for b in body)
    return Envelope(body, content_type, "utf-8", headers)


def fuzz_bad_inputs(seed: int, count: int) -> tuple[int, int, int]:
    """Feed ``count`` mutated messages to a simulated worker; return (tried, rejected, worker crashes)."""
    from simq.app import App

    app = App("campaign-bad-input")

    @app.task(name="campaign.target")
    def target(x: Any = None, y: Any = None) -> None:
        return None

    rng = random.Random(f"simq-bad-input:{seed}")
    crashes = 0
    with app.simulate(seed=seed, patch_time=False) as sim:
        for _ in range(count):
            sim.producer.publish(_bad_envelope(rng, ["campaign.target"]), "", "celery")
            try:
                sim.run_until_idle()
            except Exception:  # noqa: BLE001 - counting exactly this
                crashes += 1
        rejected = sum(w.stats.rejected_total for w in sim.worker_list)
    return count, rejected, crashes


# -- command line -------------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="simq", description="simq fault campaigns and replays")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("campaign", help="run many seeds with random fault plans and report")
    run.add_argument("--seeds", type=int, default=100, help="how many seeds (default 100)")
    run.add_argument("--start", type=int, default=0, help="first seed (default 0)")
    run.add_argument("--rate", type=float, default=None, help="fix the fault rate instead of drawing it per seed")
    run.add_argument("--kinds", default=None, help=f"comma-separated fault kinds (default: drawn); of {','.join(KINDS)}")
    run.add_argument("--workloads", default=None, help=f"comma-separated workloads (default all: {','.join(WORKLOADS)})")
    run.add_argument("--acks", choices=("late", "early", "both"), default="both")
    run.add_argument("--bad-inputs", type=int, default=0, help="also feed this many mutated messages to a worker")
    run.add_argument("--quiet", action="store_true", help="no progress line")
    again = sub.add_parser("replay", help="re-run one seed exactly and print its outcome and trace")
    again.add_argument("seed", type=int)
    again.add_argument("--workload", default=None, help="default: what the campaign drew for this seed")
    again.add_argument("--rate", type=float, default=None)
    again.add_argument("--kinds", default=None)
    again.add_argument("--max-faults", type=int, default=None)
    again.add_argument("--acks", choices=("late", "early"), default=None)
    again.add_argument("--trace", action="store_true", help="print the full event trace")
    return parser


def _acks(value: str) -> tuple[bool, ...]:
    return {"late": (True,), "early": (False,), "both": (True, False)}[value]


def _split(value: str | None) -> list[str] | None:
    return [part.strip() for part in value.split(",") if part.strip()] if value else None


def _check_names(names: list[str] | None, known: Sequence[str], what: str) -> None:
    for name in names or ():
        if name not in known:
            raise SystemExit(f"simq: unknown {what} {name!r}; choose from {', '.join(known)}")


def main(argv: list[str], out: TextIO | None = None, err: TextIO | None = None) -> int:
    """``simq campaign ...`` and ``simq replay SEED ...``; returns the exit status."""
    out = out or sys.stdout
    err = err or sys.stderr
    if argv[:1] == ["campaign"] and any(a == "--transport" or a.startswith("--transport=") for a in argv):
        # on real brokers: the chaos campaign (simq.chaos), same words, real worker processes
        from simq.chaos.command import main as chaos_main

        return chaos_main(argv[1:], out, err)
    simq_log = logging.getLogger("simq")
    if not simq_log.handlers:
        # Bad input is logged once per message by design; a campaign counts it instead of printing it.
        simq_log.addHandler(logging.NullHandler())
    args = _parser().parse_args(argv)
    kinds = _split(args.kinds)
    _check_names(kinds, KINDS, "fault kind")
    if args.command == "campaign":
        workloads = _split(args.workloads)
        _check_names(workloads, list(WORKLOADS), "workload")
        live = not args.quiet
        tty = live and err.isatty()
        step = max(1, args.seeds // 20)

        def progress(done: int, total: int, s: CampaignSummary) -> None:
            if not live or (not tty and done % step and done != total):
                return
            line = (
                f"{done}/{total} seeds  tasks run={s.executions} faults={sum(s.faults.values())} "
                f"lost(late)={s.lost_late} lost(early)={s.lost_early} unexplained={s.unexplained} dup={s.duplicated}"
            )
            err.write(("\r" + line) if tty else line + "\n")
            if tty and done == total:
                err.write("\n")
            err.flush()

        summary = campaign(
            args.seeds, start=args.start, rate=args.rate, kinds=kinds, workloads=workloads,
            acks=_acks(args.acks), progress=progress,
        )
        if args.bad_inputs:
            tried, _, crashes = fuzz_bad_inputs(args.start, args.bad_inputs)
            summary.bad_inputs, summary.bad_input_crashes = tried, crashes
        out.write(summary.report() + "\n")
        return 1 if summary.unexplained or summary.bad_input_crashes else 0
    plan, workload, acks_late = case_for_seed(args.seed, rate=args.rate, kinds=kinds)
    if args.max_faults is not None:
        plan = attrs.evolve(plan, max_faults=args.max_faults)
    if args.workload is not None:
        _check_names([args.workload], list(WORKLOADS), "workload")
        workload = args.workload
    if args.acks is not None:
        acks_late = args.acks == "late"
    outcome = replay(args.seed, plan, workload, acks_late=acks_late)
    out.write(outcome.report() + "\n")
    for line in outcome.fault_lines:
        out.write(f"  fault {line}\n")
    if args.trace:
        out.write(outcome.trace + "\n")
    return 0 if outcome.ok else 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main(sys.argv[1:]))
