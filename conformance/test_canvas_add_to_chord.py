"""``Task.add_to_chord``: a chord header task adds parts to its chord, on every backend (docs/canvas.md)."""

from __future__ import annotations

import pytest

from conformance.canvas_tasks import basic_tasks
from simq import chord, group
from simq.exceptions import ConfigurationError


def make(backend):
    app = backend.app(workers=2)

    t = basic_tasks(app)
    add, identity, tsum = t.add, t.identity, t.tsum

    @app.task(name="t.add_to_all_to_chord", bind=True)
    def add_to_all_to_chord(self, nums, val):
        for num in nums:
            self.add_to_chord(add.s(num, val))
        return 0

    @app.task(name="t.add_chord_to_chord", bind=True)
    def add_chord_to_chord(self, nums, val):
        self.add_to_chord(group(add.s(num, val) for num in nums) | tsum.s())
        return 0

    return app, add, identity, tsum, add_to_all_to_chord, add_chord_to_chord


class TestAddToChord:
    def test_added_tasks_results_follow_the_header_results(self, backend):
        app, add, identity, tsum, add_to_all_to_chord, _ = make(backend)
        r = (group([add_to_all_to_chord.s([1, 2, 3], 4)]) | identity.s()).delay()
        assert sorted(r.get()) == [0, 5, 6, 7]

    def test_an_added_chord_counts_as_one_part(self, backend):
        app, add, identity, tsum, _, add_chord_to_chord = make(backend)
        r = (group([add_chord_to_chord.s([1, 2, 3], 4)]) | identity.s()).delay()
        assert sorted(r.get()) == [0, 5 + 6 + 7]

    def test_several_header_tasks_add_parts_and_the_body_waits_for_all(self, backend):
        app, add, identity, tsum, add_to_all_to_chord, _ = make(backend)
        header = [add_to_all_to_chord.si([1], 1), add.si(1, 1), add_to_all_to_chord.si([5, 6], 0)]
        assert chord(header, tsum.s()).delay().get() == 0 + 2 + 0 + 2 + 5 + 6

    def test_a_task_outside_a_chord_cannot_add_to_one(self, backend):
        app, add, _, _, add_to_all_to_chord, _ = make(backend)
        with pytest.raises(ConfigurationError, match="reports to no chord"):
            add_to_all_to_chord.delay([1], 1).get()
