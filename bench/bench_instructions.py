"""Instructions per simulated round trip and per eta message, counted by callgrind (not seconds).

    python bench/bench_instructions.py [--n 4000] [--what roundtrip,eta]

Wall time on a shared VM moves with its load; instruction counts do not. Each
measurement runs the workload twice under ``valgrind --tool=callgrind`` (with
``n`` and with ``n // 10`` operations) and prints the difference divided by
the difference in operations: the cost of one more operation, start-up excluded.
Compare two commits by running this in each.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

WORKLOAD = r"""
import sys
from simq import App

what, n = sys.argv[1], int(sys.argv[2])
app = App("instr", worker_prefetch_multiplier=0)  # unlimited: every eta message is held by the worker

@app.task(name="add")
def add(x, y):
    return x + y

with app.simulate(seed=1) as sim:
    sim.record_trace = False
    if what == "roundtrip":
        for i in range(n):
            add.delay(i, i).get()
    else:  # eta: n messages held for their eta, then run
        results = [add.apply_async((i, i), countdown=60 + i % 100) for i in range(n)]
        sim.run_until_idle()
        assert results[-1].get() == 2 * (n - 1)
"""


def instructions(script: Path, what: str, n: int) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable, str(script), what, str(n)],
            check=True,
            capture_output=True,
            env=dict(os.environ, PYTHONHASHSEED="0"),
        )
        text = out.read_text()
    match = re.search(r"^summary:\s+(\d+)", text, re.M) or re.search(r"^totals:\s+(\d+)", text, re.M)
    if match is None:
        raise RuntimeError("callgrind wrote no summary")
    return int(match.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4000)
    parser.add_argument("--what", default="roundtrip,eta")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (apt-get install valgrind)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "workload.py"
        script.write_text(WORKLOAD)
        small = max(1, args.n // 10)
        for what in [w.strip() for w in args.what.split(",") if w.strip()]:
            big_count = instructions(script, what, args.n)
            small_count = instructions(script, what, small)
            per = (big_count - small_count) / (args.n - small)
            print(f"{what:<10} {per:>12,.0f} instructions per operation  (n={args.n} vs {small})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
