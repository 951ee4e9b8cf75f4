"""Canvas and batches keep their guarantees under random faults (Hypothesis over seeds and plans).

With late acks and durable queues, under crashes (before, mid and after
execution), duplicate deliveries, connection drops, broker restarts, slow
tasks and clock jumps:

- a chord's body is sent exactly once, with every header value, even when a
  header task ran twice (the body message itself is at-least-once like any
  late-ack task: a crash while it runs redelivers it, flagged redelivered);
- a chain runs to its end and its value is right;
- a batch task loses no request, and each request's result is stored.

A failing example prints the seed and the plan; ``app.simulate(seed=SEED,
faults=PLAN)`` with the same workload replays it.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from simq import App, chain, chord, group
from simq.batches import Batches
from simq.memory.faults import KINDS, FaultPlan

seeds = st.integers(min_value=0, max_value=2**32 - 1)
plans = st.builds(
    FaultPlan,
    rate=st.floats(min_value=0.01, max_value=0.25).map(lambda r: round(r, 3)),
    kinds=st.lists(st.sampled_from(KINDS), min_size=1, unique=True).map(tuple),
)
PROPERTY = settings(max_examples=40, deadline=None)


def _replay_hint(seed: int, plan: FaultPlan) -> str:
    return f"replay: app.simulate(seed={seed}, workers=2, faults={plan!r}) with this test's workload"


@PROPERTY
@given(seeds, plans, st.integers(min_value=1, max_value=8))
def test_chord_body_is_sent_exactly_once_with_every_header_value(seed, plan, width):
    app = App("chord-faults", task_acks_late=True)
    header_runs: list[int] = []
    body_runs: list[list[int]] = []

    @app.task
    def square(x):
        header_runs.append(x)
        return x * x

    @app.task(queue="bodies")  # its own queue, so the broker counts how often the body was sent
    def total(values):
        body_runs.append(sorted(values))
        return sum(values)

    with app.simulate(seed=seed, workers=2, faults=plan) as sim:
        result = chord(group(square.s(i) for i in range(width)))(total.s())
        sim.run_until_idle()
        hint = _replay_hint(seed, plan) + f", width={width}; faults: {[f.line() for f in sim.fault_log]}"
        expected = sorted(i * i for i in range(width))
        # the body is sent once; a crash while it runs redelivers that same message
        assert sim.broker.stats("bodies").published == 1, hint
        assert body_runs and all(values == expected for values in body_runs), hint
        assert result.get() == sum(i * i for i in range(width)), hint
        assert sorted(set(header_runs)) == list(range(width)), hint


@PROPERTY
@given(seeds, plans)
def test_chain_reaches_its_end_under_faults(seed, plan):
    app = App("chain-faults", task_acks_late=True)

    @app.task
    def add(x, y):
        return x + y

    @app.task
    def double(x):
        return 2 * x

    with app.simulate(seed=seed, workers=2, faults=plan) as sim:
        result = chain(add.s(1, 2), double.s(), add.s(10), double.s())()
        sim.run_until_idle()
        assert result.get() == ((1 + 2) * 2 + 10) * 2, _replay_hint(seed, plan)


@PROPERTY
@given(seeds, plans, st.integers(min_value=1, max_value=25))
def test_batches_lose_no_request_under_faults(seed, plan, count):
    app = App("batch-faults", task_acks_late=True, worker_prefetch_multiplier=0)
    seen: list[int] = []

    @app.task(base=Batches, flush_every=4, flush_interval=10)
    def collect(requests):
        seen.extend(r.args[0] for r in requests)
        return [r.args[0] * 10 for r in requests]

    with app.simulate(seed=seed, workers=2, faults=plan) as sim:
        results = [collect.delay(i) for i in range(count)]
        sim.run_until_idle()
        hint = _replay_hint(seed, plan) + f", count={count}"
        assert sorted(set(seen)) == list(range(count)), hint
        assert [r.get() for r in results] == [i * 10 for i in range(count)], hint
