"""The canvas (seeds/celery-workflows.txt, docs/canvas.md), through the real message path on every backend."""

from __future__ import annotations

import json

import pytest

from simq import GroupResult, chain, chord, group, signature, states
from simq.exceptions import EncodeError, InvalidSignature, NotRegistered


def make(backend, **config):
    app = backend.app(**config)
    calls = backend.record()

    @app.task(name="t.add")
    def add(x, y):
        calls.append(("add", x, y))
        return x + y

    @app.task(name="t.multiply")
    def multiply(x, y):
        return x * y

    @app.task(name="t.tsum")
    def tsum(numbers):
        calls.append(("tsum", list(numbers)))
        return sum(numbers)

    @app.task(name="t.fail")
    def fail(*args):
        calls.append(("fail", *args))
        raise ValueError(f"failed with {args!r}")

    @app.task(name="t.echo")
    def echo(*args, **kwargs):
        return [list(args), kwargs]

    @app.task(name="t.error_handler")
    def error_handler(task_id):
        exc = app.AsyncResult(task_id).get(propagate=False)
        calls.append(("error_handler", task_id, type(exc).__name__))

    @app.task(name="t.on_error")
    def on_error(request, exc, traceback):
        calls.append(("on_error", request.id, type(exc).__name__, isinstance(traceback, str | None)))

    return app, calls, add, multiply, tsum, fail, echo, error_handler, on_error


# -- signatures ------------------------------------------------------------------------------------


class TestSignatures:
    def test_s_and_si_and_signature_by_name(self, backend):
        app, _, add, *_ = make(backend)
        assert add.s(2, 2).delay().get() == 4
        assert add.si(2, 2)().get() == 4
        sig = signature("t.add", (1,), {"y": 5}, {"countdown": 1}, app=app)
        assert sig.options == {"countdown": 1}
        assert sig.apply_async().get() == 6

    def test_partial_args_are_prepended_and_call_kwargs_win(self, backend):
        app, _, _, _, _, _, echo, *_ = make(backend)
        sig = echo.s(2, k="sig", other=1)
        assert sig.delay(1, k="call").get() == [[1, 2], {"k": "call", "other": 1}]

    def test_immutable_signature_ignores_call_args(self, backend):
        app, _, _, _, _, _, echo, *_ = make(backend)
        assert echo.si(2, k=1).delay(1, k=2).get() == [[2], {"k": 1}]

    def test_set_and_clone(self, backend):
        app, _, add, *_ = make(backend)
        countdown = 5 if backend.virtual else 0.5  # a real broker waits it out on the wall clock
        sig = add.s(1).set(countdown=countdown)
        assert sig.options["countdown"] == countdown
        twin = sig.clone((10,))
        assert twin.args == (10, 1) and sig.args == (1,)
        assert twin.delay().get() == 11

    def test_freeze_gives_the_id_before_sending(self, backend):
        app, _, add, *_ = make(backend)
        sig = add.s(3, 4)
        frozen = sig.freeze()
        assert frozen.id == sig.id
        result = sig.delay()
        assert result.id == frozen.id
        assert app.AsyncResult(frozen.id).get() == 7

    def test_signatures_are_plain_json_data(self, backend):
        app, _, add, _, tsum, *_ = make(backend)
        canvas = chord([add.s(1, 1), chain(add.s(2, 2), add.s(1))], tsum.s())
        wire = json.loads(json.dumps(canvas))
        assert signature(wire, app=app).delay().get() == 7


# -- callbacks -------------------------------------------------------------------------------------


