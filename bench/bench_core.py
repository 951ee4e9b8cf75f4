"""simq core benchmark: simulated round trips per second against Celery 5, plus 1M eta timers.

Run:  python bench/bench_core.py                 (defaults: --n 20000 --timers 1000000)
      python bench/bench_core.py --quick         (small sizes, a few seconds)
      python bench/bench_core.py --only simq     (skip Celery/Dramatiq)

A "round trip" is ``add.delay(i, i).get()``: for simq that is routing,
serialization, the memory broker, a worker, the result backend and the
result read, all in-process on a virtual clock. Celery's eager mode skips
the broker, serialization and the worker; Celery on ``memory://`` does the
broker path with a real (thread) worker. Wall times come from
``time.perf_counter`` kept out of freezegun's reach (see ``_REAL_CLOCKS``), so
they are real even inside ``app.simulate()`` blocks, where time is virtual.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import resource
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

# freezegun (which app.simulate() starts) replaces every module-level name bound
# to time.perf_counter or time.process_time; keeping the real ones inside a tuple
# hides them from its scan, so timings taken inside a simulation stay real.
_REAL_CLOCKS = (time.perf_counter, time.process_time)


def perf_counter() -> float:
    return _REAL_CLOCKS[0]()


def process_time() -> float:
    return _REAL_CLOCKS[1]()


GiB = 1024**3
MiB = 1024**2


# -- helpers -----------------------------------------------------------------------------
def best_rate(fn: Callable[[int], None], n: int, repeat: int) -> float:
    """Best-of-``repeat`` operations per second of ``fn(n)`` (n operations per call)."""
    best = 0.0
    for _ in range(repeat):
        gc.collect()
        t0 = perf_counter()
        fn(n)
        elapsed = perf_counter() - t0
        best = max(best, n / elapsed)
    return best


def maxrss_mib() -> float:
    """Peak resident set size of this process so far, in MiB (Linux reports KiB)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 1024 if sys.platform != "darwin" else rss / MiB


# -- simq ----------------------------------------------------------------------------------
def simq_app(**conf: Any) -> tuple[Any, Any]:
    from simq import App

    app = App("bench", **conf)

    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    return app, add


def simq_round_trips(n: int) -> None:
    app, add = simq_app()
    with app.simulate(seed=1) as sim:
        sim.record_trace = False
        for i in range(n):
            if add.delay(i, i).get() != i + i:
                raise AssertionError("wrong result")


def simq_round_trips_traced(n: int) -> None:
    app, add = simq_app()
    with app.simulate(seed=1):
        for i in range(n):
            if add.delay(i, i).get() != i + i:
                raise AssertionError("wrong result")


def simq_send_then_get(n: int) -> None:
    app, add = simq_app()
    with app.simulate(seed=1) as sim:
        sim.record_trace = False
        results = [add.delay(i, i) for i in range(n)]
        for i, r in enumerate(results):
            if r.get() != i + i:
                raise AssertionError("wrong result")


def simq_eager(n: int) -> None:
    app, add = simq_app(task_always_eager=True)
    driver = app.simulation
    if driver is not None:
        driver.record_trace = False
    for i in range(n):
        if add.delay(i, i).get() != i + i:
            raise AssertionError("wrong result")


# -- Celery ------------------------------------------------------------------------------------
def celery_eager(n: int) -> None:
    from celery import Celery

    app = Celery("bench", broker="memory://", backend="cache+memory://")
    app.conf.task_always_eager = True

    @app.task(name="bench.eager_add", shared=False)
    def add(x: int, y: int) -> int:
        return x + y

    for i in range(n):
        if add.delay(i, i).get() != i + i:
            raise AssertionError("wrong result")


_celery_memory: dict[str, Any] = {}


def _celery_memory_setup() -> tuple[Any, Any]:
    """A Celery app on memory:// with a solo worker running in a thread (started once)."""
    if _celery_memory:
        return _celery_memory["app"], _celery_memory["add"]
    from celery import Celery
    from celery.contrib.testing.worker import start_worker

    app = Celery("bench_mem", broker="memory://", backend="cache+memory://")
    app.conf.update(
        broker_transport_options={"polling_interval": 0.0001},
        worker_hijack_root_logger=False,
        result_expires=None,
    )

    @app.task(name="bench.memory_add", shared=False)
    def add(x: int, y: int) -> int:
        return x + y

    ctx = start_worker(app, pool="solo", perform_ping_check=False, loglevel="WARNING", shutdown_timeout=10)
    ctx.__enter__()
    _celery_memory.update(app=app, add=add, ctx=ctx)
    return app, add


def celery_memory(n: int) -> None:
    _, add = _celery_memory_setup()
    for i in range(n):
        if add.delay(i, i).get(timeout=10, interval=0.0001) != i + i:
            raise AssertionError("wrong result")


def celery_memory_teardown() -> None:
    ctx = _celery_memory.pop("ctx", None)
    if ctx is not None:
        try:
            ctx.__exit__(None, None, None)
        except Exception as exc:  # a teardown hiccup must not hide the numbers
            print(f"  (celery worker teardown: {type(exc).__name__}: {exc})", file=sys.stderr)
    _celery_memory.clear()


