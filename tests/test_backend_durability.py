"""The Redis result backend loses no write with a connection: each is confirmed, run again, or reported.

Result writes go out without waiting for Redis's reply (see the module
docstring of ``simq_redis.backend``). These tests kill the backend's
connections (``CLIENT KILL`` by the client name it sets), stop Redis itself
(a redis-server of our own on another port), and check with a second client
that every result is there after ``sync()``.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from conformance.harness import require, result_url, with_namespace
from simq import App, states
from simq.exceptions import BrokerUnavailable


def _admin(url: str) -> Any:
    import redis
    from simq_redis.connection import parse_redis_url

    kwargs, _ = parse_redis_url(url)
    return redis.Redis(socket_timeout=5, **kwargs)


def kill_backend_connections(backend: Any) -> int:
    """``CLIENT KILL`` every connection named as ``backend``'s (by id: nobody else's); return how many."""
    admin = _admin(backend.url)
    try:
        ids = [c["id"] for c in admin.client_list() if c.get("name") == backend.name]
        for client_id in ids:
            admin.client_kill_filter(_id=client_id)
        return len(ids)
    finally:
        admin.close()


def _backend(url: str, namespace: str) -> Any:
    return App("durable", backend=with_namespace(url, namespace)).backend


@pytest.fixture
def namespace() -> str:
    return f"bd{uuid.uuid4().hex[:10]}"


@pytest.fixture
def rb(namespace: str) -> Iterator[Any]:
    require("redis")
    backend = _backend(result_url("redis"), namespace)
    yield backend
    backend.delete_namespace()
    backend.close()


@pytest.fixture
def reader(rb: Any, namespace: str) -> Iterator[Any]:
    """A second client of the same namespace: what anyone else would read."""
    other = _backend(rb.url, namespace)
    yield other
    other.close()


def _results(reader: Any, ids: list[str]) -> dict[str, Any]:
    return {m.task_id: m.result for m in reader.get_many(ids) if m.state == states.SUCCESS}


class TestKilledConnections:
    def test_writes_whose_replies_were_unread_when_the_connection_was_killed_are_stored(self, rb, reader):
        ids = []
        for round_ in range(5):
            for i in range(20):
                task_id = f"k{round_}-{i}"
                ids.append(task_id)
                rb.store_result(task_id, task_id, states.SUCCESS)
            assert kill_backend_connections(rb) >= 1
        rb.sync()
        got = _results(reader, ids)
        assert [i for i in ids if got.get(i) != i] == []

    def test_a_worker_thread_loses_nothing_to_kills_between_its_tasks(self, rb, reader):
        """As the worker writes: plain results, and canvas results with their chord count, deferred."""
        rounds, per_round = 6, 30
        go = [threading.Event() for _ in range(rounds)]
        paused = [threading.Event() for _ in range(rounds)]
        errors: list[BaseException] = []

        def work() -> None:
            try:
                for r in range(rounds):
                    go[r].wait(30)
                    for i in range(per_round):
                        task_id = f"t{r}-{i}"
                        if i % 3 == 0:
                            with rb.deferred_writes():
                                rb.store_result(task_id, task_id, states.SUCCESS)
                                rb.count_part("c.done", f"c.part.{task_id}")
                        else:
                            rb.store_result(task_id, task_id, states.SUCCESS)
                    paused[r].set()
                rb.sync()  # what the worker does before acknowledging a late-ack task
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=work)
        thread.start()
        killed = 0
        for r in range(rounds):
            go[r].set()
            assert paused[r].wait(30)
            killed += kill_backend_connections(rb)  # the thread's replies from this round are unread
        thread.join(30)
        assert not thread.is_alive() and errors == []
        assert killed >= rounds
        ids = [f"t{r}-{i}" for r in range(rounds) for i in range(per_round)]
        got = _results(reader, ids)
        assert [i for i in ids if got.get(i) != i] == []
        assert reader.incr("c.done", 0) == len([i for i in range(per_round) if i % 3 == 0]) * rounds

    def test_close_stores_what_other_threads_left_unconfirmed(self, rb, reader):
        ids = [f"c{i}" for i in range(15)]

        def work() -> None:
            for task_id in ids:
                rb.store_result(task_id, task_id, states.SUCCESS)  # replies never read by this thread

        thread = threading.Thread(target=work)
        thread.start()
        thread.join(30)
        assert kill_backend_connections(rb) >= 1
        rb.close()
        got = _results(reader, ids)
        assert [i for i in ids if got.get(i) != i] == []

    def test_a_state_written_again_never_overwrites_a_result_stored_since(self, rb, reader):
        rb.store_result("g1", None, states.STARTED)  # reply unread
        assert kill_backend_connections(rb) >= 1
        reader.store_result("g1", "done elsewhere", states.SUCCESS)  # e.g. the task finished on another worker
        reader.sync()
        rb.sync()  # runs STARTED again: it must not replace SUCCESS
        assert reader.get_meta("g1").result == "done elsewhere"

    def test_every_backend_connection_carries_the_backend_client_name(self, rb, namespace):
        from simq_redis.backend import client_name

        rb.store_result("n1", 1, states.SUCCESS)  # this thread's write connection
        assert rb.get_meta("n1").result == 1  # and a pooled one
        assert rb.name == client_name(namespace) == f"simq:{namespace}:backend"
        admin = _admin(rb.url)
        try:
            names = [c.get("name") for c in admin.client_list()]
        finally:
            admin.close()
        assert names.count(rb.name) >= 2

    def test_a_client_name_never_holds_characters_redis_refuses(self):
        from simq_redis.backend import client_name

        assert client_name("a b\nc") == "simq:a_b_c:backend"


# -- Redis itself goes away: a redis-server of our own, on another loopback port ----------------------


def _impatient(backend: Any) -> Any:
    """``backend`` with redis-py's reconnect back-off (seconds per attempt while Redis is down) turned off."""
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    pool = backend.client.connection_pool
    pool.connection_kwargs["retry"] = Retry(NoBackoff(), 0)
    pool.disconnect()
    pool.reset()
    return backend


