"""What a campaign leaves behind: the evidence on disk, the report on screen, and a clean broker."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, TextIO

import attrs

from simq.chaos import checker, nemesis, procs
from simq.chaos.ledger import Ledger
from simq.transport import redact_url

__all__ = ["cleanup", "report", "save"]


def save(run_dir: Path, obs: checker.Observed, nem: nemesis.Nemesis) -> None:
    """The evidence, for a person reading a failure: the ledger, the faults as run, the worker processes."""
    with open(run_dir / "ledger.jsonl", "w") as f:
        for e in obs.events:
            f.write(json.dumps(attrs.asdict(e)) + "\n")
    with open(run_dir / "faults.txt", "w") as f:
        for r in nem.records:
            f.write(f"{r.at:.3f} {'done' if r.done else 'skipped'} {r.fault.line()} :: {r.detail}\n")
    with open(run_dir / "workers.txt", "w") as f:
        for w in obs.workers:
            f.write(f"{w.name} pool slot {w.slot} started {w.started:.3f} ended {w.ended} exit {w.exit_code} "
                    f"killed_at {w.killed_at} signals {w.signals}\n")  # fmt: skip
        f.write(f"orphans {list(obs.orphans)}\nsent {dict(obs.sent)}\n")


def report(out: TextIO, transport: str, seed: int, replay: str, verdict: checker.Verdict, sup: procs.Supervisor,
           run_dir: Path, took: float) -> None:  # fmt: skip
    """The ledger table, every anomaly (forbidden first; all of them in ``anomalies.txt``), the crashed workers' logs."""
    out.write(f"\n== ledger on {redact_url(transport)}, seed {seed} ({took:.0f} s wall)\n")
    out.write(verdict.table() + "\n")
    out.write(f"   {verdict.kinds_line()}\n")
    forbidden = [a for a in verdict.anomalies if a.forbidden]
    allowed = [a for a in verdict.anomalies if not a.forbidden]
    lines = [a.line() for a in forbidden] + [a.line() for a in allowed]
    (run_dir / "anomalies.txt").write_text("\n".join(lines) + "\n")
    for line in lines[:25]:
        out.write(f"  {line}\n")
    if len(lines) > 25:
        out.write(f"  ... {len(lines) - 25} more in {run_dir / 'anomalies.txt'}\n")
    for run in sup.unexpected[:3]:
        out.write(f"  {run.name} exited by itself ({run.exit_code}); its log ends:\n")
        out.write("".join(f"    | {line}\n" for line in procs.tail(run.log_path).splitlines()))
    if len(sup.unexpected) > 3:
        out.write(
            f"  ... and {len(sup.unexpected) - 3} more worker processes exited by themselves (logs in {run_dir})\n"
        )
    out.write(f"   verdict: {'ok' if verdict.ok else 'FAIL'}; replay: {replay}\n")
    out.flush()


def cleanup(app: Any, ledger: Ledger, nem: nemesis.Nemesis, *, keep: bool, run_dir: Path, out: TextIO) -> None:
    for closer in (nem.poison.close, nem.close, ledger.delete, ledger.close):
        try:
            closer()
        except Exception as exc:  # noqa: BLE001 - cleanup is best effort; say what failed
            out.write(f"   cleanup: {type(exc).__name__}: {exc}\n")
    try:
        conn = app.connection(connect_timeout=5)
        try:
            if hasattr(conn, "delete_namespace"):
                conn.delete_namespace()
            else:
                for name in list(app.router.queues):
                    conn.delete_queue(name)
        finally:
            conn.close()
        if hasattr(app.backend, "delete_namespace"):
            app.backend.delete_namespace()
    except Exception as exc:  # noqa: BLE001
        out.write(f"   cleanup of the run's queues and results failed: {type(exc).__name__}: {exc}\n")
    if keep:
        out.write(f"   worker logs, plan and anomalies kept in {run_dir}\n")
    else:
        shutil.rmtree(run_dir, ignore_errors=True)
