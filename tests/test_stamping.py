"""Stamping: the visitor's hooks, lazy headers, the headers a publish carries, ``Task.on_replace``."""

from __future__ import annotations

import pytest

from simq import App, Task, chain, chord, group
from simq.canvas import StampingVisitor
from simq.signals import before_task_publish, task_received


@pytest.fixture
def app():
    app = App("stamping")

    @app.task(name="t.add")
    def add(x, y):
        return x + y

    @app.task(name="t.tsum")
    def tsum(numbers):
        return sum(numbers)

    @app.task(name="t.stamps", bind=True)
    def stamps(self, *args):
        return self.request.stamps

    with app.simulate(seed=3):
        yield app


class Recording(StampingVisitor):
    def __init__(self):
        self.calls = []

    def on_signature(self, sig, **headers):
        self.calls.append(("signature", sig.task, dict(headers)))
        return {"seen": sig.task}

    def on_group_start(self, node, **headers):
        self.calls.append(("group_start", len(node.tasks)))
        return {"in_group": True}

    def on_group_end(self, node, **headers):
        self.calls.append(("group_end",))

    def on_chain_start(self, node, **headers):
        self.calls.append(("chain_start", len(node.tasks)))
        return {}

    def on_chord_body(self, node, **headers):
        self.calls.append(("chord_body", dict(headers)))
        return {"body": True}


def test_the_hooks_are_called_in_canvas_order_with_the_stamps_so_far(app):
    add, tsum = app.tasks["t.add"], app.tasks["t.tsum"]
    visitor = Recording()
    chord([add.s(1, 1), chain(add.s(2, 2), add.s(3))], tsum.s()).stamp(visitor, tenant="a")
    assert visitor.calls == [
        ("group_start", 2),  # on_chord_header_start's default: on_group_start of the header
        ("signature", "t.add", {"tenant": "a", "in_group": True}),
        ("chain_start", 2),
        ("signature", "t.add", {"tenant": "a", "in_group": True}),
        ("signature", "t.add", {"tenant": "a", "in_group": True}),
        ("group_end",),
        ("chord_body", {"tenant": "a", "in_group": True}),
        ("signature", "t.tsum", {"tenant": "a", "in_group": True, "body": True}),
    ]


def test_a_visitor_without_on_signature_is_refused_by_name(app):
    class Empty(StampingVisitor):
        pass

    with pytest.raises(NotImplementedError, match="Empty must define on_signature"):
        app.tasks["t.add"].s(1, 1).stamp(Empty())


def test_a_lazy_header_is_stamped_as_it_is_yielded(app):
    add, tsum, stamps = (app.tasks[n] for n in ("t.add", "t.tsum", "t.stamps"))
    made = []

    def parts():
        for i in range(3):
            made.append(i)
            yield stamps.si(i)

    c = chord(parts(), tsum.s())
    c.stamp(tenant="a")
    assert made == []  # stamping read nothing
    result = c.apply_async()
    assert result.parent.get() == [{"tenant": "a"}] * 3 and made == [0, 1, 2]


def test_stamps_travel_as_headers_not_properties(app):
    add = app.tasks["t.add"]
    seen = []

    def receiver(headers=None, properties=None, **_):
        seen.append((headers, properties))

    before_task_publish.connect(receiver)
    try:
        add.si(1, 1).stamp(tenant="a").delay().get()
    finally:
        before_task_publish.disconnect(receiver)
    headers, properties = seen[0]
    assert headers["stamps"] == {"tenant": "a"} and headers["stamped_headers"] == ["tenant"]
    assert "tenant" not in headers and "stamped_headers" not in properties and "tenant" not in properties


def test_task_received_sees_the_stamps_and_a_dict_link_is_stamped(app):
    add, stamps = app.tasks["t.add"], app.tasks["t.stamps"]
    received = []

    def receiver(request=None, **_):
        received.append((request.task, request.stamps, list(request.callbacks or ())))

    sig = add.si(1, 1)
    sig.options["link"] = dict(stamps.si())  # a link in its dict form, as Celery allows
    sig.stamp(tenant="a")
    task_received.connect(receiver)
    try:
        sig.delay().get()
        app.simulation.run_until_idle()
    finally:
        task_received.disconnect(receiver)
    (first, first_stamps, callbacks), (second, second_stamps, _) = received
    assert (first, first_stamps, second, second_stamps) == ("t.add", {"tenant": "a"}, "t.stamps", {"tenant": "a"})
    assert callbacks[0]["options"]["stamped_headers"] == ["tenant"]


def test_on_replace_can_stamp_the_replacement_which_keeps_the_replaced_tasks_stamps(app):
    stamps = app.tasks["t.stamps"]

    class StampOnReplace(Task):
        def on_replace(self, sig):
            sig.stamp(replaced=True)
            return super().on_replace(sig)

    @app.task(bind=True, base=StampOnReplace, name="t.replaced")
    def replaced(self):
        raise self.replace(stamps.si().stamp(tenant="own"))

    assert replaced.si().stamp(tenant="a", origin="caller").delay().get() == {
        "tenant": "own",  # the replacement's own stamp wins over the replaced task's
        "origin": "caller",
        "replaced": True,
    }


def test_a_group_of_one_sent_alone_is_still_a_list_of_one(app):
    add = app.tasks["t.add"]
    assert group(add.s(1, 1))().get() == [2]
    assert chain(add.s(1, 1), group(add.s(1))).delay().get() == 3  # in a chain: that task