class TestCallbacks:
    def test_link_gets_the_parent_result(self, backend):
        app, _, add, *_ = make(backend)
        r = add.apply_async((5, 5), link=add.s(35))
        assert r.get() == 10
        backend.settle()
        assert [c.get() for c in r.children] == [45]

    def test_link_list_every_callback_gets_the_result(self, backend):
        app, _, add, multiply, *_ = make(backend)
        r = add.apply_async((5, 5), link=[add.s(35), multiply.s(2)])
        r.get()
        backend.settle()
        assert [c.get() for c in r.children] == [45, 20]

    def test_immutable_callback_receives_nothing(self, backend):
        app, calls, add, *_ = make(backend)
        r = add.apply_async((2, 2), link=add.si(4, 4))
        r.get()
        backend.settle()
        assert r.children[0].get() == 8
        assert ("add", 4, 4) in calls

    def test_errback_with_one_parameter_is_sent_the_failed_task_id(self, backend):
        app, calls, add, _, _, fail, _, error_handler, _ = make(backend)
        r = fail.apply_async((5, 5), link_error=error_handler.s())
        with pytest.raises(ValueError):
            r.get()
        backend.settle()
        assert ("error_handler", r.id, "ValueError") in calls

    def test_errback_with_request_exc_traceback_runs_inline(self, backend):
        app, calls, _, _, _, fail, _, _, on_error = make(backend)
        r = fail.apply_async((1,), link_error=on_error.s())
        with pytest.raises(ValueError):
            r.get()
        # As in Celery, the failure is stored before the errback runs: on a real
        # broker the waiter can wake first, so let the worker finish.
        backend.settle()
        assert ("on_error", r.id, "ValueError", True) in calls

    def test_group_link_runs_once_after_its_first_task_with_no_argument(self, backend):
        app, calls, add, _, _, _, echo, *_ = make(backend)
        callback = echo.s("cb")
        g = group(add.s(1, 1), add.s(2, 2))
        g.link(callback)
        assert not callback.immutable  # the group links an immutable copy, as Celery does
        result = g()
        assert result.get() == [2, 4]
        backend.settle()
        first, second = result.results
        assert [c.get() for c in first.children] == [[["cb"], {}]]
        assert second.children == []

    def test_a_chain_linked_to_a_group_takes_no_argument(self, backend):
        app, calls, add, _, _, _, echo, *_ = make(backend)
        g = group(add.s(1, 1), add.s(2, 2))
        g.link(echo.s("x") | echo.s())  # the immutable copy: its first task gets no parent result
        result = g()
        result.get()
        backend.settle()
        assert [c.get() for c in result.results[0].children] == [[[[["x"], {}]], {}]]

    def test_group_link_error_is_called_for_each_failed_task(self, backend):
        app, calls, add, _, _, fail, _, error_handler, _ = make(backend)
        g = group(fail.s(1), add.s(1, 1), fail.s(2))
        g.link_error(error_handler.s())
        result = g()
        with pytest.raises(ValueError):
            result.get()
        backend.settle()
        failed = [result.results[0].id, result.results[2].id]
        handled = sorted(c[1] for c in calls if c[0] == "error_handler")
        assert handled == sorted(failed)
        assert all(c[2] == "ValueError" for c in calls if c[0] == "error_handler")

    def test_link_is_not_called_on_failure_nor_link_error_on_success(self, backend):
        app, calls, add, _, _, fail, _, error_handler, _ = make(backend)
        ok = add.apply_async((1, 1), link_error=error_handler.s())
        bad = fail.apply_async((1,), link=add.s(100))
        ok.get()
        with pytest.raises(ValueError):
            bad.get()
        backend.settle()
        assert not [c for c in calls if c[0] == "error_handler"]
        assert ("add", None, 100) not in calls and bad.children == []


# -- chains --------------------------------------------------------------------------------------


class TestChain:
    def test_pipe_chain_from_the_seed(self, backend):
        app, _, add, multiply, *_ = make(backend)
        assert (multiply.s(5, 5) | add.s(4) | multiply.s(8))().get() == 232

    def test_chain_function_and_nested_chains_flatten(self, backend):
        app, _, add, *_ = make(backend)
        nested = chain(add.s(1, 1), chain(add.s(1), chain(add.s(1))), add.s(1))
        assert len(nested.tasks) == 4
        assert nested().get() == 5

    def test_failing_link_stops_the_chain(self, backend):
        app, calls, add, _, _, fail, *_ = make(backend)
        r = chain(add.s(1, 1), fail.s(), add.s(100), add.s(1000))()
        with pytest.raises(ValueError, match="failed with"):
            r.get()
        backend.settle()
        assert r.state == states.FAILURE
        assert r.parent.state == states.FAILURE
        assert r.parent.parent.parent.get() == 2
        assert not [c for c in calls if c[0] == "add" and c[2] in (100, 1000)]

    def test_parent_links_walk_back_through_the_chain(self, backend):
        app, _, add, *_ = make(backend)
        r = (add.s(1, 1) | add.s(2) | add.s(3))()
        assert r.get() == 7
        assert r.parent.get() == 4 and r.parent.parent.get() == 2 and r.parent.parent.parent is None

    def test_link_on_a_chain_follows_its_last_task(self, backend):
        app, calls, add, *_ = make(backend)
        r = (add.s(1, 1) | add.s(2)).apply_async(link=add.s(1000))
        assert r.get() == 4
        backend.settle()
        assert [c.get() for c in r.children] == [1004]

    def test_long_chain(self, backend):
        app, _, add, *_ = make(backend)
        assert chain([add.s(0, 0)] + [add.s(1) for _ in range(60)])().get() == 60


