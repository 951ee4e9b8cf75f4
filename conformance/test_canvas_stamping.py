"""Stamping (``Signature.stamp``, ``StampingVisitor``): every task of a canvas carries the stamps, on every backend.

The tasks return ``self.request.stamps`` (or put them in a record), so what
the rows read is what the worker that ran each task saw.
"""

from __future__ import annotations

import pytest

from simq import chain, chord, group
from simq.canvas import StampingVisitor
from simq.exceptions import ConfigurationError


class Monitored(StampingVisitor):
    """One stamp on every task, and the kind of node it was reached through."""

    def on_signature(self, sig, **headers):
        return {"monitoring_id": "m-1"}

    def on_group_start(self, node, **headers):
        return {"in_group": True}

    def on_chord_body(self, node, **headers):
        return {"chord_body": True}

    def on_callback(self, callback, **headers):
        return {"callback": True}


def make(backend, **config):
    app = backend.app(**config)
    calls = backend.record()

    @app.task(name="t.stamps", bind=True)
    def stamps(self, *args):
        return self.request.stamps

    @app.task(name="t.collect", bind=True)
    def collect(self, header_stamps):
        return {"header": header_stamps, "body": self.request.stamps}

    @app.task(name="t.note", bind=True)
    def note(self, *args):
        calls.append([self.request.stamps, self.request.stamped_headers])

    @app.task(name="t.retry_once", bind=True, max_retries=1)
    def retry_once(self):
        if self.request.retries == 0:
            raise self.retry(countdown=0)
        return self.request.stamps

    @app.task(name="t.replaced", bind=True)
    def replaced(self):
        raise self.replace(stamps.si())

    return app, calls, stamps, collect, note, retry_once, replaced


class TestStamping:
    def test_a_stamped_task_reads_its_stamps_and_their_names(self, backend):
        app, calls, _, _, note, *_ = make(backend)
        sig = note.si()
        sig.stamp(Monitored(), tenant="acme")
        sig.delay().get()
        backend.wait_until(lambda: len(calls) == 1)
        assert calls[0] == [{"tenant": "acme", "monitoring_id": "m-1"}, ["tenant", "monitoring_id"]]

    def test_every_task_of_a_chord_is_stamped_with_what_its_place_adds(self, backend):
        app, _, stamps, collect, *_ = make(backend)
        canvas = chord([stamps.si(), chain(stamps.si(), stamps.s())], collect.s())
        canvas.stamp(Monitored())
        got = canvas.delay().get()
        header = {"monitoring_id": "m-1", "in_group": True}
        assert got == {"header": [header, header], "body": {**header, "chord_body": True}}

    def test_callbacks_are_stamped_and_a_later_stamp_replaces_the_value(self, backend):
        app, calls, stamps, _, note, *_ = make(backend)
        sig = stamps.si()
        sig.link(note.s())
        sig.stamp(Monitored())
        sig.stamp(monitoring_id="m-2")
        assert sig.delay().get() == {"monitoring_id": "m-2"}
        backend.wait_until(lambda: len(calls) == 1)
        assert calls[0][0] == {"monitoring_id": "m-2", "callback": True}

    def test_append_stamps_keeps_every_value_oldest_first(self, backend):
        app, _, stamps, *_ = make(backend)
        sig = stamps.si().stamp(trail="a")
        sig.stamp(append_stamps=True, trail="b")
        sig.stamp(append_stamps=True, trail=["b", "c"])
        assert sig.delay().get() == {"trail": ["a", "b", "c"]}

    def test_stamps_stay_on_a_retried_task(self, backend):
        app, _, _, _, _, retry_once, _ = make(backend)
        assert retry_once.si().stamp(Monitored()).delay().get() == {"monitoring_id": "m-1"}

    def test_a_replacement_inherits_the_replaced_tasks_stamps(self, backend):
        app, *_, replaced = make(backend)
        assert replaced.si().stamp(Monitored()).delay().get() == {"monitoring_id": "m-1"}

    def test_stamps_given_as_calling_options_reach_the_task(self, backend):
        app, _, stamps, *_ = make(backend)
        assert stamps.apply_async(stamped_headers=["tenant"], tenant="acme").get() == {"tenant": "acme"}

    def test_a_stamp_named_as_a_calling_option_is_refused(self, backend):
        app, _, stamps, *_ = make(backend)
        with pytest.raises(ConfigurationError, match="'queue' is a calling option"):
            stamps.si().stamp(queue="other")


def test_a_group_of_one_task_in_a_chain_is_that_task(backend):
    """Celery's rule: ``chain(group(a), b)`` is ``a | b``: b gets a's result, not a list of one."""
    app = backend.app()

    @app.task(name="t.add")
    def add(x, y):
        return x + y

    assert chain(group(add.s(1, 1)), add.s(10)).delay().get() == 12
    assert (add.s(1, 1) | group(add.s(10)) | add.s(100)).delay().get() == 112
    assert chain(add.s(1, 1), group(add.s(10), add.s(20))).delay().get() == [12, 22]  # two members: a group
