"""How the canvas travels and is counted: message contents, backend records, determinism."""

from __future__ import annotations

import json

import pytest

from simq import App, chain, chord, group
from simq.canvas import Signature, from_dict, xmap
from simq.canvas import run as canvas_module
from simq.exceptions import ChordError


@pytest.fixture
def app():
    app = App("internals")

    @app.task(name="i.add")
    def add(x, y):
        return x + y

    @app.task(name="i.tsum")
    def tsum(xs):
        return sum(xs)

    @app.task(name="i.fail")
    def fail(*args):
        raise KeyError("nope")

    return app


def sent_messages(sim):
    return [e for e in sim.trace if e.kind == "sent"]


def spy_on_encode(monkeypatch, record):
    from simq import protocol

    original = protocol.encode

    def encode(*args, **kwargs):
        envelope = original(*args, **kwargs)
        record(envelope)
        return envelope

    monkeypatch.setattr(protocol, "encode", encode)


class TestWireForm:
    def test_chain_continuation_rides_in_the_message_as_plain_dicts(self, app, monkeypatch):
        add = app.tasks["i.add"]
        seen = []
        spy_on_encode(monkeypatch, lambda envelope: seen.append(json.loads(envelope.body)))
        with app.simulate(seed=3):
            assert (add.s(1, 1) | add.s(2) | add.s(3))().get() == 7
        args, kwargs, embed = seen[0]
        assert [link["task"] for link in embed["chain"]] == ["i.add", "i.add"]
        assert embed["chain"][0]["args"] == [2]

    def test_long_chain_is_stored_once_and_referenced(self, app, monkeypatch):
        add = app.tasks["i.add"]
        n = canvas_module.INLINE_CHAIN + 5
        seen = []
        spy_on_encode(monkeypatch, lambda envelope: seen.append(len(envelope.body)))
        with app.simulate(seed=3):
            assert chain([add.s(0, 0)] + [add.s(1)] * (n - 1))().get() == n - 1
        assert len(seen) == n
        assert max(seen) < 400  # each message carries a reference, not the remaining links

    def test_signature_round_trips_through_json_with_its_kind(self, app):
        add, tsum = app.tasks["i.add"], app.tasks["i.tsum"]
        canvas = chain(add.s(1, 1), chord([add.s(1), group(add.s(2), add.s(3)), add.s(4) | add.s(5)], tsum.s()))
        back = from_dict(json.loads(json.dumps(canvas)), app)
        assert type(back) is chain
        assert type(back.tasks[1]) is chord
        # the nested group was unrolled into the header; the chain stays one member
        assert [type(t) for t in back.tasks[1].header.tasks] == [Signature, Signature, Signature, chain]

    def test_chunks_in_a_group_stay_one_member_when_frozen_before_sending(self, app):
        add = app.tasks["i.add"]
        with app.simulate(seed=3):
            g = group(add.s(1, 1), add.chunks([(1, 1), (2, 2)], 1))
            assert g().get() == [2, [[2], [4]]]
            g.freeze()  # turns the chunks into its group, in place
            assert g.delay().get() == [2, [[2], [4]]]

    def test_a_group_nested_as_a_dict_is_unrolled_when_sent(self, app):
        add = app.tasks["i.add"]
        g = group(add.s(1, 1))
        g["kwargs"]["tasks"] = [*g["kwargs"]["tasks"], json.loads(json.dumps(group(add.s(2, 2), add.s(3, 3))))]
        with app.simulate(seed=3):
            result = g()
            assert result.get() == [2, 4, 6]
        assert len(result.results) == 3

    def test_map_is_a_task_signature_of_the_builtin(self, app):
        sig = xmap(app.tasks["i.tsum"], [range(3)])
        assert isinstance(sig, Signature) and sig.task == "simq.map"
        assert sig.kwargs == {"task": "i.tsum", "it": [[0, 1, 2]]}