# -- groups --------------------------------------------------------------------------------------


class TestGroup:
    def test_group_from_the_seed_keeps_order(self, backend):
        app, _, add, *_ = make(
            backend,
        )
        result = group(add.s(i, i) for i in range(10))()
        assert isinstance(result, GroupResult)
        assert result.get() == [0, 2, 4, 6, 8, 10, 12, 14, 16, 18]

    def test_group_keeps_order_with_many_workers(self, backend):
        app = backend.app(workers=4)

        @app.task(name="t.ident")
        def ident(x):
            return x

        assert group(ident.s(i) for i in range(30))().get() == list(range(30))

    def test_empty_group_is_an_empty_list(self, backend):
        make(backend)
        result = group([])()
        assert result.get() == [] and result.ready() and result.successful()

    def test_group_of_one(self, backend):
        app, _, add, *_ = make(backend)
        assert group(add.s(1, 1))().get() == [2]

    def test_group_result_api(self, backend):
        app, _, add, _, _, fail, *_ = make(backend)
        result = group(add.s(1, 1), fail.s(), add.s(2, 2))()
        with pytest.raises(ValueError):
            result.join()
        assert result.ready()
        assert result.completed_count() == 2
        assert not result.successful() and result.failed()
        assert result.get(propagate=False)[0] == 2
        restored = GroupResult.restore(result.id, app)
        assert [r.id for r in restored] == [r.id for r in result]

    def test_group_members_get_the_parent_result(self, backend):
        app, _, add, *_ = make(backend)
        assert (add.s(1, 1) | group(add.s(10), add.s(20)))().get() == [12, 22]


# -- chords --------------------------------------------------------------------------------------


