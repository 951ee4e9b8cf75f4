"""Worker processes as a supervisor sees them: start, signal, restart, and which sockets and children are theirs.

Each *slot* is one ``simq worker`` command line (``-P threads -c 4``,
``-P processes -c 4``...), started as a user starts it, its output in a log
file per generation. The nemesis signals a slot through ``Supervisor.signal``,
which records what it sent and when; a slot that exits is started again after
the delay the fault asked for, as supervisord does (only the main process is
signalled and restarted). An exit nobody asked for is recorded as such: it is
a failure (a worker must not die of its input). Every record here is plain
data for the checker.

Linux only: sockets, children and orphans are found in ``/proc``.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import IO

import attrs

from simq.clock import WallClock

__all__ = ["LogFacts", "Slot", "Supervisor", "WorkerRun", "campaign_pids", "local_ports", "process_tree", "scan_log"]


@attrs.define
class WorkerRun:
    """One generation of a slot: a process from start to exit, and what was done to it."""

    slot: int
    generation: int
    pid: int
    started: float
    log_path: str
    ended: float | None = None
    exit_code: int | None = None
    signals: list[tuple[float, str]] = attrs.field(factory=list)
    killed_at: float | None = None  # when it was made to die abruptly: SIGKILL, a second SIGINT, a forced kill
    expected_exit: bool = False  # the exit followed a signal the campaign sent

    @property
    def name(self) -> str:
        return f"worker{self.slot}.{self.generation} (pid {self.pid})"


@attrs.define(eq=False)
class Slot:
    index: int
    pool: str
    concurrency: int
    proc: subprocess.Popen[bytes] | None = None
    current: WorkerRun | None = None
    restart_at: float | None = None
    restart_delay: float = 1.0
    term_deadline: float | None = None
    log_file: IO[bytes] | None = None

    @property
    def spec(self) -> str:
        return f"{self.pool}:{self.concurrency}"


def simq_command() -> list[str]:
    """How a user runs ``simq``: the console script beside this interpreter, else ``python -m simq.cli``."""
    script = Path(sys.executable).with_name("simq")
    return [str(script)] if script.exists() else [sys.executable, "-m", "simq.cli"]


@attrs.define(eq=False)
class Supervisor:
    """Runs the slots: ``start_all``, ``signal``, ``tick`` (reap, restart), ``stop_all``."""

    app_spec: str
    cwd: Path
    env: dict[str, str]
    slots: list[Slot]
    history: list[WorkerRun] = attrs.field(factory=list)
    unexpected: list[WorkerRun] = attrs.field(factory=list)
    orphans: dict[int, tuple[float, float]] = attrs.field(factory=dict)  # pid -> first, last seen with no live slot
    sigterm_grace: float = 20.0
    extra_args: tuple[str, ...] = ("--max-reconnect-delay", "2")
    _lock: threading.RLock = attrs.field(factory=threading.RLock)
    _clock: WallClock = attrs.field(factory=WallClock)
    stopping: bool = False

    def command(self, slot: Slot, generation: int) -> list[str]:
        return [
            *simq_command(),
            "worker",
            "-A",
            self.app_spec,
            "-P",
            slot.pool,
            "-c",
            str(slot.concurrency),
            "-l",
            "INFO",
            "-n",
            f"chaos{slot.index}.{generation}@localhost",
            *self.extra_args,
        ]

    def start(self, slot: Slot) -> WorkerRun:
        with self._lock:
            generation = 1 + sum(1 for r in self.history if r.slot == slot.index)
            log_path = self.cwd / f"worker{slot.index}.{generation}.log"
            slot.log_file = open(log_path, "wb")  # closed when the process is reaped
            proc = subprocess.Popen(  # noqa: S603 - our own command line
                self.command(slot, generation),
                cwd=self.cwd,
                env=self.env,
                stdout=slot.log_file,
                stderr=subprocess.STDOUT,
            )
            run = WorkerRun(slot.index, generation, proc.pid, self._clock.now, str(log_path))
            slot.proc, slot.current, slot.restart_at, slot.term_deadline = proc, run, None, None
            self.history.append(run)
            return run

    def start_all(self) -> None:
        for slot in self.slots:
            self.start(slot)

    def alive(self, slot: Slot) -> bool:
        return slot.proc is not None and slot.proc.poll() is None

    def signal(self, index: int, sig: signal.Signals, *, abrupt: bool, restart_delay: float) -> WorkerRun | None:
        """Send ``sig`` to slot ``index``'s main process; ``abrupt`` marks the moment it dies without cleanup."""
        with self._lock:
            slot = self.slots[index]
            run = slot.current
            if run is None or not self.alive(slot):
                return None
            assert slot.proc is not None
            now = self._clock.now
            graceful_before = any(name in ("SIGTERM", "SIGINT") for _, name in run.signals)
            if sig in (signal.SIGTERM, signal.SIGINT) and graceful_before:
                abrupt = True  # a second SIGTERM / SIGINT, whichever came first, means "stop at once"
            run.signals.append((now, sig.name))
            run.expected_exit = True
            if abrupt and run.killed_at is None:
                run.killed_at = now
            if sig == signal.SIGTERM and slot.term_deadline is None:
                slot.term_deadline = now + self.sigterm_grace
            slot.restart_delay = restart_delay
            slot.proc.send_signal(sig)
            return run

    def tick(self) -> None:
        """Reap exited workers, force a SIGTERM that took too long, restart what is due."""
        with self._lock:
            now = self._clock.now
            for slot in self.slots:
                proc, run = slot.proc, slot.current
                if proc is None or run is None:
                    continue
                code = proc.poll()
                if code is None:
                    if slot.term_deadline is not None and now > slot.term_deadline:
                        run.signals.append((now, "SIGKILL (SIGTERM grace over)"))
                        run.killed_at = run.killed_at or now
                        slot.term_deadline = None
                        proc.kill()
                    continue
                if run.ended is None:
                    run.ended, run.exit_code = now, code
                    if not run.expected_exit:
                        self.unexpected.append(run)
                    if slot.log_file is not None:
                        slot.log_file.close()
                        slot.log_file = None
                    slot.restart_at = now + (slot.restart_delay if run.expected_exit else 1.0)
                if not self.stopping and slot.restart_at is not None and now >= slot.restart_at:
                    self.start(slot)

    def scan_orphans(self, run: str) -> set[int]:
        """Record (and return) this run's worker processes that no running slot owns: children whose parent died."""
        with self._lock:
            owned: set[int] = set()
            for slot in self.slots:
                if self.alive(slot) and slot.proc is not None:
                    owned |= process_tree(slot.proc.pid)
            found = campaign_pids(run) - owned
            now = self._clock.now
            for pid in found:
                first, _ = self.orphans.get(pid, (now, now))
                self.orphans[pid] = (first, now)
            return found

    def lasting_orphans(self, at_least: float = 3.0) -> set[int]:
        """Orphans seen for ``at_least`` seconds: a pool child may outlive a parent that exits at once by a moment."""
        return {pid for pid, (first, last) in self.orphans.items() if last - first >= at_least}

    def up(self) -> int:
        return sum(1 for slot in self.slots if self.alive(slot))

    def stop_all(self, grace: float = 30.0) -> None:
        """SIGTERM every slot (a graceful stop), SIGKILL what is still there after ``grace`` seconds."""
        with self._lock:
            self.stopping = True
            for slot in self.slots:
                if self.alive(slot) and slot.current is not None:
                    assert slot.proc is not None
                    slot.current.signals.append((self._clock.now, "SIGTERM (end of campaign)"))
                    slot.current.expected_exit = True
                    slot.proc.send_signal(signal.SIGTERM)
        deadline = self._clock.monotonic() + grace
        while any(self.alive(s) for s in self.slots) and self._clock.monotonic() < deadline:
            self._clock.sleep(0.1)
        with self._lock:
            for slot in self.slots:
                if self.alive(slot) and slot.current is not None:
                    assert slot.proc is not None
                    slot.current.signals.append((self._clock.now, "SIGKILL (did not stop within grace)"))
                    slot.current.killed_at = slot.current.killed_at or self._clock.now
                    slot.proc.kill()
                    slot.proc.wait(timeout=10)
            self.tick()

    def pids(self, index: int) -> set[int]:
        """Slot ``index``'s main process and every descendant of it, now."""
        slot = self.slots[index]
        if not self.alive(slot):
            return set()
        assert slot.proc is not None
        return process_tree(slot.proc.pid)


