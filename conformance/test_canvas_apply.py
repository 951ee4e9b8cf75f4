"""``Signature.apply()``, ``on_error``, ``chord.tasks`` and ``task_allow_error_cb_on_chord_header``, on every backend.

``apply()`` runs the canvas in the test's process, without the broker, and
stores each outcome in the backend's result store: it is the same on every
backend, and the rows check that the results read back through that store too.
"""

from __future__ import annotations

import pytest

from conformance.canvas_tasks import basic_tasks
from simq import GroupResult, chain, chord, group, states
from simq.exceptions import ConfigurationError
from simq.result import EagerResult, result_from_tuple


def make(backend, **config):
    app = backend.app(**config)
    calls = backend.record()

    t = basic_tasks(app)
    add, tsum, fail = t.add, t.tsum, t.fail

    @app.task(name="t.note")
    def note(*args):
        calls.append(["note", *args])

    @app.task(name="t.on_error")
    def on_error(request, exc, traceback):
        calls.append(["on_error", request.id, type(exc).__name__])

    @app.task(name="t.add_to_all", bind=True)
    def add_to_all(self, nums, val):
        raise self.replace(group(add.s(n, val) for n in nums))

    return app, calls, add, tsum, fail, note, on_error, add_to_all


class TestApply:
    def test_a_signature_applied_gives_an_eager_result_stored_in_the_backend(self, backend):
        app, _, add, *_ = make(backend)
        r = add.s(2).apply((1,))
        assert isinstance(r, EagerResult)
        assert r.get() == 3 and r.state == states.SUCCESS
        assert app.AsyncResult(r.id).get() == 3

    def test_a_failing_task_applied_holds_its_exception(self, backend):
        app, _, _, _, fail, *_ = make(backend)
        r = fail.si("test").apply()
        assert isinstance(r.get(propagate=False), ValueError)
        assert r.failed() and "ValueError" in (r.traceback or "")
        with pytest.raises(ValueError, match="failed with"):
            r.get()

    def test_a_chain_applied_passes_each_result_on(self, backend):
        app, _, add, *_ = make(backend)
        r = chain(add.s(1, 2), add.s(3), add.s(4)).apply()
        assert r.get() == 10 and r.parent.get() == 6 and r.parent.parent.get() == 3

    def test_a_failing_link_stops_an_applied_chain(self, backend):
        app, calls, add, _, fail, note, *_ = make(backend)
        r = chain(add.s(1, 2), fail.s(), note.s("never")).apply()
        with pytest.raises(ValueError, match=r"failed with \(3,\)"):
            r.get()
        assert list(calls) == []

    def test_a_group_and_a_chord_applied(self, backend):
        app, _, add, tsum, *_ = make(backend)
        g = group(add.s(1, 2), add.s(3, 4)).apply()
        assert isinstance(g, GroupResult) and g.get() == [3, 7]
        assert chord([add.s(1, 2), add.s(3, 4)], tsum.s()).apply().get() == 10
        assert (group(add.s(1, 1), add.s(2, 2)) | tsum.s()).apply().get() == 6

    def test_an_applied_chord_with_a_failed_header_task_fails_with_its_exception(self, backend):
        app, calls, add, tsum, fail, note, *_ = make(backend)
        r = chord([add.s(1, 2), fail.si(3)], note.s()).apply()
        with pytest.raises(ValueError, match=r"failed with \(3,\)"):
            r.get()
        assert list(calls) == []

    def test_callbacks_and_errbacks_run_here_too(self, backend):
        app, calls, add, _, fail, note, on_error, _ = make(backend)
        ok = add.s(1, 1)
        ok.link(note.s("linked"))
        assert ok.apply().get() == 2
        bad = fail.si(1)
        bad.link_error(on_error.s())
        r = bad.apply()
        assert list(calls) == [["note", 2, "linked"], ["on_error", r.id, "ValueError"]]

    def test_a_task_replaced_inside_apply_runs_its_replacement_here(self, backend):
        app, *_, add_to_all = make(backend)
        r = add_to_all.apply(([1, 2], 10))
        assert r.get() == [11, 12]
        assert app.AsyncResult(r.id).get() == [11, 12]

    def test_a_replacement_inside_apply_is_run_here_and_never_sent(self, backend):
        app, calls, _, _, _, note, _, _ = make(backend)

        @app.task(name="t.replace_with_note", bind=True)
        def replace_with_note(self):
            raise self.replace(note.si("replaced"))

        replace_with_note.apply()
        backend.settle()
        assert list(calls) == [["note", "replaced"]]

    def test_apply_refuses_sending_options(self, backend):
        app, _, add, *_ = make(backend)
        with pytest.raises(ConfigurationError, match="countdown"):
            add.s(1, 1).apply(countdown=5)
        with pytest.raises(ConfigurationError, match="queue"):
            add.apply((1, 1), queue="elsewhere")


