"""``app.control``: acting on the workers of an app (Celery's names).

Today: ``revoke``. Broadcast commands with replies (``inspect()``,
``rate_limit``, ``shutdown``...) are not here yet; asking for one raises
``AttributeError`` rather than doing nothing.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from simq import revoke as revoke_module
from simq.exceptions import ConfigurationError

if TYPE_CHECKING:
    from simq.app import App

__all__ = ["Control"]


class Control:
    """What ``app.control`` is."""

    def __init__(self, app: App) -> None:
        self.app = app

    def revoke(
        self,
        task_id: str | Iterable[str],
        destination: Any = None,
        terminate: bool = False,
        signal: str | int = "SIGTERM",
        **kwargs: Any,
    ) -> None:
        """Revoke one task id or several on every worker (see :mod:`simq.revoke`)."""
        if destination is not None:
            raise ConfigurationError(
                "revoke(destination=...) is not supported: a revocation reaches every worker of the app "
                "(they read one log), so it cannot be aimed at some of them"
            )
        if kwargs:
            raise ConfigurationError(f"revoke() got unknown option {sorted(kwargs)[0]!r}")
        revoke_module.revoke(self.app, task_id, terminate=terminate, signal=signal)


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
