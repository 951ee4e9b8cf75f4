"""``simq control``: the command line side of ``app.control``."""

from __future__ import annotations

import sys

__all__ = ["main"]


def main(argv: list[str]) -> int:
    """``simq control revoke ID [ID ...] -A module:app [--terminate] [--signal SIG]``."""
    import argparse

    from simq.loading import load_app

    parser = argparse.ArgumentParser(prog="simq control", description="Act on the workers of an app.")
    commands = parser.add_subparsers(dest="command", required=True)
    rv = commands.add_parser("revoke", help="revoke tasks by id on every worker of the app")
    rv.add_argument("ids", nargs="+", metavar="ID")
    rv.add_argument("-A", "--app", required=True, help="the app, as module:attribute (as for simq worker)")
    rv.add_argument("--terminate", action="store_true", help="also end them if they are running")
    rv.add_argument("--signal", default="SIGTERM", help="with --terminate (default SIGTERM)")
    args = parser.parse_args(argv)
    try:
        app = load_app(args.app)
        app.control.revoke(args.ids, terminate=args.terminate, signal=args.signal)
    except Exception as exc:  # noqa: BLE001 - a command line says what went wrong, in one line
        print(f"simq control revoke: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    print(f"revoked {len(args.ids)} task id(s){' (terminate)' if args.terminate else ''}")
    return 0
