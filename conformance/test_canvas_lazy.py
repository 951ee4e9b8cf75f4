"""Lazy chord headers: a chord given a generator sends each header part as it is yielded, on every backend."""

from __future__ import annotations

import contextlib

import pytest

from conformance.canvas_tasks import basic_tasks
from simq import chain, chord, group, states
from simq.signals import after_task_publish


def make(backend):
    app = backend.app(workers=2)
    t = basic_tasks(app)
    return app, t.add, t.tsum


@contextlib.contextmanager
def publishing():
    """The names of the tasks this process publishes inside, in order.

    A context manager in the test's body, not a fixture: a deployed worker
    re-runs the test function with ``backend`` and its parameters only.
    """
    names: list[str] = []

    def receiver(sender=None, **_):
        names.append(sender)

    after_task_publish.connect(receiver)
    try:
        yield names
    finally:
        after_task_publish.disconnect(receiver)


class TestLazyChordHeader:
    @pytest.mark.parametrize("size", [1, 3, 6])
    def test_each_part_is_sent_before_the_next_is_generated(self, backend, size):
        app, add, tsum = make(backend)
        sent_before = []

        def header(published):
            for i in range(size):
                sent_before.append(published.count("t.add"))
                yield add.si(i, i)

        with publishing() as published:
            result = chord(header(published), tsum.s())()
        assert result.get() == size * (size - 1)
        assert sent_before == list(range(size))
        assert result.parent.get() == [2 * i for i in range(size)]  # the header's results, in order

    def test_chord_of_a_generator_called_with_its_body_stays_lazy(self, backend):
        app, add, tsum = make(backend)
        sent_before = []

        def header(published):
            for i in range(3):
                sent_before.append(published.count("t.add"))
                yield add.si(i, 1)

        with publishing() as published:
            result = chord(header(published))(tsum.s())
        assert result.get() == 1 + 2 + 3
        assert sent_before == [0, 1, 2]

    def test_an_empty_generator_gives_the_body_an_empty_list(self, backend):
        app, add, tsum = make(backend)
        assert chord((add.si(i, i) for i in range(0)), tsum.s())().get() == 0

    def test_groups_yielded_are_unrolled_into_the_header(self, backend):
        app, add, tsum = make(backend)
        r = chord((group(add.si(i, 0), add.si(i, 1)) for i in range(2)), tsum.s())()
        assert r.get() == 0 + 1 + 1 + 2 and r.parent.get() == [0, 1, 1, 2]

    def test_a_failing_part_fails_the_chord_with_its_exception(self, backend):
        app, add, tsum = make(backend)

        @app.task(name="t.fail")
        def fail(x):
            raise ValueError(f"part {x} failed")

        r = chord((fail.si(i) if i == 1 else add.si(i, i) for i in range(3)), tsum.s())()
        with pytest.raises(ValueError, match="part 1 failed"):
            r.get()

    def test_a_generator_that_raises_fails_the_body_and_raises(self, backend):
        app, add, tsum = make(backend)

        def header():
            yield add.si(1, 1)
            raise RuntimeError("the header broke")

        c = chord(header(), tsum.s())
        body = c.body.freeze()  # its id, to look at it after the send raised
        with pytest.raises(RuntimeError, match="the header broke"):
            c()
        with pytest.raises(RuntimeError, match="the header broke"):
            body.get()
        assert body.state == states.FAILURE

    def test_a_lazy_chord_inside_a_chain_is_read_when_the_chain_is_sent(self, backend):
        app, add, tsum = make(backend)
        canvas = chain(add.si(1, 1), chord((add.s(i) for i in range(3)), tsum.s()))
        assert canvas().get() == (2 + 0) + (2 + 1) + (2 + 2)
