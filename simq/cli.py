"""The ``simq`` command: demo, worker, conformance, campaign, replay."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

__all__ = ["main"]

_DELEGATED = {
    "worker": ("simq.production", "run a production worker against a real broker"),
    "conformance": ("simq.conformance_cli", "run the conformance suite against a transport URL"),
    "campaign": ("simq.campaign", "run many seeds with random fault plans"),
    "replay": ("simq.campaign", "replay one seed of a campaign exactly"),
    "inspect": ("simq.control_cli", "ask an app's workers: simq inspect ping|active|stats|... -A module:app"),
    "control": ("simq.control_cli", "act on them: simq control revoke|rate_limit|shutdown|... -A module:app"),
    "status": ("simq.control_cli", "list the workers that answer a ping"),
    "purge": ("simq.control_cli", "delete the messages waiting in an app's queues"),
    "result": ("simq.control_cli", "show a task's state and result"),
    "call": ("simq.control_cli", "send a task by name"),
    "chaos": (
        "simq.chaos.command",
        "run a seeded workload and nemesis on real workers and brokers, judged by a ledger",
    ),
}


def _demo(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="simq demo", description="Run the executing-tasks examples in the simulator.")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(list(argv))
    from freezegun.api import real_perf_counter

    from simq.demo import run_demo

    began = real_perf_counter()
    run_demo(seed=args.seed, workers=args.workers)
    print(f"real time for the whole run: {(real_perf_counter() - began) * 1000:.1f} ms")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {"demo": "run the seed examples in the simulator and print a timeline"}
    commands.update({name: help_ for name, (_, help_) in _DELEGATED.items()})
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: simq COMMAND [options]\n\ncommands:")
        for name, help_ in commands.items():
            print(f"  {name:<12} {help_}")
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "demo":
        return _demo(rest)
    if command in _DELEGATED:
        module_name = _DELEGATED[command][0]
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            print(f"simq {command}: not available in this installation ({exc})", file=sys.stderr)
            return 2
        if module_name in ("simq.campaign", "simq.control_cli"):
            return int(module.main([command, *rest]))
        return int(module.main(rest))
    print(f"simq: unknown command {command!r}; commands: {', '.join(commands)}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
