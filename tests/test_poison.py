"""Poison messages: every kind of bad input is dead-lettered with a reason, counted, logged once; the worker goes on."""

from __future__ import annotations

import json
import logging
import pickle

import pytest

from simq import App
from simq.message import Envelope

GOOD_HEADERS = {"simq": 1, "task": "poison.add", "id": "bad-1", "retries": 0}
GOOD_BODY = json.dumps([[1, 2], {}, {}]).encode()


def make_app(**conf):
    app = App("poison", **conf)
    calls = []

    @app.task(name="poison.add")
    def add(x, y):
        calls.append((x, y))
        return x + y

    return app, add, calls


def envelope(body=GOOD_BODY, content_type="application/json", headers=None, **overrides):
    h = dict(GOOD_HEADERS)
    if headers is not None:
        h = headers
    h.update(overrides)
    return Envelope(body, content_type, "utf-8", h)


def check_rejected(env, reason, caplog, **conf):
    """Publish ``env`` raw, run; assert it is dead-lettered for ``reason`` and a good task still runs."""
    app, add, calls = make_app(**conf)
    with caplog.at_level(logging.WARNING, logger="simq.worker"), app.simulate(seed=1) as sim:
        sim.producer.publish(env, "", "celery")
        sim.run_until_idle()
        assert calls == []
        assert len(sim.dead_letters) == 1
        dead = sim.dead_letters[0]
        assert dead.reason.startswith(reason + ":"), dead.reason
        assert dead.queue == "celery"
        worker = sim.worker_list[0]
        assert worker.stats.rejected == {reason: 1}
        logged = [r for r in caplog.records if r.name == "simq.worker" and "rejected message" in r.getMessage()]
        assert len(logged) == 1
        message_id = env.headers.get("id") if isinstance(env.headers, dict) else None
        if message_id:
            assert repr(message_id) in logged[0].getMessage()
        assert add.delay(2, 3).get(timeout=10) == 5
        assert calls == [(2, 3)]
        assert len(sim.dead_letters) == 1
    return dead


class TestGarbage:
    def test_garbage_json_body(self, caplog):
        check_rejected(envelope(body=b"\xff\x00not json"), "undecodable", caplog)

    def test_body_of_wrong_shape(self, caplog):
        check_rejected(envelope(body=b'{"args": [1, 2]}'), "malformed", caplog)

    def test_body_with_args_not_a_list(self, caplog):
        check_rejected(envelope(body=b'["12", {}, {}]'), "malformed", caplog)

    def test_kwargs_not_a_dict(self, caplog):
        check_rejected(envelope(body=b"[[1, 2], [], {}]"), "malformed", caplog)

    def test_deeply_nested_body(self, caplog):
        check_rejected(envelope(body=b"[" * 100_000 + b"]" * 100_000), "undecodable", caplog)


class TestContentTypes:
    def test_unknown_content_type(self, caplog):
        check_rejected(envelope(content_type="application/x-unheard-of"), "content-disallowed", caplog)

    def test_pickle_is_refused_by_default(self, caplog):
        body = pickle.dumps([[1, 2], {}, {}])
        check_rejected(envelope(body=body, content_type="application/x-python-serialize"), "content-disallowed", caplog)

    def test_accepted_type_without_a_serializer(self, caplog):
        check_rejected(
            envelope(content_type="application/x-nobody"),
            "undecodable",
            caplog,
            accept_content=["json", "application/x-nobody"],
        )


class TestUnknownTasks:
    def test_unknown_task_name(self, caplog):
        check_rejected(envelope(task="poison.nope"), "unknown-task", caplog)

    def test_callback_naming_an_unknown_task(self, caplog):
        body = json.dumps([[1, 2], {}, {"callbacks": [{"task": "poison.nope", "args": [], "kwargs": {}}]}]).encode()
        check_rejected(envelope(body=body), "unknown-signature", caplog)

    def test_errback_naming_an_unknown_task(self, caplog):
        body = json.dumps([[1, 2], {}, {"errbacks": [{"task": "poison.gone"}]}]).encode()
        check_rejected(envelope(body=body), "unknown-signature", caplog)

    def test_nested_canvas_naming_an_unknown_task(self, caplog):
        chain = [
            {"task": "poison.add", "args": [1], "kwargs": {}},
            {"task": "poison.missing", "args": [], "kwargs": {}},
        ]
        body = json.dumps([[1, 2], {}, {"chain": chain}]).encode()
        check_rejected(envelope(body=body), "unknown-signature", caplog)

    def test_callback_that_is_not_a_signature(self, caplog):
        body = json.dumps([[1, 2], {}, {"callbacks": ["poison.add"]}]).encode()
        check_rejected(envelope(body=body), "malformed", caplog)

    def test_task_named_in_a_signatures_kwargs_is_data(self):
        app, add, _calls = make_app()

        @app.task(name="poison.echo")
        def echo(*args, **kwargs):
            return kwargs

        with app.simulate(seed=3) as sim:
            r = add.apply_async((1, 2), link=echo.s(task="not.a.task"))
            sim.run_until_idle()
            assert r.get() == 3
            assert sim.dead_letters == []


