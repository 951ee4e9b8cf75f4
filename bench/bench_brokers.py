"""simq against Celery 5 on the local RabbitMQ and Redis, with the raw kombu publish rate as the ceiling.

    python bench/bench_brokers.py [--n 10000] [--chord 1000] [--brokers amqp,redis] [--no-celery]

Measures, on each broker:
- publish rate: ``--n`` ``delay()`` calls of a no-op task (and the same with raw kombu);
- end-to-end: ``--n`` no-op tasks published and run by one worker process
  (solo pool, prefetch 100; Celery without heartbeats, gossip or mingle),
  timed from the first send until the last result is in Redis;
- a ``--chord``-task chord (when this simq build has ``chord``).
Results go to the local Redis for both. Prints each number and the ratios.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
AMQP = os.environ.get("SIMQ_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
REDIS = os.environ.get("SIMQ_REDIS_URL", "redis://127.0.0.1:6379/0")
CELERY_RESULTS = "redis://127.0.0.1:6379/1"

SIMQ_APP = """
import os
from simq import App
app = App("bench", broker=os.environ["BENCH_BROKER"], backend=os.environ["BENCH_RESULTS"], task_default_queue="bench")

@app.task(name="noop")
def noop(*args):
    return None

@app.task(name="collect")
def collect(values):
    return len(values)
"""

CELERY_APP = """
import os
from celery import Celery
app = Celery("bench", broker=os.environ["BENCH_BROKER"], backend=os.environ["BENCH_RESULTS"])
app.conf.task_default_queue = os.environ["BENCH_QUEUE"]
app.conf.worker_prefetch_multiplier = 100
app.conf.broker_connection_retry_on_startup = True

@app.task(name="noop")
def noop(*args):
    return None

@app.task(name="collect")
def collect(values):
    return len(values)
