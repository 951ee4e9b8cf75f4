"""``Task.apply`` as Celery's: ``link`` callbacks and ``link_error`` errbacks run here too; ``Signature.from_dict``."""

from __future__ import annotations

import json

import pytest

from simq import App, chain, chord, group
from simq.canvas import Signature
from simq.exceptions import ConfigurationError


@pytest.fixture
def app():
    app = App("apply")
    app.seen = []

    @app.task(name="a.double")
    def double(x):
        return x * 2

    @app.task(name="a.fail")
    def fail(x):
        raise KeyError(x)

    @app.task(name="a.note")
    def note(value):
        app.seen.append(("callback", value))

    @app.task(name="a.errback")
    def errback(request, exc, traceback):
        app.seen.append(("errback", request.id, repr(exc)))

    return app


def test_apply_runs_its_link_callbacks_here_with_the_result(app):
    with app.simulate():
        result = app.tasks["a.double"].apply((3,), link=app.tasks["a.note"].s())
        assert result.get() == 6
    assert app.seen == [("callback", 6)]


def test_apply_runs_its_link_error_errbacks_here_with_the_failure(app):
    with app.simulate():
        result = app.tasks["a.fail"].apply(("x",), link_error=[app.tasks["a.errback"].s()])
        assert result.state == "FAILURE"
        with pytest.raises(KeyError):
            result.get()
    assert app.seen == [("errback", result.id, "KeyError('x')")]


def test_apply_still_refuses_a_sending_option(app):
    with pytest.raises(ConfigurationError, match="countdown"):
        app.tasks["a.double"].apply((3,), countdown=5)


def test_from_dict_rebuilds_each_kind_from_its_wire_form(app):
    double = app.tasks["a.double"]
    canvas = chain(double.s(1), group(double.s(), chord([double.s()], double.si(0))))
    back = Signature.from_dict(json.loads(json.dumps(canvas)), app=app)
    assert type(back) is chain
    assert [type(t) for t in back.tasks] == [Signature, group]
    assert [type(t) for t in back.tasks[1].tasks] == [Signature, chord]
