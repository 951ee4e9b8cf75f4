"""The nemesis: a fault schedule drawn from the seed, and the faults themselves.

Kinds (``FAULT_KINDS``):

- ``sigkill``, ``sigterm``, ``sigint2`` (two SIGINTs, a moment apart): to one
  worker slot's main process, which the supervisor then starts again;
- ``conn-broker`` / ``conn-backend``: close that slot's connections to the
  broker / the Redis result backend (RabbitMQ ``close_connection``, Redis
  ``CLIENT KILL ID``);
- ``stop-app``: RabbitMQ ``stop_app``, a few seconds down, ``start_app``;
- ``stall``: a Lua script that keeps the campaign's Redis busy for seconds;
- ``poison``: raw messages written onto the queue (see ``poison``).

Only connections the campaign can attribute are closed: the client port
must belong to a socket of that slot's processes (``/proc``), to the
broker's port, and the connection must be named by simq for this run's
namespace and role (``simq:<namespace>:broker`` / ``:backend`` on Redis,
``simq <namespace> broker`` on RabbitMQ) or, where simq does not name it,
be in the broker's (or the backend's) Redis database. The ledger's and the poison writer's own
connections (``simq-chaos:...``) are never touched. ``stop-app`` and
``stall`` hit the whole server: they run only when asked for (``--nemesis all``
or by name), on a node of the campaign's own (``--rabbitmq-node``).
"""

from __future__ import annotations

import random
import re
import signal
import subprocess
from collections import Counter
from typing import Any
from urllib.parse import urlsplit

import attrs

from simq.chaos.ledger import LEDGER_CLIENT_PREFIX, plain_redis_url
from simq.chaos.poison import Poison, PoisonWriter
from simq.chaos.procs import Supervisor, local_ports
from simq.clock import WallClock

__all__ = ["BROKER_WIDE", "DEFAULT_KINDS", "FAULT_KINDS", "Fault", "FaultRecord", "Nemesis", "draw_schedule"]

FAULT_KINDS = ("sigkill", "sigterm", "sigint2", "conn-broker", "conn-backend", "stop-app", "stall", "poison")
BROKER_WIDE = ("stop-app", "stall")
DEFAULT_KINDS = tuple(k for k in FAULT_KINDS if k not in BROKER_WIDE)


@attrs.frozen
class Fault:
    """One scheduled fault: when (seconds from the start), what, on which slot, for how long."""

    at: float
    kind: str
    slot: int
    seconds: float  # restart delay (signals), outage (stop-app), stall length; gap between the SIGINTs
    count: int = 0  # poison messages
    seed: int = 0  # what the poison is drawn from
    gap: float = 0.0  # sigint2: seconds between the two SIGINTs

    def line(self) -> str:
        what = {
            "sigkill": f"SIGKILL worker{self.slot}, restart after {self.seconds:.1f} s",
            "sigterm": f"SIGTERM worker{self.slot}, restart after {self.seconds:.1f} s",
            "sigint2": f"SIGINT worker{self.slot} twice ({self.gap:.2f} s apart), restart after {self.seconds:.1f} s",
            "conn-broker": f"close worker{self.slot}'s broker connections",
            "conn-backend": f"close worker{self.slot}'s result-backend connections",
            "stop-app": f"rabbitmqctl stop_app, start_app {self.seconds:.1f} s later",
            "stall": f"Redis busy for {self.seconds:.1f} s (Lua script)",
            "poison": f"{self.count} raw poison message(s) (seed {self.seed})",
        }[self.kind]
        return f"t+{self.at:6.2f}s {self.kind:<12} {what}"


def draw_schedule(
    rng: random.Random, *, seconds: float, kinds: tuple[str, ...], slots: int, every: float, each: bool = False
) -> tuple[Fault, ...]:
    """Faults at exponential gaps of mean ``every`` seconds, from 1 s in to 1 s before the end.

    ``each``: instead, one fault of every kind, in an order drawn from ``rng``, evenly spread.
    """
    if not kinds:
        return ()
    if each:
        order = list(kinds)
        rng.shuffle(order)
        step = (seconds - 2.0) / len(order)
        return tuple(_fault(rng, 1.0 + i * step, kind, rng.randrange(slots)) for i, kind in enumerate(order))
    faults: list[Fault] = []
    t = 1.0 + rng.expovariate(1.0 / every)
    while t < seconds - 1.0:
        faults.append(_fault(rng, t, kinds[rng.randrange(len(kinds))], rng.randrange(slots)))
        t += max(0.5, rng.expovariate(1.0 / every))
    return tuple(faults)


