"""``simq conformance --transport URL``: run the conformance suite against a broker and print the matrix.

Each row is one behaviour (a conformance test, with its own parameters); each
column a backend: ``simulated`` and ``eager`` (the reference) and the
transport under test. A cell is ``pass``, ``fail``, ``emulated`` (passed
through a capability the transport declares as emulated), ``unsupported``
(the transport declares the capability absent) or ``n/a`` (the test does not
apply there, e.g. it needs virtual time). The exit status is non-zero when any
cell is ``fail``.
"""

from __future__ import annotations

import argparse
import os
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
        "--transport", required=True, action="append", metavar="URL", help="broker URL of the transport under test (repeatable)"
    )
    parser.add_argument("--backend", default=None, metavar="URL", help="result backend URL (default: memory://, in-process)")
    parser.add_argument("--no-reference", action="store_true", help="skip the simulated and eager columns")
    parser.add_argument("-k", dest="keyword", default=None, help="only behaviours matching this pytest -k expression")
    parser.add_argument("--output", default=None, metavar="FILE", help="also write the matrix as Markdown to FILE")
    parser.add_argument("-v", "--verbose", action="store_true", help="show pytest's own output")
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


def _run(args: argparse.Namespace, pytest: Any) -> int:
    matrix = Matrix()
    backends = [] if args.no_reference else list(REFERENCE)
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
            ",".join(backends) or args.transport[0],
        ]
        for url in args.transport:
            pytest_args += ["--simq-transport", url]
        if args.keyword:
            pytest_args += ["-k", args.keyword]
        pytest_args += ["-q"] if args.verbose else ["-qq", "--tb=no", "--no-summary", "--no-header"]
        code = pytest.main(pytest_args, plugins=[matrix])
    titles = {url: redact_url(url) for url in args.transport}
    table = matrix.markdown(titles)
    print(table)
    for line in matrix.failures():
        print(f"FAIL {line}")
    if args.output:
        Path(args.output).write_text(table)
    if matrix.failed or code not in (0, 5):
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
