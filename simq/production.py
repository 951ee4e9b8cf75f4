"""``simq worker``: the production worker process, on the wall clock.

The same ``Worker`` class the simulator steps, looped here. Pools:

- ``solo``: one worker loop in this process (``-c`` only sizes its prefetch);
- ``threads``: ``-c`` worker loops in threads, each with its own broker connection;
- ``processes``: ``-c`` child processes, each a ``solo`` worker (``python -m simq.production``).

Every connection's prefetch is ``prefetch_multiplier`` (times ``-c`` for solo),
so the whole worker holds at most ``concurrency * prefetch_multiplier`` messages.

Signals: the first SIGTERM or SIGINT stops consuming, lets running tasks
finish, flushes batch buffers and gives held eta messages back to the broker;
a second one stops at once (the broker redelivers whatever was unacknowledged).
A lost broker connection is retried with exponential backoff (1 s doubling up
to ``--max-reconnect-delay``); the broker gives back what the lost connection held.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from types import FrameType
from typing import TYPE_CHECKING, Any

from simq.clock import WallClock
from simq.exceptions import BrokerUnavailable, ConfigurationError
from simq.transport import redact_url

if TYPE_CHECKING:
    from simq.app import App
    from simq.worker import Worker

__all__ = ["WorkerProcess", "load_app", "main", "parse_args"]

log = logging.getLogger("simq.production")

POOLS = ("solo", "threads", "processes")


def load_app(spec: str) -> App:
    """``module:attribute`` (or ``module``, which must hold ``app``) -> the App it names."""
    from simq.app import App

    module_name, _, attr = spec.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"cannot import {module_name!r} for -A {spec!r}: {exc}") from exc
    candidates = [attr] if attr else ["app", "simq_app"]
    for name in candidates:
        value: Any = module
        try:
            for part in name.split("."):
                value = getattr(value, part)
        except AttributeError:
            continue
        if isinstance(value, App):
            return value
        raise ConfigurationError(f"-A {spec!r} names {type(value).__name__} {name!r}, not a simq.App")
    raise ConfigurationError(f"module {module_name!r} has no App named {' or '.join(candidates)!r}; use -A module:attribute")


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="simq worker", description="Run a simq worker against the app's broker.")
    parser.add_argument("-A", "--app", required=True, help="the app, as module:attribute (e.g. proj.tasks:app)")
    parser.add_argument("-Q", "--queues", default=None, help="comma-separated queues to consume (default: all the app declares)")
    parser.add_argument("-c", "--concurrency", type=int, default=None, help="tasks run at once (default: worker_concurrency)")
    parser.add_argument("-P", "--pool", choices=POOLS, default=None, help="solo, threads or processes (default: solo for -c 1, else threads)")
    parser.add_argument("--prefetch-multiplier", type=int, default=None, help="messages held per concurrency slot (default: worker_prefetch_multiplier)")
    parser.add_argument("-l", "--loglevel", default="INFO", help="DEBUG, INFO, WARNING, ERROR")
    parser.add_argument("-n", "--hostname", default=None, help="worker name (default: simq@<host>)")
    parser.add_argument("-b", "--broker", default=None, help="broker URL overriding the app's broker_url")
    parser.add_argument("--max-reconnect-delay", type=float, default=30.0, help="longest wait between reconnect attempts, seconds")
    parser.add_argument("--poll-interval", type=float, default=1.0, help=argparse.SUPPRESS)
    args = parser.parse_args(list(argv))
    if args.concurrency is not None and args.concurrency < 1:
        parser.error(f"-c/--concurrency must be at least 1, got {args.concurrency}")
    if args.prefetch_multiplier is not None and args.prefetch_multiplier < 0:
        parser.error(f"--prefetch-multiplier must be 0 (unlimited) or more, got {args.prefetch_multiplier}")
    level = logging.getLevelName(str(args.loglevel).upper())
    if not isinstance(level, int):
        parser.error(f"--loglevel {args.loglevel!r} is not one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
    return args


class WorkerProcess:
    """One ``simq worker`` invocation: its worker loops, signals, and reconnects."""

    def __init__(
        self,
        app: App,
        *,
        queues: list[str] | None = None,
        concurrency: int = 1,
        pool: str = "solo",
        prefetch_multiplier: int | None = None,
        hostname: str | None = None,
        max_reconnect_delay: float = 30.0,
        poll_interval: float = 1.0,
    ) -> None:
        if pool not in POOLS:
            raise ConfigurationError(f"unknown pool {pool!r}; choose one of {', '.join(POOLS)}")
        self.app = app
        self.queues = queues
        self.concurrency = concurrency
        self.pool = pool
        self.prefetch_multiplier = prefetch_multiplier
        self.hostname = hostname or f"simq@{socket.gethostname()}"
        self.max_reconnect_delay = max_reconnect_delay
        self.poll_interval = poll_interval
        self.stopping = threading.Event()
        self.workers: list[Worker] = []
        self.reconnects = 0
        self._clock = WallClock()
        self._lock = threading.Lock()
        self._children: list[subprocess.Popen[bytes]] = []
        self._signals = 0

    # -- signals ---------------------------------------------------------------------------
    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self._signals += 1
        name = signal.Signals(signum).name
        for child in self._children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        if self._signals == 1:
            log.warning("%s: %s received, stopping gracefully (send it again to stop at once)", self.hostname, name)
            self.stopping.set()
            return
        log.warning("%s: second %s, stopping at once; the broker redelivers unacknowledged messages", self.hostname, name)
        logging.shutdown()
        # Leave without running another line of task or worker code: no late
        # ack can slip out. The OS closes the sockets; RabbitMQ requeues at
        # once, Redis once this connection's liveness key expires (consumer_ttl).
        os._exit(1)

    def request_stop(self) -> None:
        """Graceful stop from code (what the first signal does)."""
        self.stopping.set()

    # -- running ------------------------------------------------------------------------------
    def run(self) -> int:
        if self.pool == "processes" and self.concurrency > 1:
            return self._run_processes()
        loops = self.concurrency if self.pool == "threads" else 1
        per_loop = 1 if self.pool == "threads" else self.concurrency
        if loops == 1:
            self._loop(self.hostname, per_loop)
            return 0
        threads = [
            threading.Thread(target=self._loop, args=(f"{self.hostname}-{i + 1}", per_loop), name=f"simq-worker-{i + 1}", daemon=True)
            for i in range(loops)
        ]
        for thread in threads:
            thread.start()
        while any(t.is_alive() for t in threads):
            for thread in threads:
                thread.join(timeout=0.2)
        return 0

    def _make_worker(self, hostname: str, concurrency: int) -> Worker:
        return self.app.Worker(
            queues=self.queues,
            concurrency=concurrency,
            prefetch_multiplier=self.prefetch_multiplier,
            hostname=hostname,
        )

    def _loop(self, hostname: str, concurrency: int) -> None:
        """One worker loop that reconnects with backoff until asked to stop."""
        delay = 1.0
        while not self.stopping.is_set():
            worker: Worker | None = None
            try:
                worker = self._make_worker(hostname, concurrency)
                with self._lock:
                    self.workers.append(worker)
                worker.start()
                log.info("%s: consuming %s", hostname, ", ".join(worker._consuming))
                delay = 1.0
                worker.run(poll_interval=self.poll_interval, until=self.stopping.is_set)
                return
            except (BrokerUnavailable, ConnectionError, OSError) as exc:
                if worker is not None:
                    _quietly(worker.crash)
                    with self._lock:
                        if worker in self.workers:
                            self.workers.remove(worker)
                if self.stopping.is_set():
                    return
                self.reconnects += 1
                log.warning("%s: broker connection failed (%s); reconnecting in %.0f s", hostname, exc, delay)
                self.stopping.wait(delay)
                delay = min(delay * 2, self.max_reconnect_delay)
            except BaseException:
                if worker is not None:
                    _quietly(worker.crash)
                raise

    def _run_processes(self) -> int:
        """``-c`` solo children; signals are forwarded; a child that dies is started again."""
        base = [sys.executable, "-m", "simq.production", *self._child_args()]
        for i in range(self.concurrency):
            self._children.append(self._spawn(base, i))
        delay = 1.0
        while True:
            alive = False
            for i, child in enumerate(self._children):
                code = child.poll()
                if code is None:
                    alive = True
                elif not self.stopping.is_set():
                    log.warning("%s: child %d exited with %s; starting another in %.0f s", self.hostname, i + 1, code, delay)
                    self.stopping.wait(delay)
                    delay = min(delay * 2, self.max_reconnect_delay)
                    if not self.stopping.is_set():
                        self._children[i] = self._spawn(base, i)
                        alive = True
            if not alive:
                break
            self.stopping.wait(0.2)
        return max((c.returncode or 0 for c in self._children), default=0)

    def _spawn(self, base: list[str], index: int) -> subprocess.Popen[bytes]:
        # a session of its own: a terminal's Ctrl-C reaches the parent only, which forwards it once
        return subprocess.Popen([*base, "--hostname", f"{self.hostname}-{index + 1}"], start_new_session=True)  # noqa: S603

    def _child_args(self) -> list[str]:
        args = ["-A", self._app_spec, "--pool", "solo", "-c", "1", "--loglevel", logging.getLevelName(log.getEffectiveLevel())]
        if self.queues is not None:
            args += ["-Q", ",".join(self.queues)]
        if self.prefetch_multiplier is not None:
            args += ["--prefetch-multiplier", str(self.prefetch_multiplier)]
        if self._broker is not None:
            args += ["--broker", self._broker]
        args += ["--max-reconnect-delay", str(self.max_reconnect_delay)]
        return args

    _app_spec: str = ""
    _broker: str | None = None


def _quietly(fn: Callable[[], Any]) -> None:
    try:
        fn()
    except Exception:
        log.debug("cleanup failed", exc_info=True)


def main(argv: Sequence[str] | None = None) -> int:
    """``simq worker -A module:app ...``; returns the exit code."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=str(args.loglevel).upper(), format="[%(asctime)s: %(levelname)s/%(processName)s] %(message)s")
    try:
        app = load_app(args.app)
    except ConfigurationError as exc:
        print(f"simq worker: {exc}", file=sys.stderr)
        return 2
    if args.broker:
        app.conf.broker_url = args.broker
    concurrency = args.concurrency or int(app.conf.worker_concurrency)
    pool = args.pool or ("solo" if concurrency == 1 else "threads")
    queues = [q.strip() for q in args.queues.split(",") if q.strip()] if args.queues else None
    process = WorkerProcess(
        app,
        queues=queues,
        concurrency=concurrency,
        pool=pool,
        prefetch_multiplier=args.prefetch_multiplier,
        hostname=args.hostname,
        max_reconnect_delay=args.max_reconnect_delay,
        poll_interval=args.poll_interval,
    )
    process._app_spec = args.app
    process._broker = args.broker
    process.install_signal_handlers()
    log.info(
        "simq worker %s: broker %s, queues %s, pool %s, concurrency %d, prefetch multiplier %s",
        process.hostname,
        redact_url(app.conf.broker_url),
        ",".join(queues) if queues else "(all declared)",
        pool,
        concurrency,
        args.prefetch_multiplier if args.prefetch_multiplier is not None else app.conf.worker_prefetch_multiplier,
    )
    try:
        return process.run()
    except ConfigurationError as exc:
        print(f"simq worker: {exc}", file=sys.stderr)
        return 2
    except SystemExit as exc:
        return int(exc.code or 0)


if __name__ == "__main__":
    raise SystemExit(main())