# -- /proc ---------------------------------------------------------------------------------------------------
def _ppids() -> dict[int, int]:
    out: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read().decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        out[int(entry)] = int(fields[1])
    return out


def process_tree(root: int) -> set[int]:
    """``root`` and its descendants."""
    parents = _ppids()
    tree = {root}
    grew = True
    while grew:
        grew = False
        for pid, ppid in parents.items():
            if ppid in tree and pid not in tree:
                tree.add(pid)
                grew = True
    return tree


def campaign_pids(run: str) -> set[int]:
    """Processes started for run ``run``: their environment holds ``SIMQ_CHAOS_RUN=<run>`` (nobody else's does).

    The environment, not the command line: a pool child started by
    ``multiprocessing`` (spawn) has a command line of its own, but inherits it.
    """
    found: set[int] = set()
    needle = f"SIMQ_CHAOS_RUN={run}\0".encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if needle in f.read() + b"\0":
                    found.add(int(entry))
        except OSError:
            continue
    return found


def _socket_inodes(pid: int) -> set[int]:
    inodes: set[int] = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return inodes
    for fd in fds:
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(int(link[8:-1]))
    return inodes


def local_ports(pids: set[int], remote_port: int) -> set[int]:
    """Local ports of the established TCP connections these processes hold to ``remote_port``."""
    inodes: set[int] = set()
    for pid in pids:
        inodes |= _socket_inodes(pid)
    ports: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if len(cols) < 10 or cols[3] != "01":  # 01 = ESTABLISHED
                continue
            local, remote, inode = cols[1], cols[2], int(cols[9])
            if inode in inodes and int(remote.rsplit(":", 1)[1], 16) == remote_port:
                ports.add(int(local.rsplit(":", 1)[1], 16))
    return ports


