"""``simq chaos --transport URL``: one seeded campaign per broker, on real worker processes, judged from the ledger.

The plan (workload and fault schedule) comes from ``random.Random`` seeded
with ``--seed`` alone (and the options that shape it), is printed, and is the
same on every run of the same command; what the brokers and the scheduler do
with it is not, which is why the ledger, not a replayed trace, is the
evidence. The run stops by itself: sends and faults stop at ``--seconds``,
then the campaign waits (at most ``--settle`` seconds) for the work to finish,
stops the workers with SIGTERM, reads the ledger and judges it. It exits 1
when a guarantee is broken (see ``simq.chaos.checker``), 2 on bad usage.
"""

from __future__ import annotations

import hashlib
import os
import random
import tempfile
import threading
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

import attrs

from simq.chaos import checker, nemesis, procs, report, workload
from simq.chaos.ledger import Ledger, plain_redis_url
from simq.chaos.poison import poison_writer
from simq.chaos.tasks import build_app
from simq.clock import WallClock
from simq.transport import redact_url

__all__ = ["Config", "plan", "run_campaign"]

DEFAULT_WORKERS = "threads:4,processes:4"
_BROKER_LANE = ("conn-broker", "conn-backend", "stop-app", "stall")
OUTAGE_GRACE = 10.0  # seconds after start_app in which a refused send is still the outage's doing


@attrs.frozen
class Config:
    """One campaign on one broker."""

    transport: str
    backend: str
    ledger: str
    seed: int
    seconds: float = 60.0
    tasks: int = 400
    settle: float = 90.0
    workers: tuple[tuple[str, int], ...] = (("threads", 4), ("processes", 4))
    kinds: tuple[str, ...] = nemesis.DEFAULT_KINDS
    every: float = 4.0
    each: bool = False  # one fault of each kind instead of a random schedule
    acks: tuple[bool, ...] = (True, False)
    rabbitmq_node: str | None = None
    progress: float = 5.0
    keep: bool = False

    @property
    def is_amqp(self) -> bool:
        return urlsplit(self.transport).scheme in ("amqp", "pyamqp")

    def replay_command(self) -> str:
        workers = ",".join(f"{pool}:{c}" for pool, c in self.workers)
        acks = {(True, False): "both", (True,): "late", (False,): "early"}[self.acks]
        node = f" --rabbitmq-node {self.rabbitmq_node}" if self.rabbitmq_node else ""
        return (
            f"simq chaos --transport {redact_url(self.transport)} --backend {redact_url(self.backend)} "
            f"--ledger {redact_url(self.ledger)} --seed {self.seed} --seconds {self.seconds:g} --tasks {self.tasks} "
            f"--workers {workers} --nemesis {','.join(self.kinds) or 'none'} "
            f"{'--each' if self.each else f'--every {self.every:g}'} --acks {acks}{node}"
        )


def plan(config: Config) -> tuple[tuple[workload.Job, ...], tuple[nemesis.Fault, ...], str]:
    """The jobs, the faults and the plan's digest: from the seed alone."""
    rng = random.Random(f"simq-chaos:{config.seed}")
    jobs = workload.draw_workload(rng, tasks=config.tasks, window=0.75 * config.seconds, acks=config.acks)
    faults = nemesis.draw_schedule(
        rng, seconds=config.seconds, kinds=config.kinds, slots=len(config.workers), every=config.every, each=config.each
    )
    text = "\n".join([*(j.line() for j in jobs), *(f.line() for f in faults)])
    return jobs, faults, hashlib.sha256(text.encode()).hexdigest()[:16]


def _with_query(url: str, **options: str) -> str:
    parts = urlsplit(url)
    query = parts.query
    for key, value in options.items():
        if f"{key}=" not in query:
            query = f"{query}&{key}={value}" if query else f"{key}={value}"
    return parts._replace(query=query).geturl()