class TestChord:
    def test_chord_from_the_seed(self, backend):
        app, calls, add, _, tsum, *_ = make(backend)
        assert chord((add.s(i, i) for i in range(10)), tsum.s())().get() == 90
        assert [c for c in calls if c[0] == "tsum"] == [("tsum", [0, 2, 4, 6, 8, 10, 12, 14, 16, 18])]

    def test_chord_header_then_body_call(self, backend):
        app, _, add, _, tsum, *_ = make(backend)
        assert chord(add.s(i, i) for i in range(10))(tsum.s()).get() == 90

    def test_body_gets_results_in_header_order_with_many_workers(self, backend):
        app = backend.app(workers=4)

        @app.task(name="t.ident")
        def ident(x):
            return x

        @app.task(name="t.listing")
        def listing(xs):
            return xs

        assert chord([ident.s(i) for i in range(25)], listing.s())().get() == list(range(25))

    def test_empty_header_and_header_of_one(self, backend):
        app, calls, add, _, tsum, _, echo, *_ = make(backend)
        assert chord([], echo.s())().get() == [[[]], {}]
        assert chord([add.s(2, 3)], echo.s())().get() == [[[5]], {}]

    def test_failing_header_raises_the_header_tasks_own_exception(self, backend):
        app, calls, add, _, tsum, fail, _, error_handler, _ = make(backend)
        body = tsum.s()
        body.link_error(error_handler.s())
        # "first" fails after "second" in time: the chord still raises the first failed in header order
        later = 5 if backend.virtual else 0.5
        header = [add.s(1, 1), fail.s("first").set(countdown=later), add.s(2, 2), fail.s("second")]
        r = chord(header, body)()
        with pytest.raises(ValueError) as info:
            r.get()
        backend.settle()
        first = r.parent.results[1]
        assert info.value.args == ("failed with ('first',)",)
        (note,) = info.value.__notes__
        assert first.id in note and "t.fail" in note and r.parent.id in note and r.id in note
        assert r.state == states.FAILURE
        assert not [c for c in calls if c[0] == "tsum"]
        assert [c for c in calls if c[0] == "error_handler"] == [("error_handler", r.id, "ValueError")]

    def test_failed_chord_reads_back_the_same_from_the_result_backend(self, backend):
        app, calls, add, _, tsum, fail, *_ = make(backend)
        r = chord([add.s(1, 1), fail.s("boom")], tsum.s())()
        with pytest.raises(ValueError):
            r.get()
        again = app.AsyncResult(r.id).get(propagate=False)  # a fresh handle: decoded from the stored record
        assert type(again) is ValueError and again.args == ("failed with ('boom',)",)
        assert len(again.__notes__) == 1 and r.parent.results[1].id in again.__notes__[0]

    def test_inline_errback_of_a_failed_chord_gets_the_header_exception(self, backend):
        app, calls, add, _, tsum, fail, _, _, on_error = make(backend)
        body = tsum.s()
        body.link_error(on_error.s())
        r = chord([add.s(1, 1), fail.s(), fail.s()], body)()
        with pytest.raises(ValueError):
            r.get()
        backend.settle()
        assert [c for c in calls if c[0] == "on_error"] == [("on_error", r.id, "ValueError", True)]

    def test_header_task_that_retries_still_counts_once(self, backend):
        app, calls, add, _, tsum, *_ = make(backend)
        attempts = backend.record()

        @app.task(name="t.flaky", bind=True, default_retry_delay=5 if backend.virtual else 0.5)
        def flaky(self, x):
            attempts.append(x)
            if len(attempts) < 3:
                raise self.retry()
            return x

        r = chord([add.s(1, 1), flaky.s(10), add.s(2, 2)], tsum.s())()
        assert r.get() == 16
        assert len(attempts) == 3
        assert [c for c in calls if c[0] == "tsum"] == [("tsum", [2, 10, 4])]

    def test_chain_link_that_retries_carries_the_rest_of_the_chain(self, backend):
        app, calls, add, *_ = make(backend)
        attempts = backend.record()

        @app.task(name="t.flaky2", bind=True, default_retry_delay=5 if backend.virtual else 0.5)
        def flaky(self, x):
            attempts.append(x)
            if len(attempts) < 2:
                raise self.retry()
            return x * 10

        assert (add.s(1, 1) | flaky.s() | add.s(1))().get() == 21

    def test_expired_header_task_fails_the_chord(self, backend):
        app, calls, add, _, tsum, *_ = make(backend)
        countdown, expires = (60, 10) if backend.virtual else (2, 1)
        r = chord([add.s(1, 1), add.s(2, 2).set(countdown=countdown, expires=expires)], tsum.s())()
        with pytest.raises(Exception, match="expired") as info:
            r.get()
        assert type(info.value).__name__ == "TaskRevokedError"
        assert r.state == states.FAILURE
        assert not [c for c in calls if c[0] == "tsum"]

    def test_expired_link_stops_the_chain(self, backend):
        app, calls, add, *_ = make(backend)
        countdown, expires = (60, 10) if backend.virtual else (2, 1)
        r = (add.s(1, 1) | add.s(2).set(countdown=countdown, expires=expires) | add.s(3))()
        with pytest.raises(Exception, match="expired"):
            r.get()
        assert r.state == states.FAILURE

    def test_group_pipe_task_is_a_chord(self, backend):
        app, _, add, _, tsum, *_ = make(backend)
        canvas = group(add.s(i, i) for i in range(4)) | tsum.s()
        assert isinstance(canvas, chord)
        assert canvas().get() == 12


