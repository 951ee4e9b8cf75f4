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


class TestTaskMessageFieldOrder:
    def test_the_fields_are_in_the_order_calling_build_passes_them(self):
        # simq.calling.build constructs TaskMessage by position: a reordered class must fail here.
        import attrs

        from simq.message import TaskMessage

        assert [f.name for f in attrs.fields(TaskMessage)] == [
            "id",
            "task",
            "args",
            "kwargs",
            "eta",
            "expires",
            "retries",
            "priority",
            "root_id",
            "parent_id",
            "group",
            "group_index",
            "embed",
            "headers",
        ]

    def test_a_send_puts_each_option_in_its_field(self):
        from simq.hooks import WorkerHook

        app = App("fields")
        seen = []

        class Look(WorkerHook):
            def before_run(self, executor, request):
                seen.append(request.message)

        app.worker_hooks.append(Look())

        @app.task(name="add")
        def add(x, y=0):
            return x + y

        with app.simulate(seed=3) as sim:
            start = sim.clock.now
            assert add.apply_async((1,), {"y": 2}, countdown=5, expires=50, priority=3, task_id="the-id").get() == 3
        (message,) = seen
        assert (message.id, message.task, tuple(message.args), dict(message.kwargs)) == (
            "the-id",
            "add",
            (1,),
            {"y": 2},
        )
        assert (message.eta, message.expires, message.retries, message.priority) == (start + 5, start + 50, 0, 3)
        assert (message.root_id, message.parent_id, message.group, message.group_index) == ("the-id", None, None, None)
        assert (dict(message.embed), dict(message.headers)) == ({}, {})


class TestCanvasOnlyHooks:
    def test_a_canvas_only_hook_is_left_out_of_on_success_for_plain_messages_only(self):
        from simq.hooks import Hooks, WorkerHook

        class Plain(WorkerHook):
            def on_success(self, executor, request, retval):
                pass

        class CanvasOnly(WorkerHook):
            canvas_only = True

            def on_success(self, executor, request, retval):
                pass

        plain, canvas = Plain(), CanvasOnly()
        hooks = Hooks([plain, canvas])
        assert hooks.on_success == (plain.on_success, canvas.on_success)
        assert hooks.on_success_plain == (plain.on_success,)

    def test_a_plain_task_does_not_reach_the_canvas_hook_and_a_linked_one_does(self):
        from simq.canvas.hook import CanvasHook

        app = App("canvas-only")
        calls: list[bool] = []

        class Counting(CanvasHook):
            def on_success(self, executor, request, retval):
                calls.append(bool(request.message.embed))
                super().on_success(executor, request, retval)

        app.worker_hooks[0] = Counting()

        @app.task(name="add")
        def add(x, y):
            return x + y

        with app.simulate(seed=1):
            assert add.delay(1, 1).get() == 2
            assert calls == []
            linked = add.apply_async((1, 2), link=add.s(10))
            assert linked.get() == 3
        assert calls == [True]


class TestMemoryBackendExpiryOrder:
    def test_a_record_written_again_goes_behind_records_written_after_its_first_write(self):
        from simq.clock import VirtualClock

        clock = VirtualClock(start=1000.0)
        backend = MemoryBackend(SerializerRegistry(), clock, expires=60)
        backend.store_result("a", 1, states.SUCCESS)
        clock.jump_to(1010.0)
        backend.store_result("b", 2, states.SUCCESS)
        clock.jump_to(1020.0)
        backend.store_result("a", 3, states.SUCCESS)  # a now expires at 1080, after b (1070)
        clock.jump_to(1075.0)
        assert backend.get_meta("b").state == states.PENDING
        assert backend.get_meta("a").result == 3
        assert backend.is_ready("a") and not backend.is_ready("b")
        clock.jump_to(1080.0)
        assert backend.get_meta("a").state == states.PENDING
        assert len(backend) == 0