@attrs.define(eq=False)
class _Sender:
    """Sends the jobs at their times; records what the broker confirmed and what it refused."""

    app: Any
    jobs: tuple[workload.Job, ...]
    run: str
    started: float
    deadline: float
    status: dict[int, str] = attrs.field(factory=dict)
    revokes: dict[int, workload.RevokeRecord] = attrs.field(factory=dict)
    refusals: list[tuple[float, str]] = attrs.field(factory=list)
    calls: int = 0
    stop: threading.Event = attrs.field(factory=threading.Event)
    _clock: WallClock = attrs.field(factory=WallClock)

    def __call__(self) -> None:
        for job in self.jobs:
            while not self.stop.is_set() and self._clock.now < self.started + job.at:
                self._clock.sleep(min(0.05, self.started + job.at - self._clock.now))
            if self.stop.is_set() or self._clock.now > self.deadline:
                return
            began = self._clock.now
            try:
                workload.send_job(self.app, job, self.run)
            except Exception as exc:  # noqa: BLE001 - a refused send is data: the checker judges it
                self.status[job.index] = f"refused: {type(exc).__name__}: {exc}"
                self.refusals.append((self._clock.now, f"job {job.index}: {type(exc).__name__}: {exc}"))
            else:
                self.status[job.index] = "sent"
                if job.kind == "revoke":  # right after the send, as a user would: before the countdown runs out
                    self.revokes[job.index] = workload.revoke_job(self.app, job, self.run, began, self._clock)
            self.calls += len(job.nodes)


@attrs.define(eq=False)
class _Chaos:
    """Runs the fault schedule against the clock; stops at the deadline."""

    nem: nemesis.Nemesis
    faults: tuple[nemesis.Fault, ...]
    started: float
    deadline: float
    out: TextIO
    broker_lane: bool  # faults that take seconds (rabbitmqctl, a stall) run in a lane of their own
    outages: list[tuple[float, float]] = attrs.field(factory=list)
    stop: threading.Event = attrs.field(factory=threading.Event)
    _clock: WallClock = attrs.field(factory=WallClock)

    def __call__(self) -> None:
        for fault in self.faults:
            if (fault.kind in _BROKER_LANE) != self.broker_lane:
                continue
            while not self.stop.is_set() and self._clock.now < self.started + fault.at:
                self._clock.sleep(min(0.05, self.started + fault.at - self._clock.now))
            if self.stop.is_set() or self._clock.now > self.deadline:
                self.out.write(f"  nemesis (not reached by the time bound) {fault.line()}\n")
                continue
            began = self._clock.now
            record = self.nem.apply(fault)
            if fault.kind == "stop-app":
                self.outages.append((began, self._clock.now))
            t = record.at - self.started
            self.out.write(
                f"  nemesis t+{t:6.2f}s {fault.kind:<12} {'' if record.done else '(skipped) '}{record.detail}\n"
            )
            self.out.flush()


