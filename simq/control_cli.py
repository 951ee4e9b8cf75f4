"""The command line side of ``app.control``: ``simq inspect``, ``simq control``, ``simq status``,
``simq purge``, ``simq result`` and ``simq call`` (Celery's command names).

Every command takes the app as ``-A module:attribute``, as ``simq worker``
does, prints JSON (or one line) on standard output, and says what went wrong
in one line on standard error with exit code 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["main"]

#: ``simq control`` commands other than revoke, and how many arguments each takes.
CONTROL = {
    "rate_limit": 2,
    "time_limit": 3,
    "pool_grow": 1,
    "pool_shrink": 1,
    "add_consumer": 1,
    "cancel_consumer": 1,
    "shutdown": 0,
    "ping": 0,
}
INSPECT = ("ping", "active", "reserved", "scheduled", "revoked", "registered", "stats", "active_queues", "conf")


def _app_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-A", "--app", required=True, help="the app, as module:attribute (as for simq worker)")
    parser.add_argument(
        "--celery", action="store_true", help="import the app with simq's Celery layer on (docs/celery.md)"
    )


def _remote_arguments(parser: argparse.ArgumentParser) -> None:
    _app_arguments(parser)
    parser.add_argument("-d", "--destination", action="append", help="only this worker (repeatable)")
    parser.add_argument("-t", "--timeout", type=float, default=1.0, help="seconds to gather replies (default 1)")


def _print(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True, default=repr))


def _inspect(app: Any, args: argparse.Namespace) -> int:
    inspect = app.control.inspect(destination=args.destination, timeout=args.timeout)
    replies = getattr(inspect, args.what)()
    if not replies:
        print("no worker replied", file=sys.stderr)
        return 1
    _print(replies)
    return 0


def _control(app: Any, args: argparse.Namespace) -> int:
    control = app.control
    if args.what == "revoke":
        control.revoke(args.arguments, terminate=args.terminate, signal=args.signal)
        print(f"revoked {len(args.arguments)} task id(s){' (terminate)' if args.terminate else ''}")
        return 0
    wanted = CONTROL[args.what]
    if len(args.arguments) != wanted:
        raise ValueError(f"simq control {args.what} takes {wanted} argument(s), got {len(args.arguments)}")
    names = {
        "rate_limit": ("task_name", "rate_limit"),
        "add_consumer": ("queue",),
        "cancel_consumer": ("queue",),
        "pool_grow": ("n",),
        "pool_shrink": ("n",),
    }
    values: list[Any] = list(args.arguments)
    if args.what in ("pool_grow", "pool_shrink"):
        values = [int(values[0])]
    arguments: dict[str, Any] = (
        {} if args.what == "time_limit" else dict(zip(names.get(args.what, ()), values, strict=True))
    )
    if args.what == "time_limit":  # TASK SOFT HARD, seconds; 0 or none for no limit
        soft, hard = (None if v.lower() in ("0", "none") else float(v) for v in args.arguments[1:])
        arguments = {"task_name": args.arguments[0], "soft": soft, "hard": hard}
    replies = control.broadcast(args.what, arguments, args.destination, reply=True, timeout=args.timeout)
    if not replies:
        print("no worker replied", file=sys.stderr)
        return 1
    _print(replies)
    return 0


def _status(app: Any, args: argparse.Namespace) -> int:
    replies = app.control.ping(destination=args.destination, timeout=args.timeout)
    for reply in replies:
        for hostname, answer in reply.items():
            print(f"{hostname}: {'OK' if answer == {'ok': 'pong'} else answer}")
    print(f"{len(replies)} worker(s) online")
    return 0 if replies else 1


def _purge(app: Any, args: argparse.Namespace) -> int:
    names = args.queues or list(app.router.queues)
    total = 0
    with app.connection() as connection:
        for name in names:
            connection.declare_queue(app.router.queue(name))
            total += connection.purge(app.router.queue(name).name)
    print(f"purged {total} message(s) from {', '.join(names)}")
    return 0


def _result(app: Any, args: argparse.Namespace) -> int:
    meta = app.backend.get_meta(args.task_id)
    _print({"id": args.task_id, "state": meta.state, "result": _jsonable(meta.result)})
    return 0


def _call(app: Any, args: argparse.Namespace) -> int:
    positional = json.loads(args.args) if args.args else []
    keywords = json.loads(args.kwargs) if args.kwargs else {}
    if not isinstance(positional, list) or not isinstance(keywords, dict):
        raise ValueError("--args takes a JSON list and --kwargs a JSON object")
    options: dict[str, Any] = {}
    if args.countdown is not None:
        options["countdown"] = args.countdown
    if args.queue:
        options["queue"] = args.queue
    result = app.send_task(args.name, positional, keywords, **options)
    print(result.id)
    return 0


def _jsonable(value: Any) -> Any:
    if isinstance(value, BaseException):
        return {"exc_type": type(value).__name__, "exc_message": str(value)}
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)
    return value


def _parsers() -> tuple[argparse.ArgumentParser, dict[str, Callable[[Any, argparse.Namespace], int]]]:
    parser = argparse.ArgumentParser(prog="simq", description="Ask and act on the workers of an app.")
    commands = parser.add_subparsers(dest="command", required=True)
    inspect = commands.add_parser("inspect", help="ask the workers (replies gathered for --timeout)")
    inspect.add_argument("what", choices=INSPECT)
    _remote_arguments(inspect)
    control = commands.add_parser("control", help="act on the workers")
    control.add_argument("what", choices=("revoke", *CONTROL))
    control.add_argument(
        "arguments",
        nargs="*",
        help="revoke: IDs; rate_limit: TASK RATE; time_limit: TASK SOFT HARD; pool_grow/pool_shrink: N; "
        "add_consumer/cancel_consumer: QUEUE",
    )
    control.add_argument("--terminate", action="store_true", help="revoke: also end them if they are running")
    control.add_argument("--signal", default="SIGTERM", help="revoke --terminate: the signal (default SIGTERM)")
    _remote_arguments(control)
    status = commands.add_parser("status", help="which workers answer a ping")
    _remote_arguments(status)
    purge = commands.add_parser("purge", help="delete the messages waiting in the app's queues")
    _app_arguments(purge)
    purge.add_argument("-Q", "--queues", action="append", help="only this queue (repeatable)")
    result = commands.add_parser("result", help="a task's state and result")
    _app_arguments(result)
    result.add_argument("task_id")
    call = commands.add_parser("call", help="send a task by name; prints its id")
    _app_arguments(call)
    call.add_argument("name")
    call.add_argument("--args", help="positional arguments as a JSON list")
    call.add_argument("--kwargs", help="keyword arguments as a JSON object")
    call.add_argument("--countdown", type=float)
    call.add_argument("--queue")
    handlers: dict[str, Callable[[Any, argparse.Namespace], int]] = {
        "inspect": _inspect,
        "control": _control,
        "status": _status,
        "purge": _purge,
        "result": _result,
        "call": _call,
    }
    return parser, handlers


def main(argv: Sequence[str]) -> int:
    """``simq COMMAND ...`` for the commands above (``argv`` starts with the command's name)."""
    from simq.loading import CELERY_ENV, load_app

    parser, handlers = _parsers()
    args = parser.parse_args(list(argv))
    if args.celery:
        os.environ[CELERY_ENV] = "1"
    try:
        app = load_app(args.app)
        if args.command == "control" and args.what == "revoke" and not args.arguments:
            raise ValueError("simq control revoke takes one task id or more")
        return handlers[args.command](app, args)
    except Exception as exc:  # noqa: BLE001 - a command line says what went wrong, in one line
        print(f"simq {args.command}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