"""


def rate(n: int, seconds: float) -> str:
    return f"{n / seconds / 1000:.2f}k/s"


class Project:
    """A throw-away module holding the benchmark app, importable by worker processes."""

    def __init__(self, source: str, env: dict[str, str]) -> None:
        self.dir = tempfile.mkdtemp(prefix="simq-bench-")
        self.name = f"benchapp_{uuid.uuid4().hex[:8]}"
        Path(self.dir, f"{self.name}.py").write_text(textwrap.dedent(source))
        self.env = dict(os.environ, **env)
        self.env["PYTHONPATH"] = os.pathsep.join([self.dir, str(ROOT), self.env.get("PYTHONPATH", "")])
        os.environ.update(env)
        sys.path.insert(0, self.dir)
        self.module = __import__(self.name)

    def spawn(self, cmd: list[str]) -> subprocess.Popen[bytes]:
        return subprocess.Popen(cmd, cwd=self.dir, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def simq_bench(kind: str, n: int, chord_n: int) -> dict[str, float]:
    ns = f"bench{uuid.uuid4().hex[:8]}"
    broker = (
        f"{AMQP if kind == 'amqp' else REDIS}{'&' if '?' in (AMQP if kind == 'amqp' else REDIS) else '?'}namespace={ns}"
    )
    results = f"{REDIS}?namespace={ns}"
    project = Project(SIMQ_APP, {"BENCH_BROKER": broker, "BENCH_RESULTS": results})
    app = project.module.app
    noop = project.module.noop
    out: dict[str, float] = {}
    noop.delay()  # connect and declare outside the timing
    conn = app.connection()
    conn.purge("bench")
    t0 = time.perf_counter()
    for _ in range(n):
        noop.delay()
    out["publish"] = time.perf_counter() - t0
    conn.purge("bench")
    worker = project.spawn(
        [
            sys.executable,
            "-m",
            "simq.production",
            "-A",
            f"{project.name}:app",
            "--pool",
            "solo",
            "--prefetch-multiplier",
            "100",
            "-l",
            "WARNING",
        ]
    )
    try:
        noop.delay().get(timeout=60)  # the worker is up
        t0 = time.perf_counter()
        last = None
        for _ in range(n):
            last = noop.delay()
        assert last is not None
        last.get(timeout=600)
        out["e2e"] = time.perf_counter() - t0
        import simq

        chord = getattr(simq, "chord", None)
        if chord is not None and chord_n:
            t0 = time.perf_counter()
            got = chord([noop.s(i) for i in range(chord_n)])(project.module.collect.s()).get(timeout=600)
            out["chord"] = time.perf_counter() - t0
            assert got == chord_n, got
    finally:
        stop(worker)
        _cleanup(conn, app)
    return out


def _cleanup(conn, app) -> None:
    try:
        if hasattr(conn, "delete_namespace"):
            conn.delete_namespace()
        else:
            conn.delete_queue("bench")
    finally:
        conn.close()
        app.backend.delete_namespace()


def celery_bench(kind: str, n: int, chord_n: int) -> dict[str, float]:
    from celery import chord

    queue = f"celerybench{uuid.uuid4().hex[:8]}"
    broker = AMQP if kind == "amqp" else REDIS
    project = Project(CELERY_APP, {"BENCH_BROKER": broker, "BENCH_RESULTS": CELERY_RESULTS, "BENCH_QUEUE": queue})
    app = project.module.app
    noop = project.module.noop
    out: dict[str, float] = {}
    noop.delay()
    t0 = time.perf_counter()
    for _ in range(n):
        noop.delay()
    out["publish"] = time.perf_counter() - t0
    with app.connection_for_write() as conn:
        conn.default_channel.queue_purge(queue)
    worker = project.spawn(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            project.name,
            "worker",
            "-P",
            "solo",
            "-c",
            "1",
            "--prefetch-multiplier",
            "100",
            "--without-heartbeat",
            "--without-gossip",
            "--without-mingle",
            "-Q",
            queue,
            "-l",
            "WARNING",
        ]
    )
    try:
        noop.delay().get(timeout=60)
        t0 = time.perf_counter()
        last = None
        for _ in range(n):
            last = noop.delay()
        last.get(timeout=600)
        out["e2e"] = time.perf_counter() - t0
        if chord_n:
            t0 = time.perf_counter()
            got = chord([noop.s(i) for i in range(chord_n)])(project.module.collect.s()).get(timeout=600)
            out["chord"] = time.perf_counter() - t0
            assert got == chord_n, got
    finally:
        stop(worker)
        with app.connection_for_write() as conn:
            try:
                conn.default_channel.queue_delete(queue)
            except Exception:
                pass
    return out


def kombu_publish(kind: str, n: int) -> float:
    from kombu import Connection, Exchange, Producer, Queue

    queue_name = f"kombubench{uuid.uuid4().hex[:8]}"
    url = AMQP if kind == "amqp" else REDIS
    with Connection(url) as conn:
        channel = conn.channel()
        exchange = Exchange(queue_name, "direct")
        queue = Queue(queue_name, exchange, routing_key=queue_name)
        queue(channel).declare()
        producer = Producer(channel, exchange=exchange, routing_key=queue_name, serializer="json")
        body = {"task": "noop", "args": [], "kwargs": {}}
        t0 = time.perf_counter()
        for _ in range(n):
            producer.publish(body)
        seconds = time.perf_counter() - t0
        queue(channel).delete()
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--chord", type=int, default=1_000)
    parser.add_argument("--brokers", default="amqp,redis")
    parser.add_argument("--no-celery", action="store_true")
    args = parser.parse_args()
    n = args.n
    for kind in [b.strip() for b in args.brokers.split(",") if b.strip()]:
        print(f"== {kind} ({n} tasks) ==", flush=True)
        raw = kombu_publish(kind, n)
        print(f"raw kombu publish   {rate(n, raw)}", flush=True)
        s = simq_bench(kind, n, args.chord)
        print(
            f"simq publish        {rate(n, s['publish'])}   ({s['publish'] / raw:.2f}x the raw client's time)",
            flush=True,
        )
        print(f"simq end-to-end     {rate(n, s['e2e'])}", flush=True)
        if "chord" in s:
            print(f"simq {args.chord} chord     {s['chord']:.2f} s", flush=True)
        if args.no_celery:
            continue
        c = celery_bench(kind, n, args.chord)
        print(f"celery publish      {rate(n, c['publish'])}", flush=True)
        print(f"celery end-to-end   {rate(n, c['e2e'])}", flush=True)
        if "chord" in c:
            print(f"celery {args.chord} chord   {c['chord']:.2f} s", flush=True)
        print(
            f"ratios simq/celery: publish {c['publish'] / s['publish']:.2f}x, end-to-end {c['e2e'] / s['e2e']:.2f}x"
            + (f", chord {c['chord'] / s['chord']:.2f}x" if "chord" in s and "chord" in c else ""),
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
