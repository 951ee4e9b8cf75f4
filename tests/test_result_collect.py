"""``AsyncResult.collect``: a result and everything it led to, breadth first, as Celery's."""

from __future__ import annotations

from simq import App, GroupResult, chain, group


def test_collect_walks_a_chain_into_its_group_breadth_first():
    app = App("collect")

    @app.task(name="c.add")
    def add(x, y):
        return x + y

    with app.simulate(seed=2):
        last = chain(add.s(1, 1), add.s(2), group(add.s(1), add.s(2)))()
        root = last.parent.parent
        collected = list(root.collect())
    assert [value for _, value in collected] == [2, 4, [5, 6], 5, 6]
    assert isinstance(collected[2][0], GroupResult) and collected[2][0].id == last.id
    assert collected[0][0].id == root.id


def test_collect_of_a_task_that_led_nowhere_is_itself():
    app = App("collect-one")

    @app.task(name="c.one")
    def one():
        return 1

    with app.simulate():
        result = one.delay()
        assert [(r.id, v) for r, v in result.collect()] == [(result.id, 1)]
