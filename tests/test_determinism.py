"""Same seed, same run: the simulation's trace is a function of the seed alone."""

from __future__ import annotations

import pytest

from simq import App
from simq.exceptions import SimqError


def run_workload(seed: int, *, workers: int = 3, tasks: int = 200) -> tuple[str, str, list[object]]:
    """A fresh app and simulation doing a mixed workload; returns (digest, trace text, results)."""
    app = App("determinism")
    attempts: dict[int, int] = {}

    @app.task
    def add(x, y):
        return x + y

    @app.task(bind=True, max_retries=3, default_retry_delay=1.5)
    def flaky(self, n):
        attempts[n] = attempts.get(n, 0) + 1
        if attempts[n] <= n % 3:
            raise self.retry(exc=ValueError(f"attempt {attempts[n]} of {n}"), countdown=0.5 + n % 4)
        return n * 10

    @app.task
    def boom(n):
        raise KeyError(n)

    with app.simulate(seed=seed, workers=workers, prefetch_multiplier=2) as sim:
        handles = []
        for i in range(tasks):
            kind = i % 5
            if kind == 0:
                handles.append(add.apply_async((i, i), countdown=(i * 37) % 11))
            elif kind == 1:
                handles.append(flaky.delay(i))
            elif kind == 2:
                handles.append(add.apply_async((i, 1), priority=i % 10))
            elif kind == 3:
                handles.append(boom.delay(i))
            else:
                handles.append(add.delay(i, -i))
        sim.run_until_idle()
        results: list[object] = []
        for handle in handles:
            try:
                results.append(handle.get())
            except KeyError as exc:
                results.append(f"KeyError{exc.args}")
        return sim.digest, sim.trace_text(), results


class TestSameSeedSameRun:
    def test_same_seed_gives_the_same_trace_byte_for_byte(self):
        digest_a, text_a, results_a = run_workload(seed=1234)
        digest_b, text_b, results_b = run_workload(seed=1234)
        assert text_a == text_b
        assert digest_a == digest_b
        assert results_a == results_b

    def test_the_workload_really_exercises_workers_retries_and_countdowns(self):
        _, text, results = run_workload(seed=7)
        lines = text.splitlines()
        workers_that_ran = {line.split()[3] for line in lines if " succeeded " in line}
        assert workers_that_ran == {"worker-1", "worker-2", "worker-3"}
        assert sum(" retry " in line for line in lines) > 0
        assert sum(" held " in line for line in lines) > 0
        assert sum(" failed " in line for line in lines) == 40
        # every task ended with its value, whatever worker ran it and however often it retried
        for i, value in enumerate(results):
            expected: object = {0: 2 * i, 1: i * 10, 2: i + 1, 3: f"KeyError({i},)", 4: 0}[i % 5]
            assert value == expected, (i, value)

    def test_digest_is_the_hash_of_the_trace_text(self):
        import hashlib

        digest, text, _ = run_workload(seed=3, tasks=30)
        assert digest == hashlib.sha256(text.encode("utf-8")).hexdigest()

    @pytest.mark.parametrize("seed", [0, 1, 99])
    def test_task_ids_repeat_with_the_seed(self, seed):
        def ids(seed: int) -> list[str]:
            app = App("ids")

            @app.task
            def noop():
                return None

            with app.simulate(seed=seed):
                return [noop.delay().id for _ in range(20)]

        first = ids(seed)
        assert first == ids(seed)
        assert len(set(first)) == 20


class TestDifferentSeedsDifferentRuns:
    def test_different_seeds_give_different_traces(self):
        digests = {run_workload(seed=seed, tasks=60)[0] for seed in range(5)}
        assert len(digests) == 5

    def test_different_seeds_still_give_the_same_results(self):
        assert run_workload(seed=1, tasks=60)[2] == run_workload(seed=2, tasks=60)[2]

    def test_different_seeds_choose_workers_differently(self):
        def assignment(seed: int) -> list[str]:
            _, text, _ = run_workload(seed=seed, tasks=60)
            return [line.split()[3] for line in text.splitlines() if " succeeded " in line]

        assert assignment(5) != assignment(6)


class TestTraceRecordsTheRun:
    def test_trace_can_be_turned_off_without_changing_results(self):
        app = App("notrace")

        @app.task
        def add(x, y):
            return x + y

        with app.simulate(seed=1, workers=2) as sim:
            sim.record_trace = False
            assert [add.delay(i, i).get() for i in range(10)] == [2 * i for i in range(10)]
            assert [event.kind for event in sim.trace] == ["worker-start", "worker-start"]

    def test_trace_turned_on_again_records_again(self):
        app = App("retrace")

        @app.task
        def add(x, y):
            return x + y

        with app.simulate(seed=1) as sim:
            sim.record_trace = False
            assert add.delay(1, 1).get() == 2
            sim.record_trace = True
            assert add.delay(2, 2).get() == 4
            assert [e.kind for e in sim.trace if e.worker != "client"].count("succeeded") == 1

    def test_a_runaway_loop_is_stopped_with_the_seed_named(self):
        app = App("runaway")

        @app.task
        def again(n):
            again.delay(n + 1)

        with app.simulate(seed=42) as sim:
            sim.max_steps = 500
            again.delay(0)
            with pytest.raises(SimqError, match="seed=42"):
                sim.run_until_idle()
            sim.worker_list.clear()  # let __exit__ skip the endless drain
