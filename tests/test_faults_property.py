"""Properties under random faults (Hypothesis over seeds and fault plans).

A failing example prints the outcome report: seed, plan, and the command and
one-line Python call that replay it exactly.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from simq.campaign import WORKLOADS, replay, run_case
from simq.memory.faults import CRASHES, KINDS, FaultPlan

seeds = st.integers(min_value=0, max_value=2**32 - 1)
plans = st.builds(
    FaultPlan,
    rate=st.floats(min_value=0.0, max_value=0.3).map(lambda r: round(r, 3)),
    kinds=st.lists(st.sampled_from(KINDS), min_size=1, unique=True).map(tuple),
)
workloads = st.sampled_from(sorted(WORKLOADS))
PROPERTY = settings(max_examples=40, deadline=None)


@PROPERTY
@given(seeds, plans, workloads)
def test_late_acks_lose_no_accepted_task(seed, plan, workload):
    outcome = run_case(seed, plan, workload, acks_late=True)
    assert outcome.ok, outcome.report()
    restart_losses = [line for line in outcome.fault_lines if "broker-restart" in line and "lost=" in line]
    if workload != "transient" or not restart_losses:
        assert outcome.lost == (), outcome.report()


@PROPERTY
@given(seeds, plans, workloads)
def test_early_acks_lose_only_what_the_trace_accounts_for(seed, plan, workload):
    outcome = run_case(seed, plan, workload, acks_late=False)
    assert outcome.unexplained == (), outcome.report()


@PROPERTY
@given(seeds, st.floats(min_value=0.01, max_value=0.3))
def test_early_acks_without_crashes_or_restarts_lose_nothing(seed, rate):
    plan = FaultPlan(rate=rate, kinds=("duplicate-delivery", "slow-task", "clock-jump", "connection-drop"))
    outcome = run_case(seed, plan, "retry", acks_late=False)
    assert outcome.lost == (), outcome.report()


@PROPERTY
@given(seeds, st.floats(min_value=0.05, max_value=0.3))
def test_retries_with_countdown_survive_crashes(seed, rate):
    plan = FaultPlan(rate=rate, kinds=(*CRASHES, "connection-drop", "broker-restart"))
    outcome = run_case(seed, plan, "retry", acks_late=True)
    assert outcome.lost == (), outcome.report()
    # Every one of the six tasks ran at least its three attempts.
    assert outcome.executions >= 6 * 3, outcome.report()


@settings(max_examples=10, deadline=None)
@given(seeds, plans, workloads, st.booleans())
def test_replay_reproduces_the_run_exactly(seed, plan, workload, acks_late):
    first = run_case(seed, plan, workload, acks_late=acks_late)
    again = replay(seed, plan, workload, acks_late=acks_late)
    assert again.digest == first.digest
    assert again.fault_lines == first.fault_lines
    assert again.trace  # replay keeps the trace to read
