"""``Task.replace``: a running task hands its place in the canvas to another, on every backend (docs/canvas.md)."""

from __future__ import annotations

import pytest

from conformance.canvas_tasks import basic_tasks
from simq import chain, chord, group, states
from simq.exceptions import ConfigurationError, Ignore


def make(backend, **config):
    app = backend.app(**config)
    calls = backend.record()

    t = basic_tasks(app)
    add, identity, tsum, fail = t.add, t.identity, t.tsum, t.fail

    @app.task(name="t.note")
    def note(*args):
        calls.append(["note", *args])
        return list(args)

    @app.task(name="t.error_handler")
    def error_handler(task_id):
        calls.append(["error_handler", task_id])

    @app.task(name="t.add_replaced", bind=True)
    def add_replaced(self, x, y):
        raise self.replace(add.s(x, y))

    @app.task(name="t.fail_replaced", bind=True)
    def fail_replaced(self, *args):
        raise self.replace(fail.si(*args))

    @app.task(name="t.replace_with_chain", bind=True)
    def replace_with_chain(self, *args, link_msg=None):
        c = chain(identity.s(*args), identity.s())
        if link_msg is not None:
            c.link(note.si(link_msg))
        return self.replace(c)

    @app.task(name="t.replace_with_failing_chain", bind=True)
    def replace_with_failing_chain(self, *args, link_msg=None):
        c = chain(identity.s(*args), fail.s())
        if link_msg is not None:
            c.link_error(note.si(link_msg))
        return self.replace(c)

    @app.task(name="t.add_to_all", bind=True)
    def add_to_all(self, nums, val):
        raise self.replace(group(add.s(n, val) for n in nums))

    @app.task(name="t.replace_with_chord", bind=True)
    def replace_with_chord(self, nums):
        raise self.replace(chord([identity.si(n) for n in nums], tsum.s()))

    @app.task(name="t.replace_with_empty_chain", bind=True)
    def replace_with_empty_chain(self, *_):
        return self.replace(chain())

    @app.task(name="t.second_order_1", bind=True)
    def second_order_1(self, state=False):
        calls.append(["second_order_1", state])
        if not state:
            raise self.replace(chain(second_order_2.s(), second_order_1.si(state=True)))
        return "done"

    @app.task(name="t.second_order_2", bind=True)
    def second_order_2(self, state=False):
        calls.append(["second_order_2", state])
        if not state:
            raise self.replace(chain(second_order_2.si(state=True), identity.si("two")))
        return "two"

    return app, calls


def tasks(app, *names):
    return [app.tasks[f"t.{name}"] for name in names]


class TestReplaceATask:
    def test_the_replacement_result_is_the_task_result(self, backend):
        app, _ = make(backend)
        (add_replaced,) = tasks(app, "add_replaced")
        r = add_replaced.delay(42, 1337)
        assert r.get() == 42 + 1337
        assert r.state == states.SUCCESS

    def test_replaced_with_a_chain(self, backend):
        app, _ = make(backend)
        (replace_with_chain,) = tasks(app, "replace_with_chain")
        assert replace_with_chain.si(42).delay().get() == 42

    def test_replaced_with_a_group_gives_the_list_of_its_results(self, backend):
        app, _ = make(backend)
        (add_to_all,) = tasks(app, "add_to_all")
        assert add_to_all.delay([1, 2, 3], 10).get() == [11, 12, 13]

    def test_replaced_with_a_chord(self, backend):
        app, _ = make(backend)
        (replace_with_chord,) = tasks(app, "replace_with_chord")
        assert replace_with_chord.delay([1, 2, 3]).get() == 6

    def test_replaced_with_a_task_that_fails_fails_with_its_exception(self, backend):
        app, _ = make(backend)
        (fail_replaced,) = tasks(app, "fail_replaced")
        r = fail_replaced.delay(7)
        with pytest.raises(ValueError, match=r"failed with \(7,\)"):
            r.get()
        assert r.state == states.FAILURE

    def test_an_empty_chain_is_refused_and_the_task_fails(self, backend):
        app, _ = make(backend)
        identity, replace_with_empty_chain = tasks(app, "identity", "replace_with_empty_chain")
        r = chain(identity.s(1), replace_with_empty_chain.s()).delay()
        with pytest.raises(ConfigurationError, match="Cannot replace with an empty chain"):
            r.get()

    def test_a_replacement_that_replaces_itself_again(self, backend):
        app, calls = make(backend)
        (second_order_1,) = tasks(app, "second_order_1")
        assert second_order_1.delay().get() == "done"
        backend.settle()
        assert list(calls) == [
            ["second_order_1", False],
            ["second_order_2", False],
            ["second_order_2", True],
            ["second_order_1", True],
        ]