class TestOnErrorAndChordTasks:
    def test_on_error_returns_the_signature_so_it_chains(self, backend):
        app, calls, add, _, fail, _, on_error, _ = make(backend)
        canvas = (add.s(1, 1) | fail.s()).on_error(on_error.s())
        assert isinstance(canvas, chain)
        r = canvas.delay()
        with pytest.raises(ValueError):
            r.get()
        backend.settle()
        assert list(calls) == [["on_error", r.id, "ValueError"]]

    def test_chord_tasks_are_the_header_tasks_themselves(self, backend):
        app, calls, add, tsum, fail, _, on_error, _ = make(backend)
        c = chord([add.si(1, 1), fail.si(2)], tsum.s())
        assert [t.task for t in c.tasks] == ["t.add", "t.fail"]
        for t in c.tasks:
            t.link_error(on_error.s())
        r = c.delay()
        with pytest.raises(ValueError):
            r.get()
        backend.settle()
        assert [call[0] for call in calls] == ["on_error"]


class TestErrbacksOnChordHeaders:
    @pytest.mark.parametrize("allow", [False, True])
    def test_chord_link_error_reaches_the_header_tasks_only_when_allowed(self, backend, allow):
        app, calls, add, _, fail, note, _, _ = make(backend, task_allow_error_cb_on_chord_header=allow)
        c = chord([fail.si(1), add.si(1, 1), fail.si(2)], note.si("body"))
        c.link_error(note.si("errback"))
        r = c.delay()
        with pytest.raises(ValueError, match=r"failed with \(1,\)"):
            r.get()
        backend.settle()
        # by default once, for the body; allowed: also once per failed header task
        assert list(calls) == [["note", "errback"]] * (3 if allow else 1)

    def test_an_upgraded_chord_calls_the_errback_for_each_failed_header_task_and_the_body(self, backend):
        app, calls, add, _, fail, note, _, _ = make(backend, task_allow_error_cb_on_chord_header=True)
        canvas = chain(group(fail.si(1), add.si(1, 1), fail.si(2)), note.si("body"))
        canvas.link_error(note.si("errback"))
        with pytest.raises(ValueError):
            canvas.delay().get()
        backend.settle()
        assert list(calls) == [["note", "errback"]] * 3


class TestResultHandlesAsValues:
    def test_a_task_returning_a_result_handle_stores_its_tuple(self, backend):
        app, _, add, tsum, *_ = make(backend)

        @app.task(name="t.build_chain")
        def build_chain():
            return (add.s(1, 1) | add.s(2) | group(add.s(3), add.s(4)) | tsum.s()).delay()

        @app.task(name="t.build_group")
        def build_group():
            return group(add.s(1, 1), add.s(2, 2)).delay()

        value = build_chain.delay().get()
        assert len(value) == 2 and isinstance(value[0][1], list)  # ((id, parent), None), as Celery stores it
        handle = result_from_tuple(value, app)
        assert handle.get() == 15 and isinstance(handle.parent, GroupResult)
        assert handle.parent.get() == [7, 8] and handle.parent.parent.get() == 4

        grouped = result_from_tuple(build_group.delay().get(), app)
        assert isinstance(grouped, GroupResult) and grouped.get() == [2, 4]
