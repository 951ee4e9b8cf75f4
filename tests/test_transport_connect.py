"""Connecting to real brokers: timeouts, unknown schemes, missing extras, conflicting declarations."""

from __future__ import annotations

import socket
import threading
import uuid

import pytest

from conformance.harness import broker_url, require, with_namespace
from simq import App, Queue
from simq.exceptions import BrokerUnavailable, ConfigurationError, TransportNotFound
from simq.transport import Transport, load_transport


@pytest.fixture
def silent_server():
    """A loopback port that accepts connections and never says a word."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    accepted = []
    stop = threading.Event()

    def serve():
        sock.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
                accepted.append(conn)
            except OSError:
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield sock.getsockname()[1]
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    sock.close()


def _refused_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


SCHEMES = {"amqp": "amqp://guest:s3cret@127.0.0.1:{port}//", "redis": "redis://:s3cret@127.0.0.1:{port}/0"}


@pytest.mark.parametrize("scheme", sorted(SCHEMES))
def test_refused_connection_names_host_and_port_never_the_password(scheme):
    port = _refused_port()
    app = App("t", broker=SCHEMES[scheme].format(port=port))

    @app.task
    def add(x, y):
        return x + y

    with pytest.raises(BrokerUnavailable) as info:
        add.apply_async((1, 1), connect_timeout=1)
    text = str(info.value)
    assert f"127.0.0.1:{port}" in text
    assert "s3cret" not in text


@pytest.mark.parametrize("scheme", sorted(SCHEMES))
def test_connect_timeout_bounds_a_server_that_never_answers(scheme, silent_server):
    app = App("t", broker=SCHEMES[scheme].format(port=silent_server))

    @app.task
    def add(x, y):
        return x + y

    with pytest.raises(BrokerUnavailable) as info:
        add.apply_async((1, 1), connect_timeout=0.5)
    assert f"127.0.0.1:{silent_server}" in str(info.value)
    assert "s3cret" not in str(info.value)


def test_with_app_connection_reuses_one_connection():
    require("redis")
    ns = uuid.uuid4().hex[:12]
    app = App("t", broker=with_namespace(broker_url("redis"), ns))

    @app.task
    def add(x, y):
        return x + y

    with app.connection() as conn:
        add.apply_async((1, 1), connection=conn)
        add.apply_async((2, 2), connection=conn)
        assert conn.queue_depth("celery") == 2
        conn.delete_namespace()


def test_unknown_scheme_names_the_installed_transports():
    with pytest.raises(TransportNotFound) as info:
        load_transport("amqq://guest:pw@localhost//")
    text = str(info.value)
    assert "'amqq'" in text and "amqp" in text and "redis" in text and "pw" not in text
    assert "Did you mean 'amqp'" in text


def test_registered_transport_whose_extra_is_missing_says_which_pip_install(monkeypatch):
    class Broken:
        name = "redis"

        def load(self):
            raise ImportError("No module named 'redis'")

    monkeypatch.setattr("simq.transport.available_transports", lambda: {"redis": Broken()})
    with pytest.raises(TransportNotFound, match=r"pip install 'simq\[redis\]'"):
        load_transport("redis://localhost:6379/0")


def test_conflicting_queue_arguments_on_rabbitmq_name_queue_and_both_argument_sets():
    require("amqp")
    ns = uuid.uuid4().hex[:12]
    url = with_namespace(broker_url("amqp"), ns)
    factory = load_transport(url)
    first = factory(url, connect_timeout=2)
    try:
        first.declare_queue(Queue("clash", arguments={"x-message-ttl": 1000}))
        with pytest.raises(ConfigurationError) as info:
            first.declare_queue(Queue("clash", arguments={"x-message-ttl": 2000}))
        text = str(info.value)
        assert "'clash'" in text and "2000" in text and "1000" in text and "PRECONDITION_FAILED" in text
        first.delete_queue("clash")
    finally:
        first.close()


@pytest.mark.parametrize("name", ["amqp", "redis"])
def test_each_transport_declares_its_capabilities(name):
    require(name)
    factory = load_transport(broker_url(name))
    conn = factory(broker_url(name), connect_timeout=2)
    try:
        assert isinstance(conn, Transport)
        caps = conn.capabilities
        assert caps.priority == "native"
        assert caps.immediate == "emulated"
        assert caps.shared_between_processes
        assert caps.notes
    finally:
        conn.close()


def test_redis_result_backend_chord_counter_is_atomic_across_threads():
    require("redis")
    ns = uuid.uuid4().hex[:12]
    app = App("t", backend=with_namespace("redis://127.0.0.1:6379/0", ns))
    backend = app.backend

    def bump():
        for _ in range(200):
            backend.incr("chord-x")

    threads = [threading.Thread(target=bump) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert backend.incr("chord-x", 0) == 800
    backend.delete_namespace()


def test_redis_result_backend_wakes_a_waiter_without_polling():
    require("redis")
    ns = uuid.uuid4().hex[:12]
    app = App("t", backend=with_namespace("redis://127.0.0.1:6379/0", ns))
    backend = app.backend
    got = []
    waiter = threading.Thread(target=lambda: got.append(backend.wait_for("tid", timeout=10)))
    waiter.start()
    backend.store_result("tid", 42, "SUCCESS")
    waiter.join(timeout=10)
    assert got and got[0].result == 42
    backend.delete_namespace()
