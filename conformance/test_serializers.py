"""Serializers: selection order, accept_content, custom codecs, clear errors."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from decimal import Decimal

import pytest

from simq.exceptions import ConfigurationError, EncodeError


def _app_with_probe(backend, **config):
    app = backend.app(**config)

    @app.task(bind=True, name="probe")
    def probe(self, *args):
        return list(args)

    return app, probe


@pytest.mark.parametrize("serializer", ["json", "yaml", "msgpack", "pickle"])
def test_each_builtin_serializer_round_trips_arguments(backend, serializer):
    app, probe = _app_with_probe(backend, accept_content=["json", "yaml", "msgpack", "pickle"])
    assert probe.apply_async(args=[1, "two", [3]], serializer=serializer).get() == [1, "two", [3]]


def test_rich_values_survive_json(backend):
    app, probe = _app_with_probe(backend)
    when = dt.datetime(2026, 1, 2, 3, 4, 5)
    ident = uuid.UUID(int=7)
    got = probe.delay(when, ident, Decimal("1.10"), b"\x00\x01").get()
    assert got == [when, ident, Decimal("1.10"), b"\x00\x01"]


def test_worker_refuses_content_types_outside_accept_content(backend):
    app, probe = _app_with_probe(backend)  # accept_content defaults to ['json']
    ran = backend.record()

    @app.task(name="side_effect")
    def side_effect():
        ran.append(1)

    side_effect.apply_async(serializer="pickle")
    backend.settle(app)
    assert ran == []
    if backend.virtual:
        driver = app.simulation
        dead = driver.dead_letters
        assert len(dead) == 1 and "content-disallowed" in dead[0].reason
        assert sum(w.stats.rejected.get("content-disallowed", 0) for w in driver.worker_list) == 1


def test_selection_order_call_then_task_then_app(backend):
    app, _ = _app_with_probe(
        backend,
        task_serializer="yaml",
        accept_content=["json", "yaml", "application/x-json-a", "application/x-json-b"],
    )
    seen = backend.record()

    def record(kind):
        def hook(data):
            seen.append(kind)
            return json.dumps(data).encode()

        return hook

    app.register_serializer("json-a", record("call"), json.loads, "application/x-json-a")
    app.register_serializer("json-b", record("task"), json.loads, "application/x-json-b")

    @app.task(serializer="json-b", name="with_attr")
    def with_attr(x):
        return x

    @app.task(name="plain")
    def plain(x):
        return x

    assert with_attr.apply_async(args=[1], serializer="json-a").get() == 1
    assert seen == ["call"]
    assert with_attr.apply_async(args=[2]).get() == 2
    assert seen == ["call", "task"]
    # the app default (yaml here) applies when neither call nor task says
    assert plain.delay(3).get() == 3
    assert seen == ["call", "task"]


def test_unknown_serializer_is_named(backend):
    app, probe = _app_with_probe(backend)
    with pytest.raises(ConfigurationError, match="'bson'"):
        probe.apply_async(args=[1], serializer="bson")


def test_unserialisable_argument_is_named_with_its_type(backend):
    app, probe = _app_with_probe(backend)

    class Widget:
        pass

    with pytest.raises(EncodeError, match=r"args\[0\]\[1\].*'Widget'"):
        probe.apply_async(args=[[1, Widget()]])


@pytest.mark.parametrize("serializer", ["json", "msgpack"])  # pickle and yaml carry cycles
def test_circular_argument_is_named_not_a_recursion_error(backend, serializer):
    app, probe = _app_with_probe(backend)
    loop: dict = {"name": "loop"}
    loop["self"] = loop
    with pytest.raises(EncodeError, match=r"args\[0\]\['self'\] \(a circular reference"):
        probe.apply_async(args=[loop], serializer=serializer)


def test_unserialisable_result_fails_the_task_with_a_clear_error(backend):
    app = backend.app()

    @app.task(name="returns_object")
    def returns_object():
        return object()

    r = returns_object.delay()
    with pytest.raises(EncodeError, match="'object'"):
        r.get()
