"""The command line: ``simq chaos --transport URL [--transport URL ...] [options]`` (also ``simq campaign --transport``)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import TextIO
from urllib.parse import urlsplit, urlunsplit

from simq.chaos import nemesis
from simq.chaos.runner import DEFAULT_WORKERS, Config, run_campaign
from simq.clock import WallClock

__all__ = ["configs", "main", "parse_args"]

_POOLS = ("solo", "threads", "processes")


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="simq chaos",
        description="A seeded workload on real simq worker processes, a seeded nemesis, and a ledger-based verdict.",
    )
    p.add_argument("--transport", action="append", required=True, metavar="URL", help="broker URL; repeat for several")
    p.add_argument(
        "--backend",
        default=None,
        metavar="URL",
        help="Redis result backend (default: the broker's Redis, next db; or redis://127.0.0.1:6379/1)",
    )
    p.add_argument(
        "--ledger", default=None, metavar="URL", help="Redis for the ledger (default: the backend's Redis, next db)"
    )
    p.add_argument("--seed", type=int, default=None, help="the plan's seed (default: drawn, and printed)")
    p.add_argument("--seconds", type=float, default=60.0, help="sends and faults stop after this long (default 60)")
    p.add_argument("--tasks", type=int, default=400, help="task calls in the workload (default 400)")
    p.add_argument(
        "--settle", type=float, default=90.0, help="longest wait for the work to finish afterwards (default 90)"
    )
    p.add_argument(
        "--workers", default=DEFAULT_WORKERS, help=f"worker slots, POOL:CONCURRENCY,... (default {DEFAULT_WORKERS})"
    )
    p.add_argument(
        "--nemesis",
        default="default",
        help=f"fault kinds: 'default' ({','.join(nemesis.DEFAULT_KINDS)}), 'all' (adds stop-app and stall, "
        f"which hit the whole broker: use a node of your own), 'none', or a list of {','.join(nemesis.FAULT_KINDS)}",
    )
    p.add_argument("--every", type=float, default=4.0, help="mean seconds between faults (default 4)")
    p.add_argument("--each", action="store_true", help="one fault of each kind, evenly spread, instead of --every")
    p.add_argument("--acks", choices=("both", "late", "early"), default="both")
    p.add_argument(
        "--rabbitmq-node",
        default=None,
        help="rabbitmqctl -n NODE for connection kills and stop_app (default: the default node)",
    )
    p.add_argument("--progress", type=float, default=5.0, help="seconds between progress lines (default 5)")
    p.add_argument(
        "--markdown", default=None, metavar="PATH", help="also write each broker's ledger table, as Markdown, to PATH"
    )
    p.add_argument(
        "--keep", action="store_true", help="keep the run directory (worker logs, plan) even when all is well"
    )
    args = p.parse_args(list(argv))
    try:
        args.worker_slots = _workers(args.workers)
        args.kinds = _kinds(args.nemesis)
    except ValueError as exc:
        p.error(str(exc))
    for url in args.transport:
        if urlsplit(url).scheme not in ("amqp", "pyamqp", "redis", "rediss"):
            p.error(f"--transport {url!r}: the campaign drives amqp:// and redis:// brokers")
    if args.seconds <= 2 or args.tasks < 1:
        p.error("--seconds must be more than 2 and --tasks at least 1")
    return args


def _workers(spec: str) -> tuple[tuple[str, int], ...]:
    out = []
    for part in spec.split(","):
        pool, _, count = part.strip().partition(":")
        if pool not in _POOLS or not count.isdigit() or int(count) < 1:
            raise ValueError(f"--workers {spec!r}: each slot is POOL:CONCURRENCY, POOL one of {', '.join(_POOLS)}")
        out.append((pool, int(count)))
    return tuple(out)


def _kinds(spec: str) -> tuple[str, ...]:
    if spec == "default":
        return nemesis.DEFAULT_KINDS
    if spec == "all":
        return nemesis.FAULT_KINDS
    if spec == "none":
        return ()
    kinds = tuple(k.strip() for k in spec.split(",") if k.strip())
    unknown = [k for k in kinds if k not in nemesis.FAULT_KINDS]
    if unknown:
        raise ValueError(
            f"--nemesis: unknown kind(s) {', '.join(unknown)}; choose from {', '.join(nemesis.FAULT_KINDS)}"
        )
    return kinds


def _next_db(url: str) -> str:
    parts = urlsplit(url)
    path = parts.path.strip("/")
    db = int(path) + 1 if path.isdigit() else 1
    return urlunsplit(parts._replace(path=f"/{db}", query="", fragment=""))


def configs(args: argparse.Namespace, seed: int) -> list[Config]:
    out = []
    for url in args.transport:
        redis_broker = urlsplit(url).scheme in ("redis", "rediss")
        backend = args.backend or (_next_db(url) if redis_broker else "redis://127.0.0.1:6379/1")
        ledger = args.ledger or _next_db(backend)
        kinds = tuple(k for k in args.kinds if k != "stop-app" or not redis_broker)
        acks = {"both": (True, False), "late": (True,), "early": (False,)}[args.acks]
        out.append(
            Config(
                transport=url, backend=backend, ledger=ledger, seed=seed, seconds=args.seconds, tasks=args.tasks,
                settle=args.settle, workers=args.worker_slots, kinds=kinds, every=args.every, each=args.each, acks=acks,
                rabbitmq_node=args.rabbitmq_node, progress=args.progress, keep=args.keep,
            )
        )  # fmt: skip
    return out


def main(argv: Sequence[str], out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run a campaign per ``--transport``; 0 when every guarantee held on every broker, 1 otherwise."""
    out = out or sys.stdout
    err = err or sys.stderr
    args = parse_args(argv)
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(3), "big")
    verdicts = []
    clock = WallClock()
    tables = []
    for config in configs(args, seed):
        began = clock.monotonic()
        verdict = run_campaign(config, out, err)
        verdicts.append((config, verdict))
        took = clock.monotonic() - began
        tables.append(
            f"`{config.replay_command()}` ({took:.0f} s wall): **{'ok' if verdict.ok else 'FAIL'}**\n\n{verdict.markdown()}\n"
        )
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write("\n".join(tables))
    if len(verdicts) > 1:
        out.write("\n== all brokers\n")
        for config, verdict in verdicts:
            out.write(f"   {'ok  ' if verdict.ok else 'FAIL'} {config.replay_command()}\n")
    return 0 if all(v.ok for _, v in verdicts) else 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main(sys.argv[1:]))
