"""Batched vs ordinary tasks: simq simulated, and Celery + celery-batches in-process if it runs here.

    python bench/bench_batches.py [--n 100000] [--celery-n 10000]

simq: N requests to a batch task (flush_every=100) vs the same work as N
ordinary tasks, both in the simulator (sent, delivered, run, results stored).
Celery: the same pair on Celery's in-memory broker (kombu memory://) with a
real Celery worker in a thread (celery.contrib.testing.worker.start_worker,
solo pool); per-request rates are compared, so a smaller --celery-n is fair.
"""

from __future__ import annotations

import argparse
import time


def simq_batched(n: int) -> float:
    from simq import App
    from simq.batches import Batches

    app = App("bench-batches", worker_prefetch_multiplier=0)
    seen = [0]

    @app.task(base=Batches, flush_every=100, flush_interval=10)
    def work(requests):
        seen[0] += len(requests)
        return [r.args[0] * 2 for r in requests]

    # measured around the simulation: inside it freezegun makes the clocks virtual
    t0 = time.perf_counter()
    with app.simulate(seed=1) as sim:
        sim.record_trace = False
        for i in range(n):
            work.delay(i)
        sim.run_until_idle()
    elapsed = time.perf_counter() - t0
    assert seen[0] == n, seen
    return elapsed


def simq_plain(n: int) -> float:
    from simq import App

    app = App("bench-plain")
    seen = [0]

    @app.task
    def work(x):
        seen[0] += 1
        return x * 2

    # measured around the simulation: inside it freezegun makes the clocks virtual
    t0 = time.perf_counter()
    with app.simulate(seed=1) as sim:
        sim.record_trace = False
        for i in range(n):
            work.delay(i)
        sim.run_until_idle()
    elapsed = time.perf_counter() - t0
    assert seen[0] == n, seen
    return elapsed


def celery_pair(n: int, timeout: float) -> tuple[float, float] | str:
    try:
        from celery import Celery
        from celery.contrib.testing.worker import start_worker
        from celery_batches import Batches as CeleryBatches
    except ImportError as exc:
        return f"celery / celery-batches not importable here ({exc})"

    app = Celery("bench", broker="memory://", backend="cache+memory://")
    app.conf.worker_prefetch_multiplier = 0
    app.conf.task_ignore_result = False
    done = {"batched": 0, "plain": 0}

    @app.task(base=CeleryBatches, flush_every=100, flush_interval=0.1, name="bench.batched")
    def batched(requests):
        for r in requests:
            app.backend.mark_as_done(r.id, r.args[0] * 2, request=r)
        done["batched"] += len(requests)

    @app.task(name="bench.plain")
    def plain(x):
        done["plain"] += 1
        return x * 2

    def run(kind: str, task) -> float:
        t0 = time.perf_counter()
        for i in range(n):
            task.delay(i)
        while done[kind] < n:
            if time.perf_counter() - t0 > timeout:
                raise TimeoutError(f"celery {kind}: only {done[kind]}/{n} done after {timeout} s")
            time.sleep(0.005)
        return time.perf_counter() - t0

    try:
        with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=30, loglevel="ERROR"):
            return run("batched", batched), run("plain", plain)
    except Exception as exc:
        return f"celery in-process run failed: {type(exc).__name__}: {exc}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--celery-n", type=int, default=10_000)
    parser.add_argument("--celery-timeout", type=float, default=300.0)
    args = parser.parse_args()

    b = simq_batched(args.n)
    p = simq_plain(args.n)
    print(f"simq simulated, n={args.n}")
    print(f"  batched (flush_every=100): {b:8.3f} s  {args.n / b:10.0f} req/s")
    print(f"  ordinary tasks:            {p:8.3f} s  {args.n / p:10.0f} req/s")
    print(f"  ratio ordinary/batched:    {p / b:8.2f}x")

    c = celery_pair(args.celery_n, args.celery_timeout)
    if isinstance(c, str):
        print(f"celery: not measured: {c}")
        return
    cb, cp = c
    m = args.celery_n
    print(f"celery {__import__('celery').__version__} + celery-batches, memory:// broker, solo worker thread, n={m}")
    print(f"  batched (flush_every=100): {cb:8.3f} s  {m / cb:10.0f} req/s")
    print(f"  ordinary tasks:            {cp:8.3f} s  {m / cp:10.0f} req/s")
    print(f"  ratio ordinary/batched:    {cp / cb:8.2f}x")
    print("simq vs celery (per-request rate):")
    print(f"  batched:  simq/celery = {(args.n / b) / (m / cb):8.2f}x")
    print(f"  ordinary: simq/celery = {(args.n / p) / (m / cp):8.2f}x")


if __name__ == "__main__":
    main()