class OwnRedis:
    def __init__(self) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        subprocess.run(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "yes",
            ],
            check=True,
            capture_output=True,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"redis-server on port {self.port} did not start")

    def stop(self) -> None:
        subprocess.run(["redis-cli", "-p", str(self.port), "shutdown", "nosave"], capture_output=True, check=False)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    time.sleep(0.02)
            except OSError:
                return
        raise RuntimeError(f"redis-server on port {self.port} did not stop")


@pytest.fixture
def own_redis() -> Iterator[OwnRedis]:
    require("redis")
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        pytest.skip("redis-server/redis-cli not installed: cannot stop and restart a Redis of our own")
    server = OwnRedis()
    server.start()
    yield server
    server.stop()


class TestRedisGone:
    def test_sync_raises_while_redis_is_down_and_stores_the_writes_once_it_is_back(self, own_redis):
        rb = _impatient(_backend(own_redis.url, "gone"))
        try:
            rb.store_result("d-first", 0, states.SUCCESS)
            rb.sync()
            own_redis.stop()
            for i in range(10):
                try:
                    rb.store_result(f"d{i}", i, states.SUCCESS)  # may go into the dead socket unnoticed
                except BrokerUnavailable:
                    pass  # or the caller is told at once; either way the write is kept
            with pytest.raises(BrokerUnavailable, match="result backend"):
                rb.sync()
            with pytest.raises(BrokerUnavailable):
                rb.sync()  # still not stored, and still said so
            own_redis.start()
            rb.sync()  # the kept writes run on a fresh connection
            reader = _backend(own_redis.url, "gone")
            assert [m.result for m in reader.get_many([f"d{i}" for i in range(10)])] == list(range(10))
            reader.close()
        finally:
            rb.close()

    def test_a_failed_deferred_flush_does_not_leave_the_thread_deferred(self, own_redis):
        rb = _impatient(_backend(own_redis.url, "flush"))
        reader = None
        try:
            with pytest.raises(BrokerUnavailable), rb.deferred_writes():
                rb.store_result("a1", "deferred", states.SUCCESS)
                own_redis.stop()
            own_redis.start()
            rb.store_result("b1", "after", states.SUCCESS)  # sent now, not queued for a flush that never comes
            reader = _backend(own_redis.url, "flush")
            deadline = time.monotonic() + 5
            while reader.get_meta("b1").state != states.SUCCESS and time.monotonic() < deadline:
                time.sleep(0.01)
            assert reader.get_meta("b1").result == "after"
            assert reader.get_meta("a1").result == "deferred"  # the write the failed flush held was kept, then stored
        finally:
            if reader is not None:
                reader.close()
            rb.close()

    def test_close_says_how_many_writes_it_could_not_store(self, own_redis):
        rb = _impatient(_backend(own_redis.url, "closing"))
        rb.store_result("z0", 0, states.SUCCESS)
        rb.sync()
        own_redis.stop()
        for task_id in ("z1", "z2"):
            try:
                rb.store_result(task_id, 1, states.SUCCESS)
            except BrokerUnavailable:
                pass
        with pytest.raises(BrokerUnavailable, match="with 2 write"):
            rb.close()
        own_redis.start()  # for the fixture's teardown


@pytest.mark.parametrize("broker", ["amqp", "redis"])
def test_a_canvas_record_is_stored_before_the_send_that_follows_it(namespace, reader, broker):
    """A chord's record written while writes are deferred (a canvas task's success) is in Redis before its header is sent.

    Else a header task run by another pool slot reads no record: "canvas record
    'simq-chord-...' is missing from the result backend", seen on `simq worker -c 4`.
    """
    from conformance.harness import broker_url, delete_app_data
    from simq import signals

    require(broker)
    app = App(
        "ordered",
        broker=with_namespace(broker_url(broker), namespace),
        backend=with_namespace(result_url("redis"), namespace),
    )

    @app.task(name="header")
    def header():
        return 1

    seen: list[bytes | None] = []

    def on_the_broker(sender=None, **kwargs):
        seen.append(reader.get_record("simq-chord-ordered"))  # another connection: what another worker reads

    signals.after_task_publish.connect(on_the_broker)
    from simq.canvas import records

    try:
        with app.backend.deferred_writes():
            records.store(app, "simq-chord-ordered", "the body")  # as a chord started by a canvas task
            header.delay()
        assert len(seen) == 1 and seen[0] is not None  # on the broker only once the record was stored
        assert records.load(app, "simq-chord-ordered") == "the body"
    finally:
        signals.after_task_publish.disconnect(on_the_broker)
        delete_app_data(app)