def run_campaign(config: Config, out: TextIO, err: TextIO) -> checker.Verdict:
    """One campaign against ``config.transport``; prints the plan, progress, the table; returns the verdict."""
    clock = WallClock()
    began = clock.monotonic()
    jobs, faults, digest = plan(config)
    token = uuid.uuid4().hex[:8]
    run = f"c{config.seed}x{token}"
    namespace = f"chaos{token}"
    broker = _with_query(config.transport, namespace=namespace)
    if not config.is_amqp:
        broker = _with_query(broker, consumer_ttl="3")
    backend = _with_query(config.backend, namespace=namespace)
    label = urlsplit(config.transport).scheme
    out.write(f"== simq chaos on {redact_url(config.transport)}: seed {config.seed}, plan {digest}\n")
    out.write(f"   replay: {config.replay_command()}\n")
    out.write(f"   workload: {workload.summary(jobs)}\n")
    out.write(f"   workers: {', '.join(f'simq worker -P {p} -c {c}' for p, c in config.workers)}\n")
    out.write(f"   faults ({len(faults)}):\n" + "".join(f"     {f.line()}\n" for f in faults))
    out.flush()
    run_dir = Path(tempfile.mkdtemp(prefix=f"simq-chaos-{run}-"))
    module = f"chaos_{token}"
    (run_dir / f"{module}.py").write_text("from simq.chaos.tasks import from_env\n\napp = from_env()\n")
    (run_dir / "plan.txt").write_text(
        "\n".join([config.replay_command(), *(j.line() for j in jobs), *(f.line() for f in faults)]) + "\n"
    )
    env = dict(os.environ, SIMQ_CHAOS_BROKER=broker, SIMQ_CHAOS_BACKEND=backend, SIMQ_CHAOS_LEDGER=config.ledger)
    env["SIMQ_CHAOS_RUN"] = run
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(run_dir), env.get("PYTHONPATH", "")) if p)
    app = build_app(broker, backend, config.ledger, run)
    ledger = Ledger.connect(config.ledger, run)
    slots = [procs.Slot(i, pool, c) for i, (pool, c) in enumerate(config.workers)]
    sup = procs.Supervisor(f"{module}:app", run_dir, env, slots)
    control: nemesis.RabbitControl | nemesis.RedisControl
    if config.is_amqp:
        control = nemesis.RabbitControl(urlsplit(broker).port or 5672, namespace, config.rabbitmq_node)
    else:
        control = nemesis.RedisControl(broker, run)
    nem = nemesis.Nemesis(
        sup,
        namespace,
        broker,
        backend,
        control,
        nemesis.RedisControl(backend, run),
        poison_writer(broker, namespace, run),
    )
    verdict: checker.Verdict | None = None
    try:
        app.connection(connect_timeout=5).close()  # declares the queues; fails early, naming the broker
        sup.start_all()
        _wait_consuming(sup, clock, 20.0)
        t0 = clock.now
        deadline = t0 + config.seconds
        sender = _Sender(app, jobs, run, t0, deadline)
        lanes = [_Chaos(nem, faults, t0, deadline, out, lane) for lane in (False, True)]
        workers: list[_Sender | _Chaos] = [sender, *lanes]
        threads = [threading.Thread(target=f, daemon=True) for f in workers]
        for thread in threads:
            thread.start()
        total = sum(len(j.nodes) for j in jobs)
        last = clock.now

        def progress(phase: str) -> None:
            done, faults_done = ledger.finished(), nem.counts()
            kinds = ", ".join(f"{k} {v}" for k, v in sorted(faults_done.items()))
            refused = sum(1 for s in sender.status.values() if s != "sent")
            err.write(
                f"[{label} {phase} {clock.now - t0:5.0f}s] sent {sender.calls}/{total} calls "
                f"({len(sender.status)} jobs, {refused} refused), done {done}, faults {sum(faults_done.values())}"
                f"{' (' + kinds + ')' if kinds else ''}, workers up {sup.up()}/{len(slots)}, "
                f"unsignalled exits {len(sup.unexpected)}\n"
            )
            err.flush()

        last_scan = clock.now
        while any(t.is_alive() for t in threads) or clock.now < deadline:
            sup.tick()
            if clock.now - last_scan >= 2.0:
                sup.scan_orphans(run)
                last_scan = clock.now
            if clock.now - last >= config.progress:
                progress("chaos")
                last = clock.now
            if clock.now > deadline + 30:  # a fault still running 30 s past the bound: stop waiting for it
                for stopper in workers:
                    stopper.stop.set()
                break
            clock.sleep(0.1)
        nem.heal()
        _settle(config, sup, ledger, app, jobs, sender, run, clock, lambda: progress("settle"))
        sup.stop_all(grace=30.0)
        left = _orphans(run, clock)
        orphans = tuple(sorted(sup.lasting_orphans() | set(left)))
        killed = {r.pid: r.killed_at for r in sup.history if r.killed_at is not None}
        killed.update({pid: clock.now for pid in procs.kill_pids(set(left))})
        outages = [o for lane in lanes for o in lane.outages]
        observed = _observe(config, run, jobs, sender, outages, nem, sup, ledger, app, namespace, killed, orphans)
        report.save(run_dir, observed, nem)
        verdict = checker.check(observed)
        report.report(
            out,
            config.transport,
            config.seed,
            config.replay_command(),
            verdict,
            sup,
            run_dir,
            clock.monotonic() - began,
        )
        return verdict
    finally:
        for slot in slots:
            if sup.alive(slot) and slot.proc is not None:
                slot.proc.kill()
        procs.kill_pids(procs.campaign_pids(run))
        report.cleanup(
            app, ledger, nem, keep=config.keep or verdict is None or not verdict.ok, run_dir=run_dir, out=out
        )