class TestNesting:
    def test_chord_inside_a_chain(self, backend):
        app, _, add, _, tsum, *_ = make(backend)
        r = (add.s(1, 1) | chord([add.s(1), add.s(2)], tsum.s()) | add.s(100))()
        assert r.get() == 107

    def test_chain_of_chords(self, backend):
        app, _, add, multiply, tsum, *_ = make(backend)
        first = chord([add.s(1, 1), add.s(2, 2)], tsum.s())
        second = chord([add.s(10), multiply.s(2)], tsum.s())
        assert (first | second | add.s(100))().get() == 128

    def test_chord_failure_inside_a_chain_stops_the_chain(self, backend):
        app, calls, add, _, tsum, fail, *_ = make(backend)
        r = (add.s(1, 1) | chord([add.s(1), fail.s()], tsum.s()) | add.s(100))()
        with pytest.raises(ValueError, match="failed with"):
            r.get()
        assert not [c for c in calls if c[0] == "add" and c[2] == 100]

    def test_chords_in_a_group(self, backend):
        app, _, add, _, tsum, *_ = make(backend)
        g = group(chord([add.s(1, 1), add.s(2, 2)], tsum.s()), chord([add.s(3, 3)], tsum.s()))()
        assert g.get() == [6, 6]

    def test_group_of_chains(self, backend):
        app, _, add, multiply, *_ = make(backend)
        g = group(add.s(1, 1) | multiply.s(10), add.s(2, 2) | multiply.s(10))()
        assert g.get() == [20, 40]

    def test_chord_header_holding_chains_and_chords(self, backend):
        app, _, add, multiply, tsum, *_ = make(backend)
        header = [
            add.s(1, 1) | multiply.s(3),
            chord([add.s(1, 1), add.s(2, 2)], tsum.s()),
            group(add.s(1, 0), add.s(2, 0)) | tsum.s(),
            add.s(5, 5),
        ]
        assert chord(header, tsum.s())().get() == 6 + 6 + 3 + 10

    def test_failure_deep_in_a_nested_header_raises_that_tasks_exception(self, backend):
        app, calls, add, _, tsum, fail, *_ = make(backend)
        inner = chord([add.s(1, 1), add.s(1, 1) | fail.s()], tsum.s())
        r = chord([inner, add.s(1, 1)], tsum.s())()
        with pytest.raises(ValueError, match="failed with") as info:
            r.get()
        assert [c for c in calls if c[0] == "tsum"] == []
        inner_note, outer_note = info.value.__notes__  # the inner chord's, then the outer one's
        assert r.parent.id in outer_note and r.parent.id not in inner_note

    def test_nested_groups_are_unrolled(self, backend):
        app, _, add, *_ = make(backend)
        g = group(add.s(1, 1), group(add.s(2, 2), group(add.s(3, 3))))
        assert len(g) == 3
        result = g()
        assert result.get() == [2, 4, 6] and len(result.results) == 3

    def test_a_chain_in_a_nested_group_stays_one_member(self, backend):
        app, _, add, multiply, *_ = make(backend)
        g = group(add.s(1, 1), group(add.s(2, 2) | multiply.s(10), add.s(3, 3)))
        assert g().get() == [2, 40, 6]

    def test_a_chord_body_gets_a_nested_header_group_flat(self, backend):
        app, _, add, _, _, _, echo, *_ = make(backend)
        r = chord([add.s(1, 1), group(add.s(2, 2), add.s(3, 3))], echo.s())()
        assert r.get() == [[[2, 4, 6]], {}]
        assert (group(add.s(1, 1), group(add.s(2, 2))) | echo.s())().get() == [[[2, 4]], {}]


# -- map, starmap, chunks -------------------------------------------------------------------------


class TestMapAndChunks:
    def test_map_from_the_seed(self, backend):
        app, _, _, _, tsum, *_ = make(backend)
        assert tsum.map([range(10), range(100)]).delay().get() == [45, 4950]

    def test_starmap_from_the_seed(self, backend):
        app, _, add, *_ = make(backend)
        assert add.starmap(zip(range(10), range(10), strict=True)).delay().get() == [0, 2, 4, 6, 8, 10, 12, 14, 16, 18]

    def test_map_is_one_message(self, backend):
        app, calls, add, *_ = make(backend)
        r = add.starmap([(1, 1), (2, 2), (3, 3)]).delay()
        assert r.get() == [2, 4, 6]
        assert [c for c in calls if c[0] == "add"] == [("add", 1, 1), ("add", 2, 2), ("add", 3, 3)]
        if backend.sim is not None:
            sent = [e for e in backend.sim.trace if e.kind == "sent"]
            assert len(sent) == 1

    def test_chunks(self, backend):
        app, _, add, *_ = make(backend)
        assert add.chunks(zip(range(6), range(6), strict=True), 4)().get() == [[0, 2, 4, 6], [8, 10]]
        g = add.chunks(zip(range(6), range(6), strict=True), 4).group()
        assert isinstance(g, group) and len(g) == 2
        assert g().get() == [[0, 2, 4, 6], [8, 10]]

    def test_chunks_of_the_seed(self, backend):
        app, _, add, *_ = make(backend)
        result = add.chunks(zip(range(1000), range(1000), strict=True), 10)()
        values = result.get()
        assert len(values) == 100 and values[0] == [0, 2, 4, 6, 8, 10, 12, 14, 16, 18]
        assert values[-1][-1] == 1998


# -- results -------------------------------------------------------------------------------------