class TestChordCounting:
    def test_body_sent_once_by_the_last_header_task(self, app):
        add, tsum = app.tasks["i.add"], app.tasks["i.tsum"]
        with app.simulate(seed=5, workers=3) as sim:
            r = chord([add.s(i, 1) for i in range(12)], tsum.s())()
            assert r.get() == sum(range(1, 13))
            sim.run_until_idle()
            bodies = [e for e in sent_messages(sim) if e.task == "i.tsum"]
            assert len(bodies) == 1
            assert app.backend.incr(f"simq-chord-{r.parent.id}.done", 0) == 12

    def test_a_part_reporting_twice_counts_once(self, app):
        from simq.canvas.run import _chord_report

        add, tsum = app.tasks["i.add"], app.tasks["i.tsum"]
        with app.simulate(seed=5, workers=1) as sim:
            r = chord([add.s(1, 1).set(countdown=5), add.s(2, 2).set(countdown=10)], tsum.s())()
            sim.advance(6)
            first = r.parent.results[0]
            assert first.get() == 2
            # the same part reports again (as after a redelivery): the body must not fire early
            _chord_report(app, {"id": r.parent.id, "size": 2}, [first.id])
            assert not r.ready()
            assert r.get() == 6

    def test_a_failing_chord_ends_once_however_many_fail(self, app):
        add, tsum, fail = app.tasks["i.add"], app.tasks["i.tsum"], app.tasks["i.fail"]
        with app.simulate(seed=5, workers=2) as sim:
            r = chord([add.s(1, 1), fail.s(), add.s(1, 1), fail.s(), fail.s()], tsum.s())()
            with pytest.raises(KeyError) as info:
                r.get()
            sim.run_until_idle()
            key = f"simq-chord-{r.parent.id}"
            assert app.backend.incr(f"{key}.done", 0) == 5  # failed parts count too: the chord ends with its header
            assert app.backend.incr(f"{key}.sent", 0) == 1
        (note,) = info.value.__notes__
        assert r.parent.results[1].id in note  # the first failed task in header order

    def test_a_failed_chain_in_a_header_counts_for_every_part_it_stopped(self, app):
        add, tsum, fail = app.tasks["i.add"], app.tasks["i.tsum"], app.tasks["i.fail"]
        with app.simulate(seed=5, workers=2):
            # fail stops the chain before its group of two: one failure stands for both parts
            r = chord([add.s(1, 1), fail.s() | group(add.s(1), add.s(2))], tsum.s())()
            with pytest.raises(KeyError) as info:
                r.get()
        assert len(info.value.__notes__) == 2  # "never ran, because ... failed", then the chord's note

    def test_the_failure_is_the_first_in_header_order_whatever_the_seed(self, app):
        add, tsum = app.tasks["i.add"], app.tasks["i.tsum"]

        @app.task(name="i.boom")
        def boom(tag):
            raise ValueError(tag)

        seen = set()
        for seed in range(8):
            with app.simulate(seed=seed, workers=3):
                header = [add.s(1, 1), boom.s("a").set(countdown=3), boom.s("b"), boom.s("c").set(countdown=1)]
                with pytest.raises(ValueError) as info:
                    chord(header, tsum.s())().get()
            seen.add(info.value.args)
        assert seen == {("a",)}

    def test_chord_error_survives_the_backend_round_trip(self):
        err = ChordError(
            "chord x: header task t1 failed",
            "t1",
            {"exc_type": "ValueError", "exc_module": "builtins", "exc_message": ["bad"]},
        )
        assert err.task_id == "t1"
        assert isinstance(err.__cause__, ValueError) and err.__cause__.args == ("bad",)
        assert str(err) == "chord x: header task t1 failed"


class TestDeterminism:
    def run(self, app, seed):
        add, tsum = app.tasks["i.add"], app.tasks["i.tsum"]
        canvas = chain(
            add.s(1, 1),
            chord([add.s(i) for i in range(5)] + [chain(add.s(1), add.s(2))], tsum.s()),
            group(add.s(1), add.s(2)),
            tsum.s(),
        )
        with app.simulate(seed=seed, workers=3) as sim:
            value = canvas().get()
            sim.run_until_idle()
            return value, sim.digest

    def test_same_seed_same_trace(self, app):
        assert self.run(app, 11) == self.run(app, 11)

    def test_value_does_not_depend_on_the_seed(self, app):
        a, b = self.run(app, 11), self.run(app, 12)
        assert a[0] == b[0]
        assert a[1] != b[1]


class TestErrbackForms:
    def test_form_is_chosen_by_the_errback_signature(self, app):
        @app.task(name="i.one")
        def one(task_id):
            return task_id

        @app.task(name="i.three")
        def three(request, exc, traceback):
            return None

        @app.task(name="i.bound", bind=True)
        def bound(self, request, exc, traceback):
            return None

        assert not canvas_module._errback_is_inline(one)
        assert canvas_module._errback_is_inline(three)
        assert canvas_module._errback_is_inline(bound)

    def test_freezing_a_chain_returns_the_last_result_with_parents(self, app):
        add = app.tasks["i.add"]
        canvas = add.s(1, 1) | add.s(2)
        result = canvas.freeze()
        assert result.id == canvas.tasks[-1].id
        assert result.parent.id == canvas.tasks[0].id


class _Died(BaseException):
    """The worker process dying mid-task (not an exception a task raises)."""


def test_a_worker_dying_between_the_last_count_and_the_body_still_gets_the_body_sent(monkeypatch):
    app = App("chord_crash", task_acks_late=True)

    @app.task(name="double")
    def double(x):
        return 2 * x

    @app.task(name="total")
    def total(values):
        return sum(values)

    collect = canvas_module._collect
    calls = []

    def dies_first_time(app_, spec):
        calls.append(spec)
        if len(calls) == 1:
            raise _Died("killed after completing the count, before sending the body")
        return collect(app_, spec)

    monkeypatch.setattr(canvas_module, "_collect", dies_first_time)
    with app.simulate(seed=3, workers=1) as sim:
        result = chord([double.s(1), double.s(2), double.s(3)])(total.s())
        with pytest.raises(_Died):
            sim.run_until_idle()
        sim.worker_list[0].crash()  # its unacknowledged last part goes back to the queue
        sim.add_worker()
        assert result.get() == 12  # the redelivered part found the count complete and no body sent
    assert len(calls) == 2
    assert sim.broker.stats("celery").published == 3 + 1 + 0  # the body went out once


