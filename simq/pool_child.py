"""A ``processes`` pool child's side: build the app once, run the jobs its parent sends, say how each went.

The parent (:class:`simq.pools.ProcessPool`) starts each child with the
``spawn`` method and this module's :func:`child_main`; everything the child
needs travels over its pipe as a :class:`ChildSpec`. The child answers each
job with its :class:`~simq.executor.Outcome` and, when the pool watches
memory (``worker_max_memory_per_child``), its resident memory after the job.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
from typing import TYPE_CHECKING, Any

import attrs

from simq.executor import Executor, Outcome
from simq.lifecycle import resident_kib
from simq.limits import TimeLimits
from simq.revoke import Terminated

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

__all__ = ["ChildSpec", "child_main"]

log = logging.getLogger("simq.pools")


@attrs.frozen
class ChildSpec:
    """What a pool child needs to build its own app: sent over its pipe, never on a command line."""

    app: str
    broker: str | None = None
    hostname: str = "simq@localhost"
    loglevel: int = logging.INFO
    parent: int = 0
    log_format: str = "[%(asctime)s: %(levelname)s/%(processName)s] %(message)s"
    report_memory: bool = False  # send its resident memory with each outcome (worker_max_memory_per_child)


# -- the child's side ------------------------------------------------------------------------------

_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> None:
    """Ask the kernel to SIGKILL this process when its parent dies (Linux); leave at once if it already did."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if parent and os.getppid() != parent:
        os._exit(1)


_in_task = False  # a pool child: True while a job runs, so a late SIGUSR1 never hits the job loop


def _terminate_task(_signum: int, _frame: Any) -> None:
    if _in_task:
        raise Terminated()


def child_main(conn: Connection, spec: ChildSpec) -> None:
    """A pool child: build the app once, then run the jobs the parent sends until told to stop."""
    _die_with_parent(spec.parent)
    # The parent decides when children stop: a terminal's Ctrl-C reaches the whole process
    # group, and a service manager may SIGTERM every process of the service; the parent's
    # warm shutdown lets the running task finish, then closes this child's pipe.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGUSR1, _terminate_task)  # the parent's revoke(terminate=True)
    logging.basicConfig(level=spec.loglevel, format=spec.log_format)
    from simq.clock import WallClock
    from simq.loading import load_app
    from simq.worker import Request

    try:
        app = load_app(spec.app)
        if spec.broker:
            app.conf.broker_url = spec.broker
        app.set_current()
        from simq import signals

        signals.worker_process_init.send(sender=None)
        # The soft limit is raised here; at the hard one the parent kills this process.
        executor = Executor(app, app.backend, WallClock(), spec.hostname, hard_limits=False)
    except Exception as exc:
        log.exception("pool child: cannot build the app %r", spec.app)
        with contextlib.suppress(EOFError, OSError):
            conn.send(("failed", f"{type(exc).__name__}: {exc}"))
        return
    try:
        conn.send(("ready", None))
    except (EOFError, OSError):
        return  # the parent is gone
    while True:
        try:
            if not conn.poll(0):
                executor.confirm_writes()  # going idle: nothing this child wrote stays unconfirmed
            job = conn.recv()
        except (EOFError, OSError):
            break  # the parent is gone
        if job is None:
            break
        kind, payload = job
        global _in_task
        try:
            _in_task = True
            if kind == "task":
                name, message, delivery, hostname, soft, hard = payload
                request = Request(message, delivery, app.tasks[name], hostname, limits=TimeLimits(soft, hard))
                outcome = executor.run_task(request)
            else:
                name, items = payload
                task = app.tasks[name]
                requests = [Request(message, delivery, task, hostname) for _, message, delivery, hostname in items]
                outcome = task.execute_batch(executor, requests)  # type: ignore[attr-defined]
        except Exception as exc:
            log.exception("pool child: cannot run a %s job", kind)
            outcome = Outcome(error=f"{type(exc).__name__}: {exc}", lost=True)
        except Terminated:  # arrived after the task's own handler: the job is ended all the same
            outcome = Outcome(error="terminated by revoke(terminate=True)", lost=True, terminated=True)
        finally:
            _in_task = False
        try:
            conn.send((outcome, resident_kib() if spec.report_memory else None))
        except (EOFError, OSError):
            break
    with contextlib.suppress(Exception):
        app.close()
