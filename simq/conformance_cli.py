"""``simq conformance --transport URL``: run the conformance suite against a broker and print the matrix.

Each row is one behaviour (a conformance test, with its own parameters); each
column a backend: ``simulated`` and ``eager`` (the reference) and the
transport under test. A cell is ``pass``, ``fail``, ``emulated`` (passed
through a capability the transport declares as emulated), ``unsupported``
(the transport declares the capability absent) or ``n/a`` (the test does not
apply there, e.g. it needs virtual time). The exit status is non-zero when any
cell is ``fail``.

Beside the in-process columns, every transport also gets the worker users
deploy: real ``simq worker`` processes with ``-c 4`` (threads) and ``-P
processes -c 4``, and the last transport two ``simq worker -c 1`` processes
(results and the tests' records in the local Redis, ``SIMQ_REDIS_URL``;
``--no-deployed`` skips them). Columns run as parallel pytest processes,
``--jobs`` at a time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from simq.transport import redact_url

__all__ = ["Matrix", "main"]

REFERENCE = ("simulated", "eager")


class Matrix:
    """A pytest plugin that records one cell per (behaviour, backend)."""

    def __init__(self) -> None:
        self.cells: dict[str, dict[str, str]] = {}
        self.reasons: dict[tuple[str, str], str] = {}
        self.backends: list[str] = []

    def pytest_runtest_logreport(self, report: Any) -> None:
        props = dict(report.user_properties)
        backend = props.get("simq_backend")
        if backend is None:
            return
        behaviour = props.get("simq_behaviour", report.nodeid)
        if backend not in self.backends:
            self.backends.append(backend)
        row = self.cells.setdefault(behaviour, {})
        previous = row.get(backend)
        if report.failed:
            row[backend] = "fail"
            self.reasons[(behaviour, backend)] = _first_line(report.longreprtext)
        elif report.skipped:
            reason = _skip_reason(report)
            row[backend] = "unsupported" if reason.startswith("unsupported") else "n/a"
            self.reasons[(behaviour, backend)] = reason
        elif report.when == "call" and previous != "fail":
            capability = props.get("simq_capability")
            row[backend] = "emulated" if capability is not None and capability[1] == "emulated" else "pass"

    def dump(self) -> dict[str, Any]:
        return {
            "cells": self.cells,
            "reasons": [[b, k, r] for (b, k), r in self.reasons.items()],
            "backends": self.backends,
        }

    def merge(self, data: dict[str, Any]) -> None:
        """Add the cells another run of the suite recorded (``dump()``)."""
        for backend in data["backends"]:
            if backend not in self.backends:
                self.backends.append(backend)
        for behaviour, row in data["cells"].items():
            self.cells.setdefault(behaviour, {}).update(row)
        for behaviour, backend, reason in data["reasons"]:
            self.reasons[(behaviour, backend)] = reason

    @property
    def failed(self) -> bool:
        return any(cell == "fail" for row in self.cells.values() for cell in row.values())

    def markdown(self, title: dict[str, str] | None = None) -> str:
        title = title or {}
        names = [title.get(b, b) for b in self.backends]
        lines = ["| behaviour | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
        for behaviour in sorted(self.cells):
            row = self.cells[behaviour]
            lines.append(f"| `{behaviour}` | " + " | ".join(row.get(b, "-") for b in self.backends) + " |")
        totals = []
        for backend in self.backends:
            counts: dict[str, int] = {}
            for row in self.cells.values():
                cell = row.get(backend)
                if cell is not None:
                    counts[cell] = counts.get(cell, 0) + 1
            totals.append(", ".join(f"{counts[k]} {k}" for k in sorted(counts)))
        lines.append("| **total** | " + " | ".join(totals) + " |")
        return "\n".join(lines) + "\n"

    def failures(self) -> list[str]:
        return [
            f"{behaviour} [{backend}]: {self.reasons.get((behaviour, backend), '')}"
            for behaviour, row in sorted(self.cells.items())
            for backend, cell in row.items()
            if cell == "fail"
        ]


def _first_line(text: str) -> str:
    for line in reversed(text.splitlines()):
        if line.startswith("E "):
            return line[1:].strip()[:200]
    return text.strip().splitlines()[-1][:200] if text.strip() else ""


def _skip_reason(report: Any) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


def suite_dir() -> Path:
    import conformance

    return Path(conformance.__file__).resolve().parent


def main(argv: Sequence[str] | None = None) -> int:
    """``simq conformance --transport URL [--backend URL]``; returns the exit code."""
    parser = argparse.ArgumentParser(prog="simq conformance", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--transport",
        required=True,
        action="append",
        metavar="URL",
        help="broker URL of the transport under test (repeatable)",
    )
    parser.add_argument(
        "--backend", default=None, metavar="URL", help="result backend URL (default: memory://, in-process)"
    )
    parser.add_argument("--no-reference", action="store_true", help="skip the simulated and eager columns")
    parser.add_argument("-k", dest="keyword", default=None, help="only behaviours matching this pytest -k expression")
    parser.add_argument("--output", default=None, metavar="FILE", help="also write the matrix as Markdown to FILE")
    parser.add_argument("-v", "--verbose", action="store_true", help="show pytest's own output")
    parser.add_argument(
        "--no-deployed",
        dest="deployed",
        action="store_false",
        help="skip the deployed-worker columns (real `simq worker` processes; they need the local Redis for results and records)",
    )
    parser.add_argument(
        "--jobs", type=int, default=2, help="columns run at once, each in its own pytest process (default 2)"
    )
    parser.add_argument(
        "--timeout", type=float, default=120.0, help="seconds one test may take before it fails (default 120)"
    )
    parser.add_argument("--columns", default=None, help=argparse.SUPPRESS)  # one job: exactly these backends
    parser.add_argument("--cells", default=None, help=argparse.SUPPRESS)  # one job: write its cells here
    args = parser.parse_args(sys.argv[1:] if argv is None else list(argv))

    import pytest

    from simq.transport import load_transport

    for url in args.transport:
        load_transport(url)  # an unknown scheme fails here, naming the installed transports
    saved = {key: os.environ.get(key) for key in ("SIMQ_RESULT_URL", "SIMQ_REQUIRE_BROKERS")}
    if args.backend:
        os.environ["SIMQ_RESULT_URL"] = args.backend
    os.environ["SIMQ_REQUIRE_BROKERS"] = "1"  # an unreachable broker is a failure here, not a skip
    try:
        return _run(args, pytest)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def columns(args: argparse.Namespace) -> list[list[str]]:
    """The backends to run, grouped into jobs: the reference and in-process columns, then one job per deployed column."""
    first = ([] if args.no_reference else list(REFERENCE)) + list(args.transport)
    jobs = [first]
    if args.deployed:
        from conformance.deployed import KINDS

        for url in args.transport:
            jobs += [[f"{kind}:{url}"] for kind in KINDS if kind != "workers-2"]
        jobs.append([f"workers-2:{args.transport[-1]}"])
    return jobs


def _run(args: argparse.Namespace, pytest: Any) -> int:
    from simq.clock import WallClock

    clock = WallClock()
    matrix = Matrix()
    started = clock.now
    if args.columns is not None:
        code = _run_pytest(args, pytest, args.columns.split(","), matrix)
        Path(args.cells).write_text(json.dumps(matrix.dump()))
        return code
    code = _run_jobs(args, columns(args), matrix)
    titles = {name: _title(name) for name in matrix.backends}
    table = matrix.markdown(titles)
    print(table)
    for line in matrix.failures():
        print(f"FAIL {line}")
    print(
        f"conformance: {len(matrix.cells)} behaviours x {len(matrix.backends)} backends in {clock.now - started:.0f} s"
    )
    if args.output:
        Path(args.output).write_text(table)
    if matrix.failed or code not in (0, 5):
        return 1
    return 0


def _title(name: str) -> str:
    from conformance.deployed import split

    deployed = split(name)
    if deployed is not None and "://" in deployed[1]:
        return f"{deployed[0]}: {redact_url(deployed[1])}"
    return redact_url(name) if "://" in name else name


def _run_jobs(args: argparse.Namespace, jobs: list[list[str]], matrix: Matrix) -> int:
    """Run each job as ``simq conformance --columns ...`` in its own process, ``--jobs`` at a time; merge their cells."""
    from simq.clock import WallClock

    clock = WallClock()
    code = 0
    with tempfile.TemporaryDirectory() as tmp:
        pending = list(enumerate(jobs))
        running: list[tuple[int, subprocess.Popen[bytes], Path]] = []
        results: dict[int, dict[str, Any]] = {}
        while pending or running:
            while pending and len(running) < max(1, args.jobs):
                index, names = pending.pop(0)
                cells = Path(tmp) / f"job-{index}.json"
                cmd = [
                    sys.executable,
                    "-m",
                    "simq.conformance_cli",
                    "--columns",
                    ",".join(names),
                    "--cells",
                    str(cells),
                ]
                for url in args.transport:
                    cmd += ["--transport", url]
                if args.keyword:
                    cmd += ["-k", args.keyword]
                cmd += ["--timeout", str(args.timeout)] + (["-v"] if args.verbose else [])
                running.append((index, subprocess.Popen(cmd), cells))  # noqa: S603 - our own command line
            for entry in list(running):
                index, proc, cells = entry
                if proc.poll() is None:
                    continue
                running.remove(entry)
                if not cells.exists():
                    print(
                        f"conformance: job {jobs[index]} ended with code {proc.returncode} and no results",
                        file=sys.stderr,
                    )
                    code = code or 1
                    continue
                results[index] = json.loads(cells.read_text())
                if proc.returncode not in (0, 5):
                    code = code or proc.returncode
            clock.sleep(0.2)
        for index in sorted(results):
            matrix.merge(results[index])
    return code


def _run_pytest(args: argparse.Namespace, pytest: Any, names: list[str], matrix: Matrix) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        ini = Path(tmp) / "pytest.ini"
        ini.write_text("[pytest]\n")
        pytest_args = [
            str(suite_dir()),
            "-c",
            str(ini),
            "--rootdir",
            str(suite_dir().parent),
            "-p",
            "conformance.plugin",
            "-p",
            "no:cacheprovider",
            "--simq-backends",
            ",".join(names),
        ]
        import importlib.util

        if importlib.util.find_spec("pytest_timeout") is not None:  # a hung test fails instead of hanging the run
            pytest_args += ["--timeout", str(args.timeout)]
        if args.keyword:
            pytest_args += ["-k", args.keyword]
        pytest_args += ["-q"] if args.verbose else ["-qq", "--tb=no", "--no-summary", "--no-header"]
        return int(pytest.main(pytest_args, plugins=[matrix]))


if __name__ == "__main__":
    raise SystemExit(main())