def _fault(rng: random.Random, t: float, kind: str, slot: int) -> Fault:
    if kind == "stop-app":
        length = rng.uniform(2.0, 6.0)
    elif kind == "stall":
        length = rng.uniform(1.0, 4.0)  # under Redis's 5 s busy threshold: clients wait, nobody gets BUSY
    else:
        length = rng.choice((0.2, 0.5, 1.0, 2.0))
    count = 1 + rng.randrange(3) if kind == "poison" else 0
    gap = rng.choice((0.01, 0.05, 0.2)) if kind == "sigint2" else 0.0
    return Fault(round(t, 3), kind, slot, round(length, 2), count, rng.getrandbits(32), gap)


@attrs.frozen
class FaultRecord:
    """What a fault did when it ran (wall-clock time ``at``)."""

    fault: Fault
    at: float
    done: bool  # False: skipped (the slot was down, nothing attributable to close...)
    detail: str
    poison: tuple[Poison, ...] = ()


# -- broker control -------------------------------------------------------------------------------------------
@attrs.define(eq=False)
class RabbitControl:
    """``rabbitmqctl`` against one node (``-n NODE``, or the default node)."""

    port: int
    namespace: str
    node: str | None = None

    def ctl(self, *args: str, timeout: float = 120) -> str:
        cmd = ["rabbitmqctl", *(("-n", self.node) if self.node else ()), "-q", *args]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)  # noqa: S603
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip()[:300]}")
        return done.stdout

    def close_connections(self, ports: set[int]) -> list[str]:
        closed: list[tuple[str, str]] = []
        # tab-separated, not --formatter json: close_connection takes the pid as this format prints it
        for line in self.ctl("list_connections", "pid", "peer_port", "client_properties").splitlines():
            cols = line.split("\t")
            if len(cols) < 3 or not cols[1].isdigit():
                continue  # the header line
            pid, port = cols[0], int(cols[1])
            found = re.search(r'\{"connection_name","([^"]*)"\}', cols[2])
            name = found.group(1) if found else ""
            if name.startswith("simq-chaos"):
                continue
            # the slot's own sockets, and (once simq names its connections) named for this run's namespace
            ours = not name or (name.startswith("simq ") and f" {self.namespace} " in f"{name} ")
            if ours and port in ports:
                closed.append((pid, f"{pid} (port {port}{', ' + name if name else ''})"))
        # one rabbitmqctl per connection, all at once: each takes a second or more to start
        base = ["rabbitmqctl", *(("-n", self.node) if self.node else ()), "-q", "close_connection"]
        running = [
            subprocess.Popen([*base, pid, "simq chaos nemesis"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # noqa: S603
            for pid, _ in closed
        ]
        done = []
        for proc, (_, what) in zip(running, closed, strict=True):
            _, stderr = proc.communicate(timeout=120)
            done.append(
                what if proc.returncode == 0 else f"{what}: failed: {stderr.decode(errors='replace').strip()[:120]}"
            )
        return done

    def stop_app(self) -> None:
        self.ctl("stop_app")

    def start_app(self) -> None:
        self.ctl("start_app")
        self.ctl("await_startup")


@attrs.define(eq=False)
class RedisControl:
    """One Redis server: ``CLIENT LIST`` / ``CLIENT KILL``, and a stall."""

    url: str
    run: str
    client: Any = None

    def __attrs_post_init__(self) -> None:
        import redis

        self.client = redis.Redis.from_url(
            plain_redis_url(self.url), client_name=f"{LEDGER_CLIENT_PREFIX}{self.run}:nemesis"
        )

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or 6379

    def kill_clients(self, ports: set[int], db: int, role: str, namespace: str) -> list[str]:
        killed = []
        for client in self.client.client_list():
            name = client.get("name", "")
            if name.startswith(LEDGER_CLIENT_PREFIX):
                continue
            port = int(client.get("addr", ":0").rsplit(":", 1)[1])
            if port not in ports:
                continue  # not a socket of the slot's processes
            # named by simq (simq:<namespace>:broker / :backend): the name says which; unnamed: the database does
            if name == f"simq:{namespace}:{role}" or (not name and int(client.get("db", -1)) == db):
                self.client.client_kill_filter(_id=client["id"])
                killed.append(f"id {client['id']} (port {port}{', ' + name if name else ''})")
        return killed

    def stall(self, seconds: float) -> None:
        script = (
            "local t = redis.call('TIME') local start = t[1] * 1e6 + t[2] "
            "while true do t = redis.call('TIME') if t[1] * 1e6 + t[2] - start > tonumber(ARGV[1]) then break end end "
            "return 1"
        )
        self.client.eval(script, 0, int(seconds * 1e6))

    def close(self) -> None:
        self.client.close()


def _db(url: str) -> int:
    path = urlsplit(url).path.strip("/")
    return int(path) if path.isdigit() else 0


# -- the nemesis --------------------------------------------------------------------------------------------------
@attrs.define(eq=False)
class Nemesis:
    """Applies faults to one campaign's workers and brokers, and keeps the record."""

    supervisor: Supervisor
    namespace: str
    broker_url: str
    backend_url: str
    broker: RabbitControl | RedisControl
    backend: RedisControl | None
    poison: PoisonWriter
    records: list[FaultRecord] = attrs.field(factory=list)
    broker_down: bool = False
    _clock: WallClock = attrs.field(factory=WallClock)

    def apply(self, fault: Fault) -> FaultRecord:
        at = self._clock.now
        try:
            done, detail, poison = self._apply(fault)
        except Exception as exc:  # noqa: BLE001 - a fault that could not be applied is recorded, not fatal
            done, detail, poison = False, f"could not apply: {type(exc).__name__}: {exc}", []
        record = FaultRecord(fault, at, done, detail, tuple(poison))
        self.records.append(record)
        return record

    def _apply(self, fault: Fault) -> tuple[bool, str, list[Poison]]:
        sup = self.supervisor
        if fault.kind in ("sigkill", "sigterm"):
            sig = signal.SIGKILL if fault.kind == "sigkill" else signal.SIGTERM
            run = sup.signal(fault.slot, sig, abrupt=sig == signal.SIGKILL, restart_delay=fault.seconds)
            return (run is not None, f"{sig.name} {run.name}" if run else f"worker{fault.slot} is down", [])
        if fault.kind == "sigint2":
            run = sup.signal(fault.slot, signal.SIGINT, abrupt=False, restart_delay=fault.seconds)
            if run is None:
                return False, f"worker{fault.slot} is down", []
            self._clock.sleep(fault.gap)
            again = sup.signal(fault.slot, signal.SIGINT, abrupt=True, restart_delay=fault.seconds)
            return True, f"SIGINT {run.name}, {'again' if again else 'it had already exited'}", []
        if fault.kind in ("conn-broker", "conn-backend"):
            return self._close(fault)
        if fault.kind == "stop-app":
            if not isinstance(self.broker, RabbitControl):
                return False, "stop-app needs RabbitMQ", []
            self.broker_down = True
            self.broker.stop_app()
            try:
                self._clock.sleep(fault.seconds)
            finally:
                self.broker.start_app()
                self.broker_down = False
            return True, f"stop_app; start_app after {fault.seconds:.1f} s", []
        if fault.kind == "stall":
            target = self.broker if isinstance(self.broker, RedisControl) else self.backend
            if target is None:
                return False, "no Redis to stall", []
            target.stall(fault.seconds)
            return True, f"Redis :{target.port} busy for {fault.seconds:.1f} s", []
        if fault.kind == "poison":
            written = self.poison.write(random.Random(fault.seed), fault.count)
            return True, "; ".join(p.line() for p in written), written
        raise ValueError(f"unknown fault kind {fault.kind!r}")

    def _close(self, fault: Fault) -> tuple[bool, str, list[Poison]]:
        pids = self.supervisor.pids(fault.slot)
        if not pids:
            return False, f"worker{fault.slot} is down", []
        if fault.kind == "conn-broker":
            control: RabbitControl | RedisControl | None = self.broker
            url, role = self.broker_url, "broker"
        else:
            control, url, role = self.backend, self.backend_url, "backend"
        if control is None:
            return False, f"no control over the {role}", []
        port = urlsplit(url).port or (5672 if isinstance(control, RabbitControl) else 6379)
        ports = local_ports(pids, port)
        if isinstance(control, RabbitControl):
            closed = control.close_connections(ports)
        else:
            closed = control.kill_clients(ports, _db(url), role, self.namespace)
        if not closed:
            return (
                False,
                f"no {role} connection of worker{fault.slot} to close (pids {sorted(pids)}, ports {sorted(ports)})",
                [],
            )
        return True, f"closed {len(closed)} {role} connection(s) of worker{fault.slot}: {', '.join(closed)}", []

    def heal(self) -> None:
        """After the schedule: make sure the broker is up again."""
        if self.broker_down and isinstance(self.broker, RabbitControl):
            self.broker.start_app()
            self.broker_down = False

    def close(self) -> None:
        for control in (self.broker, self.backend):
            if isinstance(control, RedisControl):
                control.close()

    def counts(self) -> Counter[str]:
        return Counter(r.fault.kind for r in self.records if r.done)