# -- worker logs ------------------------------------------------------------------------------------------------
@attrs.frozen
class LogFacts:
    """What one worker log shows: the task ids it names (and when, last), child processes that died, tracebacks,
    and when it could not read the revocation log (simq.revoke's warning: it went on with what it knew)."""

    task_ids: Mapping[str, float]
    child_exits: tuple[str, ...]
    tracebacks: int
    revocation_read_failures: tuple[float, ...] = ()


_STAMP = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3})")


def scan_log(path: str, run: str) -> LogFacts:
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return LogFacts({}, (), 0)
    ids: dict[str, float] = {}
    pattern = re.compile(re.escape(run) + r"\.j\d+\.\w+")
    when = 0.0
    exits = []
    unread = []
    for line in text.splitlines():
        stamp = _STAMP.match(line)
        if stamp:  # logging's default asctime, in local time
            when = datetime.strptime(stamp.group(1), "%Y-%m-%d %H:%M:%S").timestamp() + int(stamp.group(2)) / 1000
        for task_id in pattern.findall(line):
            ids[task_id] = when
        # "child N exited with ..." (a pool that restarts its children), "pool child N (pid P) died running a job"
        if re.search(r"child \d+ .*(exited|died)", line):
            exits.append(line.strip())
        if "cannot read the revocation log" in line:
            unread.append(when)
    return LogFacts(ids, tuple(exits), text.count("Traceback (most recent call last)"), tuple(unread))


def tail(path: str, lines: int = 15) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def kill_pids(pids: set[int]) -> list[int]:
    """SIGKILL exactly these pids (the campaign's own, found by ``campaign_pids``); returns those it reached."""
    reached = []
    for pid in sorted(pids):
        try:
            os.kill(pid, signal.SIGKILL)
            reached.append(pid)
        except ProcessLookupError:
            continue
    return reached
