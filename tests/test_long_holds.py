"""Long holds on the deployed worker: channel closes, the 16-bit prefetch, ``max_hold``, a day-long countdown.

RabbitMQ closes a channel that holds a delivery longer than its
``consumer_timeout`` (30 minutes by default) with 406 PRECONDITION_FAILED,
a channel error. Before, that error escaped the transport: a solo worker
exited with a traceback, a threads-pool loop died, and the next holder of
the redelivered eta message died the same way half an hour later. Now a
channel error counts as a lost connection (the worker reconnects, RabbitMQ
redelivers), and a consumer never holds an eta message longer than
``max_hold``: later ones wait in a wait queue and come back.

The real timeout is not waited for here (RabbitMQ checks it about once a
minute); the same 406 is provoked by acking a delivery tag the channel never
gave, which RabbitMQ answers by closing the channel exactly that way.
"""

from __future__ import annotations

import time
import uuid

import pytest

from conformance.harness import broker_url, require, with_namespace
from simq import Queue
from simq.exceptions import BrokerUnavailable, ConfigurationError
from simq.message import Envelope
from simq.transport import load_transport
from tests.test_deployed_worker import _Deployed


@pytest.fixture
def url():
    require("amqp")
    return with_namespace(broker_url("amqp"), f"h{uuid.uuid4().hex[:10]}")


def _connect(url):
    transport = load_transport(url)(url, connect_timeout=5)
    transport.declare([Queue("q")])
    return transport


def _envelope(i: int) -> Envelope:
    return Envelope(b"[[], {}, {}]", "application/json", "utf-8", {"id": f"m{i}"}, None, f"m{i}")


def test_a_channel_the_broker_closes_counts_as_a_lost_connection(url):
    transport = _connect(url)
    try:
        transport.publish(_envelope(1), "", "q")
        transport.consume("q", prefetch=10)
        deliveries = []
        deadline = time.monotonic() + 10
        while not deliveries and time.monotonic() < deadline:
            deliveries = transport.drain_events(0.2)
        assert [d.envelope.message_id for d in deliveries] == ["m1"]
        transport._ch.basic_ack(999_999)  # RabbitMQ: 406 PRECONDITION_FAILED, unknown delivery tag; channel closed
        with pytest.raises(BrokerUnavailable, match="PRECONDITION_FAILED"):
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                transport.drain_events(0.2)
    finally:
        transport.close()
    again = _connect(url)
    try:
        tag = again.consume("q", prefetch=10)
        redelivered = []
        deadline = time.monotonic() + 10
        while not redelivered and time.monotonic() < deadline:
            redelivered = again.drain_events(0.2)
        assert [(d.envelope.message_id, d.redelivered) for d in redelivered] == [("m1", True)]
        again.ack(redelivered[0])
        again.cancel(tag)
        again.delete_queue("q")
    finally:
        again.close()


def test_a_prefetch_beyond_basic_qos_range_is_capped_not_an_error(url):
    transport = _connect(url)
    try:
        tag = transport.consume("q", prefetch=10)
        transport.set_prefetch(70_000)  # a worker holding many eta messages widens its prefetch this far
        transport.publish(_envelope(2), "", "q")
        got = []
        deadline = time.monotonic() + 10
        while not got and time.monotonic() < deadline:
            got = transport.drain_events(0.2)
        assert [d.envelope.message_id for d in got] == ["m2"]
        transport.ack(got[0])
        transport.cancel(tag)
        transport.delete_queue("q")
    finally:
        transport.close()


def test_max_hold_must_be_a_positive_number(url):
    with pytest.raises(ConfigurationError, match="max_hold"):
        load_transport(url)(url + "&max_hold=never", connect_timeout=5)


def test_an_eta_beyond_max_hold_waits_in_the_broker_and_runs_once_when_due(tmp_path):
    require("amqp")
    project = _Deployed(tmp_path, "amqp")
    try:
        project.env["SIMQ_TEST_BROKER"] = project.broker + "&max_hold=1"
        project.worker("-c", "4")
        project.wait_log(r"ready, consuming")
        sent = time.time()
        result = project.app.tasks["inner"].apply_async((7,), countdown=3.5)
        assert result.get(timeout=30) == 7
        assert time.time() - sent >= 3.5
        log = project.log()
        # held at most a second at a time: parked twice or three times, never lost, run once
        assert 2 <= log.count("deferred: due in") <= 4, log
        assert project.side_list("inner") == ["7"]
        assert log.count(f"Task inner[{result.id}] succeeded") == 1, log
    finally:
        project.close()


@pytest.mark.parametrize("kind", ["amqp", "redis"])
def test_a_countdown_of_a_day_is_kept_and_the_worker_goes_on(tmp_path, kind):
    """RabbitMQ: parked in the wait queue (default max_hold 900 s), not held; Redis: held, its prefetch widened."""
    require(kind)
    project = _Deployed(tmp_path, kind)
    try:
        worker = project.worker("-c", "4")
        project.wait_log(r"ready, consuming")
        later = project.app.tasks["inner"].apply_async((1,), countdown=86400)
        assert project.app.tasks["inner"].delay(2).get(timeout=30) == 2
        with project.app.connection() as conn:
            if kind == "amqp":
                project.wait_log(rf"inner\[{later.id}\] deferred: due in 8640\d s")
                deadline = time.monotonic() + 10
                while conn.queue_depth("celery.simq-wait") != 1 and time.monotonic() < deadline:
                    time.sleep(0.1)
                assert conn.queue_depth("celery.simq-wait") == 1
            else:
                assert "deferred" not in project.log()
            assert conn.queue_depth("celery") == 0
        assert worker.poll() is None
        assert project.side_list("inner") == ["2"]
        assert later.state == "PENDING"
        project.stop()
        with project.app.connection() as conn:  # Redis: the held message went back on the way out
            assert conn.queue_depth("celery") == (1 if kind == "redis" else 0)
            if kind == "amqp":
                conn.delete_queue("celery.simq-wait")
    finally:
        project.close()
