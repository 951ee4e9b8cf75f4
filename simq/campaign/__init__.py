"""Fault campaigns: many seeds, random fault plans, a set of workloads, and an oracle for each run.

``run_case(seed, plan, workload, acks_late=...)`` runs one workload in a
simulation with faults and returns an ``Outcome``: what was sent, run, lost,
duplicated, and which losses the trace accounts for. ``replay`` is the same
call, named for what you use it for. ``campaign(seeds)`` runs many cases,
each drawn from its seed (workload, plan, ack mode), so ``simq replay SEED``
rebuilds a case from the seed alone.

The oracle: with late acks no task the broker accepted is lost (except
messages of a non-durable queue at a broker restart, as on RabbitMQ); with
early acks every lost task is one the trace shows was acknowledged and then
hit by a crash before its result was stored (or lost at a broker restart),
and nothing else.

``main(argv)`` is the ``simq campaign`` / ``simq replay`` command line.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import TextIO

import attrs

from simq.campaign.fuzz import fuzz_bad_inputs
from simq.campaign.oracle import CampaignSummary, Outcome, campaign, case_for_seed, replay, run_case
from simq.campaign.workloads import WORKLOADS, Workload
from simq.memory.faults import KINDS

__all__ = [
    "WORKLOADS",
    "CampaignSummary",
    "Outcome",
    "Workload",
    "campaign",
    "case_for_seed",
    "fuzz_bad_inputs",
    "main",
    "replay",
    "run_case",
]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="simq", description="simq fault campaigns and replays")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("campaign", help="run many seeds with random fault plans and report")
    run.add_argument("--seeds", type=int, default=100, help="how many seeds (default 100)")
    run.add_argument("--start", type=int, default=0, help="first seed (default 0)")
    run.add_argument("--rate", type=float, default=None, help="fix the fault rate instead of drawing it per seed")
    run.add_argument(
        "--kinds", default=None, help=f"comma-separated fault kinds (default: drawn); of {','.join(KINDS)}"
    )
    run.add_argument(
        "--workloads", default=None, help=f"comma-separated workloads (default all: {','.join(WORKLOADS)})"
    )
    run.add_argument("--acks", choices=("late", "early", "both"), default="both")
    run.add_argument("--bad-inputs", type=int, default=0, help="also feed this many mutated messages to a worker")
    run.add_argument("--quiet", action="store_true", help="no progress line")
    again = sub.add_parser("replay", help="re-run one seed exactly and print its outcome and trace")
    again.add_argument("seed", type=int)
    again.add_argument("--workload", default=None, help="default: what the campaign drew for this seed")
    again.add_argument("--rate", type=float, default=None)
    again.add_argument("--kinds", default=None)
    again.add_argument("--max-faults", type=int, default=None)
    again.add_argument("--acks", choices=("late", "early"), default=None)
    again.add_argument("--trace", action="store_true", help="print the full event trace")
    return parser


def _acks(value: str) -> tuple[bool, ...]:
    return {"late": (True,), "early": (False,), "both": (True, False)}[value]


def _split(value: str | None) -> list[str] | None:
    return [part.strip() for part in value.split(",") if part.strip()] if value else None


def _check_names(names: list[str] | None, known: Sequence[str], what: str) -> None:
    for name in names or ():
        if name not in known:
            raise SystemExit(f"simq: unknown {what} {name!r}; choose from {', '.join(known)}")


def main(argv: list[str], out: TextIO | None = None, err: TextIO | None = None) -> int:
    """``simq campaign ...`` and ``simq replay SEED ...``; returns the exit status."""
    out = out or sys.stdout
    err = err or sys.stderr
    if argv[:1] == ["campaign"] and any(a == "--transport" or a.startswith("--transport=") for a in argv):
        # on real brokers: the chaos campaign (simq.chaos), same words, real worker processes
        from simq.chaos.command import main as chaos_main

        return chaos_main(argv[1:], out, err)
    simq_log = logging.getLogger("simq")
    if not simq_log.handlers:
        # Bad input is logged once per message by design; a campaign counts it instead of printing it.
        simq_log.addHandler(logging.NullHandler())
    args = _parser().parse_args(argv)
    kinds = _split(args.kinds)
    _check_names(kinds, KINDS, "fault kind")
    if args.command == "campaign":
        workloads = _split(args.workloads)
        _check_names(workloads, list(WORKLOADS), "workload")
        live = not args.quiet
        tty = live and err.isatty()
        step = max(1, args.seeds // 20)

        def progress(done: int, total: int, s: CampaignSummary) -> None:
            if not live or (not tty and done % step and done != total):
                return
            line = (
                f"{done}/{total} seeds  tasks run={s.executions} faults={sum(s.faults.values())} "
                f"lost(late)={s.lost_late} lost(early)={s.lost_early} unexplained={s.unexplained} dup={s.duplicated}"
            )
            err.write(("\r" + line) if tty else line + "\n")
            if tty and done == total:
                err.write("\n")
            err.flush()

        summary = campaign(
            args.seeds,
            start=args.start,
            rate=args.rate,
            kinds=kinds,
            workloads=workloads,
            acks=_acks(args.acks),
            progress=progress,
        )
        if args.bad_inputs:
            tried, _, crashes = fuzz_bad_inputs(args.start, args.bad_inputs)
            summary.bad_inputs, summary.bad_input_crashes = tried, crashes
        out.write(summary.report() + "\n")
        return 1 if summary.unexplained or summary.bad_input_crashes else 0
    plan, workload, acks_late = case_for_seed(args.seed, rate=args.rate, kinds=kinds)
    if args.max_faults is not None:
        plan = attrs.evolve(plan, max_faults=args.max_faults)
    if args.workload is not None:
        _check_names([args.workload], list(WORKLOADS), "workload")
        workload = args.workload
    if args.acks is not None:
        acks_late = args.acks == "late"
    outcome = replay(args.seed, plan, workload, acks_late=acks_late)
    out.write(outcome.report() + "\n")
    for line in outcome.fault_lines:
        out.write(f"  fault {line}\n")
    if args.trace:
        out.write(outcome.trace + "\n")
    return 0 if outcome.ok else 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main(sys.argv[1:]))
