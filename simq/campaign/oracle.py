"""One case (a seed, a fault plan, a workload) run in a simulation and judged; many cases in a campaign."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from simq import states
from simq.memory.faults import CRASHES, KINDS, FaultPlan

if TYPE_CHECKING:
    pass

from simq.campaign.workloads import WORKLOADS

__all__ = ["CampaignSummary", "Outcome", "campaign", "case_for_seed", "replay", "run_case"]


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
    ran_revoked: tuple[str, ...] = ()  # revoked before they were due, yet run: never permitted
    trace: str = attrs.field(default="", repr=False)
    fault_lines: tuple[str, ...] = attrs.field(default=(), repr=False)

    @property
    def unexplained(self) -> tuple[str, ...]:
        """Lost tasks the trace does not account for: must be empty."""
        allowed = set(self.permitted)
        return tuple(task_id for task_id in self.lost if task_id not in allowed) + self.ran_revoked

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
        expected = send() or {}
        sim.run_until_idle()
        trace = sim.trace
        accepted = list(dict.fromkeys(e.task_id for e in trace if e.kind == "sent"))
        # lost: not in the state it must end in (SUCCESS, unless the workload says otherwise)
        lost = tuple(t for t in accepted if sim.backend.get_meta(t).state != expected.get(t, states.SUCCESS))
        ran = {task_id for task_id, _ in runs}
        ran_revoked = tuple(t for t, state in expected.items() if state == states.REVOKED and t in ran)
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
        ran_revoked=ran_revoked,
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
