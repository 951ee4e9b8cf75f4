"""Behaviour the hot-path shortcuts (``core: perf:`` commits) must keep."""

from __future__ import annotations

import random
import threading
import uuid

import pytest

# msgpack's C extension must be imported before a simulation patches datetime.
pytest.importorskip("msgpack")

from simq import App, states
from simq.backends.memory import MemoryBackend
from simq.clock import WallClock
from simq.exceptions import ConfigurationError, MessageRejected
from simq.message import Delivery, Envelope
from simq.protocol import decode
from simq.serialization import SerializerRegistry


class TestIds:
    def test_simulation_ids_are_the_seeded_version_4_uuids(self):
        app = App("ids")
        sim = app.simulate(seed=11)
        rng = random.Random(11)
        for _ in range(2000):
            expected = str(uuid.UUID(int=rng.getrandbits(128), version=4))
            assert sim.new_id() == expected
        assert uuid.UUID(sim.new_id()).version == 4


class TestMemoryBackendWaiting:
    def test_a_thread_waiting_for_a_result_is_woken_by_the_store(self):
        backend = MemoryBackend(SerializerRegistry(), WallClock())
        waiting = threading.Event()
        got: list[object] = []

        def wait() -> None:
            waiting.set()
            got.append(backend.wait_for("t1", timeout=30).result)

        thread = threading.Thread(target=wait)
        thread.start()
        waiting.wait(5)
        backend.store_result("t1", 42, states.SUCCESS)
        thread.join(30)
        assert not thread.is_alive()
        assert got == [42]


def _delivery(headers: object, body: bytes = b"[[], {}, {}]", content_type: str = "application/json") -> Delivery:
    return Delivery(Envelope(body, content_type, "utf-8", headers), 1, "celery", "", "celery")  # type: ignore[arg-type]


class TestDecodeStillRefuses:
    accept = frozenset({"application/json"})

    @pytest.mark.parametrize(
        ("headers", "body", "reason"),
        [
            (["not", "a", "mapping"], b"[[], {}, {}]", "malformed"),
            ({"task": "", "id": "x"}, b"[[], {}, {}]", "malformed"),
            ({"task": "t", "id": 7}, b"[[], {}, {}]", "malformed"),
            ({"task": "t", "id": "x"}, b"[[], {}]", "malformed"),
            ({"task": "t", "id": "x"}, b"[{}, {}, {}]", "malformed"),
            ({"task": "t", "id": "x"}, b"[[], [], {}]", "malformed"),
            ({"task": "t", "id": "x", "eta": True}, b"[[], {}, {}]", "malformed"),
            ({"task": "t", "id": "x", "retries": "many"}, b"[[], {}, {}]", "malformed"),
            ({"task": "t", "id": "x"}, b"not json", "undecodable"),
        ],
    )
    def test_malformed_messages_are_refused_with_their_reason(self, headers, body, reason):
        with pytest.raises(MessageRejected) as info:
            decode(_delivery(headers, body), SerializerRegistry(), self.accept)
        assert info.value.reason == reason

    def test_refused_content_type_is_named(self):
        with pytest.raises(MessageRejected) as info:
            decode(
                _delivery({"task": "t", "id": "x"}, content_type="application/x-python-serialize"),
                SerializerRegistry(),
                self.accept,
            )
        assert info.value.reason == "content-disallowed"

    def test_a_good_message_keeps_its_optional_headers_and_user_headers(self):
        headers = {"task": "t", "id": "x", "retries": 2, "eta": 5, "expires": 9.5, "group_index": 3, "trace": "abc"}
        message = decode(_delivery(headers, b'[[1], {"k": 2}, {}]'), SerializerRegistry(), self.accept)
        assert (message.retries, message.eta, message.expires, message.group_index) == (2, 5.0, 9.5, 3)
        assert message.args == (1,) and dict(message.kwargs) == {"k": 2}
        assert dict(message.headers) == {"trace": "abc"}


class TestSendTaskOptions:
    def test_unknown_call_options_are_still_refused_with_a_suggestion(self):
        app = App("opts")

        @app.task
        def add(x, y):
            return x + y

        with app.simulate(), pytest.raises(ConfigurationError, match=r"countdwn.*countdown"):
            add.apply_async((1, 2), countdwn=3)

    def test_bad_priority_and_countdown_are_refused(self):
        app = App("opts2")

        @app.task
        def add(x, y):
            return x + y

        with app.simulate():
            with pytest.raises(ConfigurationError, match="priority"):
                add.apply_async((1, 2), priority=10)
            with pytest.raises(ConfigurationError, match="countdown"):
                add.apply_async((1, 2), countdown="soon")
            assert add.apply_async((1, 2), priority=0, countdown=1).get() == 3

    def test_default_priority_and_serializer_come_from_config(self):
        app = App("opts3", task_default_priority=7, task_serializer="msgpack", accept_content=["json", "msgpack"])

        @app.task
        def add(x, y):
            return x + y

        seen = []

        @app.task
        def probe():
            return None

        with app.simulate() as sim:
            original = sim.producer.publish

            def spy(envelope, *a, **kw):
                seen.append((envelope.priority, envelope.content_type))
                return original(envelope, *a, **kw)

            sim.producer.publish = spy
            probe.delay().get()
            assert add.delay(1, 2).get() == 3
        assert seen[:1] == [(7, "application/x-msgpack")]