class TestHeaders:
    @pytest.mark.parametrize(
        "headers",
        [
            {"id": "x"},  # no task
            {"task": "poison.add"},  # no id
            {"task": "", "id": "x"},
            {"task": 7, "id": "x"},
            {"task": "poison.add", "id": ["x"]},
            dict(GOOD_HEADERS, eta="tomorrow"),
            dict(GOOD_HEADERS, eta="12.5"),
            dict(GOOD_HEADERS, eta=True),
            dict(GOOD_HEADERS, eta=float("nan")),
            dict(GOOD_HEADERS, expires=[1]),
            dict(GOOD_HEADERS, expires=float("inf")),
            dict(GOOD_HEADERS, retries="3"),
            dict(GOOD_HEADERS, retries=1.5),
            dict(GOOD_HEADERS, retries=-1),
            dict(GOOD_HEADERS, group_index="0"),
            dict(GOOD_HEADERS, root_id=5),
            dict(GOOD_HEADERS, parent_id={"a": 1}),
            dict(GOOD_HEADERS, group=[1]),
        ],
        ids=lambda h: ",".join(f"{k}={v!r}" for k, v in h.items() if k != "simq"),
    )
    def test_malformed_header(self, headers, caplog):
        check_rejected(envelope(headers=dict(headers)), "malformed", caplog)

    def test_headers_not_a_mapping(self, caplog):
        check_rejected(Envelope(GOOD_BODY, "application/json", "utf-8", ["task", "poison.add"]), "malformed", caplog)

    def test_content_type_not_a_string(self, caplog):
        check_rejected(Envelope(GOOD_BODY, None, "utf-8", dict(GOOD_HEADERS)), "malformed", caplog)

    def test_body_not_bytes(self, caplog):
        check_rejected(
            Envelope("[[1, 2], {}, {}]", "application/json", "utf-8", dict(GOOD_HEADERS)), "malformed", caplog
        )

    def test_kwargs_with_non_string_keys(self, caplog):
        import msgpack

        body = msgpack.packb([[], {1: 2}, {}])
        check_rejected(
            envelope(body=body, content_type="application/x-msgpack"),
            "malformed",
            caplog,
            accept_content=["json", "msgpack"],
        )


class TestOversized:
    def test_body_over_the_limit_is_rejected_before_decoding(self, caplog):
        body = json.dumps([["x" * 2000], {}, {}]).encode()
        dead = check_rejected(envelope(body=body), "oversized", caplog, worker_max_message_size=1000)
        assert "worker_max_message_size=1000" in dead.reason

    def test_body_at_the_limit_runs(self):
        app, _add, calls = make_app(worker_max_message_size=len(GOOD_BODY))
        with app.simulate(seed=2) as sim:
            sim.producer.publish(envelope(), "", "celery")
            sim.run_until_idle()
            assert calls == [(1, 2)]
            assert sim.dead_letters == []

    def test_none_means_no_limit(self):
        app, add, _calls = make_app(worker_max_message_size=None)
        with app.simulate(seed=2):
            assert add.delay("x" * 100_000, "").get() == "x" * 100_000

    def test_default_limit_is_sixteen_mebibytes(self):
        assert App("d").conf.worker_max_message_size == 16 * 1024 * 1024


def test_many_poison_messages_then_good_work(caplog):
    """A burst of mixed bad input: each counted under its reason, all dead-lettered, the worker keeps serving."""
    app, add, _calls = make_app()
    bad = [
        envelope(body=b"garbage"),
        envelope(task="poison.unknown"),
        envelope(content_type="application/x-yaml"),
        envelope(eta="soon"),
    ]
    with app.simulate(seed=5) as sim:
        results = []
        for env in bad:
            sim.producer.publish(env, "", "celery")
            results.append(add.delay(len(results), 1))
        sim.run_until_idle()
        assert [r.get() for r in results] == [1, 2, 3, 4]
        assert sim.worker_list[0].stats.rejected == {
            "undecodable": 1,
            "unknown-task": 1,
            "content-disallowed": 1,
            "malformed": 1,
        }
        assert len(sim.dead_letters) == 4


class TestDeadLetterExchange:
    """A queue with x-dead-letter-exchange: bad input is republished there with its reason, as on RabbitMQ."""

    def make(self):
        from simq import Exchange, Queue

        app, add, calls = make_app()
        dlx = Exchange("dlx", "direct")
        app.conf.task_queues = [
            Queue("celery", arguments={"x-dead-letter-exchange": "dlx", "x-dead-letter-routing-key": "dead"}),
            Queue("dead", dlx, routing_key="dead"),
        ]
        return app, add, calls

    def test_reason_travels_in_a_header(self):
        app, add, _ = self.make()
        with app.simulate(seed=1, queues=["celery"]) as sim:
            sim.producer.publish(envelope(task="poison.nope"), "", "celery")
            sim.run_until_idle()
            assert sim.depth("dead") == 1
            assert sim.dead_letters == []
            reader = sim.connection()
            reader.consume("dead")
            (dead,) = reader.drain_events()
            assert dead.envelope.headers["x-death-reason"].startswith("unknown-task: task 'poison.nope'")
            assert add.delay(1, 1).get() == 2

    @pytest.mark.parametrize("headers", [["task", "poison.add"], None, "task=poison.add"])
    def test_headers_that_are_not_a_mapping(self, headers):
        app, add, _ = self.make()
        with app.simulate(seed=1, queues=["celery"]) as sim:
            sim.producer.publish(Envelope(GOOD_BODY, "application/json", "utf-8", headers), "", "celery")
            sim.run_until_idle()
            assert sim.depth("dead") == 1
            assert sim.worker_list[0].stats.rejected == {"malformed": 1}
            assert add.delay(1, 1).get() == 2
