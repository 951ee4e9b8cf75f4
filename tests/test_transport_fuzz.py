"""Transport-level fuzzing: bytes written straight onto each broker, read by a real ``simq worker``.

The decode fuzzers (tests/test_fuzz_decode.py) feed ``protocol.decode``;
these feed what a transport reads off the broker: arbitrary bytes and
well-formed-but-wrong structures on Redis lists, and AMQP messages with
arbitrary bodies, properties and header tables. The worker under test is a
``simq worker`` process (threads and processes pools); it must never crash,
never run what it should not, refuse each message once with a reason (one
log line, a counter in its stop line), dead-letter it where the broker keeps
dead letters, and run the good task sent after them.
"""

from __future__ import annotations

import datetime
import decimal
import math
import random
import re
import time

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

# -- the Redis payload reader, on its own ------------------------------------------------
from simq_redis.payload import (
    DEAD_LETTER_MAX_BYTES,
    dead_letter_entry,
    pack,
    read_dead_letter,
    unpack,
)

from simq.message import MALFORMED_CONTENT_TYPE, Envelope
from tests.test_deployed_worker import _Deployed, _pool_args

_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats()
    | st.text(max_size=8)
    | st.binary(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4),
    max_leaves=12,
)


@given(st.binary(max_size=300))
@settings(max_examples=500, deadline=None)
def test_any_bytes_unpack_to_an_envelope(raw):
    envelope, exchange, routing_key, _ = unpack(raw)
    assert isinstance(envelope, Envelope)
    assert isinstance(exchange, str) and isinstance(routing_key, str)


@given(st.lists(_values, max_size=10), st.sampled_from([b"0", b"1"]))
@settings(max_examples=500, deadline=None)
def test_wrong_structures_unpack_as_malformed_or_valid_fields(fields, flag):
    envelope, _, _, redelivered = unpack(flag + msgpack.packb(fields, use_bin_type=True))
    assert redelivered == (flag == b"1")
    if envelope.content_type != MALFORMED_CONTENT_TYPE:  # only a well-typed 8-field array gets through
        assert len(fields) == 8
        assert type(envelope.body) is bytes and type(envelope.headers) is dict
        assert envelope.priority is None or 0 <= envelope.priority <= 9


@given(st.integers(min_value=-(2**63), max_value=2**64 - 1))
def test_a_priority_outside_0_to_9_is_malformed(priority):
    payload = b"0" + msgpack.packb([b"x", "application/json", "utf-8", {}, priority, "m", "", "celery"])
    envelope = unpack(payload)[0]
    assert (envelope.content_type == MALFORMED_CONTENT_TYPE) == (not 0 <= priority <= 9)


def test_a_packed_envelope_round_trips():
    env = Envelope(b"body", "application/json", "utf-8", {"task": "t", "id": "i"}, 3, "i")
    assert unpack(pack(env, "ex", "key")) == (env, "ex", "key", False)


def test_dead_letters_keep_small_payloads_whole_and_cut_large_ones():
    small = pack(Envelope(b"x" * 100, "application/json", "utf-8", {"id": "s"}), "", "celery")
    assert read_dead_letter(dead_letter_entry("malformed: x", small)) == ("malformed: x", unpack(small)[0])
    large = b"0" + b"y" * (5 * DEAD_LETTER_MAX_BYTES)
    entry = dead_letter_entry("oversized: big", large)
    assert len(entry) < DEAD_LETTER_MAX_BYTES + 100
    reason, envelope = read_dead_letter(entry)
    assert reason == "oversized: big"
    assert envelope.content_type == MALFORMED_CONTENT_TYPE
    assert f"of {len(large)} bytes" in envelope.headers["x-simq-malformed"]


# -- on the deployed worker ----------------------------------------------------------------


def _redis_poison(rng: random.Random) -> list[bytes]:
    """Bytes someone else wrote onto a simq list: random, msgpack of the wrong shape, bad fields."""
    good = [
        b"[[1], {}, {}]",
        "application/json",
        "utf-8",
        {"simq": 1, "task": "inner", "id": "x"},
        None,
        "x",
        "",
        "celery",
    ]
    out = [
        b"",
        b"0",
        b"1\xc1",  # msgpack's never-used byte
        b"0" + msgpack.packb({"a": 1}),  # a map (the chaos campaign's poison)
        b"0" + msgpack.packb(good[:7]),
        b"0" + msgpack.packb([*good[:4], 200, *good[5:]]),  # priority 200
        b"0" + msgpack.packb([*good[:4], -1, *good[5:]]),
        b"0" + msgpack.packb([*good[:3], ["not", "a", "map"], *good[4:]]),
        b"0" + msgpack.packb([1, *good[1:]]),  # body not bytes
        b"0\x92\xc4\x00",  # truncated
        b'{"body": "kombu json", "headers": {}}',  # another library's message on our list
        b"0"
        + msgpack.packb(
            [b"\xff\xfe", "application/json", "utf-8", {"simq": 1, "task": "inner", "id": "y"}, None, "y", "", "celery"]
        ),
    ]
    for message_id, eta in (("n", math.nan), ("f", 1e300), ("i", math.inf)):  # held for ever if believed
        out.append(
            b"0" + msgpack.packb([*good[:3], {**good[3], "id": message_id, "eta": eta}, None, message_id, "", "celery"])
        )
    for _ in range(20):
        out.append(rng.choice([b"0", b"1", b""]) + rng.randbytes(rng.randrange(0, 200)))
    return out