class TestResults:
    def test_children_of_a_chain_link(self, backend):
        app, _, add, *_ = make(backend)
        r = (add.s(1, 1) | add.s(2))()
        assert r.get() == 4
        assert [c.id for c in r.parent.children] == [r.id]

    def test_collect_walks_what_a_result_led_to(self, backend):
        app, _, add, *_ = make(backend)
        first = (add.s(1, 1) | add.s(2) | add.s(3))().parent.parent
        assert [value for _, value in first.collect(timeout=30)] == [2, 4, 7]

    def test_chord_result_parent_is_the_header_group(self, backend):
        app, _, add, _, tsum, *_ = make(backend)
        r = chord([add.s(1, 1), add.s(2, 2)], tsum.s())()
        assert r.get() == 6
        assert isinstance(r.parent, GroupResult)
        assert r.parent.get() == [2, 4] and r.parent.completed_count() == 2


# -- bad input -----------------------------------------------------------------------------------


class TestBadInput:
    def test_unregistered_task_fails_at_send_time_naming_it(self, backend):
        app, calls, add, *_ = make(backend)
        canvas = chain(add.s(1, 1), group(add.s(1), signature("t.nope", app=app)))
        with pytest.raises(NotRegistered, match="t.nope"):
            canvas()
        assert calls == []

    def test_unserialisable_argument_names_its_path(self, backend):
        app, calls, add, _, tsum, *_ = make(backend)
        canvas = chain(add.s(1, 1), chord([add.s(1), add.s(object())], tsum.s()))
        with pytest.raises(EncodeError, match=r"chain\[1\]\.chord\.header\.group\[1\]\.<t\.add>\.args\[0\]"):
            canvas()
        assert calls == []

    def test_a_signature_linking_to_itself_is_refused(self, backend):
        app, _, add, *_ = make(backend)
        sig = add.s(1, 1)
        with pytest.raises(InvalidSignature, match="cycle"):
            sig.link(sig)
        other = add.s(2)
        other.link(sig)
        with pytest.raises(InvalidSignature, match="cycle"):
            sig.link(other)

    def test_a_cycle_built_by_hand_is_refused_at_send(self, backend):
        app, _, add, *_ = make(backend)
        sig = add.s(1, 1)
        sig["options"]["link"] = [sig]
        with pytest.raises(InvalidSignature, match="cycle"):
            sig.delay()

    def test_link_when_sending_a_group_is_refused_with_the_fix(self, backend):
        app, calls, add, _, tsum, *_ = make(backend)
        with pytest.raises(InvalidSignature, match="chord"):
            group(add.s(1, 1), add.s(2, 2)).apply_async(link=tsum.s())
        assert calls == []

    def test_link_on_an_empty_group_is_refused(self, backend):
        app, _, _, _, tsum, *_ = make(backend)
        with pytest.raises(InvalidSignature, match="empty group"):
            group([]).link(tsum.s())

    def test_chord_without_body_is_refused(self, backend):
        app, _, add, *_ = make(backend)
        with pytest.raises(InvalidSignature, match="body"):
            chord([add.s(1, 1)]).apply_async()


def test_a_result_set_gathers_results_of_separate_calls(backend):
    from simq import ResultSet

    app = backend.app()

    @app.task
    def square(x):
        return x * x

    @app.task
    def boom():
        raise ValueError("boom")

    results = ResultSet([square.delay(i) for i in range(3)])
    results.add(square.delay(3))
    assert len(results) == 4
    assert results.join(timeout=30) == [0, 1, 4, 9]
    assert results.ready() and results.successful() and results.completed_count() == 4
    failing = ResultSet([square.delay(5), boom.delay()])
    with pytest.raises(ValueError, match="boom"):
        failing.get(timeout=30)
    assert failing.failed()
    assert failing.get(timeout=30, propagate=False)[0] == 25


def test_a_signatures_args_kwargs_and_options_can_be_set(backend):
    from simq.exceptions import ConfigurationError

    app = backend.app()

    @app.task
    def add(x, y):
        return x + y

    sig = add.s(1, 1)
    sig.args = (20,)
    sig.kwargs = {"y": 22}
    sig.options = {"priority": 3}
    assert (sig.args, sig.kwargs, sig.options) == ((20,), {"y": 22}, {"priority": 3})
    assert sig.delay().get(timeout=30) == 42
    assert (add.s(1, 1) | add.s(2)).apply_async().get(timeout=30) == 4
    with pytest.raises(ConfigurationError, match="args"):
        sig.args = "20"
    with pytest.raises(ConfigurationError, match="kwargs"):
        sig.kwargs = {1: 2}
