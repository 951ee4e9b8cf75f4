"""Canvas benchmark: simq simulated vs Celery 5 eager, in one run.

    python bench/bench_canvas.py [--quick]

Measures a chord of N header tasks (add.s(i, i) -> tsum) and a chain of N
links (add.s(0, 0) | add.s(1) | ...), for several N, in the simq simulator
(one worker, every message serialised, routed through the memory broker,
decoded, executed and its result stored) and in Celery with
task_always_eager=True (no broker, no serialisation) with a cache+memory://
result backend. Prints wall-clock seconds, tasks/s and the Celery/simq ratio
(> 1 means simq is faster), plus simq's per-task cost at each size to show
linearity. Each measurement runs in a fresh interpreter; sizes up to 10k
report the best of three runs, 100k the best of two. Celery's 100k chord is skipped when its 10k run is slower than
CELERY_BUDGET seconds (it would take minutes), and the table says so.
"""

from __future__ import annotations

import argparse
import gc
import logging
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

CELERY_BUDGET = 20.0


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    gc.collect()
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


# -- simq ---------------------------------------------------------------------------------------------


def simq_app() -> Any:
    from simq import App

    app = App("bench-canvas")

    @app.task(name="bench.add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="bench.tsum")
    def tsum(numbers: list[int]) -> int:
        return sum(numbers)

    return app


def simq_chord(n: int) -> float:
    from simq import chord

    app = simq_app()
    add, tsum = app.tasks["bench.add"], app.tasks["bench.tsum"]
    with app.simulate(seed=1, workers=1, patch_time=False) as sim:
        sim.record_trace = False
        seconds, value = timed(lambda: chord([add.s(i, i) for i in range(n)], tsum.s())().get())
    assert value == n * (n - 1), value
    return seconds


def simq_chain(n: int) -> float:
    from simq import chain

    app = simq_app()
    add = app.tasks["bench.add"]
    with app.simulate(seed=1, workers=1, patch_time=False) as sim:
        sim.record_trace = False
        seconds, value = timed(lambda: chain([add.s(0, 0)] + [add.s(1) for _ in range(n - 1)])().get())
    assert value == n - 1, value
    return seconds


# -- celery eager --------------------------------------------------------------------------------------

_CELERY: list[Any] = []


def celery_app() -> Any:
    if not _CELERY:
        _CELERY.append(_make_celery_app())
    return _CELERY[0]


def _make_celery_app() -> Any:
    from celery import Celery

    logging.getLogger("celery").setLevel(logging.ERROR)
    app = Celery("bench", broker="memory://", backend="cache+memory://")
    app.conf.task_always_eager = True
    app.conf.task_eager_propagates = True

    @app.task(name="bench.add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="bench.tsum")
    def tsum(numbers: list[int]) -> int:
        return sum(numbers)

    return app


def celery_chord(n: int) -> float:
    from celery import chord

    app = celery_app()
    add, tsum = app.tasks["bench.add"], app.tasks["bench.tsum"]
    seconds, value = timed(lambda: chord([add.s(i, i) for i in range(n)], tsum.s())().get())
    assert value == n * (n - 1), value
    return seconds


def celery_chain(n: int) -> float:
    from celery import chain

    app = celery_app()
    add = app.tasks["bench.add"]
    seconds, value = timed(lambda: chain([add.s(0, 0)] + [add.s(1) for _ in range(n - 1)])().get())
    assert value == n - 1, value
    return seconds


# -- the table -----------------------------------------------------------------------------------------


def row(what: str, n: int, simq_s: float, celery_s: float | None, note: str = "") -> str:
    simq_rate = n / simq_s
    per_task_us = simq_s / n * 1e6
    if celery_s is None:
        celery_col, ratio_col = "skipped", "-"
    else:
        celery_col, ratio_col = f"{celery_s:9.3f}", f"{celery_s / simq_s:6.2f}x"
    return (
        f"{what:<6} {n:>7} | {simq_s:9.3f} {simq_rate:>10.0f}/s {per_task_us:8.1f}us | "
        f"{celery_col:>9} | {ratio_col:>7} {note}"
    )


MEASURES: dict[str, Callable[[int], float]] = {
    "simq-chord": simq_chord,
    "simq-chain": simq_chain,
    "celery-chord": celery_chord,
    "celery-chain": celery_chain,
}


def measure(name: str, n: int) -> float:
    """Best of a few runs (one for the largest sizes), each in a fresh interpreter."""
    repeats = 3 if n <= 10_000 else 2
    return min(measure_once(name, n) for _ in range(repeats))


def measure_once(name: str, n: int) -> float:
    """Run one measurement in a fresh interpreter, so no run inherits another's heap (or its GC cost)."""
    out = subprocess.run([sys.executable, __file__, "--one", name, str(n)], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{name} {n} failed: {out.stderr.strip().splitlines()[-1:]}")
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes only (smoke run)")
    parser.add_argument("--one", nargs=2, metavar=("WHAT", "N"), help=argparse.SUPPRESS)
    options = parser.parse_args()
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 100_000))
    if options.one:
        import warnings

        warnings.simplefilter("ignore")
        print(MEASURES[options.one[0]](int(options.one[1])))
        return
    chord_sizes = [100, 1_000] if options.quick else [1_000, 10_000, 100_000]
    chain_sizes = [10, 100] if options.quick else [100, 1_000, 10_000]
    print(
        f"python {sys.version.split()[0]}; simq simulated (1 worker, json, trace off) vs Celery eager (cache+memory://)"
    )
    print(
        f"{'canvas':<6} {'size':>7} | {'simq s':>9} {'simq rate':>12} {'per task':>10} | {'celery s':>9} | {'celery/simq':>7}"
    )
    celery_slow = False
    for n in chord_sizes:
        simq_s = measure("simq-chord", n)
        celery_s: float | None = None
        note = ""
        if not celery_slow:
            try:
                celery_s = measure("celery-chord", n)
                celery_slow = celery_s > CELERY_BUDGET
            except RuntimeError as exc:  # pragma: no cover - depends on Celery's internals
                note = f"(celery failed: {exc})"
        else:
            note = f"(celery skipped: its previous size took > {CELERY_BUDGET:g}s)"
        print(row("chord", n, simq_s, celery_s, note), flush=True)
    for n in chain_sizes:
        simq_s = measure("simq-chain", n)
        note = ""
        celery_s = None
        try:
            celery_s = measure("celery-chain", n)
        except RuntimeError as exc:  # pragma: no cover - depends on Celery's internals
            note = f"(celery failed: {exc})"
        print(row("chain", n, simq_s, celery_s, note), flush=True)


if __name__ == "__main__":
    main()