# -- Dramatiq (optional) --------------------------------------------------------------------
def dramatiq_stub(n: int) -> None:
    """Messages per second through Dramatiq's StubBroker and a worker (send n, join)."""
    import dramatiq
    from dramatiq.brokers.stub import StubBroker

    broker = StubBroker()
    broker.emit_after("process_boot")
    dramatiq.set_broker(broker)
    done = []

    @dramatiq.actor(broker=broker)
    def add(x: int, y: int) -> None:
        done.append(x + y)

    worker = dramatiq.Worker(broker, worker_timeout=1, worker_threads=1)
    worker.start()
    try:
        for i in range(n):
            add.send(i, i)
        broker.join(add.queue_name)
        worker.join()
    finally:
        worker.stop()
    if len(done) != n:
        raise AssertionError(f"dramatiq ran {len(done)} of {n}")


# -- 1M eta timers --------------------------------------------------------------------------
def eta_messages(count: int, patch_time: bool = False) -> dict[str, float]:
    """``count`` apply_async(countdown=...) messages, held by a worker and fired in virtual time.

    Every message gets a distinct countdown; the worker's prefetch is unlimited
    so it holds them all as eta timers; run_until_idle jumps the clock timer
    by timer. Results are ignored (ignore_result) so memory measures the
    messages and timers, not a million stored results.
    """
    from simq import App

    app = App("bench_eta", worker_prefetch_multiplier=0)
    fired = [0]

    @app.task(ignore_result=True)
    def tick(i: int) -> None:
        fired[0] += 1

    gc.collect()
    gc_time = [0.0, 0.0]  # seconds inside the cyclic garbage collector, start of the current pass

    def gc_timer(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            gc_time[1] = perf_counter()
        else:
            gc_time[0] += perf_counter() - gc_time[1]

    gc.callbacks.append(gc_timer)
    tracemalloc_on = os.environ.get("SIMQ_BENCH_TRACEMALLOC") == "1"
    if tracemalloc_on:
        tracemalloc.start()
    t0 = perf_counter()
    c0 = process_time()
    with app.simulate(seed=1, patch_time=patch_time) as sim:
        sim.record_trace = False
        apply_async = tick.apply_async
        for i in range(count):
            apply_async((i,), countdown=1.0 + (count - i) * 0.001)  # distinct, sent in reverse order
        t_sent = perf_counter()
        # deliver everything: workers take all (unlimited prefetch) and hold them as timers
        sim.broker.dispatch()
        for worker in sim.worker_list:
            worker.poll(0)
        held = sum(w.held for w in sim.worker_list)
        t_held = perf_counter()
        sim.run_until_idle()
        t_fired = perf_counter()
        c_fired = process_time()
        elapsed_virtual = sim.elapsed
    gc.callbacks.remove(gc_timer)
    peak_traced = 0.0
    if tracemalloc_on:
        peak_traced = tracemalloc.get_traced_memory()[1] / MiB
        tracemalloc.stop()
    if fired[0] != count:
        raise AssertionError(f"{fired[0]} of {count} eta tasks ran")
    return {
        "count": count,
        "held": held,
        "send_s": t_sent - t0,
        "hold_s": t_held - t_sent,
        "fire_s": t_fired - t_held,
        "total_s": t_fired - t0,
        "cpu_s": c_fired - c0,
        "gc_s": gc_time[0],
        "virtual_s": elapsed_virtual,
        "tracemalloc_peak_mib": peak_traced,
        "maxrss_mib": maxrss_mib(),
    }


def raw_clock_timers(count: int) -> dict[str, float]:
    """``count`` bare VirtualClock timers with distinct deadlines, fired by jumping the clock."""
    from simq.clock import VirtualClock

    clock = VirtualClock()
    fired = [0]

    def cb() -> None:
        fired[0] += 1

    gc.collect()
    t0 = perf_counter()
    start = clock.now
    call_at = clock.call_at
    for i in range(count):
        call_at(start + 1.0 + (count - i) * 0.001, cb)
    t_set = perf_counter()
    while clock.jump_to_next():
        pass
    t_fired = perf_counter()
    if fired[0] != count:
        raise AssertionError(f"{fired[0]} of {count} timers fired")
    return {
        "count": count,
        "set_s": t_set - t0,
        "fire_s": t_fired - t_set,
        "total_s": t_fired - t0,
        "maxrss_mib": maxrss_mib(),
    }


# -- main ------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=20000, help="round trips per simq/celery-eager run (default 20000)")
    parser.add_argument(
        "--n-memory", type=int, default=3000, help="round trips for Celery on memory:// (slow; default 3000)"
    )
    parser.add_argument(
        "--timers", type=int, default=1_000_000, help="eta messages in the timer test (default 1,000,000)"
    )
    parser.add_argument("--repeat", type=int, default=3, help="best of this many runs (default 3)")
    parser.add_argument(
        "--quick", action="store_true", help="small sizes: --n 3000 --n-memory 500 --timers 50000 --repeat 1"
    )
    parser.add_argument(
        "--no-patch-time", action="store_true", help="timer test with simulate(patch_time=False) (no freezegun moves)"
    )
    parser.add_argument("--only", choices=("all", "simq", "timers", "roundtrips"), default="all")
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.n_memory, args.timers, args.repeat = 3000, 500, 50_000, 1
    logging.getLogger("celery").setLevel(logging.ERROR)

    import simq

    print(f"simq bench_core  python {sys.version.split()[0]}  n={args.n}  repeat={args.repeat}")
    rows: list[tuple[str, float | None, str]] = []
    rates: dict[str, float] = {}

    def measure(key: str, label: str, fn: Callable[[int], None], n: int, note: str = "") -> None:
        try:
            fn(min(n, 200))  # warm up imports and caches
            rate = best_rate(fn, n, args.repeat)
        except Exception as exc:
            rows.append((label, None, f"failed: {type(exc).__name__}: {exc}"))
            print(f"  {label:<48} failed: {type(exc).__name__}: {exc}", flush=True)
            return
        rates[key] = rate
        rows.append((label, rate, note))
        print(f"  {label:<48} {rate:>10,.0f} /s  {note}", flush=True)

    if args.only in ("all", "simq", "roundtrips"):
        print("\nround trips (delay(i, i).get()), best of", args.repeat)
        measure("simq", "simq simulate(): delay().get() loop", simq_round_trips, args.n, "record_trace=False")
        measure(
            "simq_traced",
            "simq simulate(): delay().get() loop, traced",
            simq_round_trips_traced,
            args.n,
            "trace on (default)",
        )
        measure("simq_batch", "simq simulate(): send N, then get all", simq_send_then_get, args.n, "record_trace=False")
        measure("simq_eager", "simq task_always_eager=True", simq_eager, args.n, "full broker path")
    if args.only in ("all", "roundtrips"):
        try:
            import celery
        except ImportError:
            print("  celery not installed: pip install 'simq[bench]'")
        else:
            measure(
                "celery_eager",
                f"Celery {celery.__version__} task_always_eager",
                celery_eager,
                args.n,
                "skips broker + serialization",
            )
            measure(
                "celery_memory",
                "Celery memory:// + solo worker thread",
                celery_memory,
                args.n_memory,
                "cache+memory:// backend",
            )
            celery_memory_teardown()
        try:
            import dramatiq
        except ImportError:
            print("  dramatiq not installed (optional): pip install dramatiq")
        else:
            measure(
                "dramatiq",
                f"Dramatiq {dramatiq.__version__} StubBroker (send N, join)",
                dramatiq_stub,
                args.n,
                "msg/s, no result read",
            )
        print("\nratios")
        for ours in ("simq", "simq_batch", "simq_eager"):
            for theirs in ("celery_eager", "celery_memory"):
                if ours in rates and theirs in rates:
                    print(f"  {ours:<12} / {theirs:<14} {rates[ours] / rates[theirs]:>7.2f}x")
        if "simq" in rates and "celery_eager" in rates:
            ok = rates["simq"] >= 3 * rates["celery_eager"]
            print(f"  target simq >= 3x Celery eager: {'MET' if ok else 'NOT MET'}")

    if args.only in ("all", "timers"):
        count = args.timers
        print(f"\n{count:,} eta timers in virtual time (targets: < 30 s, < 2 GiB)")
        patch_time = not args.no_patch_time
        res = eta_messages(count, patch_time=patch_time)
        print(
            f"  apply_async(countdown=distinct) x{count:,}, held by 1 worker, fired by jumping the clock"
            f" (patch_time={patch_time}):\n"
            f"    send {res['send_s']:.2f} s + deliver/hold {res['hold_s']:.2f} s + fire/execute {res['fire_s']:.2f} s"
            f" = {res['total_s']:.2f} s wall, {res['cpu_s']:.2f} s CPU ({res['virtual_s']:.0f} virtual s);"
            f" held at once: {res['held']:,}\n"
            f"    of which {res['gc_s']:.2f} s in CPython's cyclic garbage collector (default thresholds)\n"
            f"    peak RSS {res['maxrss_mib']:.0f} MiB"
            + (f", tracemalloc peak {res['tracemalloc_peak_mib']:.0f} MiB" if res["tracemalloc_peak_mib"] else "")
        )
        ok_t = res["total_s"] < 30
        ok_m = res["maxrss_mib"] * MiB < 2 * GiB
        print(f"    target < 30 s: {'MET' if ok_t else 'NOT MET'};  target < 2 GiB: {'MET' if ok_m else 'NOT MET'}")
        raw = raw_clock_timers(count)
        print(
            f"  raw VirtualClock timers x{count:,}: set {raw['set_s']:.2f} s + fire {raw['fire_s']:.2f} s = {raw['total_s']:.2f} s"
            f" (peak RSS so far {raw['maxrss_mib']:.0f} MiB)"
        )
    _ = simq, threading
    return 0


if __name__ == "__main__":
    sys.exit(main())
