"""``simq worker``: the production worker process, on the wall clock.

The same ``Worker`` class the simulator steps, looped here: one Worker per
process, with one broker connection and one prefetch window of
``concurrency * prefetch_multiplier`` messages (eta messages waiting for their
time do not count). Its pool runs the due requests (see ``simq.pools``):

- ``solo``: inline, in the worker's own thread (``-c`` only sizes the prefetch);
- ``threads``: ``-c`` threads of this process;
- ``processes``: ``-c`` child processes, each importing the app once.

Signals: the first SIGTERM or SIGINT stops consuming, lets running tasks
finish (for at most ``--soft-shutdown-timeout`` seconds when it is set: then
what still runs goes back to the broker, ``simq.lifecycle``), flushes batch
buffers and gives held eta messages back to the broker;
a second one stops at once, saying which running tasks go back to the broker
(late acks) and which are lost (early acks). A lost broker connection is
retried with exponential backoff (1 s doubling up to ``--max-reconnect-delay``);
the broker gives back what the lost connection held. Refused credentials stop
the worker with exit code 3: retrying would not mend them.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Sequence
from types import FrameType
from typing import TYPE_CHECKING, Any

from simq.clock import WallClock
from simq.exceptions import AccessRefused, BrokerUnavailable, ConfigurationError
from simq.lifecycle import Lifecycle, check_count, check_seconds
from simq.loading import CELERY_ENV, load_app
from simq.pools import ChildSpec, Pool, ProcessPool, ThreadPool
from simq.transport import redact_url

if TYPE_CHECKING:
    from simq.app import App
    from simq.worker import Worker

__all__ = ["WorkerProcess", "load_app", "main", "parse_args"]

log = logging.getLogger("simq.production")

POOLS = ("solo", "threads", "processes")


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="simq worker", description="Run a simq worker against the app's broker.")
    parser.add_argument("-A", "--app", required=True, help="the app, as module:attribute (e.g. proj.tasks:app)")
    parser.add_argument(
        "--celery",
        action="store_true",
        help="import the app with simq's Celery layer on (a project written against `celery`; docs/celery.md)",
    )
    parser.add_argument(
        "-Q", "--queues", default=None, help="comma-separated queues to consume (default: all the app declares)"
    )
    parser.add_argument(
        "-c", "--concurrency", type=int, default=None, help="tasks run at once (default: worker_concurrency)"
    )
    parser.add_argument(
        "-P",
        "--pool",
        choices=POOLS,
        default=None,
        help="solo, threads or processes (default: solo for -c 1, else threads)",
    )
    parser.add_argument(
        "--prefetch-multiplier",
        type=int,
        default=None,
        help="messages held per concurrency slot (default: worker_prefetch_multiplier)",
    )
    parser.add_argument("-l", "--loglevel", default="INFO", help="DEBUG, INFO, WARNING, ERROR")
    parser.add_argument("-n", "--hostname", default=None, help="worker name (default: simq@<host>)")
    parser.add_argument("-b", "--broker", default=None, help="broker URL overriding the app's broker_url")
    parser.add_argument(
        "--max-reconnect-delay", type=float, default=30.0, help="longest wait between reconnect attempts, seconds"
    )
    parser.add_argument(
        "--max-tasks-per-child",
        type=int,
        default=None,
        help="processes pool: replace a child after it ran this many tasks (default: worker_max_tasks_per_child; 0: never)",
    )
    parser.add_argument(
        "--max-memory-per-child",
        type=int,
        default=None,
        metavar="KIB",
        help="processes pool: replace a child holding more than this many KiB after a task "
        "(default: worker_max_memory_per_child; 0: never)",
    )
    parser.add_argument(
        "--soft-shutdown-timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="on a warm shutdown, give running tasks this long, then give them back to the broker "
        "(default: worker_soft_shutdown_timeout; 0: wait for them)",
    )
    parser.add_argument("--poll-interval", type=float, default=1.0, help=argparse.SUPPRESS)
    args = parser.parse_args(list(argv))
    try:
        check_count(args.max_tasks_per_child, "--max-tasks-per-child")
        check_count(args.max_memory_per_child, "--max-memory-per-child")
        check_seconds(args.soft_shutdown_timeout, "--soft-shutdown-timeout")
    except ConfigurationError as exc:
        parser.error(str(exc))
    if args.concurrency is not None and args.concurrency < 1:
        parser.error(f"-c/--concurrency must be at least 1, got {args.concurrency}")
    if args.prefetch_multiplier is not None and args.prefetch_multiplier < 0:
        parser.error(f"--prefetch-multiplier must be 0 (unlimited) or more, got {args.prefetch_multiplier}")
    level = logging.getLevelName(str(args.loglevel).upper())
    if not isinstance(level, int):
        parser.error(f"--loglevel {args.loglevel!r} is not one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
    return args


class WorkerProcess:
    """One ``simq worker`` invocation: one Worker, its pool, signals, and reconnects.

    What every pool slot shares (the result backend, the current app, the
    producer pool, batch buffers, held eta messages) exists once in this
    process, made before the pool starts; a reconnect makes a new Worker (a
    new broker connection) on the same pool.
    """

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
        app_spec: str | None = None,
        broker: str | None = None,
        max_tasks_per_child: int | None = None,
        max_memory_per_child: int | None = None,
        soft_shutdown_timeout: float | None = None,
    ) -> None:
        if pool not in POOLS:
            raise ConfigurationError(f"unknown pool {pool!r}; choose one of {', '.join(POOLS)}")
        if pool == "processes" and not app_spec:
            raise ConfigurationError(
                "the processes pool imports the app in each child: give its spec (simq worker -A module:app, "
                "or WorkerProcess(app_spec='module:app'))"
            )
        #: The app's worker_max_*_per_child and worker_soft_shutdown_timeout, the options over them (simq.lifecycle).
        self.lifecycle = Lifecycle.from_conf(
            app.conf,
            max_tasks_per_child=max_tasks_per_child,
            max_memory_per_child=max_memory_per_child,
            soft_shutdown_timeout=soft_shutdown_timeout,
        )
        self.lifecycle.check_pool(pool)
        self.app = app
        self.queues = queues
        self.concurrency = concurrency
        self.pool = pool
        self.prefetch_multiplier = prefetch_multiplier
        self.hostname = hostname or f"simq@{socket.gethostname()}"
        self.max_reconnect_delay = max_reconnect_delay
        self.poll_interval = poll_interval
        self.app_spec = app_spec
        self.broker = broker
        self.stopping = threading.Event()
        self.workers: list[Worker] = []
        self.reconnects = 0
        self.executor_pool: Pool | None = None
        self._clock = WallClock()
        self._signals = 0

    @property
    def worker(self) -> Worker | None:
        """The Worker consuming now (a new one after each reconnect)."""
        return self.workers[-1] if self.workers else None

    # -- signals ---------------------------------------------------------------------------
    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self._signals += 1
        name = signal.Signals(signum).name
        if self._signals == 1:
            soft = self.lifecycle.soft_shutdown_timeout
            log.warning(
                "%s: %s received, stopping gracefully: running tasks %s, batches flush, held eta "
                "messages go back to the broker (send it again to stop at once)",
                self.hostname,
                name,
                f"have {soft:g} s to finish (worker_soft_shutdown_timeout), then go back to the broker"
                if soft
                else "finish",
            )
            self.request_stop()
            return
        log.warning("%s: second %s, stopping at once. %s", self.hostname, name, self._what_is_lost())
        logging.shutdown()
        # Leave without running another line of task or worker code: no late
        # ack can slip out. The OS closes the sockets (RabbitMQ requeues at
        # once, Redis once this connection's liveness key expires) and the pool's
        # children die with this process.
        os._exit(1)

    def _what_is_lost(self) -> str:
        """What stopping now does to the tasks that are running, said plainly."""
        running = self._running()
        if not running:
            return "No task was running; unacknowledged messages go back to the broker."
        early = [r for r in running if r.acked]
        late = [r for r in running if not r.acked]
        parts = []
        if late:
            parts.append(
                f"{len(late)} running late-ack task(s) go back to the broker and run again: "
                + ", ".join(f"{r.name}[{r.id}]" for r in late)
            )
        if early:
            parts.append(
                f"{len(early)} running task(s) were acknowledged when they started and are LOST "
                "(use acks_late=True for tasks that must survive this): "
                + ", ".join(f"{r.name}[{r.id}]" for r in early)
            )
        return "; ".join(parts) + "."

    def _running(self) -> list[Any]:
        if self.executor_pool is not None:
            return self.executor_pool.active()
        current = self.app.current_request()  # solo: the task this (main) thread is running
        return [current] if current is not None else []

    def request_stop(self) -> None:
        """Graceful stop from code (what the first signal does), with the soft shutdown deadline if one is set."""
        worker = self.worker
        soft = self.lifecycle.soft_shutdown_timeout
        if soft and worker is not None and worker.stop_deadline is None:
            worker.stop_deadline = worker.clock.now + soft
        self.stopping.set()

    # -- running ------------------------------------------------------------------------------
    def run(self) -> int:
        app = self.app
        app.set_current()
        if not self._connect_backend():  # one result backend for the whole process, made before any slot runs
            return 0 if self.stopping.is_set() else 3
        self.executor_pool = self._make_pool()
        try:
            return self._loop()
        finally:
            if self.executor_pool is not None:
                self.executor_pool.close(wait=True)

    def _connect_backend(self) -> bool:
        """Make the result backend, retrying with backoff while it is unreachable; False if told to stop (or refused)."""
        delay = 1.0
        while not self.stopping.is_set():
            try:
                self.app.backend  # noqa: B018 - made here, once, before the pool starts
                return True
            except AccessRefused as exc:
                log.error("%s: %s; stopping (fix the credentials and start the worker again)", self.hostname, exc)
                return False
            except (BrokerUnavailable, ConnectionError, OSError) as exc:
                log.warning("%s: result backend unreachable (%s); trying again in %.0f s", self.hostname, exc, delay)
                self.stopping.wait(delay)
                delay = min(delay * 2, self.max_reconnect_delay)
        return False

    def _make_pool(self) -> Pool | None:
        if self.pool == "solo":
            return None
        if self.pool == "threads":
            from simq.executor import Executor

            return ThreadPool(Executor(self.app, self.app.backend, WallClock(), self.hostname), self.concurrency)
        spec = ChildSpec(
            app=str(self.app_spec),
            broker=self.broker,
            hostname=self.hostname,
            loglevel=logging.getLogger().getEffectiveLevel(),
            parent=os.getpid(),
        )
        return ProcessPool(
            spec,
            self.concurrency,
            max_tasks_per_child=self.lifecycle.max_tasks_per_child,
            max_memory_per_child=self.lifecycle.max_memory_per_child,
        )

    def _make_worker(self) -> Worker:
        return self.app.Worker(
            queues=self.queues,
            concurrency=self.concurrency,
            prefetch_multiplier=self.prefetch_multiplier,
            hostname=self.hostname,
            pool=self.executor_pool,
        )

    def _loop(self) -> int:
        """The worker loop, reconnecting with backoff until asked to stop; the exit code."""
        delay = 1.0
        while not self.stopping.is_set():
            worker: Worker | None = None
            try:
                worker = self._make_worker()
                self.workers.append(worker)
                worker.start()
                log.info("%s: ready, consuming %s", self.hostname, ", ".join(worker.consuming))
                delay = 1.0
                worker.run(poll_interval=self.poll_interval, until=self.stopping.is_set)
                self._log_totals()
                return 0
            except AccessRefused as exc:
                if worker is not None:
                    _quietly(worker.crash)
                log.error("%s: %s; stopping (fix the credentials and start the worker again)", self.hostname, exc)
                return 3
            except (BrokerUnavailable, ConnectionError, OSError) as exc:
                if worker is not None:
                    _quietly(worker.crash)
                if self.stopping.is_set():
                    return 0
                self.reconnects += 1
                log.warning("%s: broker connection failed (%s); reconnecting in %.0f s", self.hostname, exc, delay)
                self.stopping.wait(delay)
                delay = min(delay * 2, self.max_reconnect_delay)
            except BaseException:
                if worker is not None:
                    _quietly(worker.crash)
                raise
        return 0

    def _log_totals(self) -> None:
        """One line with the counters of every connection this process had, as it stops."""
        stats = [w.stats for w in self.workers]
        rejected: dict[str, int] = {}
        for one in stats:
            for reason, count in one.rejected.items():
                rejected[reason] = rejected.get(reason, 0) + count
        log.info(
            "%s: stopped: %d received, %d succeeded, %d failed, %d retried, %d ignored, %d deferred, "
            "%d reconnects; rejected: %s",
            self.hostname,
            sum(s.received for s in stats),
            sum(s.succeeded for s in stats),
            sum(s.failed for s in stats),
            sum(s.retried for s in stats),
            sum(s.ignored for s in stats),
            sum(s.deferred for s in stats),
            self.reconnects,
            ", ".join(f"{reason} {rejected[reason]}" for reason in sorted(rejected)) or "none",
        )


def _quietly(fn: Callable[[], Any]) -> None:
    try:
        fn()
    except Exception:
        log.debug("cleanup failed", exc_info=True)


def main(argv: Sequence[str] | None = None) -> int:
    """``simq worker -A module:app ...``; returns the exit code."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(
        level=str(args.loglevel).upper(), format="[%(asctime)s: %(levelname)s/%(processName)s] %(message)s"
    )
    if args.celery:
        os.environ[CELERY_ENV] = "1"  # for this process and the processes pool's children
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
    try:
        process = WorkerProcess(
            app,
            queues=queues,
            concurrency=concurrency,
            pool=pool,
            prefetch_multiplier=args.prefetch_multiplier,
            hostname=args.hostname,
            max_reconnect_delay=args.max_reconnect_delay,
            poll_interval=args.poll_interval,
            app_spec=args.app,
            broker=args.broker,
            max_tasks_per_child=args.max_tasks_per_child,
            max_memory_per_child=args.max_memory_per_child,
            soft_shutdown_timeout=args.soft_shutdown_timeout,
        )
    except ConfigurationError as exc:
        print(f"simq worker: {exc}", file=sys.stderr)
        return 2
    process.install_signal_handlers()
    log.info(
        "simq worker %s: broker %s, results %s, queues %s, pool %s, concurrency %d, prefetch multiplier %s",
        process.hostname,
        redact_url(app.conf.broker_url),
        redact_url(str(app.conf.result_backend)),
        ",".join(queues) if queues else "(all declared)",
        pool,
        concurrency,
        args.prefetch_multiplier if args.prefetch_multiplier is not None else app.conf.worker_prefetch_multiplier,
    )
    life = process.lifecycle
    if life != Lifecycle():
        log.info(
            "lifecycle: max tasks per child %s, max memory per child %s, soft shutdown timeout %s",
            life.max_tasks_per_child or "-",
            f"{life.max_memory_per_child} KiB" if life.max_memory_per_child else "-",
            f"{life.soft_shutdown_timeout:g} s" if life.soft_shutdown_timeout else "- (wait for running tasks)",
        )
    log.info("tasks: %s", ", ".join(sorted(name for name in app.tasks if not name.startswith("simq."))) or "(none)")
    try:
        return process.run()
    except ConfigurationError as exc:
        print(f"simq worker: {exc}", file=sys.stderr)
        return 2
    except SystemExit as exc:
        return int(exc.code or 0)


if __name__ == "__main__":
    raise SystemExit(main())