def _wait_consuming(sup: procs.Supervisor, clock: WallClock, limit: float) -> None:
    """Until every slot's log says it consumes (or ``limit`` seconds): sends before that only queue up."""
    deadline = clock.monotonic() + limit
    while clock.monotonic() < deadline:
        sup.tick()
        logs = [Path(r.log_path).read_text(errors="replace") for r in sup.history[-len(sup.slots) :]]
        if all("consuming" in text for text in logs):
            return
        clock.sleep(0.2)


def _settle(config: Config, sup: procs.Supervisor, ledger: Ledger, app: Any, jobs: tuple[workload.Job, ...],
            sender: _Sender, run: str, clock: WallClock, progress: Any) -> None:  # fmt: skip
    """Wait for the sent work to finish: every handle final, or no progress for a while, or ``--settle`` seconds."""
    handles = [n.task_id(run) for j in jobs if sender.status.get(j.index) == "sent" for n in j.handles]
    deadline = clock.monotonic() + config.settle
    quiet_for = max(20.0, config.settle / 4)
    seen, changed, last_print, pending = -1, clock.monotonic(), clock.monotonic(), handles
    while clock.monotonic() < deadline:
        sup.tick()
        sup.scan_orphans(run)
        pending = [m.task_id for m in app.backend.get_many(pending) if m.state not in checker.FINAL]
        done = ledger.finished()
        if not pending:
            return
        if done != seen:
            seen, changed = done, clock.monotonic()
        elif clock.monotonic() - changed > quiet_for and sup.up() == len(sup.slots):
            return  # nothing moves any more: what is left is lost (the checker says whether that is allowed)
        if clock.monotonic() - last_print >= config.progress:
            progress()
            last_print = clock.monotonic()
        clock.sleep(0.5)


def _orphans(run: str, clock: WallClock) -> tuple[int, ...]:
    """Worker processes of this run still alive after every slot stopped: children that outlived their parent."""
    deadline = clock.monotonic() + 5.0
    left = procs.campaign_pids(run)
    while left and clock.monotonic() < deadline:
        clock.sleep(0.2)
        left = procs.campaign_pids(run)
    return tuple(sorted(left))


def _observe(config: Config, run: str, jobs: tuple[workload.Job, ...], sender: _Sender, outages: list[tuple[float, float]],
             nem: nemesis.Nemesis, sup: procs.Supervisor, ledger: Ledger, app: Any, namespace: str,
             killed: dict[int, float], orphans: tuple[int, ...]) -> checker.Observed:  # fmt: skip
    handles = [n.task_id(run) for j in jobs for n in j.handles]
    results = {m.task_id: (m.state, m.result) for m in app.backend.get_many(handles)}
    log_ids: dict[int, Mapping[str, float]] = {}
    unread: dict[int, tuple[float, ...]] = {}
    child_exits: list[str] = []
    for r in sup.history:
        facts = procs.scan_log(r.log_path, run)
        log_ids[r.pid] = facts.task_ids
        unread[r.pid] = facts.revocation_read_failures
        child_exits += [f"{r.name}: {line}" for line in facts.child_exits]
    dead = None
    if not config.is_amqp:
        import redis

        client = redis.Redis.from_url(plain_redis_url(config.transport))
        dead = sum(int(client.llen(k)) for k in client.scan_iter(match=f"simq:{namespace}:dead:*"))
        client.close()
    windows = [(a - 1.0, b + OUTAGE_GRACE) for a, b in outages]
    refused_up = tuple(what for when, what in sender.refusals if not any(a <= when <= b for a, b in windows))
    return checker.Observed(
        run=run,
        jobs=jobs,
        sent=dict(sender.status),
        events=tuple(ledger.events()),
        results=results,
        workers=tuple(sup.history),
        killed=killed,
        log_ids=log_ids,
        child_exits=tuple(child_exits),
        orphans=orphans,
        poison=tuple(p for rec in nem.records for p in rec.poison),
        dead_letters=dead,
        refused_while_up=refused_up,
        revokes=dict(sender.revokes),
        unread_revocations=unread,
    )