def test_a_chain_link_takes_its_root_and_parent_from_the_task_before_it():
    from simq import App, chain

    app = App("lineage")
    seen = []

    @app.task(bind=True, name="t.step")
    def step(self, value):
        seen.append((self.request.id, self.request.root_id, self.request.parent_id))
        return value + 1

    with app.simulate():
        assert chain(step.s(0), step.s(), step.s()).apply_async().get() == 3
    (first, root, parent), (second, root2, parent2), (third, root3, parent3) = seen
    assert root == first and parent is None
    assert (root2, parent2) == (first, first)
    assert (root3, parent3) == (first, second)


def test_a_nested_chord_with_an_empty_body_that_failed_fails_the_outer_chord():
    app = App("empty_body")

    @app.task(name="e.add")
    def add(*xs):
        return sum(xs)

    @app.task(name="e.div")
    def div(x, y):
        return x // y

    inner = chord([add.s(1), div.si(1, 0)], group([]))  # its body, an empty group, never runs: it is failed
    with app.simulate(seed=1, workers=2):
        with pytest.raises(ZeroDivisionError):
            chord([inner, add.s(1, 1).set(countdown=5)], add.s())().get()  # a success reports last
        assert chord([add.s(1, 1), chord([add.s(1)], group([]))], add.si(5))().get() == 5


class TestChordFailureEdges:
    def test_a_failure_record_without_an_exception_is_a_chord_error(self, app):
        from simq import states

        add, tsum = app.tasks["i.add"], app.tasks["i.tsum"]
        with app.simulate(seed=2, workers=1) as sim:
            r = chord([add.s(1, 1), add.s(2, 2).set(countdown=5)], tsum.s())()
            sim.advance(1)
            first = r.parent.results[0]
            app.backend.store_result(first.id, "not an exception", states.FAILURE)  # as a foreign writer could
            with pytest.raises(ChordError, match=first.id) as info:
                r.get()
        assert info.value.task_id == first.id
        assert r.parent.id in info.value.__notes__[0]

    def test_a_failure_whose_result_is_gone_still_fails_the_chord_with_its_exception(self, app):
        add, tsum, fail = app.tasks["i.add"], app.tasks["i.tsum"], app.tasks["i.fail"]

        @app.task(name="i.forget")
        def forget(request, exc, traceback):
            app.backend._delete(request.id)  # the failure's record is gone before the chord ends (expired)

        with app.simulate(seed=2, workers=1):
            r = chord([add.s(1, 1), fail.s().set(countdown=5, link_error=forget.s())], tsum.s())()
            with pytest.raises(KeyError):
                r.get()
            assert r.parent.results[1].state == "PENDING"  # it was really gone when the chord ended

    def test_the_note_names_a_chain_body_by_its_first_task(self, app):
        add, tsum, fail = app.tasks["i.add"], app.tasks["i.tsum"], app.tasks["i.fail"]
        with app.simulate(seed=2, workers=1):
            body = tsum.s() | add.s(1)
            r = chord([add.s(1, 1), fail.s()], body)()
            with pytest.raises(KeyError) as info:
                r.get()
        (note,) = info.value.__notes__
        assert f"the chord's body chain (first task {r.parent.id}) never ran" in note
        assert r.parent.parent.id in note  # the chord: its header group's id

    def test_a_body_that_cannot_be_sent_fails_the_chord_with_chord_error(self):
        from simq.exceptions import EncodeError

        app = App("unsendable", result_serializer="pickle", accept_content=["json", "pickle"])

        @app.task(name="u.pair")
        def pair():
            return {1, 2}  # stored with pickle, but the body's message is json

        @app.task(name="u.size")
        def size(values):
            return len(values)

        with app.simulate(seed=2, workers=1):
            r = chord([pair.s()], size.s())()
            with pytest.raises(ChordError, match="could not be sent") as info:
                r.get()
            assert r.parent.results[0].get() == {1, 2}  # the header task itself succeeded
        assert isinstance(info.value.__cause__, EncodeError)


def test_a_tasks_children_and_result_are_stored_before_the_next_link_is_sent(app, monkeypatch):
    # On Redis with a threads worker the next link once finished before its parent's
    # children record was written, and ``r.parent.children`` read [] (conformance, CI).
    add = app.tasks["i.add"]
    backend_syncs = []
    seen_at_send = []
    original_send = type(app).send_call

    def send_call(self, name, *args, **kwargs):
        current = self.current_request()
        if current is not None:  # sent by a task: the chain's next link
            seen_at_send.append((canvas_module.records.load_children(self, current.id), len(backend_syncs)))
        return original_send(self, name, *args, **kwargs)

    monkeypatch.setattr(type(app), "send_call", send_call)
    with app.simulate(seed=1):
        monkeypatch.setattr(type(app.backend), "sync", lambda self: backend_syncs.append(1))
        r = (add.s(1, 1) | add.s(2)).apply_async()
        assert r.get() == 4
    assert seen_at_send == [([r.id], 1)]