class TestReplaceInAChain:
    def test_a_link_replaced_by_a_task(self, backend):
        app, _ = make(backend)
        add, add_replaced = tasks(app, "add", "add_replaced")
        r = chain(add.s(1, 3), add_replaced.s(8), add.s(16), add.s(32)).delay()
        assert r.get() == 60
        assert r.parent.parent.get() == 12  # the replaced link's own result handle

    @pytest.mark.parametrize("where", ["first", "middle", "last"])
    def test_a_link_replaced_by_a_chain(self, backend, where):
        app, _ = make(backend)
        identity, replace_with_chain = tasks(app, "identity", "replace_with_chain")
        canvas = {
            "first": chain(replace_with_chain.si(42), identity.s()),
            "middle": chain(identity.s(42), replace_with_chain.s(), identity.s()),
            "last": chain(identity.s(42), replace_with_chain.s()),
        }[where]
        assert canvas.delay().get() == 42

    def test_a_link_replaced_by_a_group_passes_the_list_on(self, backend):
        app, _ = make(backend)
        identity, add_to_all, tsum = tasks(app, "identity", "add_to_all", "tsum")
        assert chain(identity.s([1, 2]), add_to_all.s(1), tsum.s()).delay().get() == 5

    def test_a_failing_replacement_stops_the_chain(self, backend):
        app, calls = make(backend)
        identity, replace_with_failing_chain, note = tasks(app, "identity", "replace_with_failing_chain", "note")
        r = chain(identity.s("Hello "), replace_with_failing_chain.s(), note.s("never")).delay()
        with pytest.raises(ValueError):
            r.get()
        backend.settle()
        assert not [c for c in calls if c[0] == "note"]

    def test_the_replacement_callback_and_the_chain_callback_both_run(self, backend):
        app, calls = make(backend)
        identity, replace_with_chain, add, note = tasks(app, "identity", "replace_with_chain", "add", "note")
        c = chain(identity.s("Hello "), replace_with_chain.s(link_msg="inner"), add.s("world"))
        c.link(note.s())
        assert c.delay().get() == "Hello world"
        backend.settle()
        assert sorted(map(tuple, calls)) == [("note", "Hello world"), ("note", "inner")]

    def test_the_replacement_errback_and_the_chain_errback_both_run(self, backend):
        app, calls = make(backend)
        identity, replace_with_failing_chain, add, note = tasks(
            app, "identity", "replace_with_failing_chain", "add", "note"
        )
        c = chain(identity.s("Hello "), replace_with_failing_chain.s(link_msg="inner"), add.s("world"))
        c.link_error(note.si("outer"))
        with pytest.raises(ValueError):
            c.delay().get()
        backend.settle()
        assert sorted(map(tuple, calls)) == [("note", "inner"), ("note", "outer")]


class TestReplaceKeepsCallbacks:
    def test_the_replaced_task_link_gets_the_replacement_result(self, backend):
        app, calls = make(backend)
        add_replaced, note = tasks(app, "add_replaced", "note")
        r = add_replaced.apply_async((42, 1337), link=note.s("linked"))
        assert r.get() == 42 + 1337
        backend.settle()
        assert list(calls) == [["note", 42 + 1337, "linked"]]

    def test_the_replaced_task_link_error_is_called_when_the_replacement_fails(self, backend):
        app, calls = make(backend)
        fail_replaced, error_handler = tasks(app, "fail_replaced", "error_handler")
        r = fail_replaced.apply_async((1,), link_error=error_handler.s())
        with pytest.raises(ValueError):
            r.get()
        backend.settle()
        assert list(calls) == [["error_handler", r.id]]  # the replacement failed under the task's own id

    def test_a_chain_link_error_survives_a_replaced_link(self, backend):
        app, calls = make(backend)
        add_replaced, fail, error_handler = tasks(app, "add_replaced", "fail", "error_handler")
        c = chain(add_replaced.si(42, 1337), fail.s())
        c.link_error(error_handler.s())
        r = c.delay()
        with pytest.raises(ValueError):
            r.get()
        backend.settle()
        assert list(calls) == [["error_handler", r.id]]


class TestReplaceInGroupsAndChords:
    def test_group_members_replaced(self, backend):
        app, _ = make(backend)
        add_replaced, replace_with_chain, add_to_all = tasks(app, "add_replaced", "replace_with_chain", "add_to_all")
        r = group(add_replaced.si(1, 1), replace_with_chain.si(5), add_to_all.si([1], 1)).delay()
        assert r.get() == [2, 5, [2]]

    def test_chord_header_parts_replaced(self, backend):
        app, _ = make(backend)
        add_replaced, replace_with_chain, replace_with_chord, tsum = tasks(
            app, "add_replaced", "replace_with_chain", "replace_with_chord", "tsum"
        )
        header = [add_replaced.si(1, 1), replace_with_chain.si(5), replace_with_chord.si([1, 2])]
        assert chord(header, tsum.s()).delay().get() == 10

    def test_a_chord_header_part_replaced_by_a_failing_task_fails_the_chord(self, backend):
        app, _ = make(backend)
        add, fail_replaced, tsum = tasks(app, "add", "fail_replaced", "tsum")
        r = chord([add.si(1, 1), fail_replaced.si(3)], tsum.s()).delay()
        with pytest.raises(ValueError, match=r"failed with \(3,\)"):
            r.get()

    def test_chord_body_replaced(self, backend):
        app, _ = make(backend)
        add, add_to_all, tsum = tasks(app, "add", "add_to_all", "tsum")
        r = chord([add.si(1, 1), add.si(2, 2)], add_to_all.s(10)).delay()
        assert r.get() == [12, 14]
        assert chain(chord([add.si(1, 1), add.si(2, 2)], add_to_all.s(10)), tsum.s()).delay().get() == 26


class TestIgnore:
    @pytest.mark.simq_in_process("reads the worker's counters")
    def test_a_replaced_task_counts_as_ignored_not_failed(self, backend):
        app, _ = make(backend)
        (add_replaced,) = tasks(app, "add_replaced")
        assert add_replaced.delay(1, 2).get() == 3
        backend.settle()
        stats = [w.stats for w in backend.workers(app)]
        assert sum(s.ignored for s in stats) == 1
        assert sum(s.failed for s in stats) == 0
        assert sum(s.succeeded for s in stats) == 1  # the replacement

    def test_a_task_raising_ignore_stores_nothing(self, backend):
        app, calls = make(backend)

        @app.task(name="t.ignored")
        def ignored():
            calls.append(["ignored"])
            raise Ignore("not worth a result")

        r = ignored.delay()
        backend.settle()
        assert list(calls) == [["ignored"]]
        assert r.state == states.PENDING
