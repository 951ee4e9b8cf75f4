"""Property: batches over random arrival schedules, worker counts, sizes and intervals, with crashes.

On failure hypothesis prints the falsifying parameters (seed included); the
assertion message repeats them so the run can be replayed with
``run_schedule(**params)``.
"""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from simq import App, states
from simq.batches import Batches


class Recording(Batches):
    """Records arrivals and checks acks around every batch (test-only subclass)."""

    log: dict = {}

    def handle(self, worker, request):
        self.log["arrivals"].setdefault(request.id, []).append(worker.clock.now)
        super().handle(worker, request)

    def _flush(self, worker, requests):
        assert not any(r.acked for r in requests), "a message was acked before its batch ran"
        self.log["batches"].append((worker.clock.now, [r.id for r in requests]))
        super()._flush(worker, requests)
        assert all(r.acked for r in requests), "a message was not acked after its batch ran"


# Virtual timestamps are epoch floats (~1.7e9): one ulp is ~2.4e-7 s.
def run_schedule(seed, workers, flush_every, flush_interval, gaps, crash_at):
    log = {"arrivals": {}, "batches": [], "bodies": 0}
    app = App(f"prop-{seed}", worker_prefetch_multiplier=0)

    @app.task(base=Recording, flush_every=flush_every, flush_interval=flush_interval, log=log)
    def collect(requests):
        log["bodies"] += 1

    crashed = 0
    with app.simulate(seed=seed, workers=workers) as sim:
        results = []
        for index, gap in enumerate(gaps):
            sim.advance(gap)
            results.append(collect.delay(index))
            if index == crash_at:
                while sim.step():
                    pass
                holders = [w for w in sim.worker_list if not w._stopping and collect.buffered(w)]
                if holders:
                    holders[0].crash()
                    crashed += 1
                    sim.add_worker(prefetch_multiplier=0)
        sim.run_until_idle()
    ids = [r.id for r in results]
    params = dict(
        seed=seed, workers=workers, flush_every=flush_every, flush_interval=flush_interval, gaps=gaps, crash_at=crash_at
    )
    where = f"replay: run_schedule(**{params!r})"
    counted = Counter(i for _, batch in log["batches"] for i in batch)
    assert sorted(counted) == sorted(ids), f"some request never ran in a batch; {where}"
    assert all(n == 1 for n in counted.values()), f"a request ran in two batches; {where}"
    for flushed_at, batch in log["batches"]:
        assert 1 <= len(batch) <= flush_every, f"batch of {len(batch)} > flush_every; {where}"
        first = min(log["arrivals"][i][-1] for i in batch)
        assert flushed_at - first <= flush_interval + 1e-6, f"waited {flushed_at - first} s > {flush_interval}; {where}"
    assert log["bodies"] == len(log["batches"]), where
    assert all(sim.backend.get_meta(i).state == states.SUCCESS for i in ids), where
    return crashed


@settings(deadline=None, max_examples=60)
@given(
    seed=st.integers(0, 2**32 - 1),
    workers=st.integers(1, 3),
    flush_every=st.integers(1, 12),
    flush_interval=st.sampled_from([0.5, 1.0, 2.5, 10.0, 30.0]),
    gaps=st.lists(st.sampled_from([0.0, 0.0, 0.0, 0.1, 0.7, 3.0, 12.0, 40.0]), min_size=1, max_size=50),
    crash_at=st.one_of(st.none(), st.integers(0, 49)),
)
def test_batches_deliver_each_request_once_in_bounded_batches(
    seed, workers, flush_every, flush_interval, gaps, crash_at
):
    run_schedule(seed, workers, flush_every, flush_interval, gaps, crash_at)


def test_a_crash_before_flush_is_exercised():
    # The property must really inject crashes: this schedule always has a buffered worker to kill.
    assert run_schedule(3, 1, 10, 30.0, [0.0] * 5, 2) == 1