def _amqp_poison(rng: random.Random) -> list[tuple[bytes, dict]]:
    """(body, properties) for raw AMQP publishes: bodies, encodings, priorities and header tables simq never sends.

    No NaN in a header table: RabbitMQ closes the publisher's connection (541 INTERNAL_ERROR) rather than route it.
    """
    headers = {"simq": 1, "task": "inner", "id": "z"}
    out: list[tuple[bytes, dict]] = [
        (b"\xff\xfe\x00", {"content_type": "application/json", "content_encoding": "utf-8"}),
        (b"\xe9t\xe9", {"content_type": "application/json", "content_encoding": "latin-1"}),
        (b"[[1], {}, {}]", {"content_type": "application/json", "priority": 255, "application_headers": {}}),
        (b"[[1], {}, {}]", {"content_type": "application/json", "application_headers": {**headers, "task": 7}}),
        (
            b"[[1], {}, {}]",
            {
                "content_type": "application/json",
                "application_headers": {
                    **headers,
                    "id": "w",
                    "eta": datetime.datetime(2030, 1, 1),
                    "retries": decimal.Decimal("1.5"),
                    "nested": {"deep": [1, b"b", {"x": None}]},
                },
            },
        ),
        (
            b"[[1], {}, {}]",
            {"content_type": "application/json", "application_headers": {**headers, "id": "v", "eta": 1e300}},
        ),
        (b"", {}),
        (b"[[1], {}, {}]", {"content_type": "application/x-unheard-of", "application_headers": {**headers, "id": "t"}}),
    ]
    for _ in range(15):
        out.append(
            (rng.randbytes(rng.randrange(0, 200)), {"content_type": rng.choice(["application/json", "", "x/y"])})
        )
    return out


def _rejected_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if "rejected message" in line]


def _wait_rejections(project: _Deployed, count: int, limit: float = 30.0) -> list[str]:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        lines = _rejected_lines(project.log())
        if len(lines) >= count:
            return lines
        time.sleep(0.05)
    raise AssertionError(f"{count} rejections expected within {limit} s:\n{project.log()}")


def _stop_counts(log: str) -> dict[str, int]:
    """The ``rejected:`` counters of the worker's stop line."""
    line = next(line for line in reversed(log.splitlines()) if ": stopped: " in line)
    tail = line.split("rejected: ", 1)[1]
    return {} if tail == "none" else {k: int(v) for k, v in (item.rsplit(" ", 1) for item in tail.split(", "))}


@pytest.mark.parametrize("pool", ["threads", "processes"])
def test_poison_written_onto_redis_lists_never_stops_the_worker(tmp_path, pool):
    project = _Deployed(tmp_path, "redis")
    try:
        worker = project.worker(*_pool_args(pool))
        project.wait_log(r"ready, consuming")
        poison = _redis_poison(random.Random(20261203))
        client = project.side
        prefix = f"simq:{project.namespace}:q:celery:"
        for i, raw in enumerate(poison):
            client.rpush(prefix + str(i % 10), raw)
        assert project.app.tasks["inner"].delay(42).get(timeout=30) == 42
        _wait_rejections(project, len(poison))
        assert worker.poll() is None, project.log()
        lines = _rejected_lines(project.log())
        assert len(lines) == len(poison), "\n".join(lines)
        # the transport could not unpack it, or protocol.decode could not read its body
        assert all(re.search(r"\((malformed|undecodable|eta-out-of-range)\)", line) for line in lines), "\n".join(lines)
        assert any("'f'" in line and "(eta-out-of-range)" in line for line in lines), "\n".join(lines)
        dead = client.lrange(f"simq:{project.namespace}:dead:celery", 0, -1)
        assert len(dead) == len(poison)
        reasons = [read_dead_letter(entry)[0] for entry in dead]
        assert all(reason.startswith(("malformed: ", "undecodable: ", "eta-out-of-range: ")) for reason in reasons), (
            reasons
        )
        assert client.ttl(f"simq:{project.namespace}:dead:celery") > 0  # dead letters do not live for ever
        assert project.side_list("inner") == ["42"]  # the good task ran, no poison did
        project.stop()
        assert sum(_stop_counts(project.log()).values()) == len(poison), project.log()[-2000:]
    finally:
        project.close()


@pytest.mark.parametrize("pool", ["threads", "processes"])
def test_raw_amqp_messages_never_stop_the_worker(tmp_path, pool):
    import amqp

    project = _Deployed(tmp_path, "amqp")
    try:
        worker = project.worker(*_pool_args(pool))
        project.wait_log(r"ready, consuming")
        poison = _amqp_poison(random.Random(20261203))
        conn = amqp.Connection("127.0.0.1:5672", userid="guest", password="guest")
        conn.connect()
        try:
            channel = conn.channel()
            for body, properties in poison:
                channel.basic_publish(amqp.Message(body, **properties), "", f"{project.namespace}.celery")
        finally:
            conn.close()
        assert project.app.tasks["inner"].delay(42).get(timeout=30) == 42
        _wait_rejections(project, len(poison))
        assert worker.poll() is None, project.log()
        lines = _rejected_lines(project.log())
        assert len(lines) == len(poison), "\n".join(lines)
        # an eta of 1e300 is refused as out of range, not held for ever
        assert any("'v'" in line and "(eta-out-of-range)" in line for line in lines), "\n".join(lines)
        assert project.side_list("inner") == ["42"]  # the good task ran, no poison did
        project.stop()
        assert sum(_stop_counts(project.log()).values()) == len(poison), project.log()[-2000:]
    finally:
        project.close()
