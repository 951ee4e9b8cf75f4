"""A worker's life cycle: replacing pool children, and how long a warm shutdown waits.

Celery's names and meanings:

- ``worker_max_tasks_per_child``: a ``processes`` pool child that has run
  that many jobs exits cleanly after the last one and the pool starts a fresh
  one (ready before it is handed a job).
- ``worker_max_memory_per_child`` (KiB): a child whose resident memory is over
  that after a job is replaced the same way; the job that pushed it over
  finishes normally.
- ``worker_soft_shutdown_timeout`` (seconds, 0 = off): on a warm shutdown,
  running tasks get that long to finish; then what still runs is given back
  to the broker (late-ack tasks) or named in the log as lost (early-ack
  ones), and the worker exits.

The first two mean something only where there are child processes, and the
third only where the worker can take a running task back: a pool that cannot
keep the promise refuses the setting at start, naming itself, instead of
accepting it and doing nothing.
"""

from __future__ import annotations

import os
import resource
import sys
from collections.abc import Mapping
from typing import Any

import attrs

from simq.exceptions import ConfigurationError

__all__ = ["Lifecycle", "check_count", "check_seconds", "resident_kib"]

#: The settings this module reads, and the check each value gets where it is given.
SETTINGS = ("worker_max_tasks_per_child", "worker_max_memory_per_child", "worker_soft_shutdown_timeout")


def check_count(value: Any, what: str) -> int | None:
    """``value`` as a whole number of at least 1 (None and 0 mean no limit); refuses anything else, naming it."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigurationError(f"{what} must be a whole number of at least 1 (or 0/None for no limit), got {value!r}")
    return value or None


def check_seconds(value: Any, what: str) -> float:
    """``value`` as seconds, 0 or more (None means 0: off); refuses anything else, naming it."""
    if value is None:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value or not 0 <= value < float("inf"):
        raise ConfigurationError(f"{what} must be a number of seconds, 0 or more (0 is off), got {value!r}")
    return float(value)


def check_settings(values: Mapping[str, Any]) -> None:
    """Refuse a bad value of one of :data:`SETTINGS` where it is set (``App(...)``, ``app.conf.update``)."""
    for name in ("worker_max_tasks_per_child", "worker_max_memory_per_child"):
        if name in values:
            check_count(values[name], name)
    if "worker_soft_shutdown_timeout" in values:
        check_seconds(values["worker_soft_shutdown_timeout"], "worker_soft_shutdown_timeout")


def resident_kib() -> int:
    """This process's resident memory now, in KiB (1024 bytes).

    Read from ``/proc/self/statm`` (Linux), not ``ru_maxrss``: that is the
    high-water mark, and Linux carries it across ``exec``, so a spawned child
    of a 300 MB parent reports 300 MB before it has done anything and would be
    replaced after every job. Where there is no ``/proc``, ``ru_maxrss`` (the
    peak, in KiB on Linux and bytes on macOS) is the nearest there is.
    """
    try:
        with open("/proc/self/statm", "rb") as statm:
            pages = int(statm.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") // 1024
    except (OSError, ValueError, IndexError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak // 1024 if sys.platform == "darwin" else peak


@attrs.frozen
class Lifecycle:
    """One worker's limits: the app's settings, with the command line's options over them."""

    max_tasks_per_child: int | None = None
    max_memory_per_child: int | None = None  # KiB
    soft_shutdown_timeout: float = 0.0

    @classmethod
    def from_conf(
        cls,
        conf: Mapping[str, Any],
        *,
        max_tasks_per_child: int | None = None,
        max_memory_per_child: int | None = None,
        soft_shutdown_timeout: float | None = None,
    ) -> Lifecycle:
        """The app's settings, each replaced by the option given (0 turns a setting off for this worker)."""

        def pick(given: Any, name: str) -> Any:
            return conf.get(name) if given is None else given

        return cls(
            max_tasks_per_child=check_count(
                pick(max_tasks_per_child, "worker_max_tasks_per_child"), "worker_max_tasks_per_child"
            ),
            max_memory_per_child=check_count(
                pick(max_memory_per_child, "worker_max_memory_per_child"), "worker_max_memory_per_child"
            ),
            soft_shutdown_timeout=check_seconds(
                pick(soft_shutdown_timeout, "worker_soft_shutdown_timeout"), "worker_soft_shutdown_timeout"
            ),
        )

    def check_pool(self, pool: str) -> None:
        """Refuse a setting ``pool`` cannot honour, naming the pool, the setting and what to do instead."""
        if pool != "processes":
            for name, value, option in (
                ("worker_max_tasks_per_child", self.max_tasks_per_child, "--max-tasks-per-child"),
                ("worker_max_memory_per_child", self.max_memory_per_child, "--max-memory-per-child"),
            ):
                if value is not None:
                    raise ConfigurationError(
                        f"{name}={value} needs the processes pool: the {pool} pool has no child process to "
                        f"replace. Run simq worker -P processes, or turn it off for this worker with {option} 0"
                    )
        if pool == "solo" and self.soft_shutdown_timeout:
            raise ConfigurationError(
                f"worker_soft_shutdown_timeout={self.soft_shutdown_timeout:g} needs the threads or processes pool: "
                "the solo pool runs a task in the worker's own thread, so nothing can give it back at the "
                "deadline. Use -P threads or -P processes, or --soft-shutdown-timeout 0 for this worker"
            )
